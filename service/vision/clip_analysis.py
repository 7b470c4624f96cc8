"""The CPU half of clip analysis: sampled frames → faces → tracks → aligned crops, in bounded memory.

Frames are decoded one at a time and detected in chunks (MTCNN batch mode); a chunk's frames are dropped
as soon as their faces are aligned, so memory holds one chunk of frames plus small crops. A clip on
/predict is one window; a long video (a job) is analysed as a stream of windows whose crops the caller
infers and drops (``ClipAnalysis.absorb`` keeps only small per-face rows and a bounded sample of each
track's crops), with one tracker across windows so track ids hold for the whole video. Runs in a worker
thread; the async pipeline then sends the crops to Triton.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field, replace

import numpy as np

from fermodels.contract import ModelConfig
from service.arrays import FloatArray
from service.detection.base import Detections, FaceDetector
from service.vision.cropping import CropGeometry, CroppedFaces, FaceCropper, FaceSelection
from service.vision.tracking import FaceTracker, TrackerConfig, appearance_descriptor
from service.vision.video import ClipInfo, ClipReader, ClipSource, SamplingPlan, VideoFrame, VideoLimits


@dataclass(frozen=True)
class FrameFaces:
    index: int
    timestamp_s: float
    detections: Detections
    track_ids: list[int]
    first_crop: int  # row of this frame's first face in ClipAnalysis.image_crops


@dataclass
class ClipAnalysis:
    info: ClipInfo
    frames: list[FrameFaces] = field(default_factory=list)
    image_crops: list[FloatArray] = field(default_factory=list)  # one per face, image model geometry
    video_crops: list[FloatArray] = field(default_factory=list)  # one per face, video model geometry
    # one 5 x 2 array per face: its landmarks in the image model's crop, [0, 1] (landmark models' input)
    image_landmarks: list[FloatArray] = field(default_factory=list)
    tracks: dict[int, list[int]] = field(default_factory=dict)  # track id → rows into the crop lists
    # row → (position in ``frames``, face index in that frame): the one map from a face row to its frame
    face_places: list[tuple[int, int]] = field(default_factory=list)
    # A long video's windows keep no crop rows, only a bounded, evenly spread sample per track (absorb)
    sampled: dict[int, TrackSample] | None = None

    @property
    def face_count(self) -> int:
        return len(self.face_places)

    def track_crops(self, track_id: int) -> list[FloatArray]:
        """The track's video-model crops in time order: all of them, or a long video's sample."""
        if self.sampled is not None:
            return self.sampled[track_id].crops
        return [self.video_crops[row] for row in self.tracks[track_id]]

    def absorb(self, window: ClipAnalysis, sample_size: int) -> None:
        """Append a later window's frames, tracks and face rows (numbered on from this analysis'), keeping
        none of its crops but a sample of at most ``sample_size`` per track."""
        rows, positions = self.face_count, len(self.frames)
        self.sampled = {} if self.sampled is None else self.sampled
        self.frames.extend(replace(f, first_crop=f.first_crop + rows) for f in window.frames)
        self.face_places.extend((position + positions, face) for position, face in window.face_places)
        for track_id, track_rows in window.tracks.items():
            self.tracks.setdefault(track_id, []).extend(row + rows for row in track_rows)
            sample = self.sampled.setdefault(track_id, TrackSample(sample_size))
            for row in track_rows:
                sample.offer(window.video_crops[row])

    def image_batch(self) -> FloatArray:
        """Every face crop as one N x 3 x S x S array (N may be 0)."""
        return np.stack(self.image_crops) if self.image_crops else np.zeros((0, 3, 1, 1), dtype=np.float32)

    def landmark_batch(self) -> FloatArray:
        """Every face's landmarks in its image-model crop, N x 5 x 2 (N may be 0)."""
        points = self.image_landmarks
        return np.stack(points) if points else np.zeros((0, 5, 2), dtype=np.float32)


@dataclass
class TrackSample:
    """At most ``size`` of a track's crops, evenly spread over however many it has (stride doubling):
    memory grows with the number of people, not with the video's length."""

    size: int
    crops: list[FloatArray] = field(default_factory=list)
    stride: int = 1
    seen: int = 0

    def offer(self, crop: FloatArray) -> None:
        if self.size > 0 and self.seen % self.stride == 0:
            self.crops.append(crop)
            if len(self.crops) > self.size:
                self.crops, self.stride = self.crops[::2], self.stride * 2
        self.seen += 1


@dataclass(frozen=True)
class AnalysisOptions:
    plan: SamplingPlan
    limits: VideoLimits
    tracker: TrackerConfig
    detect_batch: int
    selection: FaceSelection
    detect_pixels: int  # most pixels in one detection pass (Settings.video_detect_pixels)


