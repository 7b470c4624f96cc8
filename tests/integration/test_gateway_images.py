"""Real Triton + real MTCNN on real photos no one here made (OpenCV's messi5.jpg, skimage's astronaut)."""

from __future__ import annotations

import re
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest
from PIL import Image

from devstack.stack import MODEL_REPOSITORY, encode

pytestmark = pytest.mark.integration

# Where a person sees Messi's face in messi5.jpg (548x342): a ~30x40 px face left of centre.
MESSI_FACE = (215, 85, 265, 140)


def predict_file(client: httpx.Client, data: bytes, name: str = "photo.jpg", mime: str = "image/jpeg") -> Any:
    response = client.post("/predict", files={"file": (name, data, mime)})
    assert response.status_code == 200, response.text
    return response.json()


def assert_valid_face(face: dict[str, Any], width: int, height: int) -> None:
    box = face["box"]
    assert 0 <= box["x1"] < box["x2"] <= width and 0 <= box["y1"] < box["y2"] <= height
    assert 0.9 <= face["detection_score"] <= 1.0
    probabilities = [item["probability"] for item in face["expressions"]]
    assert sum(probabilities) == pytest.approx(1.0, abs=1e-4)
    assert all(0.0 <= p <= 1.0 for p in probabilities)
    assert face["expression"]["probability"] == pytest.approx(max(probabilities))
    assert all(-1.0 - 1e-5 <= item["score"] <= 1.0 + 1e-5 for item in face["text_similarity"])
    for point in face["landmarks"].values():  # landmarks sit inside (or on) the face box
        assert box["x1"] - 5 <= point["x"] <= box["x2"] + 5 and box["y1"] - 5 <= point["y"] <= box["y2"] + 5


def inside(box: dict[str, float], region: tuple[int, int, int, int]) -> bool:
    x1, y1, x2, y2 = region
    cx, cy = (box["x1"] + box["x2"]) / 2, (box["y1"] + box["y2"]) / 2
    return x1 <= cx <= x2 and y1 <= cy <= y2


def test_messi_one_face_where_a_person_sees_it(client: httpx.Client, media: Path) -> None:
    body = predict_file(client, (media / "messi5.jpg").read_bytes())
    assert body["image"] == {"width": 548, "height": 342, "format": "JPEG"}
    assert len(body["faces"]) == 1
    face = body["faces"][0]
    assert_valid_face(face, 548, 342)
    assert inside(face["box"], MESSI_FACE)
    assert face["landmarks"]["left_eye"]["x"] < face["landmarks"]["right_eye"]["x"]
    assert body["model"]["name"] == "mini_xception_fer2013" and body["model"]["version"] == "1"
    assert body["model"]["trained"] is True  # the default model is the trained one
    assert set(body["timings_ms"]) >= {"decode", "detect", "align", "infer", "assemble", "total"}


def test_fer_former_gives_text_similarity_per_prompt_and_says_it_is_untrained(
    client: httpx.Client, media: Path
) -> None:
    response = client.post(
        "/predict",
        params={"model": "fer_former"},
        files={"file": ("m.jpg", (media / "messi5.jpg").read_bytes())},
    )
    assert response.status_code == 200, response.text
    body = response.json()
    (face,) = body["faces"]
    assert_valid_face(face, 548, 342)
    assert [s["label"] for s in face["text_similarity"]] == body["model"]["labels"]
    assert all(s["prompt"].startswith("a photo of a person making") for s in face["text_similarity"])
    assert (
        len({round(s["score"], 6) for s in face["text_similarity"]}) > 1
    )  # a real model output, not constant
    assert body["model"]["trained"] is False and "NOT predictions" in body["warnings"][0]
    assert "all-MiniLM-L6-v2" in body["model"]["text_encoder"]


def test_astronaut_portrait(client: httpx.Client, media: Path) -> None:
    body = predict_file(client, (media / "astronaut.png").read_bytes(), "astronaut.png", "image/png")
    assert len(body["faces"]) == 1
    assert_valid_face(body["faces"][0], 512, 512)
    assert inside(body["faces"][0]["box"], (170, 60, 280, 180))


def test_photo_without_faces_is_an_empty_list(client: httpx.Client, media: Path) -> None:
    body = predict_file(client, (media / "fruits.jpg").read_bytes())
    assert body["faces"] == []


def test_every_face_in_a_group_photo(client: httpx.Client, media: Path) -> None:
    messi = Image.open(media / "messi5.jpg").convert("RGB").resize((1096, 684))
    astronaut = Image.open(media / "astronaut.png").convert("RGB")
    group = Image.new("RGB", (1096 + 512, 684))
    group.paste(messi, (0, 0))
    group.paste(astronaut, (1096, 86))
    body = predict_file(client, encode(group, "JPEG", quality=92))
    assert len(body["faces"]) == 2
    boxes = sorted((face["box"] for face in body["faces"]), key=lambda b: b["x1"])
    assert inside(boxes[0], tuple(2 * v for v in MESSI_FACE))  # type: ignore[arg-type]
    assert inside(boxes[1], (1096 + 170, 86 + 60, 1096 + 280, 86 + 180))


