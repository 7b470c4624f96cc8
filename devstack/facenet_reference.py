"""facenet-pytorch's own MTCNN, the reference the gateway's cascade (service/detection/mtcnn.py) is tested
and benchmarked against. It lives here, beside the test stack and the benchmarks that use it, so the
gateway's image does not ship it."""

from __future__ import annotations

import logging

import numpy as np
import numpy.typing as npt
import torch

from service.detection.base import Detections

logger = logging.getLogger(__name__)


class MTCNNDetector:
    """facenet-pytorch's own MTCNN with ``keep_all=True``: the reference the fast cascade is tested and
    benchmarked against (service/detection/mtcnn.py). Safe to call from several threads."""

    def __init__(
        self,
        *,
        thresholds: tuple[float, float, float],
        min_face_size: int,
        device: str,
    ) -> None:
        # Imported here, not at module import: facenet-pytorch pulls torchvision and loads weights.
        from facenet_pytorch import MTCNN

        self._mtcnn = MTCNN(
            keep_all=True,
            thresholds=list(thresholds),
            min_face_size=min_face_size,
            device=torch.device(device),
            post_process=False,
        )
        self._mtcnn.eval()
        self._min_face_size = min_face_size
        logger.info("MTCNN ready on %s (thresholds=%s, min_face_size=%d)", device, thresholds, min_face_size)

    def _too_small(self, height: int, width: int) -> bool:
        # No face of min_face_size fits, and MTCNN's image pyramid would be empty (it crashes on that).
        return min(height, width) < self._min_face_size

    def detect(self, rgb: npt.NDArray[np.uint8]) -> Detections:
        if self._too_small(*rgb.shape[:2]):
            return Detections.empty()
        with torch.inference_mode():
            boxes, scores, landmarks = self._mtcnn.detect(rgb, landmarks=True)
        return _as_detections(boxes, scores, landmarks)

    def detect_batch(self, frames: npt.NDArray[np.uint8]) -> list[Detections]:
        if self._too_small(*frames.shape[1:3]):
            return [Detections.empty() for _ in frames]
        # A 4-D array puts MTCNN in batch mode: one pyramid pass for all frames of a clip chunk.
        with torch.inference_mode():
            boxes, scores, landmarks = self._mtcnn.detect(frames, landmarks=True)
        return [_as_detections(b, s, p) for b, s, p in zip(boxes, scores, landmarks, strict=True)]

    def close(self) -> None:
        pass


def _as_detections(boxes: object, scores: object, landmarks: object) -> Detections:
    """MTCNN gives None for no face and object arrays otherwise; normalise to typed arrays."""
    if boxes is None:
        return Detections.empty()
    return Detections(
        boxes=np.asarray(boxes, dtype=np.float64).reshape(-1, 4),
        landmarks=np.asarray(landmarks, dtype=np.float64).reshape(-1, 5, 2),
        scores=np.asarray(scores, dtype=np.float64).reshape(-1),
    )
