"""The model lifecycle end to end, as the README's training section runs it: train → evaluate → export
--checkpoint → the real local Triton serves the file → /predict answers with ``trained: true`` and the
metrics evaluate recorded. For an image model (the tiny FER-former), the landmark model (tiny POSTER, whose
second input the gateway fills from the detector) and a video model (tiny STT, on a clip folder).

All training data is SYNTHETIC and made here: coloured squares per class (images) and clips that brighten
or darken (videos). The numbers measure nothing about expressions; the test is about the plumbing.
Commands run in-process through ``fermodels.cli.main`` (what ``python -m fermodels`` calls), so the test
pays for torch's import once; the tiny models keep it well inside CI's time.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import torch
from PIL import Image

from devstack import clips
from devstack.stack import gateway_settings, start_gateway
from fermodels.cli import main
from service.launcher.triton_local import LocalTriton

pytestmark = [pytest.mark.integration, pytest.mark.filterwarnings("ignore:`torch.jit:FutureWarning")]
IMAGE_MODELS = ("fer_former_tiny", "poster_tiny")
VIDEO_MODEL = "stt_tiny"
COLOURS = {"happiness": (230, 60, 40), "sadness": (40, 60, 230), "surprise": (40, 200, 60)}
DFEW_IDS = {"happiness": 1, "sadness": 2}  # DFEW's 1-based label ids
QUIET = ["--no-progress", "--device", "cpu"]


@pytest.fixture(scope="module", autouse=True)
def one_thread() -> Iterator[None]:
    previous = torch.get_num_threads()
    torch.set_num_threads(1)  # tiny models; a shared 2-core runner (see tests/models/test_training.py)
    yield
    torch.set_num_threads(previous)


def synthetic_squares(root: Path) -> Path:
    """ImageFolder layout: per class a coloured square on grey at a few positions (SYNTHETIC labels)."""
    for split, count in (("train", 12), ("test", 4)):
        for label, colour in COLOURS.items():
            (root / split / label).mkdir(parents=True)
            for i in range(count):
                image = Image.new("RGB", (48, 48), (128, 128, 128))
                offset = 3 * (i % 6)
                image.paste(colour, (offset, offset, offset + 28, offset + 28))
                image.save(root / split / label / f"{i}.png")
    return root


def synthetic_clips(root: Path) -> Path:
    """DFEW layout, fold 1: clips that brighten (happiness) or darken (sadness) (SYNTHETIC labels)."""
    rows: dict[str, list[str]] = {"train": [], "test": []}
    for index in range(12):
        label = ("happiness", "sadness")[index % 2]
        folder = root / "Clip" / "clip_224x224" / f"{index + 1:05d}"
        folder.mkdir(parents=True)
        for frame in range(6):
            level = 40 + 30 * frame if label == "happiness" else 190 - 30 * frame
            Image.new("RGB", (40, 40), (level, level, level)).save(folder / f"{frame}.jpg")
        rows["test" if index >= 8 else "train"].append(f"{index + 1},{DFEW_IDS[label]}")
    for split, lines in rows.items():
        table = root / "EmoLabel_DataSplit" / f"{split}(single-labeled)"
        table.mkdir(parents=True)
        (table / "set_1.csv").write_text("video_name,label\n" + "\n".join(lines) + "\n")
    return root


def lifecycle(model: str, dataset: str, data: Path, runs: Path, repository: Path) -> dict[str, Any]:
    """train → evaluate → export --checkpoint, through the CLI; returns evaluate's metrics.json."""
    out = runs / model
    data_args = ["--dataset", dataset, "--data-root", str(data), *QUIET]
    train = ["train", "--model", model, *data_args, "--out-dir", str(out), "--epochs", "2"]
    assert main([*train, "--batch-size", "8", "--lr", "3e-3", "--warmup-epochs", "0"]) == 0
    assert main(["evaluate", "--checkpoint", str(out / "best.pt"), *data_args]) == 0
    export = ["export", "--checkpoint", str(out / "best.pt"), "--repository", str(repository)]
    assert main(export) == 0
    metrics: dict[str, Any] = json.loads((out / "metrics.json").read_text())
    return metrics


