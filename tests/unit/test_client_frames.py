"""fer-client's frame sampling for live streams: ``--fps`` is the rate the stream gets."""

from __future__ import annotations

from pathlib import Path

import av
import numpy as np
import pytest

from fer_client.stream import video_frames


def write_video(path: Path, fps: int, seconds: float) -> None:
    with av.open(str(path), "w") as container:
        stream = container.add_stream("mpeg4", rate=fps)
        stream.width, stream.height, stream.pix_fmt = 64, 48, "yuv420p"
        for index in range(round(fps * seconds)):
            pixels = np.full((48, 64, 3), index % 256, dtype=np.uint8)
            container.mux(stream.encode(av.VideoFrame.from_ndarray(pixels, format="rgb24")))
        container.mux(stream.encode())


@pytest.mark.parametrize(
    ("source_fps", "fps", "expected"), [(24, 5, 30), (30, 5, 30), (25, 10, 60), (24, 30, 144)]
)
def test_frames_are_kept_on_a_fixed_grid_at_the_asked_rate(
    tmp_path: Path, source_fps: int, fps: float, expected: int
) -> None:
    path = tmp_path / "clip.avi"
    write_video(path, source_fps, 6.0)
    times = [t for t, _ in video_frames(str(path), fps=fps)]
    assert len(times) == expected  # 6 s at min(fps, the video's own rate)
    slots = [int(t * fps + 1e-6) for t in times]
    assert len(set(slots)) == len(slots)  # at most one frame per 1/fps slot