@pytest.mark.parametrize(
    ("fmt", "mime"),
    [
        ("PNG", "image/png"),
        ("WEBP", "image/webp"),
        ("BMP", "image/bmp"),
        ("TIFF", "image/tiff"),
        ("GIF", "image/gif"),
    ],
)
def test_formats(client: httpx.Client, media: Path, fmt: str, mime: str) -> None:
    messi = Image.open(media / "messi5.jpg").convert("RGB")
    options = {"quality": 95} if fmt == "WEBP" else {}
    body = predict_file(client, encode(messi, fmt, **options), f"messi.{fmt.lower()}", mime)
    assert body["image"]["format"] == fmt
    assert len(body["faces"]) == 1 and inside(body["faces"][0]["box"], MESSI_FACE)


def test_raw_body_and_exif_orientation(client: httpx.Client, media: Path) -> None:
    upright = Image.open(media / "messi5.jpg").convert("RGB")
    exif = Image.Exif()
    exif[0x0112] = 8  # stored rotated; viewers rotate 90° counter-clockwise to display upright
    stored = encode(upright.transpose(Image.Transpose.ROTATE_270), "JPEG", quality=95, exif=exif)
    response = client.post("/predict", content=stored, headers={"Content-Type": "image/jpeg"})
    assert response.status_code == 200, response.text
    body = response.json()
    assert (body["image"]["width"], body["image"]["height"]) == (548, 342)
    assert len(body["faces"]) == 1 and inside(body["faces"][0]["box"], MESSI_FACE)


def test_concurrent_requests_agree_with_a_single_one(client: httpx.Client, media: Path) -> None:
    data = (media / "messi5.jpg").read_bytes()
    reference = predict_file(client, data)["faces"][0]["expressions"]
    with ThreadPoolExecutor(8) as pool:
        bodies = list(pool.map(lambda _: predict_file(client, data), range(8)))
    for body in bodies:
        got = [item["probability"] for item in body["faces"][0]["expressions"]]
        np.testing.assert_allclose(got, [item["probability"] for item in reference], atol=1e-5)


def max_batch_size(model: str) -> int:
    text = (MODEL_REPOSITORY / model / "config.pbtxt").read_text()
    match = re.search(r"^max_batch_size:\s*(\d+)", text, re.MULTILINE)
    assert match, "config.pbtxt has no max_batch_size"
    return int(match.group(1))


def test_many_faces_are_batched_within_max_batch_size(client: httpx.Client, media: Path) -> None:
    limit = max_batch_size("fer_former")
    face = Image.open(media / "messi5.jpg").convert("RGB").crop((195, 65, 285, 165)).resize((180, 200))
    columns, rows = 6, (limit // 6) + 1  # more faces than one batch holds
    sheet = Image.new("RGB", (180 * columns, 200 * rows))
    for i in range(columns * rows):
        sheet.paste(face, ((i % columns) * 180, (i // columns) * 200))
    response = client.post(
        "/predict",
        params={"model": "fer_former"},
        files={"file": ("s.jpg", encode(sheet, "JPEG", quality=95))},
    )
    assert response.status_code == 200, response.text
    assert len(response.json()["faces"]) == columns * rows > limit
    metrics = client.get("/metrics").text
    total = _metric(metrics, 'fer_triton_batch_size_count{model="fer_former"}')
    within = _metric(metrics, f'fer_triton_batch_size_bucket{{le="{float(limit)}",model="fer_former"}}')
    assert total >= 2 and within == total  # every call carried at most max_batch_size faces


def _metric(text: str, name: str) -> float:
    for line in text.splitlines():
        if line.startswith(name + " "):
            return float(line.split()[-1])
    raise AssertionError(f"{name} not in /metrics")


def test_models_health_and_metrics(client: httpx.Client) -> None:
    assert client.get("/healthz").status_code == 200
    ready = client.get("/readyz")
    assert ready.status_code == 200 and ready.json()["checks"]["model:fer_former"] is True
    models = client.get("/v1/models").json()
    (entry,) = [m for m in models["models"] if m["name"] == "fer_former"]
    info = entry["info"]
    assert entry["state"] == "READY" and info["version"] == "1"
    assert len(info["labels"]) == len(info["prompts"]) == 7
    assert info["text_encoder"] and info["weights"]
    metrics = client.get("/metrics").text
    assert "fer_triton_request_duration_seconds_count" in metrics
    assert 'fer_stage_duration_seconds_count{stage="infer"}' in metrics


def test_trained_fer2013_model_on_real_faces(client: httpx.Client, media: Path) -> None:
    """The ported FER2013 mini-Xception: trained weights, real predictions, no text side (so its text
    similarity is ConSE's zero-shot, from the expression probabilities)."""
    astronaut = (media / "astronaut.png").read_bytes()
    response = client.post(
        "/predict",
        params={"model": "mini_xception_fer2013"},
        files={"file": ("a.png", astronaut, "image/png")},
    )
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["model"]["trained"] is True and body["model"]["input_size"] == 64
    assert "sha256" in body["model"]["weights"]
    (face,) = body["faces"]
    assert_valid_face(face, 512, 512)
    assert face["expression"]["label"] == "happiness"  # Eileen Collins smiles broadly in this portrait
    scores = face["text_similarity"]
    assert [s["label"] for s in scores] == body["model"]["labels"]
    assert {s["method"] for s in scores} == {"conse"}
    assert max(scores, key=lambda s: s["score"])["label"] == "happiness"
    assert any("no text side" in warning for warning in body["warnings"])
