"""Clips the tests synthesise with PyAV from real face photos: moving, two people, leaving and re-entering.

Every clip is encoded in memory with a real codec (H.264, VP8, VP9, MJPEG, MPEG-4/XVID, GIF), so the
gateway decodes exactly what a user's upload would contain.
"""

from __future__ import annotations

import io
from collections.abc import Callable
from fractions import Fraction
from pathlib import Path

import av
import numpy as np
from PIL import Image

# (container format, codec, pixel format, file suffix, MIME type)
FORMATS: dict[str, tuple[str, str, str, str, str]] = {
    "mp4-h264": ("mp4", "libx264", "yuv420p", "mp4", "video/mp4"),
    "mov-h264": ("mov", "libx264", "yuv420p", "mov", "video/quicktime"),
    "webm-vp8": ("webm", "libvpx", "yuv420p", "webm", "video/webm"),
    "webm-vp9": ("webm", "libvpx-vp9", "yuv420p", "webm", "video/webm"),
    "avi-mjpeg": ("avi", "mjpeg", "yuvj420p", "avi", "video/x-msvideo"),
    "avi-xvid": ("avi", "mpeg4", "yuv420p", "avi", "video/x-msvideo"),
}

Frame = np.ndarray


def encode(frames: list[Frame], fps: int = 10, kind: str = "mp4-h264") -> bytes:
    """Encode RGB frames (H x W x 3 uint8, even sides) into one clip, in memory."""
    if kind == "gif":
        return encode_gif(frames, fps)
    container, codec, pix_fmt, _, _ = FORMATS[kind]
    buffer = io.BytesIO()
    with av.open(buffer, mode="w", format=container) as output:
        stream = output.add_stream(codec, rate=fps)
        stream.height, stream.width = frames[0].shape[:2]
        stream.pix_fmt = pix_fmt
        if kind == "avi-xvid":
            stream.codec_tag = "XVID"
        for frame in frames:
            output.mux(stream.encode(av.VideoFrame.from_ndarray(frame, format="rgb24")))
        output.mux(stream.encode())
    return buffer.getvalue()


def size_changing_mjpeg(sizes: list[tuple[int, int]]) -> bytes:
    """An MKV of MJPEG frames whose size changes mid-stream (each packet is its own JPEG, so it can)."""
    buffer = io.BytesIO()
    with av.open(buffer, mode="w", format="matroska") as output:
        stream = output.add_stream("mjpeg", rate=10)
        stream.time_base = Fraction(1, 10)
        stream.width, stream.height = sizes[0]
        stream.pix_fmt = "yuvj420p"
        for index, (width, height) in enumerate(sizes):
            jpeg = io.BytesIO()
            Image.new("RGB", (width, height), (120, 90, 60)).save(jpeg, format="JPEG")
            packet = av.Packet(jpeg.getvalue())
            packet.stream, packet.pts, packet.dts = stream, index, index
            output.mux(packet)
    return buffer.getvalue()


def with_unknown_codec(webm_vp8: bytes) -> bytes:
    """A WebM whose track names a codec id nobody knows (same length, so the EBML sizes stay valid)."""
    assert webm_vp8.count(b"V_VP8") == 1
    return webm_vp8.replace(b"V_VP8", b"V_QQQ")


def avi_without_frames(avi: bytes) -> bytes:
    """An AVI whose headers promise frames but whose ``movi`` list ends before the first one."""
    return avi[: avi.index(b"movi") + 4]


def noise_frames(count: int, width: int = 320, height: int = 120) -> list[Frame]:
    """Incompressible frames: a WebM of them has one big first cluster, so a cut keeps no whole frame."""
    rng = np.random.default_rng(0)
    return [rng.integers(0, 255, (height, width, 3), dtype=np.uint8) for _ in range(count)]


def encode_gif(frames: list[Frame], fps: int) -> bytes:
    images = [Image.fromarray(frame) for frame in frames]
    buffer = io.BytesIO()
    images[0].save(
        buffer, format="GIF", save_all=True, append_images=images[1:], duration=1000 // fps, loop=0
    )
    return buffer.getvalue()


def astronaut_face(media: Path) -> np.ndarray:
    """Eileen Collins' head and shoulders from scikit-image's astronaut (150 x 180 px)."""
    return np.asarray(Image.open(media / "astronaut.png").convert("RGB"))[30:210, 150:300]


def messi_face(media: Path) -> np.ndarray:
    """Messi's head from OpenCV's messi5.jpg, upscaled 4x (so MTCNN sees a ~110 px face)."""
    crop = Image.open(media / "messi5.jpg").convert("RGB").crop((205, 75, 275, 150))
    return np.asarray(crop.resize((280, 300)))


