"""Face tracking across sampled frames: IoU first, landmark distance second, appearance for re-entries.

A face is matched to the track whose last box overlaps it most (IoU ≥ ``min_iou``); a face that moved too
far for any overlap between two sampled frames is matched by landmark distance relative to face size. A
track survives ``max_gap_s`` without a face (occlusion, a missed detection); a track seen in the frame
just before is never "without a face", however long ago that frame came within the re-identification
window (a live stream on a slow link or a busy server answers a frame every few seconds, and its people
must keep their ids). A face that motion cannot
explain (a person who left and came back, a jump after a cut) is matched to a track seen within
``reid_window_s`` by appearance (a normalised grey thumbnail of the aligned face): without an identity
model this is only reliable for short absences and distinct-looking people.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from service.arrays import Float64Array, FloatArray


@dataclass(frozen=True)
class TrackerConfig:
    min_iou: float = 0.3
    max_landmark_distance: float = 0.6  # mean landmark shift / face size
    max_gap_s: float = 1.0
    reid_window_s: float = 5.0
    min_appearance_similarity: float = 0.8


@dataclass
class Track:
    track_id: int
    box: Float64Array
    landmarks: Float64Array
    appearance: Float64Array
    last_seen_s: float


def iou(a: Float64Array, b: Float64Array) -> float:
    x1, y1 = max(a[0], b[0]), max(a[1], b[1])
    x2, y2 = min(a[2], b[2]), min(a[3], b[3])
    inter = max(0.0, x2 - x1) * max(0.0, y2 - y1)
    union = (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter
    return float(inter / union) if union > 0 else 0.0


def landmark_distance(a: Float64Array, b: Float64Array, box: Float64Array) -> float:
    """Mean distance between corresponding landmarks, in units of face size (box diagonal)."""
    size = float(np.hypot(box[2] - box[0], box[3] - box[1])) or 1.0
    return float(np.linalg.norm(a - b, axis=1).mean() / size)


def appearance_descriptor(crop: FloatArray) -> Float64Array:
    """A 3xSxS aligned face → a zero-mean, unit-norm 16x16 grey thumbnail (cosine-comparable)."""
    grey = crop.mean(axis=0)
    size = grey.shape[0] - grey.shape[0] % 16
    thumb = grey[:size, :size].reshape(16, size // 16, 16, size // 16).mean(axis=(1, 3)).astype(np.float64)
    centred: Float64Array = thumb.ravel() - thumb.mean()
    norm = float(np.linalg.norm(centred))
    return centred / norm if norm > 0 else centred


class FaceTracker:
    """Assigns stable track ids to the faces of successive sampled frames."""

    def __init__(self, config: TrackerConfig | None = None) -> None:
        self.config = config or TrackerConfig()
        self.tracks: list[Track] = []
        self._issued = 0  # ids are never reused, even once their tracks are forgotten
        self._previous_frame_s: float | None = None

    def forget(self, now_s: float) -> list[int]:
        """Drop the tracks unseen for longer than the re-identification window (none of them could match
        again): a live stream then holds only its recent people, however long it runs. Their ids."""
        keep = self.config.reid_window_s
        gone = [t.track_id for t in self.tracks if now_s - t.last_seen_s > keep]
        self.tracks = [t for t in self.tracks if now_s - t.last_seen_s <= keep]
        return gone

    def _active(self, track: Track, now_s: float) -> bool:
        """Seen within the gap, or in the frame just before this one (then it missed no frame at all)."""
        return (
            now_s - track.last_seen_s <= self.config.max_gap_s or track.last_seen_s == self._previous_frame_s
        )

    def update(
        self,
        timestamp_s: float,
        boxes: Float64Array,
        landmarks: Float64Array,
        appearances: list[Float64Array],
    ) -> list[int]:
        """Track ids for this frame's faces, in their order."""
        active = [t for t in self.tracks if self._active(t, timestamp_s)]
        recent = [t for t in self.tracks if timestamp_s - t.last_seen_s <= self.config.reid_window_s]
        assigned = self._match_by_motion(active, boxes, landmarks)
        # Whoever motion could not explain (a re-entry, a jump after a cut) may still be a recent track.
        matched = {id(t) for t in assigned if t is not None}
        self._match_by_appearance([t for t in recent if id(t) not in matched], appearances, assigned)
        ids = []
        for face, track in enumerate(assigned):
            track = track or self._new_track(boxes[face], landmarks[face], appearances[face], timestamp_s)
            self._extend(track, timestamp_s, boxes[face], landmarks[face], appearances[face])
            ids.append(track.track_id)
        self._previous_frame_s = timestamp_s
        return ids

    def _match_by_motion(
        self, tracks: list[Track], boxes: Float64Array, landmarks: Float64Array
    ) -> list[Track | None]:
        """Greedy: best IoU pairs first, then landmark distance for faces that moved beyond any overlap."""
        assigned: list[Track | None] = [None] * len(boxes)
        pairs = [(iou(t.box, boxes[f]), f, t) for t in tracks for f in range(len(boxes))]
        self._greedy(sorted(pairs, key=lambda p: -p[0]), assigned, lambda score: score >= self.config.min_iou)
        used = {id(t) for t in assigned if t is not None}
        distances = [
            (landmark_distance(t.landmarks, landmarks[f], t.box), f, t)
            for t in tracks
            if id(t) not in used
            for f in range(len(boxes))
            if assigned[f] is None
        ]
        self._greedy(
            sorted(distances, key=lambda p: p[0]), assigned, lambda d: d <= self.config.max_landmark_distance
        )
        return assigned

    def _match_by_appearance(
        self, lost: list[Track], appearances: list[Float64Array], assigned: list[Track | None]
    ) -> None:
        pairs = [
            (float(t.appearance @ appearances[f]), f, t)
            for t in lost
            for f in range(len(appearances))
            if assigned[f] is None
        ]
        self._greedy(
            sorted(pairs, key=lambda p: -p[0]), assigned, lambda s: s >= self.config.min_appearance_similarity
        )

    @staticmethod
    def _greedy(
        pairs: list[tuple[float, int, Track]], assigned: list[Track | None], accept: Callable[[float], bool]
    ) -> None:
        taken = {id(t) for t in assigned if t is not None}
        for score, face, track in pairs:
            if assigned[face] is None and id(track) not in taken and accept(score):
                assigned[face] = track
                taken.add(id(track))

    def _new_track(
        self, box: Float64Array, points: Float64Array, appearance: Float64Array, now: float
    ) -> Track:
        self._issued += 1
        track = Track(self._issued, box, points, appearance, now)
        self.tracks.append(track)
        return track

    @staticmethod
    def _extend(
        track: Track, now: float, box: Float64Array, points: Float64Array, appearance: Float64Array
    ) -> None:
        track.box, track.landmarks, track.last_seen_s = box, points, now
        # A running average keeps the appearance robust to one bad frame.
        blended = 0.7 * track.appearance + 0.3 * appearance
        track.appearance = blended / (np.linalg.norm(blended) or 1.0)
