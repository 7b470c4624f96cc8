"""Face detection with facenet-pytorch's MTCNN: boxes, 5 landmarks and scores for every face."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Protocol

import numpy as np
import numpy.typing as npt
import torch

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class Detections:
    """All faces of one image, sorted by score (highest first)."""

    boxes: npt.NDArray[np.float64]  # N x 4 (x1, y1, x2, y2), pixels
    landmarks: npt.NDArray[np.float64]  # N x 5 x 2 (x, y), pixels
    scores: npt.NDArray[np.float64]  # N

    def __len__(self) -> int:
        return len(self.scores)

    @classmethod
    def empty(cls) -> Detections:
        return cls(np.zeros((0, 4)), np.zeros((0, 5, 2)), np.zeros((0,)))

    def top(self, limit: int, min_score: float) -> Detections:
        keep = np.argsort(-self.scores, kind="stable")
        keep = keep[self.scores[keep] >= min_score][:limit]
        return Detections(self.boxes[keep], self.landmarks[keep], self.scores[keep])

    def clipped_to(self, width: int, height: int) -> Detections:
        """Boxes clamped to the image (MTCNN may extend a box past the border for edge faces)."""
        boxes = self.boxes.copy()
        boxes[:, [0, 2]] = boxes[:, [0, 2]].clip(0, width)
        boxes[:, [1, 3]] = boxes[:, [1, 3]].clip(0, height)
        return Detections(boxes, self.landmarks, self.scores)


class FaceDetector(Protocol):
    """Anything that finds faces with 5 landmarks in an RGB image."""

    def detect(self, rgb: npt.NDArray[np.uint8]) -> Detections: ...

    def detect_batch(self, frames: npt.NDArray[np.uint8]) -> list[Detections]:
        """Faces in each of B equally sized frames (B x H x W x 3), in one batched pass."""
        ...

    def close(self) -> None:
        """Release threads or devices (called once by the app's lifespan)."""
        ...


class MTCNNDetector:
    """facenet-pytorch's own MTCNN with ``keep_all=True``: the reference the fast cascade is tested and
    benchmarked against (service/vision/mtcnn.py). Safe to call from several threads."""

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
