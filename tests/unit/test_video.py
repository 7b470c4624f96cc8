"""Clip decoding and sampling with PyAV on clips synthesised in memory (no detector, no Triton)."""

import numpy as np
import pytest

from devstack import clips
from service.exceptions import InvalidVideo, VideoTooLarge, VideoTooLong
from service.vision.clip_analysis import chunked, resample_indices
from service.vision.video import ClipReader, SamplingPlan, VideoFrame, VideoLimits, sniff_video_format

LIMITS = VideoLimits(max_duration_s=60, max_pixels=1920 * 1080, max_decoded_frames=3600)


def frames(count: int, width: int = 64, height: int = 48) -> list[np.ndarray]:
    """Frame i is filled with grey level 10 * i, so decoded frames can be told apart."""
    return [np.full((height, width, 3), 10 * i, dtype=np.uint8) for i in range(count)]


def plan(
    fps: float | None = None, stride: int | None = None, max_frames: int = 64, max_s: float = 60
) -> SamplingPlan:
    return SamplingPlan(fps=fps, stride=stride, max_frames=max_frames, max_duration_s=max_s)


def read(data: bytes, container: str = "QuickTime/MP4", sampling: SamplingPlan | None = None) -> tuple:
    reader = ClipReader(data, container, sampling or plan(stride=1), LIMITS)
    decoded = list(reader)
    return reader.info, decoded


@pytest.mark.parametrize(
    ("kind", "container"),
    [
        ("mp4-h264", "QuickTime/MP4"),
        ("mov-h264", "QuickTime/MP4"),
        ("webm-vp8", "Matroska/WebM"),
        ("webm-vp9", "Matroska/WebM"),
        ("avi-mjpeg", "AVI"),
        ("avi-xvid", "AVI"),
        ("gif", "GIF"),
    ],
)
def test_every_container_and_codec_is_sniffed_and_decoded(kind: str, container: str) -> None:
    data = clips.encode(frames(10), fps=10, kind=kind)
    assert sniff_video_format(data) == container
    info, decoded = read(data, container)
    assert info.frames_decoded == 10 and len(decoded) == 10
    assert decoded[0].rgb.shape == (48, 64, 3)
    grey = [float(frame.rgb.mean()) for frame in decoded]
    assert grey == sorted(grey) and grey[-1] - grey[0] > 60  # frames come out in order
    assert [f.timestamp_s for f in decoded] == sorted(f.timestamp_s for f in decoded)
    assert info.duration_s == pytest.approx(1.0, abs=0.15)


def test_images_and_single_frame_gifs_are_not_clips() -> None:
    assert sniff_video_format(b"\xff\xd8\xff\xe0") is None
    assert sniff_video_format(clips.encode_gif(frames(1), 10)) is None
    assert sniff_video_format(b"hello world, not a clip") is None


def test_fps_sampling_follows_the_clock() -> None:
    info, decoded = read(clips.encode(frames(30), fps=10), sampling=plan(fps=2.0))  # 3 s at 10 fps
    assert info.frames_decoded == 30
    assert [round(f.timestamp_s, 1) for f in decoded] == [0.0, 0.5, 1.0, 1.5, 2.0, 2.5]


def test_stride_max_frames_and_max_duration() -> None:
    data = clips.encode(frames(30), fps=10)
    _, strided = read(data, sampling=plan(stride=7))
    assert [f.index for f in strided] == [0, 7, 14, 21, 28]
    info, capped = read(data, sampling=plan(stride=1, max_frames=4))
    assert len(capped) == 4 and info.truncated
    info, early = read(data, sampling=plan(stride=1, max_s=0.95))
    assert len(early) == 10 and info.truncated


def test_one_frame_clip() -> None:
    info, decoded = read(clips.encode(frames(1), fps=10))
    assert info.frames_decoded == 1 and len(decoded) == 1


def test_corrupt_clip_is_invalid() -> None:
    data = clips.encode(frames(10), fps=10)
    garbage = data[:40] + bytes(np.random.default_rng(0).integers(0, 256, 4000, dtype=np.uint8))
    with pytest.raises(InvalidVideo):
        read(garbage)


def test_too_long_clip_is_refused_from_metadata() -> None:
    data = clips.encode(frames(3, 16, 16), fps=1)  # 3 s
    with pytest.raises(VideoTooLong):
        ClipReader(data, "QuickTime/MP4", plan(stride=1), VideoLimits(2.0, 10_000, 100))


def test_too_many_frames_is_refused_while_decoding() -> None:
    data = clips.encode(frames(20, 16, 16), fps=10)
    with pytest.raises(VideoTooLong):
        list(ClipReader(data, "QuickTime/MP4", plan(stride=1), VideoLimits(60, 10_000, 5)))


def test_oversized_frames_are_refused() -> None:
    data = clips.encode(frames(2, 128, 96), fps=10)
    with pytest.raises(VideoTooLarge):
        ClipReader(data, "QuickTime/MP4", plan(stride=1), VideoLimits(60, 100 * 100, 100))


def test_resample_indices() -> None:
    assert resample_indices(1, 4) == [0, 0, 0, 0]
    assert resample_indices(4, 4) == [0, 1, 2, 3]
    assert resample_indices(32, 4) == [0, 10, 21, 31]
    assert resample_indices(3, 6) == [0, 0, 1, 1, 2, 2]


def test_a_frame_size_change_mid_clip_is_invalid() -> None:
    data = clips.size_changing_mjpeg([(64, 48)] * 3 + [(128, 96)] * 3)
    with pytest.raises(InvalidVideo, match="frame size changes"):
        read(data, "Matroska/WebM")


def test_an_unknown_codec_id_is_invalid() -> None:
    data = clips.with_unknown_codec(clips.encode(frames(4), kind="webm-vp8"))
    with pytest.raises(InvalidVideo, match="codec"):
        read(data, "Matroska/WebM")


def test_detection_chunks_hold_at_most_their_frames_and_pixels() -> None:
    def frame_of(index: int, width: int, height: int) -> VideoFrame:
        return VideoFrame(index, index / 10, np.zeros((height, width, 3), dtype=np.uint8))

    small = [frame_of(i, 720, 528) for i in range(20)]
    assert [len(c) for c in chunked(small, 8, 3_100_000)] == [8, 8, 4]  # 8 x 720x528 fits
    hd = [frame_of(i, 1280, 720) for i in range(7)]
    assert [len(c) for c in chunked(hd, 8, 3_100_000)] == [3, 3, 1]  # 3 x 921,600 px fit, 4 do not
    full_hd = [frame_of(i, 1920, 1080) for i in range(2)]
    assert [len(c) for c in chunked(full_hd, 8, 1_000_000)] == [1, 1]  # a larger frame goes alone
    assert [f.index for c in chunked(hd, 8, 3_100_000) for f in c] == list(range(7))
    assert list(chunked([], 8, 3_100_000)) == []
