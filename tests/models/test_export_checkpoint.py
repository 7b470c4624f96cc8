"""`export --checkpoint`: trained weights reach the repository with the metrics evaluate measured on that
very file, or not at all; POSTER exports with its landmark input.

The training data is SYNTHETIC (a coloured square per class), made here; nothing measures expression.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from PIL import Image

from fermodels import registry
from fermodels.checkpoint import CheckpointError, load_checkpoint
from fermodels.cli import main
from fermodels.contract import PBTXT_PARAMETER_KEY, ModelConfig
from fermodels.data import DatasetSpec
from fermodels.evaluate import METRICS_FILENAME, evaluate
from fermodels.export import (
    MetricsError,
    export_checkpoint,
    export_model,
    load_scripted,
    sample_inputs,
    serving_wrapper,
)
from fermodels.train import TrainOptions, TrainResult, train

COLOURS = {"happiness": (230, 60, 40), "sadness": (40, 60, 230)}  # SYNTHETIC: the colour is the class
OPTIONS = TrainOptions(epochs=1, batch_size=4, lr=3e-3, warmup_epochs=0, device="cpu", progress=False)


pytestmark = [
    pytest.mark.filterwarnings("ignore:`torch.jit:FutureWarning"),
    pytest.mark.usefixtures("one_torch_thread"),
]


@pytest.fixture(scope="module")
def synthetic_squares(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("synthetic_squares")
    for split in ("train", "test"):
        for label, colour in COLOURS.items():
            (root / split / label).mkdir(parents=True)
            for i in range(4):
                image = Image.new("RGB", (40, 40), (128, 128, 128))
                image.paste(colour, (4 * i, 4 * i, 4 * i + 20, 4 * i + 20))
                image.save(root / split / label / f"{i}.png")
    return root


@pytest.fixture(scope="module")
def trained(synthetic_squares: Path, tmp_path_factory: pytest.TempPathFactory) -> TrainResult:
    spec = DatasetSpec("imagefolder", synthetic_squares)
    return train("poster_tiny", spec, tmp_path_factory.mktemp("run"), OPTIONS)


def served_config(model_dir: Path) -> ModelConfig:
    text = (model_dir / "config.pbtxt").read_text()
    line = next(line for line in text.splitlines() if PBTXT_PARAMETER_KEY in line)
    raw = line.split('string_value: "', 1)[1].rsplit('" }', 2)[0]
    return ModelConfig.from_json(raw.encode().decode("unicode_escape"))


def test_export_refuses_a_checkpoint_nobody_evaluated(trained: TrainResult, tmp_path: Path) -> None:
    with pytest.raises(MetricsError, match="evaluate"):
        export_checkpoint(trained.last, tmp_path / "repo")
    code = main(["export", "--checkpoint", str(trained.last), "--repository", str(tmp_path / "repo")])
    assert code == 1 and not (tmp_path / "repo").exists()


def test_export_refuses_the_metrics_of_another_file(
    trained: TrainResult, synthetic_squares: Path, tmp_path: Path
) -> None:
    evaluate(trained.last, DatasetSpec("imagefolder", synthetic_squares, "test"), tmp_path, progress=False)
    other = tmp_path / "other.pt"
    torch.save({**torch.load(trained.last, weights_only=True), "seed": 1}, other)
    with pytest.raises(MetricsError, match="not of"):
        export_checkpoint(other, tmp_path / "repo", metrics=tmp_path / METRICS_FILENAME)


def test_exported_checkpoint_is_trained_with_its_metrics_and_matches_eager(
    trained: TrainResult, synthetic_squares: Path, tmp_path: Path
) -> None:
    measured = evaluate(
        trained.last, DatasetSpec("imagefolder", synthetic_squares, "test"), tmp_path, progress=False
    )
    code = main(
        ["export", "--checkpoint", str(trained.last), "--metrics", str(tmp_path / METRICS_FILENAME),
         "--repository", str(tmp_path / "repo"), "--version", "3"]
    )  # fmt: skip
    assert code == 0
    model_dir = tmp_path / "repo" / "poster_tiny"
    config = served_config(model_dir)
    assert config.trained and config.dataset == "imagefolder train" and config.num_landmarks == 5
    assert config.metrics is not None and config.metrics.uar == pytest.approx(measured["uar"])
    assert config.metrics.data == "imagefolder test" and config.metrics.num_samples == 8
    assert dict(config.metrics.per_class_recall) == measured["per_class_recall"]
    assert "WAR" in config.accuracy and "recall per class" in (model_dir / "README.md").read_text()
    # The file served is the checkpoint's weights, not the registry's initialisation.
    reloaded = load_scripted(model_dir / "3" / "model.pt")
    model, _ = registry.build("poster_tiny")
    model.load_state_dict(torch.load(trained.last, weights_only=True)["state_dict"])
    inputs = sample_inputs(config, 3, seed=5)
    with torch.no_grad():
        expected, untrained = (
            serving_wrapper(model, config)(*inputs),
            serving_wrapper(*registry.build("poster_tiny"))(*inputs),
        )
        got = reloaded(*inputs)
    torch.testing.assert_close(got[0], expected[0], rtol=0, atol=1e-5)
    assert not torch.allclose(got[0], untrained[0], atol=1e-4)
    assert json.loads((tmp_path / METRICS_FILENAME).read_text())["checkpoint_sha256"]


def test_poster_exports_with_a_landmark_input_that_changes_its_output(tmp_path: Path) -> None:
    model, config = registry.build("poster_tiny")
    reloaded = load_scripted(export_model(model, config, tmp_path) / "1" / "model.pt")
    crops, landmarks = sample_inputs(config, 2)
    with torch.no_grad():
        moved = reloaded(crops, landmarks + 0.1)[0]
        assert not torch.allclose(reloaded(crops, landmarks)[0], moved, atol=1e-6)


def test_format_1_checkpoints_of_a_tiny_variant_still_load(trained: TrainResult, tmp_path: Path) -> None:
    payload = torch.load(trained.last, weights_only=True)
    old = tmp_path / "old.pt"
    torch.save({**payload, "format": 1, "model": "poster", "variant": "tiny"}, old)
    loaded = load_checkpoint(old)
    assert loaded.name == "poster_tiny" and loaded.config.num_landmarks == 5


def test_a_file_that_is_not_a_checkpoint_is_refused(tmp_path: Path) -> None:
    torch.save({"state_dict": {}}, tmp_path / "weights.pt")
    with pytest.raises(CheckpointError, match="not a fermodels checkpoint"):
        load_checkpoint(tmp_path / "weights.pt")