class AnalysisAbandoned(Exception):
    """A clip's analysis stopped because its request was cancelled (nobody awaits the result)."""


def chunked(frames: Iterable[VideoFrame], size: int, pixels: int) -> Iterator[list[VideoFrame]]:
    """The frames in order, in chunks of at most ``size`` frames and ``pixels`` pixels (a frame larger
    than ``pixels`` alone): one detection pass each."""
    chunk: list[VideoFrame] = []
    held = 0
    for frame in frames:
        area = frame.rgb.shape[0] * frame.rgb.shape[1]
        if chunk and (len(chunk) == size or held + area > pixels):
            yield chunk
            chunk, held = [], 0
        chunk.append(frame)
        held += area
    if chunk:
        yield chunk


def analyse_clip(
    data: ClipSource,
    container: str,
    detector: FaceDetector,
    image_config: ModelConfig,
    video_config: ModelConfig,
    options: AnalysisOptions,
    on_frames: Callable[[int], None] = lambda _: None,
    abandoned: Callable[[], bool] = lambda: False,
) -> ClipAnalysis:
    """Decode, detect, track and align every sampled frame of one clip; stops between chunks once
    ``abandoned()`` (its request was cancelled: the client left)."""
    windows = analyse_windows(
        data, container, detector, image_config, video_config, options, None, on_frames, abandoned
    )
    return next(windows)


def analyse_windows(
    data: ClipSource,
    container: str,
    detector: FaceDetector,
    image_config: ModelConfig,
    video_config: ModelConfig,
    options: AnalysisOptions,
    window_frames: int | None,
    on_frames: Callable[[int], None] = lambda _: None,
    abandoned: Callable[[], bool] = lambda: False,
) -> Iterator[ClipAnalysis]:
    """One clip's analysis as windows of ``window_frames`` sampled frames (None: the whole clip as one).
    Every window shares the clip's ``ClipInfo`` (complete after the last) and one tracker."""
    reader = ClipReader(data, container, options.plan, options.limits)
    tracker = FaceTracker(options.tracker)
    cropper = FaceCropper(options.selection, CropGeometry.of(image_config), CropGeometry.of(video_config))
    analysis, done = ClipAnalysis(info=reader.info), 0
    for chunk in chunked(reader, options.detect_batch, options.detect_pixels):
        if abandoned():
            raise AnalysisAbandoned(f"stopped after {done} frames: the request was cancelled")
        found = detector.detect_batch(np.stack([frame.rgb for frame in chunk]))
        for frame, detections in zip(chunk, found, strict=True):
            _record(analysis, tracker, frame, cropper(frame.rgb, detections))
        on_frames(len(chunk))
        done += len(chunk)
        if window_frames is not None and len(analysis.frames) >= window_frames:
            yield analysis
            analysis = ClipAnalysis(info=reader.info)
    yield analysis  # the last window (maybe empty), once the reader has completed ``info``


def _record(analysis: ClipAnalysis, tracker: FaceTracker, frame: VideoFrame, cropped: CroppedFaces) -> None:
    faces, (image_crops, video_crops) = cropped.faces, cropped.crops
    appearances = [appearance_descriptor(crop) for crop in image_crops]
    ids = tracker.update(frame.timestamp_s, faces.boxes, faces.landmarks, appearances)
    first = analysis.face_count
    analysis.face_places.extend((len(analysis.frames), face) for face in range(len(ids)))
    analysis.frames.append(FrameFaces(frame.index, frame.timestamp_s, faces, ids, first))
    analysis.image_crops.extend(image_crops)
    analysis.image_landmarks.extend(cropped.landmarks[0])
    analysis.video_crops.extend(video_crops)
    for offset, track_id in enumerate(ids):
        analysis.tracks.setdefault(track_id, []).append(first + offset)


def resample_indices(count: int, clip_length: int) -> list[int]:
    """``clip_length`` positions spread evenly over ``count`` items (repeats when count is shorter)."""
    return [int(i) for i in np.rint(np.linspace(0, count - 1, clip_length))]


def track_clips(analysis: ClipAnalysis, clip_length: int) -> tuple[list[int], FloatArray]:
    """Track ids and their crop sequences resampled to the video model's clip length: N x T x 3 x S x S."""
    ids = sorted(analysis.tracks)
    clips = []
    for t in ids:
        crops = analysis.track_crops(t)
        clips.append(np.stack([crops[i] for i in resample_indices(len(crops), clip_length)]))
    empty = np.zeros((0, clip_length, 3, 1, 1), dtype=np.float32)
    return ids, np.stack(clips).astype(np.float32) if clips else empty
