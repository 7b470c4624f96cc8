"""A live stream's frames, one at a time: the image path per frame, then the clip path's tracker and
smoothing fed incrementally, so each answer carries a stable ``track_id``, a smoothed expression and the
current segment.

The clip path sees a whole clip at once; a stream sees it frame by frame. The same ``FaceTracker`` assigns
ids (it is incremental already; ``forget`` bounds it for a stream that runs for hours) and the same
``temporal.smooth`` / ``temporal.segments`` run over each person's recent history (FER_STREAM_HISTORY_S):
a centred window at the newest frame covers only its past half, since the future has not arrived.
WebSocket mechanics (receiving, dropping, sending) live at the edge, in service/http/streaming.py.
"""

from __future__ import annotations

import math
from collections import deque
from dataclasses import dataclass, field, replace

import numpy as np

from service.arrays import Float64Array, FloatArray
from service.config import Settings
from service.schemas import (
    LANDMARK_NAMES,
    ExpressionSegment,
    FaceResult,
    LabelScore,
    PredictResponse,
    StreamFace,
    StreamOptions,
    StreamResult,
)
from service.serving.clip import track_smoothing, tracker_config
from service.serving.predict import PredictService, ensure_image_model
from service.serving.prompting import validate_prompts
from service.serving.responses import TrackSmoothing
from service.serving.temporal import segments, smooth
from service.vision.tracking import FaceTracker, TrackerConfig, appearance_descriptor


@dataclass(frozen=True)
class StreamConfig:
    """A stream's options, checked and capped once when it opens."""

    model: str
    prompts: tuple[str, ...]
    fps: float
    smoothing: TrackSmoothing


async def stream_config(options: StreamOptions, service: PredictService) -> StreamConfig:
    """The stream's options against the settings and the served models (raises the HTTP path's errors)."""
    settings = service.settings
    prompts = validate_prompts(options.prompts, settings)
    await ensure_image_model(service.inference, options.model or settings.default_model)
    defaults = track_smoothing(settings)
    window = defaults.window_s if options.smoothing_s is None else options.smoothing_s
    return StreamConfig(
        model=options.model or settings.default_model,
        prompts=prompts,
        fps=min(options.fps or settings.stream_default_fps, settings.stream_max_fps),
        smoothing=TrackSmoothing(window, defaults.min_segment_s),
    )


@dataclass
class History:
    """One person's recent frames: times, expression distributions, detection scores (bounded)."""

    times: deque[float]
    rows: deque[FloatArray]
    weights: deque[float]

    @classmethod
    def bounded(cls, frames: int) -> History:
        return cls(deque(maxlen=frames), deque(maxlen=frames), deque(maxlen=frames))

    def add(self, time_s: float, row: FloatArray, weight: float, keep_s: float) -> None:
        self.times.append(time_s)
        self.rows.append(row)
        self.weights.append(weight)
        while self.times and time_s - self.times[0] > keep_s:
            self.times.popleft()
            self.rows.popleft()
            self.weights.popleft()


@dataclass(frozen=True)
class PersonNow:
    """Where one tracked person stands at the newest frame."""

    track_id: int
    smoothed: FloatArray
    segment_label: int
    segment_start_s: float
    segment_end_s: float
    segment_frames: int
    segment_mean: float


@dataclass
class LiveTracks:
    """The clip path's tracker and smoothing, fed one frame at a time."""

    tracker: TrackerConfig
    smoothing: TrackSmoothing
    history_s: float
    history_frames: int
    _faces: FaceTracker = field(init=False)
    _people: dict[int, History] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self._faces = FaceTracker(self.tracker)

    def update(
        self, time_s: float, faces: list[FaceResult], crops: FloatArray, rows: FloatArray
    ) -> list[PersonNow]:
        """``rows``: each face's distribution (N x C); the people now, in the faces' order."""
        for gone in self._faces.forget(time_s):
            self._people.pop(gone, None)
        appearances = [appearance_descriptor(crop) for crop in crops]
        boxes, points, scores = face_geometry(faces)
        ids = self._faces.update(time_s, boxes, points, appearances)
        return [self._person(t, time_s, rows[i], float(scores[i])) for i, t in enumerate(ids)]

    def _person(self, track_id: int, time_s: float, row: FloatArray, weight: float) -> PersonNow:
        history = self._people.setdefault(track_id, History.bounded(self.history_frames))
        history.add(time_s, row, weight, self.history_s)
        times = np.array(history.times, dtype=np.float64)
        smoothed = smooth(np.stack(history.rows), times, np.array(history.weights), self.smoothing.window_s)
        current = segments(smoothed, times, self.smoothing.min_segment_s)[-1]
        return PersonNow(
            track_id=track_id,
            smoothed=smoothed[-1],
            segment_label=current.label,
            segment_start_s=float(times[current.start]),
            segment_end_s=float(times[current.stop]),
            segment_frames=current.stop - current.start + 1,
            segment_mean=current.mean_probability,
        )


