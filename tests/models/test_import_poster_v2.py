"""``python -m fermodels import --format poster_v2``: a file in the authors' own training-checkpoint layout
(DataParallel keys, pickled recorder classes of their script) becomes a served model whose TorchScript
gives the authors' probabilities (tests/models/data/poster_v2_expected.json, made by their own code)."""

from __future__ import annotations

import json
import sys
from contextlib import redirect_stdout
from io import StringIO
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch

from fermodels.cli import main
from fermodels.models.poster_v2 import build_poster_v2
from fermodels.ports.seeded_weights import seeded_state_dict

EXPECTED = json.loads((Path(__file__).parent / "data" / "poster_v2_expected.json").read_text())
# Any canonical order: the test only needs the authors' output order kept (their folders' sorted names).
LABELS_7 = "anger,disgust,fear,happiness,neutral,sadness,surprise"
PROBABILITY_ATOL = 1e-4


class RecorderMeter:
    """Stand-in for the authors' ``main.RecorderMeter``, pickled as ``__main__.RecorderMeter``."""

    def __init__(self) -> None:
        self.epoch_losses = np.zeros((4, 2), dtype=np.float32)
        self.current_epoch = 3


def official_checkpoint(path: Path, num_classes: int, monkeypatch: pytest.MonkeyPatch) -> None:
    """What the authors' main.py saves: the DataParallel state dict with every official key (the dropped
    ones included), the optimizer's state and their recorder objects."""
    model = build_poster_v2(num_classes)
    state = seeded_state_dict(model.state_dict())
    for key in EXPECTED["variants"][str(num_classes)]["dropped_keys"]:
        state[key] = torch.zeros(2)
    RecorderMeter.__module__ = "__main__"
    monkeypatch.setattr(sys.modules["__main__"], "RecorderMeter", RecorderMeter, raising=False)
    payload: dict[str, Any] = {
        "epoch": 12,
        "state_dict": {f"module.{key}": value for key, value in state.items()},
        "best_acc": torch.tensor(92.2),
        "optimizer": {"state": {}, "param_groups": [{"lr": 3.5e-5}]},
        "recorder1": RecorderMeter(),
        "recorder": RecorderMeter(),
    }
    torch.save(payload, path)


def import_args(checkpoint: Path, repository: Path, name: str, labels: str | None) -> list[str]:
    args = ["import", "--format", "poster_v2", "--checkpoint", str(checkpoint), "--name", name]
    return [*args, "--repository", str(repository), *(["--labels", labels] if labels else [])]


@pytest.fixture(scope="module")
def imported(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, str]:
    tmp = tmp_path_factory.mktemp("poster_v2")
    with pytest.MonkeyPatch.context() as monkeypatch:
        official_checkpoint(tmp / "rafdb-model_best.pth", 7, monkeypatch)
    repository = tmp / "repository"
    out = StringIO()
    with redirect_stdout(out):
        code = main(import_args(tmp / "rafdb-model_best.pth", repository, "poster_v2_rafdb", LABELS_7))
    assert code == 0
    return repository / "poster_v2_rafdb", out.getvalue()


def test_the_unused_modules_are_dropped_by_name_and_listed(imported: tuple[Path, str]) -> None:
    _, output = imported
    dropped = EXPECTED["variants"]["7"]["dropped_keys"]
    assert f"dropped {len(dropped)} keys" in output
    assert all(key in output for key in dropped)


def test_the_served_config_says_whose_weights_and_how_to_crop(imported: tuple[Path, str]) -> None:
    model_dir, _ = imported
    pbtxt = (model_dir / "config.pbtxt").read_text()
    for fact in ("POSTER++", "MIT", "92.21", "rafdb-model_best.pth", "sha256", r"\"trained\": true"):
        assert fact in pbtxt
    assert (model_dir / "labels.txt").read_text().split() == LABELS_7.split(",")


@pytest.mark.usefixtures("one_torch_thread")
@pytest.mark.parametrize("batch", [1, 3, 16])
def test_the_served_torchscript_gives_the_authors_probabilities(
    imported: tuple[Path, str], batch: int
) -> None:
    model_dir, _ = imported
    served = torch.jit.load(str(model_dir / "1" / "model.pt"))
    rgb = torch.rand(16, 3, 224, 224, generator=torch.Generator().manual_seed(0))  # the reference's inputs
    start = {1: 5, 3: 9, 16: 0}[batch]
    with torch.no_grad():
        probabilities = served(rgb[start : start + batch])[0]
    want = torch.tensor(EXPECTED["variants"]["7"]["probabilities"][start : start + batch])
    torch.testing.assert_close(probabilities, want, rtol=0, atol=PROBABILITY_ATOL)


def test_without_labels_the_import_refuses_and_writes_nothing(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    official_checkpoint(tmp_path / "model.pth", 7, monkeypatch)
    repository = tmp_path / "repository"
    code = main(import_args(tmp_path / "model.pth", repository, "pv2", None))
    assert code == 2 and "--labels is required" in capsys.readouterr().err
    assert not (repository / "pv2").exists()


def test_a_renamed_key_is_a_clear_error_listing_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    official_checkpoint(tmp_path / "model.pth", 7, monkeypatch)
    payload = torch.load(tmp_path / "model.pth", weights_only=False)
    payload["state_dict"]["module.VIT.se_gate.linear1.weight"] = payload["state_dict"].pop(
        "module.VIT.se_block.linear1.weight"
    )
    torch.save(payload, tmp_path / "renamed.pth")
    code = main(import_args(tmp_path / "renamed.pth", tmp_path / "repository", "pv2", LABELS_7))
    err = capsys.readouterr().err
    assert code == 2 and "VIT.se_block.linear1.weight" in err and "VIT.se_gate.linear1.weight" in err
