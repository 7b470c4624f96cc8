"""The fast cascade against facenet-pytorch's own ``detect`` (the reference): real photos, clip frames."""

from __future__ import annotations

from pathlib import Path

import av
import numpy as np
import pytest
import torch
from PIL import Image

from devstack.facenet_reference import MTCNNDetector
from devstack.media import ensure_face_photos, ensure_media
from service.detection.base import Detections
from service.detection.mtcnn import CascadeDetector
from service.detection.openvino_nets import openvino_nets

THRESHOLDS = (0.6, 0.7, 0.7)


@pytest.fixture(scope="module")
def reference() -> MTCNNDetector:
    return MTCNNDetector(thresholds=THRESHOLDS, min_face_size=20, device="cpu")


@pytest.fixture(scope="module", params=["openvino", "torch"])
def fast(request: pytest.FixtureRequest) -> CascadeDetector:
    """Both local runtimes: OpenVINO (the default) and facenet-pytorch's modules channels-last."""
    nets = openvino_nets(threads=2) if request.param == "openvino" else None
    return CascadeDetector(thresholds=THRESHOLDS, min_face_size=20, nets=nets)


def photos() -> list[Path]:
    media = ensure_media()
    return [media / "messi5.jpg", media / "astronaut.png", *ensure_face_photos()]


def rgb(path: Path) -> np.ndarray:
    return np.asarray(Image.open(path).convert("RGB"))


def iou(a: np.ndarray, b: np.ndarray) -> float:
    x1, y1 = max(a[0], b[0]), max(a[1], b[1])
    x2, y2 = min(a[2], b[2]), min(a[3], b[3])
    inter = max(0.0, x2 - x1) * max(0.0, y2 - y1)
    union = (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter
    return float(inter / union)


def assert_same_faces(ours: Detections, theirs: Detections) -> None:
    assert len(ours) == len(theirs)
    order_ours, order_theirs = np.lexsort(ours.boxes.T[::-1]), np.lexsort(theirs.boxes.T[::-1])
    for i, j in zip(order_ours, order_theirs, strict=True):
        assert iou(ours.boxes[i], theirs.boxes[j]) >= 0.98
        assert np.abs(ours.landmarks[i] - theirs.landmarks[j]).max() <= 1.0
        assert abs(ours.scores[i] - theirs.scores[j]) <= 1e-3


@pytest.mark.parametrize("path", photos(), ids=lambda p: p.name)
def test_same_faces_as_facenet_pytorch_on_real_photos(
    path: Path, reference: MTCNNDetector, fast: CascadeDetector
) -> None:
    image = rgb(path)
    theirs = reference.detect(image)
    assert len(theirs) > 0  # every photo here shows at least one face
    assert_same_faces(fast.detect(image), theirs)


def test_same_faces_on_a_batch_of_real_clip_frames(reference: MTCNNDetector, fast: CascadeDetector) -> None:
    with av.open(str(ensure_media() / "Megamind.avi")) as container:
        frames = [
            f.to_ndarray(format="rgb24") for i, f in enumerate(container.decode(video=0)) if i % 30 == 0
        ]
    batch = np.stack(frames[:8])
    theirs = reference.detect_batch(batch)
    assert sum(len(d) for d in theirs) > 0
    for ours, expected in zip(fast.detect_batch(batch), theirs, strict=True):
        assert_same_faces(ours, expected)


def test_images_of_different_sizes_share_one_call_and_keep_their_own_faces(fast: CascadeDetector) -> None:
    images = [rgb(p) for p in photos()[:3]]
    together = fast.detect_many(images)
    for image, found in zip(images, together, strict=True):
        alone = fast.detect(image)
        np.testing.assert_allclose(found.boxes, alone.boxes, atol=1e-3)
        np.testing.assert_allclose(found.scores, alone.scores, atol=1e-6)


def test_no_faces_and_tiny_images_give_no_detections(fast: CascadeDetector) -> None:
    assert len(fast.detect(rgb(ensure_media() / "fruits.jpg"))) == 0
    assert len(fast.detect(np.zeros((10, 10, 3), np.uint8))) == 0


def test_the_nets_run_channels_last() -> None:
    from service.detection.mtcnn import load_nets

    for net in load_nets():
        weight = next(p for p in net.parameters() if p.dim() == 4)
        assert weight.is_contiguous(memory_format=torch.channels_last)
