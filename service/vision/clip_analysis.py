"""The CPU half of clip analysis: sampled frames → faces → tracks → aligned crops, in bounded memory.

Frames are decoded one at a time and detected in chunks (MTCNN batch mode); a chunk's frames are dropped
as soon as their faces are aligned, so memory holds one chunk of frames plus small crops, whatever the
clip's length. Runs in a worker thread; the async pipeline then sends the crops to Triton.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from itertools import islice

import numpy as np

from fermodels.config import ModelConfig
from service.arrays import FloatArray
from service.detection.base import Detections, FaceDetector
from service.vision.cropping import CropGeometry, CroppedFaces, FaceCropper, FaceSelection
from service.vision.tracking import FaceTracker, TrackerConfig, appearance_descriptor
from service.vision.video import ClipInfo, ClipReader, SamplingPlan, VideoFrame, VideoLimits


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

    @property
    def face_count(self) -> int:
        return len(self.image_crops)

    def image_batch(self) -> FloatArray:
        """Every face crop as one N x 3 x S x S array (N may be 0)."""
        return np.stack(self.image_crops) if self.image_crops else np.zeros((0, 3, 1, 1), dtype=np.float32)

    def landmark_batch(self) -> FloatArray:
        """Every face's landmarks in its image-model crop, N x 5 x 2 (N may be 0)."""
        points = self.image_landmarks
        return np.stack(points) if points else np.zeros((0, 5, 2), dtype=np.float32)


@dataclass(frozen=True)
class AnalysisOptions:
    plan: SamplingPlan
    limits: VideoLimits
    tracker: TrackerConfig
    detect_batch: int
    selection: FaceSelection


class AnalysisAbandoned(Exception):
    """A clip's analysis stopped because its request was cancelled (nobody awaits the result)."""


def chunked(frames: Iterable[VideoFrame], size: int) -> Iterator[list[VideoFrame]]:
    iterator = iter(frames)
    while chunk := list(islice(iterator, size)):
        yield chunk


def analyse_clip(
    data: bytes,
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
    reader = ClipReader(data, container, options.plan, options.limits)
    analysis = ClipAnalysis(info=reader.info)
    tracker = FaceTracker(options.tracker)
    cropper = FaceCropper(options.selection, CropGeometry.of(image_config), CropGeometry.of(video_config))
    for chunk in chunked(reader, options.detect_batch):
        if abandoned():
            raise AnalysisAbandoned(f"stopped after {len(analysis.frames)} frames: the request was cancelled")
        found = detector.detect_batch(np.stack([frame.rgb for frame in chunk]))
        for frame, detections in zip(chunk, found, strict=True):
            _record(analysis, tracker, frame, cropper(frame.rgb, detections))
        on_frames(len(chunk))
    return analysis


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
    clips = [
        np.stack(
            [
                analysis.video_crops[analysis.tracks[t][i]]
                for i in resample_indices(len(analysis.tracks[t]), clip_length)
            ]
        )
        for t in ids
    ]
    empty = np.zeros((0, clip_length, 3, 1, 1), dtype=np.float32)
    return ids, np.stack(clips).astype(np.float32) if clips else empty
