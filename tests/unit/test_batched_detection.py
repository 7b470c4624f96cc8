"""Analysis size and cross-request merging of face detection, with a fake cascade that records its calls."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Sequence

import numpy as np
import pytest

from service.detection.base import Detections
from service.detection.batched import AnalysisSize, BatchedDetector, mapped_back, reduced


class RecordingCascade:
    """One face whose box is the whole image; remembers each call's image sizes and min face sizes."""

    def __init__(self, hold: threading.Event | None = None) -> None:
        self.calls: list[tuple[list[tuple[int, int]], list[int]]] = []
        self.hold = hold
        self.entered = threading.Event()  # set once a call is inside detect_many
        self.closed = False

    def close(self) -> None:
        self.closed = True

    def detect_many(
        self, images: Sequence[np.ndarray], min_face_sizes: Sequence[int] | None = None
    ) -> list[Detections]:
        self.entered.set()
        if self.hold is not None:
            self.hold.wait(5)
        self.calls.append(([im.shape[:2] for im in images], list(min_face_sizes or [])))
        return [
            Detections(
                np.array([[0.0, 0.0, im.shape[1] - 1.0, im.shape[0] - 1.0]]),
                np.full((1, 5, 2), 10.0),
                np.array([0.99]),
            )
            for im in images
        ]


def test_large_images_are_detected_at_the_analysis_size_and_mapped_back_exactly() -> None:
    cascade = RecordingCascade()
    detector = BatchedDetector(cascade, AnalysisSize(max_side=1000, min_face_size=20), max_batch=4)
    try:
        found = detector.detect(np.zeros((2000, 4000, 3), np.uint8))
    finally:
        detector.close()
    assert cascade.calls == [([(500, 1000)], [20])]
    # The analysed image's last pixel centre (999, 499) is the full image's last pixel centre plus the
    # half-pixel convention: (999 + 0.5) * 4 - 0.5 = 3997.5.
    np.testing.assert_allclose(found.boxes, [[1.5, 1.5, 3997.5, 1997.5]])
    np.testing.assert_allclose(found.landmarks[0, 0], [41.5, 41.5])


def test_small_images_are_detected_at_full_resolution() -> None:
    cascade = RecordingCascade()
    detector = BatchedDetector(cascade, AnalysisSize(max_side=1280, min_face_size=20), max_batch=4)
    try:
        found = detector.detect(np.zeros((300, 400, 3), np.uint8))
    finally:
        detector.close()
    assert cascade.calls[0][0] == [(300, 400)]
    np.testing.assert_allclose(found.boxes, [[0.0, 0.0, 399.0, 299.0]])


def test_min_face_ratio_raises_the_smallest_face_looked_for() -> None:
    size = AnalysisSize(max_side=0, min_face_size=20, min_face_ratio=0.1)
    assert size.min_face(1000, 2000) == 100 and size.min_face(100, 100) == 20
    assert size.factor(5000, 5000) == 1.0


def test_concurrent_callers_share_one_cascade_call() -> None:
    hold = threading.Event()
    cascade = RecordingCascade(hold)
    detector = BatchedDetector(cascade, AnalysisSize(max_side=0, min_face_size=20), max_batch=16)
    results: list[Detections] = []

    def call(width: int) -> threading.Thread:
        image = np.zeros((50, width, 3), np.uint8)
        thread = threading.Thread(target=lambda: results.append(detector.detect(image)))
        thread.start()
        return thread

    try:
        # The first caller must be inside the cascade before the others queue, or the worker may take
        # several of them at once; every wait is bounded so a regression fails instead of hanging.
        threads = [call(60)]
        assert cascade.entered.wait(5), "the first caller never reached the cascade"
        threads += [call(w) for w in (70, 80, 90, 100)]
        assert wait_until(lambda: detector._queue.qsize() == 4), "the four later callers never queued"
        hold.set()
        for thread in threads:
            thread.join(5)
    finally:
        hold.set()
        detector.close()
    assert len(results) == 5 and sorted(r.boxes[0, 2] for r in results) == [59.0, 69.0, 79.0, 89.0, 99.0]
    assert len(cascade.calls) == 2 and len(cascade.calls[1][0]) == 4  # 1 alone, then 4 merged
    assert cascade.closed  # closing the detector closes its nets (a Triton client, say)


def wait_until(condition: Callable[[], bool], seconds: float = 5.0) -> bool:
    deadline = time.monotonic() + seconds
    while not condition():
        if time.monotonic() > deadline:
            return False
        time.sleep(0.01)
    return True


def test_a_failing_cascade_fails_every_waiting_caller_and_keeps_serving() -> None:
    class Failing(RecordingCascade):
        def detect_many(
            self, images: Sequence[np.ndarray], min_face_sizes: Sequence[int] | None = None
        ) -> list[Detections]:
            if len(self.calls) == 0:
                self.calls.append(([], []))
                raise RuntimeError("boom")
            return super().detect_many(images, min_face_sizes)

    detector = BatchedDetector(Failing(), AnalysisSize(max_side=0, min_face_size=20), max_batch=4)
    try:
        with pytest.raises(RuntimeError, match="boom"):
            detector.detect(np.zeros((50, 50, 3), np.uint8))
        assert len(detector.detect(np.zeros((50, 50, 3), np.uint8))) == 1
    finally:
        detector.close()


def test_reduced_is_antialiased() -> None:
    checker = ((np.indices((400, 400)).sum(axis=0) % 2) * 255).astype(np.uint8)
    small = reduced(np.repeat(checker[..., None], 3, axis=2), 0.25)
    assert small.shape == (100, 100, 3)
    assert abs(float(small.mean()) - 127.5) < 2 and float(small.std()) < 10  # grey, not a moiré


def test_mapped_back_is_identity_at_full_size() -> None:
    found = Detections(np.array([[1.0, 2.0, 3.0, 4.0]]), np.zeros((1, 5, 2)), np.array([0.9]))
    assert mapped_back(found, (10, 10), (10, 10)) is found


def test_several_workers_run_cascades_side_by_side_and_all_stop() -> None:
    started = threading.Barrier(3, timeout=5)  # two cascades in flight at once, plus this test

    class Parallel(RecordingCascade):
        def detect_many(
            self, images: Sequence[np.ndarray], min_face_sizes: Sequence[int] | None = None
        ) -> list[Detections]:
            started.wait()
            return super().detect_many(images, min_face_sizes)

    cascade = Parallel()
    detector = BatchedDetector(cascade, AnalysisSize(max_side=0, min_face_size=20), max_batch=1, workers=2)
    results: list[Detections] = []
    threads = [
        threading.Thread(target=lambda: results.append(detector.detect(np.zeros((50, 60, 3), np.uint8))))
        for _ in range(2)
    ]
    for thread in threads:
        thread.start()
    started.wait()  # only reached if both workers are inside a cascade at the same time
    for thread in threads:
        thread.join(5)
    detector.close()
    assert len(results) == 2 and cascade.closed
    assert not any(t.is_alive() for t in detector._threads)