def scene(
    width: int, height: int, count: int, place: Callable[[int], list[tuple[np.ndarray, int, int]]]
) -> list[Frame]:
    """``count`` frames on a grey background; ``place(i)`` gives (patch, x, y) to paste in frame i."""
    frames = []
    for i in range(count):
        canvas = np.full((height, width, 3), 96, dtype=np.uint8)
        for patch, x, y in place(i):
            _paste(canvas, patch, x, y)
        frames.append(canvas)
    return frames


def _paste(canvas: np.ndarray, patch: np.ndarray, x: int, y: int) -> None:
    """Paste with clipping at the borders (faces may be partly or wholly outside the frame)."""
    height, width = canvas.shape[:2]
    x0, y0, x1, y1 = max(x, 0), max(y, 0), min(x + patch.shape[1], width), min(y + patch.shape[0], height)
    if x0 < x1 and y0 < y1:
        canvas[y0:y1, x0:x1] = patch[y0 - y : y1 - y, x0 - x : x1 - x]


def moving_face(media: Path, count: int = 20) -> list[Frame]:
    face = astronaut_face(media)
    return scene(640, 360, count, lambda i: [(face, 40 + i * 20, 90)])


def two_people(media: Path, count: int = 16) -> list[Frame]:
    left, right = astronaut_face(media), messi_face(media)
    return scene(800, 360, count, lambda i: [(left, 40 + i * 4, 90), (right, 460 - i * 4, 30)])


def leaving_and_returning(media: Path) -> list[Frame]:
    """In view for 1 s, out of view for 1.5 s, back for 1 s (10 fps)."""
    face = astronaut_face(media)
    return scene(640, 360, 35, lambda i: [] if 10 <= i < 25 else [(face, 60 + (i % 10) * 8, 90)])


def face_patch(path: Path, box: tuple[int, int, int, int], size: tuple[int, int] = (180, 220)) -> np.ndarray:
    """A head cut from a photo at ``box`` (left, top, right, bottom, with a margin), resized to ``size``."""
    return np.asarray(Image.open(path).convert("RGB").crop(box).resize(size))


def changing_expression(media: Path, count: int = 40) -> list[Frame]:
    """One person (Barack Obama, two real photos) at one place: smiling for the first half, then frowning."""
    smiling = face_patch(media / "faces" / "obama.jpg", (320, 20, 660, 490))
    frowning = face_patch(media / "faces" / "obama2.jpg", (140, 150, 520, 700))
    return scene(640, 420, count, lambda i: [(smiling if i < count // 2 else frowning, 150, 40)])


def real_cycle(media: Path, fps: float, size: tuple[int, int] = (720, 528), pad: bool = False) -> list[Frame]:
    """The real clips of the test media (Megamind.avi, then vtest.avi's first 10 s, resized to one frame
    size) sampled at ``fps``: one cycle of a long synthesised video. ``pad``: scaled to fit ``size`` with
    their aspect kept and centred on black (for sizes whose aspect differs, e.g. 1280x720)."""
    frames: list[Frame] = []
    for name, seconds in (("Megamind.avi", 60.0), ("vtest.avi", 10.0)):
        with av.open(str(media / name)) as source:
            next_at = 0.0
            for frame in source.decode(video=0):
                time = float(frame.pts * frame.time_base) if frame.pts is not None else 0.0
                if time > seconds:
                    break
                if time + 1e-6 >= next_at:
                    next_at += 1.0 / fps
                    image = Image.fromarray(frame.to_ndarray(format="rgb24"))
                    frames.append(np.asarray(fitted(image, size) if pad else image.resize(size)))
    return frames


def fitted(image: Image.Image, size: tuple[int, int]) -> Image.Image:
    """``image`` scaled to fit ``size`` (aspect kept), centred on a black canvas of that size."""
    scale = min(size[0] / image.width, size[1] / image.height)
    inner = image.resize((round(image.width * scale), round(image.height * scale)), Image.Resampling.BICUBIC)
    canvas = Image.new("RGB", size)
    canvas.paste(inner, ((size[0] - inner.width) // 2, (size[1] - inner.height) // 2))
    return canvas


def long_video(
    media: Path, seconds: float, path: Path, fps: int = 4, size: tuple[int, int] | None = None
) -> Path:
    """An AVI (MPEG-4 part 2) of ``seconds`` made by looping the real clips, encoded frame by frame to
    ``path`` (never whole in memory): the long footage jobs are tested and benchmarked on. ``size``: the
    frames scaled up (aspect kept, padded) to that size instead of the clips' own 720x528."""
    cycle = real_cycle(media, fps) if size is None else real_cycle(media, fps, size, pad=True)
    with av.open(str(path), mode="w", format="avi") as output:
        stream = output.add_stream("mpeg4", rate=fps)
        stream.height, stream.width = cycle[0].shape[:2]
        stream.pix_fmt, stream.codec_tag = "yuv420p", "XVID"
        for index in range(round(seconds * fps)):
            frame = av.VideoFrame.from_ndarray(cycle[index % len(cycle)], format="rgb24")
            output.mux(stream.encode(frame))
        output.mux(stream.encode())
    return path
