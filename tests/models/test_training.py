"""Training and evaluation end to end on a tiny learnable problem, on CPU, with the tiny FER-former.

The data: crops of a real photo (devstack.media) tinted red or blue, filed under "happiness" and "sadness"
in the ImageFolder layout. The labels are SYNTHETIC (the tint is the class), chosen so that a few steps
visibly learn something; nothing here measures expression recognition.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from PIL import Image

import fermodels.train as train_module
from devstack.media import ensure_media
from fermodels import registry
from fermodels.checkpoint import load_checkpoint
from fermodels.contract import FER2013_LABELS, RAFDB_LABELS, ModelConfig
from fermodels.data import DatasetSpec
from fermodels.evaluate import CONFUSION_FILENAME, METRICS_FILENAME, evaluate
from fermodels.forward import model_outputs
from fermodels.models.mini_xception import MiniXception
from fermodels.registry import TINY_INPUT_SIZE
from fermodels.train import (
    Objective,
    TrainOptions,
    TrainResult,
    build_objective,
    deterministic,
    train,
    training_loss,
    warmup_cosine,
)

ROOT = Path(__file__).resolve().parents[2]
TINY = "fer_former_tiny"
OPTIONS = TrainOptions(epochs=3, batch_size=4, lr=3e-3, warmup_epochs=0, seed=7, device="cpu", progress=False)
TINTS = {"happiness": (255, 40, 40), "sadness": (40, 40, 255)}  # SYNTHETIC labels: the tint is the class


pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture(scope="module")
def data_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("tinted_imagefolder")
    with Image.open(ensure_media() / "messi5.jpg") as image:
        photo = image.convert("RGB")
    for split, count in (("train", 8), ("test", 4)):
        for label, tint in TINTS.items():
            (root / split / label).mkdir(parents=True)
            for i in range(count):
                crop = photo.crop((30 * i, 20 * (split == "test"), 30 * i + 160, 160)).resize((40, 40))
                Image.blend(crop, Image.new("RGB", crop.size, tint), 0.5).save(
                    root / split / label / f"{i}.jpg"
                )
    return root


@pytest.fixture(scope="module")
def reference(data_root: Path, tmp_path_factory: pytest.TempPathFactory) -> TrainResult:
    return train(TINY, DatasetSpec("imagefolder", data_root), tmp_path_factory.mktemp("reference"), OPTIONS)


def weights(path: Path) -> dict[str, torch.Tensor]:
    state: dict[str, torch.Tensor] = torch.load(path, weights_only=True)["state_dict"]
    return state


def same_weights(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> bool:
    return a.keys() == b.keys() and all(torch.equal(a[key], b[key]) for key in a)


def test_training_reduces_the_loss(reference: TrainResult) -> None:
    history = reference.history
    assert [record["epoch"] for record in history] == [1, 2, 3]
    assert history[-1]["train_loss"] < 0.8 * history[0]["train_loss"]
    assert history[-1]["val_loss"] < history[0]["val_loss"]
    assert reference.best_uar == max(record["val_uar"] for record in history)


def test_checkpoints_hold_weights_config_epoch_metrics_seed(reference: TrainResult) -> None:
    last: dict[str, Any] = torch.load(reference.last, weights_only=True)
    best: dict[str, Any] = torch.load(reference.best, weights_only=True)
    assert last["epoch"] == 3 and last["seed"] == OPTIONS.seed and last["metrics"] == reference.history[-1]
    best_epoch = 1 + int(np.argmax([record["val_uar"] for record in reference.history]))
    assert best["epoch"] == best_epoch and best["metrics"]["val_uar"] == reference.best_uar
    config = ModelConfig.from_json(last["config"])
    assert config.trained and config.labels == RAFDB_LABELS and config.input_size == TINY_INPUT_SIZE
    loaded = load_checkpoint(reference.last)
    assert same_weights(loaded.model.state_dict(), last["state_dict"]) and not loaded.model.training
    assert loaded.config == config


def test_same_seed_gives_identical_weights(data_root: Path, reference: TrainResult, tmp_path: Path) -> None:
    rng_state = torch.get_rng_state()
    again = train(TINY, DatasetSpec("imagefolder", data_root), tmp_path / "again", OPTIONS)
    assert same_weights(weights(again.last), weights(reference.last))
    assert again.history == reference.history
    # The caller's RNG and global flags are left as they were.
    assert torch.equal(torch.get_rng_state(), rng_state) and not torch.are_deterministic_algorithms_enabled()


def test_other_seed_gives_other_weights(data_root: Path, reference: TrainResult, tmp_path: Path) -> None:
    options = replace(OPTIONS, seed=8, epochs=1)
    other = train(TINY, DatasetSpec("imagefolder", data_root), tmp_path, options)
    assert not same_weights(weights(other.last), weights(reference.last))


class Interrupted(Exception):
    pass


def train_until_killed_in_second_epoch(
    spec: DatasetSpec, out_dir: Path, options: TrainOptions, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Train with a crash at the start of epoch 2 (after epoch 1's checkpoint), as a killed run would."""
    run_epoch = train_module._run_epoch

    def interrupt_second_epoch(*args: Any) -> None:
        if args[-1] == 1:  # the epoch index, after epoch 1's checkpoint was written
            raise Interrupted
        run_epoch(*args)

    with monkeypatch.context() as patched:
        patched.setattr(train_module, "_run_epoch", interrupt_second_epoch)
        with pytest.raises(Interrupted):
            train(TINY, spec, out_dir, options)