def face_geometry(faces: list[FaceResult]) -> tuple[Float64Array, Float64Array, Float64Array]:
    """Boxes N x 4, landmarks N x 5 x 2 and detection scores N of an answer's faces."""
    boxes = np.array([[f.box.x1, f.box.y1, f.box.x2, f.box.y2] for f in faces], dtype=np.float64)
    points = np.array(
        [[[getattr(f.landmarks, n).x, getattr(f.landmarks, n).y] for n in LANDMARK_NAMES] for f in faces],
        dtype=np.float64,
    )
    scores = np.array([f.detection_score for f in faces], dtype=np.float64)
    return boxes.reshape(-1, 4), points.reshape(-1, 5, 2), scores


def distribution(face: FaceResult) -> FloatArray:
    """A face's expression distribution in the answer's (canonical) label order."""
    return np.array([score.probability for score in face.expressions], dtype=np.float32)


@dataclass(frozen=True)
class Frame:
    """One frame as the stream received it."""

    number: int
    data: bytes
    timestamp_s: float
    id: str | None = None
    received_at: float = 0.0  # time.monotonic() when it arrived (the answer's latency starts there)

    def at(self, timestamp_s: float) -> Frame:
        return replace(self, timestamp_s=timestamp_s)


@dataclass(frozen=True)
class Drops:
    since_last: int
    total: int


class StreamAnalyser:
    """One stream's analysis: each frame through the image path, its faces through the live tracks."""

    def __init__(self, service: PredictService, config: StreamConfig, settings: Settings) -> None:
        self._service, self.config = service, config
        frames = math.ceil(settings.stream_history_s * settings.stream_max_fps) + 1
        self._tracks = LiveTracks(
            tracker_config(settings), config.smoothing, settings.stream_history_s, frames
        )

    async def analyse(self, frame: Frame, drops: Drops) -> StreamResult:
        answer, crops = await self._service.predict_frame(frame.data, self.config.model, self.config.prompts)
        rows = np.stack([distribution(f) for f in answer.faces]) if answer.faces else np.zeros((0, 1))
        people = self._tracks.update(frame.timestamp_s, answer.faces, crops, rows.astype(np.float32))
        return stream_result(frame, answer, people, drops)


def stream_result(
    frame: Frame, answer: PredictResponse, people: list[PersonNow], drops: Drops
) -> StreamResult:
    return StreamResult(
        frame=frame.number,
        id=frame.id,
        timestamp_s=round(frame.timestamp_s, 3),
        image=answer.image,
        faces=[stream_face(face, person) for face, person in zip(answer.faces, people, strict=True)],
        dropped=drops.since_last,
        dropped_total=drops.total,
        timings_ms=answer.timings_ms,
    )


def stream_face(face: FaceResult, person: PersonNow) -> StreamFace:
    labels = [score.label for score in face.expressions]
    smoothed = [
        LabelScore(label=label, probability=round(float(p), 6))
        for label, p in zip(labels, person.smoothed, strict=True)
    ]
    best = int(np.argmax(person.smoothed))
    return StreamFace(
        **face.model_dump(),
        track_id=person.track_id,
        smoothed_expression=smoothed[best],
        smoothed_expressions=smoothed,
        segment=ExpressionSegment(
            label=labels[person.segment_label],
            start_s=round(person.segment_start_s, 3),
            end_s=round(person.segment_end_s, 3),
            frames=person.segment_frames,
            mean_probability=round(person.segment_mean, 6),
        ),
    )
