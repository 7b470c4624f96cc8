"""Face detection as the gateway runs it: at an analysis size, merged across concurrent callers.

- **Analysis size.** An image whose longest side exceeds ``max_side`` is detected on a reduced copy
  (anti-aliased); boxes and landmarks are mapped back to full-resolution pixels exactly (pixel centres),
  and crops are still cut from the full-resolution image. A 40-Mpx photo then costs what a 1.6-Mpx one does.
- **Cross-request batching.** One thread owns the cascade; every ``detect`` call (from any request's
  worker thread) queues its image and waits. The thread takes everything queued at once and runs it
  through one cascade call (one R-Net and one O-Net batch for all images), so concurrent requests share
  the cores instead of running competing cascades whose OpenMP threads spin against each other.
"""

from __future__ import annotations

import logging
import queue
import threading
from collections.abc import Sequence
from concurrent.futures import Future
from dataclasses import dataclass
from typing import Protocol

import numpy as np
import numpy.typing as npt
from PIL import Image

from service.detection.base import Detections

logger = logging.getLogger(__name__)

RGB = npt.NDArray[np.uint8]


class ManyImageDetector(Protocol):
    def detect_many(
        self, images: Sequence[RGB], min_face_sizes: Sequence[int] | None = None
    ) -> list[Detections]: ...

    def close(self) -> None: ...


@dataclass(frozen=True)
class AnalysisSize:
    """How large an image detection looks at, and the smallest face it looks for."""

    max_side: int  # 0: always full resolution
    min_face_size: int  # pixels of the analysed image
    min_face_ratio: float = 0.0  # of the analysed image's shorter side; 0: only min_face_size

    def factor(self, height: int, width: int) -> float:
        longest = max(height, width)
        return 1.0 if self.max_side <= 0 or longest <= self.max_side else self.max_side / longest

    def min_face(self, height: int, width: int) -> int:
        return max(self.min_face_size, round(self.min_face_ratio * min(height, width)))


def reduced(rgb: RGB, factor: float) -> RGB:
    """The image at ``factor`` of its size, anti-aliased (PIL's reducing resize)."""
    if factor >= 1.0:
        return rgb
    size = (max(1, round(rgb.shape[1] * factor)), max(1, round(rgb.shape[0] * factor)))
    image = Image.fromarray(rgb).resize(size, Image.Resampling.BILINEAR, reducing_gap=2.0)
    return np.asarray(image)


def mapped_back(found: Detections, analysed: tuple[int, ...], full: tuple[int, ...]) -> Detections:
    """Detections on an (h, w) analysed image → full-resolution pixels: x = (u + 0.5) W / w - 0.5."""
    if analysed == full or not len(found):
        return found
    scale = np.array([full[1] / analysed[1], full[0] / analysed[0]])
    boxes = found.boxes.reshape(-1, 2, 2)
    return Detections(
        ((boxes + 0.5) * scale - 0.5).reshape(-1, 4), (found.landmarks + 0.5) * scale - 0.5, found.scores
    )


class BatchedDetector:
    """A FaceDetector that merges concurrent calls into cascade calls on its own ``workers`` threads
    (each takes whatever is queued when it becomes free)."""

    def __init__(
        self, cascade: ManyImageDetector, size: AnalysisSize, *, max_batch: int, workers: int = 1
    ) -> None:
        self._cascade = cascade
        self._size = size
        self._max_batch = max_batch
        self._queue: queue.SimpleQueue[tuple[list[RGB], Future[list[Detections]]] | None] = (
            queue.SimpleQueue()
        )
        self._threads = [
            threading.Thread(target=self._serve, name=f"fer-detect-{i}", daemon=True) for i in range(workers)
        ]
        for thread in self._threads:
            thread.start()

    def detect(self, rgb: RGB) -> Detections:
        return self._submit([rgb])[0]

    def detect_batch(self, frames: npt.NDArray[np.uint8]) -> list[Detections]:
        return self._submit(list(frames))

    def detect_images(self, images: Sequence[RGB]) -> list[Detections]:
        return self._submit(list(images)) if images else []

    def close(self) -> None:
        self._queue.put(None)  # each worker puts it back for the next one on its way out
        for thread in self._threads:
            thread.join(timeout=30)
        self._cascade.close()

    def _submit(self, images: list[RGB]) -> list[Detections]:
        future: Future[list[Detections]] = Future()
        self._queue.put((images, future))
        return future.result()

    def _serve(self) -> None:
        while (first := self._queue.get()) is not None:
            batch = [first]
            while sum(len(images) for images, _ in batch) < self._max_batch:
                try:
                    item = self._queue.get_nowait()
                except queue.Empty:
                    break
                if item is None:
                    self._queue.put(None)  # stop after this batch
                    break
                batch.append(item)
            self._run(batch)
        self._queue.put(None)  # the other workers stop too

    def _run(self, batch: list[tuple[list[RGB], Future[list[Detections]]]]) -> None:
        images = [image for part, _ in batch for image in part]
        try:
            found = self.detect_now(images)
        except Exception as exc:  # every waiting caller gets the error, the thread lives on
            for _, future in batch:
                future.set_exception(exc)
            return
        start = 0
        for part, future in batch:
            future.set_result(found[start : start + len(part)])
            start += len(part)

    def detect_now(self, images: Sequence[RGB]) -> list[Detections]:
        """The cascade on these images in this thread: analysis size, one call, boxes mapped back."""
        small = [reduced(image, self._size.factor(*image.shape[:2])) for image in images]
        sizes = [self._size.min_face(*image.shape[:2]) for image in small]
        found = self._cascade.detect_many(small, sizes)
        return [
            mapped_back(faces, part.shape[:2], image.shape[:2])
            for faces, part, image in zip(found, small, images, strict=True)
        ]