def test_resume_after_an_interruption_matches_the_uninterrupted_run(
    data_root: Path, reference: TrainResult, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    spec = DatasetSpec("imagefolder", data_root)
    train_until_killed_in_second_epoch(spec, tmp_path, OPTIONS, monkeypatch)
    assert torch.load(tmp_path / "last.pt", weights_only=True)["epoch"] == 1
    resumed = train(TINY, spec, tmp_path, OPTIONS, resume=tmp_path / "last.pt")
    assert resumed.epochs_run == 2 and resumed.history == reference.history
    assert same_weights(weights(resumed.last), weights(reference.last))


def test_resume_continues_from_the_stored_epoch(
    data_root: Path, reference: TrainResult, tmp_path: Path
) -> None:
    spec = DatasetSpec("imagefolder", data_root)
    finished = train(TINY, spec, tmp_path / "same", OPTIONS, resume=reference.last)
    assert finished.epochs_run == 0
    longer = replace(OPTIONS, epochs=4)
    extended = train(TINY, spec, tmp_path / "more", longer, resume=reference.last)
    assert extended.epochs_run == 1 and extended.history[:3] == reference.history
    assert torch.load(extended.last, weights_only=True)["epoch"] == 4


def test_evaluate_writes_metrics_json_and_a_png(
    data_root: Path, reference: TrainResult, tmp_path: Path
) -> None:
    metrics = evaluate(
        reference.best, DatasetSpec("imagefolder", data_root, "test"), tmp_path, progress=False
    )
    written = json.loads((tmp_path / METRICS_FILENAME).read_text())
    assert written == json.loads(json.dumps(metrics))
    assert metrics["num_samples"] == 8 and metrics["support"]["happiness"] == 4
    assert metrics["uar"] == pytest.approx(reference.best_uar)
    with Image.open(tmp_path / CONFUSION_FILENAME) as image:
        assert image.format == "PNG" and image.width > 0 and image.height > 0


def make_dfew(root: Path) -> DatasetSpec:
    """Three synthetic grey clips (SYNTHETIC labels) in DFEW's layout; fold 1."""
    for clip in ("00001", "00002", "00003"):
        (root / "Clip" / "clip_224x224" / clip).mkdir(parents=True)
        for frame in range(6):
            Image.new("RGB", (24, 24), (40 * frame,) * 3).save(
                root / "Clip" / "clip_224x224" / clip / f"{frame}.jpg"
            )
    for split, rows in (("train", "1,1\n2,5\n"), ("test", "3,3\n")):
        (root / "EmoLabel_DataSplit" / f"{split}(single-labeled)").mkdir(parents=True)
        (root / "EmoLabel_DataSplit" / f"{split}(single-labeled)" / "set_1.csv").write_text(
            f"video_name,label\n{rows}"
        )
    return DatasetSpec("dfew", root)


def test_a_clip_dataset_needs_a_video_model(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="image model"):
        train(TINY, make_dfew(tmp_path), tmp_path / "out", OPTIONS)


def test_a_video_model_trains_and_evaluates_on_dfew_clips(tmp_path: Path) -> None:
    assert "stt" in registry.available()  # registered in fermodels/registry.py: never skip on it
    options = TrainOptions(epochs=1, batch_size=2, device="cpu", progress=False)
    spec = make_dfew(tmp_path)
    result = train("stt", spec, tmp_path / "out", options)
    assert result.epochs_run == 1 and result.last.is_file()
    metrics = evaluate(result.last, replace(spec, split="test"), progress=False)
    assert metrics["num_samples"] == 1 and metrics["support"]["neutral"] == 1


def test_grey_input_models_are_trained_through_their_rgb_serving_view() -> None:
    # mini-Xception's forward takes 1-channel grey; the datasets yield normalised RGB.
    config = ModelConfig(name="m", architecture="mini_xception", input_size=64, labels=FER2013_LABELS)
    logits = model_outputs(MiniXception(), config, torch.zeros(2, 3, 64, 64))
    assert isinstance(logits, torch.Tensor) and logits.shape == (2, 7)


PAPER_OBJECTIVES: tuple[Objective, ...] = ("kefer", "compact")


def objective_state(path: Path) -> dict[str, torch.Tensor]:
    state: dict[str, torch.Tensor] = torch.load(path, weights_only=True)["objective_state"]
    return state


@pytest.fixture(scope="module", params=PAPER_OBJECTIVES)
def paper_run(
    request: pytest.FixtureRequest, data_root: Path, tmp_path_factory: pytest.TempPathFactory
) -> tuple[TrainOptions, TrainResult]:
    options = replace(OPTIONS, objective=request.param)
    spec = DatasetSpec("imagefolder", data_root)
    return options, train(TINY, spec, tmp_path_factory.mktemp(request.param), options)


def test_paper_objectives_reduce_the_loss_and_train_their_own_parameters(
    paper_run: tuple[TrainOptions, TrainResult],
) -> None:
    options, result = paper_run
    losses = [record["train_loss"] for record in result.history]
    assert len(losses) == 3 and all(np.isfinite(losses)) and losses[-1] < losses[0]
    # The objective's parameters start as train() builds them and end elsewhere: they are optimised.
    with deterministic(options.seed, torch.device("cpu")):
        model, config = registry.build(TINY, seed=options.seed)
        objective = build_objective(model, config, options)
    assert objective is not None
    initial, trained = objective.state_dict(), objective_state(result.last)
    assert initial.keys() == trained.keys() and initial
    assert all(not torch.equal(initial[key], trained[key]) for key in initial)
    # Evaluation reads the model's weights only and still predicts from the class logits.
    assert same_weights(load_checkpoint(result.last).model.state_dict(), weights(result.last))


def test_paper_objectives_resume_exactly(
    paper_run: tuple[TrainOptions, TrainResult],
    data_root: Path,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    options, reference_run = paper_run
    spec = DatasetSpec("imagefolder", data_root)
    train_until_killed_in_second_epoch(spec, tmp_path, options, monkeypatch)
    after_first_epoch = objective_state(tmp_path / "last.pt")
    resumed = train(TINY, spec, tmp_path, options, resume=tmp_path / "last.pt")
    assert resumed.epochs_run == 2 and resumed.history == reference_run.history
    assert same_weights(weights(resumed.last), weights(reference_run.last))
    final = objective_state(resumed.last)
    assert same_weights(final, objective_state(reference_run.last))
    assert not same_weights(final, after_first_epoch)


def test_resume_refuses_a_checkpoint_of_another_objective(
    data_root: Path, reference: TrainResult, tmp_path: Path
) -> None:
    spec = DatasetSpec("imagefolder", data_root)
    with pytest.raises(ValueError, match="objective 'ce', not 'kefer'"):
        train(TINY, spec, tmp_path, replace(OPTIONS, objective="kefer"), resume=reference.last)


def test_kefer_needs_a_text_side_and_compact_trains_a_video_model(tmp_path: Path) -> None:
    assert "stt" in registry.available()  # registered in fermodels/registry.py: never skip on it
    options = TrainOptions(epochs=1, batch_size=2, device="cpu", progress=False)
    spec = make_dfew(tmp_path)
    with pytest.raises(ValueError, match="text side"):
        train("stt", spec, tmp_path / "kefer", replace(options, objective="kefer"))
    result = train("stt", spec, tmp_path / "compact", replace(options, objective="compact"))
    assert np.isfinite(result.history[0]["train_loss"])
    assert objective_state(result.last)["centers"].shape == (7, 128)


def test_loss_adds_the_text_term_and_the_schedule_warms_up_then_decays() -> None:
    logits, text, targets = torch.zeros(2, 3), torch.tensor([[5.0, 0, 0], [0, 5.0, 0]]), torch.tensor([0, 1])
    class_only = training_loss(logits, targets)
    assert class_only.item() == pytest.approx(np.log(3))
    assert training_loss((logits, text), targets).item() > class_only.item()
    assert training_loss((logits, text), targets, text_loss_weight=0.0).item() == pytest.approx(np.log(3))
    factor = warmup_cosine(total_steps=10, warmup_steps=2)
    assert [factor(0), factor(1), factor(2)] == [0.5, 1.0, 1.0]
    assert factor(6) == pytest.approx(0.5) and factor(10) == pytest.approx(0.0)


def run_cli(*args: str) -> subprocess.CompletedProcess[str]:
    command = [sys.executable, "-W", "ignore::FutureWarning", "-m", "fermodels", *args]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}  # see one_thread()
    return subprocess.run(command, cwd=ROOT, env=env, capture_output=True, text=True, timeout=60, check=False)


def test_cli_train(data_root: Path, tmp_path: Path) -> None:
    result = run_cli(
        "train", "--model", TINY, "--dataset", "imagefolder", "--data-root", str(data_root),
        "--out-dir", str(tmp_path), "--epochs", "1", "--batch-size", "8", "--balanced", "--device", "auto",
        "--no-progress",
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    assert (tmp_path / "last.pt").is_file() and (tmp_path / "best.pt").is_file()
    assert "best validation UAR" in result.stdout


def test_cli_train_with_the_kefer_objective(data_root: Path, tmp_path: Path) -> None:
    result = run_cli(
        "train", "--model", TINY, "--dataset", "imagefolder", "--data-root", str(data_root),
        "--out-dir", str(tmp_path), "--epochs", "1", "--batch-size", "8", "--objective", "kefer",
        "--alignment-weight", "0.5", "--no-progress",
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    options = torch.load(tmp_path / "last.pt", weights_only=True)["options"]
    assert options["objective"] == "kefer" and options["alignment_weight"] == 0.5


def test_cli_evaluate(data_root: Path, reference: TrainResult, tmp_path: Path) -> None:
    result = run_cli(
        "evaluate", "--checkpoint", str(reference.best), "--dataset", "imagefolder",
        "--data-root", str(data_root), "--out-dir", str(tmp_path), "--no-progress",
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    assert json.loads((tmp_path / METRICS_FILENAME).read_text())["num_samples"] == 8
    assert (tmp_path / CONFUSION_FILENAME).stat().st_size > 0
    assert "UAR" in result.stdout
