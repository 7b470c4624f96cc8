"""Clip bytes (or a spooled file) → sampled RGB frames, streamed one at a time with PyAV (FFmpeg).

Only the frames chosen by the sampling plan are converted to RGB, and they are yielded, not collected, so
the caller bounds memory by what it keeps. Hard limits are checked from the container's metadata before
decoding where it has them, and again while decoding (metadata can lie).
"""

from __future__ import annotations

import io
import logging
from collections.abc import Iterator
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

from service.exceptions import InvalidVideo, VideoTooLarge, VideoTooLong

logger = logging.getLogger(__name__)

# Container signatures: the upload's declared type and name are not trusted.
_EBML = b"\x1a\x45\xdf\xa3"  # Matroska / WebM
_MP4_BOXES = (b"ftyp", b"moov", b"mdat", b"wide", b"free", b"skip")
# ISO-BMFF brands of still pictures (HEIF/HEIC, AVIF): the same box layout as MP4, but not a clip.
_STILL_IMAGE_BRANDS = frozenset(
    {
        b"heic",
        b"heix",
        b"heim",
        b"heis",
        b"hevc",
        b"hevx",
        b"hevm",
        b"hevs",
        b"mif1",
        b"msf1",
        b"avif",
        b"avis",
    }
)


def sniff_video_format(data: bytes) -> str | None:
    """The clip container named by the leading bytes, or None when they are not a clip we accept."""
    if data[:4] == b"RIFF" and data[8:12] == b"AVI ":
        return "AVI"
    if data[4:8] == b"ftyp" and data[8:12] in _STILL_IMAGE_BRANDS:
        return None  # the image decoder refuses it as an unsupported image (415), not a broken clip
    if data[4:8] in _MP4_BOXES:
        return "QuickTime/MP4"
    if data.startswith(_EBML):
        return "Matroska/WebM"
    if data[:6] in (b"GIF87a", b"GIF89a") and is_animated_gif(data):
        return "GIF"
    return None


def is_animated_gif(data: bytes) -> bool:
    """More than one image descriptor after the header: an animation, analysed as a clip."""
    from PIL import Image

    try:
        with Image.open(io.BytesIO(data)) as image:
            return bool(getattr(image, "is_animated", False))
    except Exception:  # a broken GIF is the image decoder's to report
        return False


@dataclass(frozen=True)
class VideoLimits:
    max_duration_s: float
    max_pixels: int
    max_decoded_frames: int


@dataclass(frozen=True)
class SamplingPlan:
    """Which frames to analyse: ``fps`` (timestamp-based) or every ``stride``-th frame, capped."""

    fps: float | None
    stride: int | None
    max_frames: int
    max_duration_s: float


@dataclass(frozen=True)
class VideoFrame:
    index: int  # position among decoded frames
    timestamp_s: float
    rgb: npt.NDArray[np.uint8]


@dataclass
class ClipInfo:
    """What the container says, completed while decoding (frames_decoded, frames_analysed)."""

    container: str
    codec: str
    width: int
    height: int
    fps: float
    duration_s: float
    frames_decoded: int = 0
    frames_analysed: int = 0
    truncated: bool = False


ClipSource = bytes | Path  # an upload in memory (/predict) or spooled to disk (a job)


def open_clip(data: ClipSource, container: str, limits: VideoLimits) -> tuple[Any, Any, ClipInfo]:
    """Open the container, pick its first video stream, check the limits the metadata allows."""
    import av

    source = io.BytesIO(data) if isinstance(data, bytes) else str(data)
    try:
        handle = av.open(source, mode="r", metadata_errors="ignore")
    except (av.FFmpegError, ValueError, OSError) as exc:
        raise InvalidVideo("the clip could not be opened: the container is corrupt or unsupported") from exc
    if not handle.streams.video:
        handle.close()
        raise InvalidVideo("the container holds no video stream")
    stream = handle.streams.video[0]
    if stream.codec_context is None:  # the container names a codec FFmpeg does not know
        handle.close()
        raise InvalidVideo("the clip's video codec is unknown or unsupported")
    stream.thread_type = "AUTO"  # FFmpeg's own frame/slice threads; the GIL is released while decoding
    info = _clip_info(handle, stream, container)
    try:
        check_limits(info, limits)
    except Exception:
        handle.close()
        raise
    return handle, stream, info


def _clip_info(handle: Any, stream: Any, container: str) -> ClipInfo:
    rate = stream.average_rate or stream.guessed_rate or Fraction(0)
    duration = float(handle.duration / 1_000_000) if handle.duration else 0.0
    if not duration and stream.duration and stream.time_base:
        duration = float(stream.duration * stream.time_base)
    return ClipInfo(
        container=container,
        codec=str(stream.codec_context.name),
        width=int(stream.codec_context.width),
        height=int(stream.codec_context.height),
        fps=float(rate),
        duration_s=duration,
    )


