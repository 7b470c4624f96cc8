"""POST /v1/predict through the real gateway, Triton and MTCNN on real photos no one here made: the JSON
batch's answer for each photo equals POST /predict's for the same bytes, a bad image beside them gets its
own error, and fer-client sends a folder of photos as one batch. The batch's answer is kept in
.cache/test-artifacts/json-api/batch.json (docs/json-api.md quotes it)."""

from __future__ import annotations

import base64
import json
import re
from pathlib import Path
from typing import Any

import httpx
import pytest

from devstack.media import ROOT, ensure_face_photos
from devstack.stack import Gateway
from tests.integration.test_client_cli import fer_client

pytestmark = pytest.mark.integration

ARTIFACTS = ROOT / ".cache" / "test-artifacts" / "json-api"
PROMPT = "a person smiling broadly"
# One cascade call for all the photos and shared Triton batches: the same faces, numbers equal to float
# noise (O-Net and the model see other batch sizes).
PIXELS, SCORES = 0.5, 2e-3


def photos(media: Path) -> list[Path]:
    return [media / "messi5.jpg", media / "astronaut.png", media / "fruits.jpg", *ensure_face_photos()]


def entry(path: Path) -> dict[str, str]:
    return {"id": path.name, "data": base64.b64encode(path.read_bytes()).decode("ascii")}


def assert_same_answer(batch: dict[str, Any], single: dict[str, Any]) -> None:
    assert batch["image"] == single["image"] and batch["model"] == single["model"]
    assert len(batch["faces"]) == len(single["faces"])
    for ours, theirs in zip(batch["faces"], single["faces"], strict=True):
        assert all(abs(ours["box"][k] - theirs["box"][k]) <= PIXELS for k in ours["box"])
        assert ours["expression"]["label"] == theirs["expression"]["label"]
        for a, b in zip(ours["expressions"], theirs["expressions"], strict=True):
            assert a["label"] == b["label"] and abs(a["probability"] - b["probability"]) <= SCORES
        for a, b in zip(ours["text_similarity"], theirs["text_similarity"], strict=True):
            assert a["prompt"] == b["prompt"] and abs(a["score"] - b["score"]) <= SCORES


def test_a_batch_of_real_photos_answers_as_the_multipart_route(client: httpx.Client, media: Path) -> None:
    paths = photos(media)
    response = client.post("/v1/predict", json={"images": [entry(p) for p in paths], "prompts": [PROMPT]})
    assert response.status_code == 200, response.text
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    (ARTIFACTS / "batch.json").write_text(json.dumps(response.json(), indent=1), encoding="utf-8")
    results = response.json()["results"]
    assert [r["id"] for r in results] == [p.name for p in paths]
    assert all(r["status"] == 200 and r["error"] is None for r in results)
    faces = {r["id"]: len(r["response"]["faces"]) for r in results}
    assert faces["messi5.jpg"] == 1 and faces["astronaut.png"] == 1 and faces["fruits.jpg"] == 0
    assert results[1]["response"]["faces"][0]["expression"]["label"] == "happiness"
    for path, result in zip(paths, results, strict=True):
        single = client.post(
            "/predict", params={"prompts": PROMPT}, files={"file": (path.name, path.read_bytes())}
        )
        assert single.status_code == 200, single.text
        assert_same_answer(result["response"], single.json())


def test_a_corrupt_photo_beside_good_ones_gets_its_own_error(client: httpx.Client, media: Path) -> None:
    messi = (media / "messi5.jpg").read_bytes()
    images = [
        {"id": "cut", "data": base64.b64encode(messi[: len(messi) // 2]).decode()},
        entry(media / "messi5.jpg"),
        {"id": "junk", "data": "!!"},
        {"id": "huge", "data": base64.b64encode(b"\x89PNG\r\n\x1a\n" + bytes(40)).decode()},
    ]
    response = client.post("/v1/predict", json={"images": images})
    assert response.status_code == 200, response.text
    results = response.json()["results"]
    assert [(r["status"], (r["error"] or {}).get("code")) for r in results] == [
        (422, "invalid_image"), (200, None), (422, "invalid_base64"), (422, "invalid_image")
    ]  # fmt: skip
    assert len(results[1]["response"]["faces"]) == 1


def requests_to(client: httpx.Client, route: str) -> float:
    pattern = rf'fer_http_requests_total\{{[^}}]*route="{re.escape(route)}"[^}}]*\}} ([0-9.e+]+)'
    return sum(float(v) for v in re.findall(pattern, client.get("/metrics").text))


def test_the_cli_sends_a_folder_of_photos_as_one_batch(
    gateway: Gateway, client: httpx.Client, media: Path, tmp_path: Path
) -> None:
    folder = tmp_path / "photos"
    folder.mkdir()
    for path in photos(media)[:5]:
        (folder / path.name).write_bytes(path.read_bytes())
    batches, singles = requests_to(client, "/v1/predict"), requests_to(client, "/predict")
    run = fer_client(gateway, "predict", str(folder), "--csv")
    assert run.returncode == 0, run.stderr
    assert requests_to(client, "/v1/predict") == batches + 1 and requests_to(client, "/predict") == singles
    assert "[5/5]" in run.stderr
    one_by_one = fer_client(gateway, "predict", str(folder), "--csv", "--one-by-one")
    assert one_by_one.returncode == 0 and one_by_one.stdout == run.stdout
    assert requests_to(client, "/predict") == singles + 5
