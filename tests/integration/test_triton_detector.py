"""FER_DETECTOR_BACKEND=triton: MTCNN's nets on the real local Triton give the local detector's faces."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import httpx
import numpy as np
import pytest
from PIL import Image

from devstack.stack import Gateway, gateway_settings, start_gateway
from fermodels.contract import DETECTOR_STAGE_NAMES, DETECTOR_STAGES
from service.detection.mtcnn import CascadeDetector
from service.detection.triton_nets import triton_nets
from service.launcher.triton_local import LocalTriton
from tests.integration.test_detector_parity import assert_same_faces

THRESHOLDS = (0.6, 0.7, 0.7)


@pytest.fixture(scope="module")
def detectors(triton: LocalTriton) -> Iterator[tuple[CascadeDetector, CascadeDetector]]:
    nets = triton_nets(triton.endpoints.grpc_url, protocol="grpc", timeout_s=30, retry_after_s=1)
    remote = CascadeDetector(thresholds=THRESHOLDS, min_face_size=20, nets=nets)
    yield CascadeDetector(thresholds=THRESHOLDS, min_face_size=20), remote
    remote.close()


def test_the_exported_stage_names_are_the_ones_the_gateway_calls() -> None:
    assert tuple(stage.name for stage in DETECTOR_STAGES) == DETECTOR_STAGE_NAMES


@pytest.mark.parametrize("name", ["messi5.jpg", "astronaut.png"])
def test_nets_on_triton_find_the_same_faces_as_in_process(
    name: str, media: Path, detectors: tuple[CascadeDetector, CascadeDetector]
) -> None:
    local, remote = detectors
    image = np.asarray(Image.open(media / name).convert("RGB"))
    expected = local.detect(image)
    assert len(expected) == 1
    assert_same_faces(remote.detect(image), expected)


def test_several_images_share_each_stage_call_on_triton(
    media: Path, detectors: tuple[CascadeDetector, CascadeDetector]
) -> None:
    local, remote = detectors
    images = [np.asarray(Image.open(media / n).convert("RGB")) for n in ("messi5.jpg", "astronaut.png")]
    for ours, expected in zip(remote.detect_many(images), local.detect_many(images), strict=True):
        assert_same_faces(ours, expected)


@pytest.fixture(scope="module")
def triton_detecting_gateway(triton: LocalTriton) -> Iterator[Gateway]:
    running = start_gateway(gateway_settings(triton, detector_backend="triton"))
    yield running
    running.stop()


def test_the_gateway_answers_with_detection_on_triton(
    triton_detecting_gateway: Gateway, gateway: Gateway, media: Path
) -> None:
    photo = (media / "messi5.jpg").read_bytes()
    remote = httpx.post(
        f"{triton_detecting_gateway.url}/predict", files={"file": ("m.jpg", photo)}, timeout=60
    )
    local = httpx.post(f"{gateway.url}/predict", files={"file": ("m.jpg", photo)}, timeout=60)
    assert remote.status_code == 200, remote.text
    faces, expected = remote.json()["faces"], local.json()["faces"]
    assert len(faces) == len(expected) == 1
    assert faces[0]["box"] == pytest.approx(expected[0]["box"], abs=0.05)
    assert faces[0]["expression"]["label"] == expected[0]["expression"]["label"]


def test_v1_models_lists_the_detector_nets_as_such(gateway: Gateway) -> None:
    models = {m["name"]: m for m in httpx.get(f"{gateway.url}/v1/models", timeout=30).json()["models"]}
    for name in DETECTOR_STAGE_NAMES:
        assert models[name]["kind"] == "detector" and models[name]["state"] == "READY"
    assert models["mini_xception_fer2013"]["kind"] == "expression"
    json.dumps(models)  # serialisable as served
