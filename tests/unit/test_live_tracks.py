"""The clip path's tracker and smoothing fed one frame at a time (service/serving/stream.py LiveTracks)."""

from __future__ import annotations

import numpy as np
import pytest

from service.schemas import LANDMARK_NAMES, Box, FaceResult, LabelScore, Landmarks, Point
from service.serving.responses import TrackSmoothing
from service.serving.stream import LiveTracks
from service.vision.tracking import FaceTracker, TrackerConfig

LABELS = ("neutral", "happiness")


def face(x: float) -> FaceResult:
    points = {
        name: Point(x=x + dx, y=50.0) for name, dx in zip(LANDMARK_NAMES, range(10, 60, 10), strict=True)
    }
    return FaceResult(
        box=Box(x1=x, y1=0.0, x2=x + 80.0, y2=80.0),
        landmarks=Landmarks(**points),
        detection_score=0.99,
        expression=LabelScore(label="neutral", probability=1.0),
        expressions=[LabelScore(label=label, probability=0.5) for label in LABELS],
        text_similarity=[],
    )


def tracks(**overrides: float) -> LiveTracks:
    config = TrackerConfig(max_gap_s=1.0, reid_window_s=overrides.get("reid_window_s", 5.0))
    return LiveTracks(config, TrackSmoothing(window_s=1.0, min_segment_s=0.0), 30.0, 100)


def crops(count: int, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).random((count, 3, 32, 32)).astype(np.float32)


def test_two_people_keep_their_ids_and_the_smoothing_and_segment_follow_the_frames() -> None:
    live = tracks()
    happy, neutral = np.array([0.2, 0.8], np.float32), np.array([0.9, 0.1], np.float32)
    for step in range(6):
        x = 5.0 * step  # both drift right a little each frame
        rows = np.stack([neutral if step < 4 else happy, neutral])
        people = live.update(0.2 * step, [face(x), face(300 + x)], crops(2), rows)
        assert [p.track_id for p in people] == [1, 2]
    first = people[0]
    # The newest frame's smoothed row mixes the window's past half (t = 0.6 neutral, 0.8 and 1.0 happy):
    # happiness on top, below the raw 0.8; the current segment is that last smoothed run.
    assert first.smoothed[1] == pytest.approx((0.1 + 0.8 + 0.8) / 3, abs=1e-5)
    assert first.segment_label == 1 and first.segment_frames == 1
    assert first.segment_start_s == first.segment_end_s == pytest.approx(1.0)
    assert people[1].segment_label == 0 and people[1].segment_frames == 6


def test_people_unseen_past_the_reid_window_are_forgotten_and_ids_never_reused() -> None:
    live = tracks(reid_window_s=2.0)
    row = np.array([[0.5, 0.5]], np.float32)
    assert live.update(0.0, [face(0.0)], crops(1, 1), row)[0].track_id == 1
    assert live.update(10.0, [face(500.0)], crops(1, 2), row)[0].track_id == 2  # person 1 is forgotten
    assert [t.track_id for t in live._faces.tracks] == [2]
    assert set(live._people) == {2}


def test_forget_keeps_recent_tracks() -> None:
    tracker = FaceTracker(TrackerConfig(reid_window_s=5.0))
    box, points = np.array([[0.0, 0.0, 10.0, 10.0]]), np.zeros((1, 5, 2))
    appearance = [np.ones(256) / 16.0]
    tracker.update(0.0, box, points, appearance)
    assert tracker.forget(4.0) == [] and tracker.forget(6.0) == [1]
    assert tracker.update(6.0, box, points, appearance) == [2]
