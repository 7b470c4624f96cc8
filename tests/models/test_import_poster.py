"""``python -m fermodels import --format poster``: a file laid out as the authors' train.py saves it becomes a
served model whose TorchScript, fed RGB like every served model, gives the authors' probabilities
(tests/models/data/poster_expected.json, made by their own code on BGR-ordered tensors for RAF-DB)."""

from __future__ import annotations

import json
from contextlib import redirect_stdout
from io import StringIO
from pathlib import Path

import pytest
import torch

from fermodels.cli import main
from fermodels.models.poster_official import build_poster
from fermodels.ports.seeded_weights import seeded_state_dict

EXPECTED = json.loads((Path(__file__).parent / "data" / "poster_expected.json").read_text())["variants"]
PROBABILITY_ATOL = 1e-4


def official_checkpoint(path: Path, variant: str) -> None:
    """``{"iter", "model_state_dict", "optimizer_state_dict"}`` of a DataParallel model, all official keys."""
    state = seeded_state_dict(build_poster(variant).state_dict())
    for key, shape in EXPECTED[variant]["dropped_keys"].items():
        state[key] = torch.zeros(shape)
    official = {f"module.{key}": value for key, value in state.items()}
    torch.save({"iter": 4000, "model_state_dict": official, "optimizer_state_dict": {}}, path)


def imported(tmp: Path, variant: str) -> tuple[Path, str]:
    official_checkpoint(tmp / f"{variant}.pth", variant)
    out = StringIO()
    args = ["import", "--format", "poster", "--checkpoint", str(tmp / f"{variant}.pth"), "--name", variant]
    with redirect_stdout(out):
        assert main([*args, "--repository", str(tmp / "repository")]) == 0
    return tmp / "repository" / variant, out.getvalue()


@pytest.fixture(scope="module", params=["rafdb", "affectnet8"])
def served(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> tuple[str, Path, str]:
    variant: str = request.param
    model_dir, output = imported(tmp_path_factory.mktemp(variant), variant)
    return variant, model_dir, output


def test_dropped_modules_are_listed_and_the_config_tells_the_geometry(served: tuple[str, Path, str]) -> None:
    variant, model_dir, output = served
    assert all(key in output for key in EXPECTED[variant]["dropped_keys"])
    config = (model_dir / "config.pbtxt").read_text()
    if variant == "rafdb":
        assert r"\"channel_order\": \"bgr\"" in config and r"\"crop_source_size\": 100" in config
    else:
        assert r"\"crop_mode\": \"box\"" in config and "contempt" in (model_dir / "labels.txt").read_text()


@pytest.mark.usefixtures("one_torch_thread")
@pytest.mark.parametrize("batch", [1, 3, 16])
def test_the_served_torchscript_gives_the_authors_probabilities(
    served: tuple[str, Path, str], batch: int
) -> None:
    variant, model_dir, _ = served
    model = torch.jit.load(str(model_dir / "1" / "model.pt"))
    authors_order = torch.rand(16, 3, 224, 224, generator=torch.Generator().manual_seed(0))
    # The gateway sends RGB; RAF-DB's weights saw BGR, which the served model restores inside.
    rgb = authors_order.flip(1) if variant == "rafdb" else authors_order
    with torch.no_grad():
        probabilities = model(rgb[:batch])[0]
    want = torch.tensor(EXPECTED[variant]["probabilities"][:batch])
    torch.testing.assert_close(probabilities, want, rtol=0, atol=PROBABILITY_ATOL)


def test_an_affectnet_file_named_as_rafdb_is_refused(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    official_checkpoint(tmp_path / "a.pth", "affectnet7")
    args = ["import", "--format", "poster", "--checkpoint", str(tmp_path / "a.pth"), "--name", "p"]
    assert main([*args, "--dataset", "rafdb", "--repository", str(tmp_path / "repository")]) == 2
    assert "affectnet7" in capsys.readouterr().err and not (tmp_path / "repository" / "p").exists()