def check_limits(info: ClipInfo, limits: VideoLimits) -> None:
    if info.width * info.height > limits.max_pixels:
        raise VideoTooLarge(
            f"clip is {info.width}x{info.height}; the limit is {limits.max_pixels} pixels per frame"
        )
    if info.duration_s > limits.max_duration_s:
        raise VideoTooLong(f"clip lasts {info.duration_s:.1f} s; the limit is {limits.max_duration_s:g} s")


class ClipReader:
    """Iterates the sampled frames of one clip; ``info`` is complete once iteration has finished."""

    def __init__(self, data: ClipSource, container: str, plan: SamplingPlan, limits: VideoLimits) -> None:
        self._handle, self._stream, self.info = open_clip(data, container, limits)
        self._plan, self._limits = plan, limits
        self._next_sample_s = 0.0
        self._frame_size: tuple[int, int] | None = None

    def __iter__(self) -> Iterator[VideoFrame]:
        import av

        try:
            for frame in self._handle.decode(self._stream):
                timestamp = self._timestamp(frame)  # once per frame, before it is counted
                if self._stop_before(frame, timestamp):
                    break
                if self._wanted(timestamp):
                    yield self._rgb_frame(frame, timestamp)
        except av.FFmpegError as exc:
            if self.info.frames_decoded == 0:
                raise InvalidVideo("the clip's video data is corrupt: no frame could be decoded") from exc
            # A damaged tail: keep what decoded cleanly and say so.
            logger.info("clip decoding stopped early after %d frames: %s", self.info.frames_decoded, exc)
            self.info.truncated = True
        finally:
            self._handle.close()
        self._complete_info()

    def _timestamp(self, frame: Any) -> float:
        if frame.pts is not None and frame.time_base:
            return max(0.0, float(frame.pts * frame.time_base))
        return self.info.frames_decoded / self.info.fps if self.info.fps else 0.0

    def _stop_before(self, frame: Any, timestamp: float) -> bool:
        if timestamp > self._limits.max_duration_s:
            raise VideoTooLong(f"clip runs past {self._limits.max_duration_s:g} s")
        if self.info.frames_decoded >= self._limits.max_decoded_frames:
            raise VideoTooLong(f"clip has more than {self._limits.max_decoded_frames} frames")
        if frame.width * frame.height > self._limits.max_pixels:
            raise VideoTooLarge(f"a frame is {frame.width}x{frame.height}, over the pixel limit")
        self._check_frame_size(frame)
        past_window = (
            timestamp > self._plan.max_duration_s or self.info.frames_analysed >= self._plan.max_frames
        )
        if past_window:
            self.info.truncated = True
        return past_window

    def _check_frame_size(self, frame: Any) -> None:
        # Frames are batched and tracked in one coordinate system: a clip must keep its size throughout.
        size = (int(frame.width), int(frame.height))
        if self._frame_size is None:
            self._frame_size = size
        elif size != self._frame_size:
            (w0, h0), (w1, h1) = self._frame_size, size
            raise InvalidVideo(f"the frame size changes mid-clip ({w0}x{h0}, then {w1}x{h1})")

    def _wanted(self, timestamp: float) -> bool:
        position = self.info.frames_decoded
        self.info.frames_decoded += 1
        if self._plan.fps is None:
            return position % (self._plan.stride or 1) == 0
        if timestamp + 1e-6 < self._next_sample_s:
            return False
        # Samples sit on a fixed 1/fps grid, so jittery timestamps do not drift the effective rate down.
        period = 1.0 / self._plan.fps
        while self._next_sample_s <= timestamp + 1e-6:
            self._next_sample_s += period
        return True

    def _rgb_frame(self, frame: Any, timestamp: float) -> VideoFrame:
        self.info.frames_analysed += 1
        rgb = frame.to_ndarray(format="rgb24")
        return VideoFrame(index=self.info.frames_decoded - 1, timestamp_s=timestamp, rgb=rgb)

    def _complete_info(self) -> None:
        if not self.info.duration_s and self.info.fps:
            self.info.duration_s = self.info.frames_decoded / self.info.fps


def probe_clip(source: ClipSource, container: str, limits: VideoLimits) -> ClipInfo:
    """What the container says, checked against ``limits`` (a job's upload, before it is queued)."""
    handle, _, info = open_clip(source, container, limits)
    handle.close()
    return info