@pytest.fixture(scope="module")
def measured(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict[str, dict[str, Any]]]:
    base = tmp_path_factory.mktemp("lifecycle")
    repository, runs = base / "model_repository", base / "runs"
    images, videos = synthetic_squares(base / "squares"), synthetic_clips(base / "clips")
    metrics = {model: lifecycle(model, "imagefolder", images, runs, repository) for model in IMAGE_MODELS}
    metrics[VIDEO_MODEL] = lifecycle(VIDEO_MODEL, "dfew", videos, runs, repository)
    return repository, metrics


@pytest.fixture(scope="module")
def served(measured: tuple[Path, dict[str, dict[str, Any]]]) -> Iterator[httpx.Client]:
    repository, _ = measured
    with LocalTriton(repository, startup_timeout_s=120) as triton:
        settings = gateway_settings(triton, default_model=IMAGE_MODELS[0], default_video_model=VIDEO_MODEL)
        gateway = start_gateway(settings)
        try:
            with httpx.Client(base_url=gateway.url, timeout=60) as client:
                yield client
        finally:
            gateway.stop()


def assert_shows_the_evaluation(info: dict[str, Any], metrics: dict[str, Any], dataset: str) -> None:
    fold = " (fold 1)" if dataset == "dfew" else ""
    assert info["trained"] is True and info["dataset"] == f"{dataset} train{fold}"
    shown = info["metrics"]
    assert shown["data"] == metrics["data"] == f"{dataset} test{fold}"
    assert shown["num_samples"] == metrics["num_samples"] > 0
    assert shown["war"] == pytest.approx(metrics["war"]) and shown["uar"] == pytest.approx(metrics["uar"])
    assert shown["per_class_recall"] == pytest.approx(metrics["per_class_recall"])
    assert f"UAR {metrics['uar']:.4f}" in info["accuracy"]


def test_every_exported_checkpoint_is_listed_as_trained_with_its_metrics(
    served: httpx.Client, measured: tuple[Path, dict[str, dict[str, Any]]]
) -> None:
    listed = {entry["name"]: entry for entry in served.get("/v1/models").json()["models"]}
    _, metrics = measured
    assert set(listed) == {*IMAGE_MODELS, VIDEO_MODEL}
    for model, dataset in ((IMAGE_MODELS[0], "imagefolder"), (IMAGE_MODELS[1], "imagefolder")):
        assert_shows_the_evaluation(listed[model]["info"], metrics[model], dataset)
    assert_shows_the_evaluation(listed[VIDEO_MODEL]["info"], metrics[VIDEO_MODEL], "dfew")
    assert listed["poster_tiny"]["info"]["inputs"] == ["face_crop", "landmarks"]


@pytest.mark.parametrize("model", IMAGE_MODELS)
def test_predict_answers_from_the_trained_file(
    served: httpx.Client, measured: tuple[Path, dict[str, dict[str, Any]]], media: Path, model: str
) -> None:
    photo = (media / "messi5.jpg").read_bytes()
    response = served.post(
        "/predict", params={"model": model}, files={"file": ("m.jpg", photo, "image/jpeg")}
    )
    assert response.status_code == 200, response.text
    body = response.json()
    assert len(body["faces"]) >= 1 and not any("untrained" in warning for warning in body["warnings"])
    assert_shows_the_evaluation(body["model"], measured[1][model], "imagefolder")


def test_a_clip_is_answered_by_the_trained_video_model(
    served: httpx.Client, measured: tuple[Path, dict[str, dict[str, Any]]], media: Path
) -> None:
    data = clips.encode(clips.moving_face(media, count=8), fps=10)
    response = served.post("/predict", files={"file": ("clip.mp4", data, "video/mp4")})
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["media"] == "video" and body["tracks"]
    assert_shows_the_evaluation(body["video_model"], measured[1][VIDEO_MODEL], "dfew")
    assert_shows_the_evaluation(body["model"], measured[1][IMAGE_MODELS[0]], "imagefolder")


def test_a_clip_sends_the_landmark_model_each_faces_landmarks(
    served: httpx.Client, measured: tuple[Path, dict[str, dict[str, Any]]], media: Path
) -> None:
    data = clips.encode(clips.moving_face(media, count=6), fps=10)
    response = served.post(
        "/predict", params={"model": "poster_tiny"}, files={"file": ("clip.mp4", data, "video/mp4")}
    )
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["timeline"] and all(frame["faces"] for frame in body["timeline"])
    assert_shows_the_evaluation(body["model"], measured[1]["poster_tiny"], "imagefolder")
