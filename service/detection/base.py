"""What a face detector gives and is: boxes, 5 landmarks and scores for every face, and the Protocol the
serving layer depends on (the cascade in mtcnn.py and the merging in batched.py implement it)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Protocol

import numpy as np
import numpy.typing as npt


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

    def detect_images(self, images: Sequence[npt.NDArray[np.uint8]]) -> list[Detections]:
        """Faces in each of several images of any sizes, in one batched pass (a JSON batch's photos)."""
        ...

    def close(self) -> None:
        """Release threads or devices (called once by the app's lifespan)."""
        ...
