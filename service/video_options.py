"""A clip request's analysis options (parsed from the query by schemas, used by the video pipeline)."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class VideoOptions:
    """Per-request choices, each bounded by Settings."""

    fps: float | None = None
    stride: int | None = None
    max_frames: int | None = None
    max_duration_s: float | None = None
    include_timeline: bool = True
    include_tracks: bool = True
    include_stt: bool = False  # the spatio-temporal model's output even when it is untrained
