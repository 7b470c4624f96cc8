"""Every real face photo available offline and label-preserving variants of it, for the front-end evaluation.

A variant knows how it moved the picture (``to_variant`` maps original pixel coordinates into the variant),
so a face found in the original can be found again in each variant without labels.
"""

from __future__ import annotations

import io
import math
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import av
import numpy as np
import numpy.typing as npt
from PIL import Image, ImageEnhance

from devstack.media import ensure_face_photos, ensure_media

Points = npt.NDArray[np.float64]  # N x 2 (x, y)
PointMap = Callable[[Points], Points]
ROTATIONS_DEG = (-30, -20, -10, 10, 20, 30)
MEGAMIND_SECONDS = (0.5, 2.0, 3.5, 5.0, 6.5, 8.0, 9.5, 11.0)
# Photos are reduced to this longest side (anti-aliased) so the 12 variants of each stay quick to detect.
MAX_SIDE = 800


@dataclass(frozen=True)
class Photo:
    name: str
    image: Image.Image  # RGB


@dataclass(frozen=True)
class Variant:
    photo: str
    kind: str  # "original", "rot+10", "small+jpeg", "mirror", "dim", "scene"
    image: Image.Image
    to_variant: PointMap


def photos() -> list[Photo]:
    """OpenCV's messi5, scikit-image's astronaut, the face photos of two PyPI sdists, Megamind frames,
    and a sheet of several of them (the multi-face case)."""
    media = ensure_media()
    found = [Photo(p.stem, _rgb(Image.open(p))) for p in (media / "messi5.jpg", media / "astronaut.png")]
    found += [Photo(p.stem, _rgb(Image.open(p))) for p in ensure_face_photos()]
    found += list(_clip_frames(media / "Megamind.avi"))
    return [*found, _sheet(found[:6])]


def _rgb(image: Image.Image) -> Image.Image:
    rgb = image.convert("RGB")
    rgb.thumbnail((MAX_SIDE, MAX_SIDE), Image.Resampling.LANCZOS)
    return rgb


def _clip_frames(path: Path) -> Iterator[Photo]:
    wanted = list(MEGAMIND_SECONDS)
    with av.open(str(path)) as container:
        for frame in container.decode(video=0):
            if wanted and frame.time is not None and frame.time >= wanted[0]:
                yield Photo(f"megamind@{wanted.pop(0)}s", frame.to_image().convert("RGB"))


def _sheet(sources: list[Photo]) -> Photo:
    """The photos' thumbnails side by side on one canvas: several faces in one upload."""
    thumbs = [p.image.copy() for p in sources]
    for thumb in thumbs:
        thumb.thumbnail((360, 360))
    sheet = Image.new("RGB", (sum(t.width for t in thumbs), max(t.height for t in thumbs)), (90, 90, 90))
    x = 0
    for thumb in thumbs:
        sheet.paste(thumb, (x, 0))
        x += thumb.width
    return Photo("sheet", sheet)


def variants(photo: Photo, background: Image.Image) -> list[Variant]:
    """The original and its label-preserving variants."""
    image = photo.image
    made = [Variant(photo.name, "original", image, lambda p: p)]
    made += [_rotated(photo, angle) for angle in ROTATIONS_DEG]
    made += [_small_jpeg(photo), _mirrored(photo), _dimmed(photo), _in_scene(photo, background)]
    return made


def _rotated(photo: Photo, angle: float) -> Variant:
    """Counter-clockwise by ``angle`` degrees about the centre, canvas expanded (no face is cut off)."""
    image = photo.image
    rotated = image.rotate(angle, resample=Image.Resampling.BICUBIC, expand=True, fillcolor=(128, 128, 128))
    a = math.radians(angle)
    centre = np.array([image.width / 2.0, image.height / 2.0])
    new_centre = np.array([rotated.width / 2.0, rotated.height / 2.0])
    # PIL turns the picture counter-clockwise on screen (y points down).
    matrix = np.array([[math.cos(a), math.sin(a)], [-math.sin(a), math.cos(a)]])
    return Variant(photo.name, f"rot{angle:+d}", rotated, lambda p: (p - centre) @ matrix.T + new_centre)


def _small_jpeg(photo: Photo, factor: float = 0.4, quality: int = 35) -> Variant:
    image = photo.image
    size = (max(1, round(image.width * factor)), max(1, round(image.height * factor)))
    small = image.resize(size, Image.Resampling.BILINEAR, reducing_gap=None)
    buffer = io.BytesIO()
    small.save(buffer, "JPEG", quality=quality)
    decoded = Image.open(io.BytesIO(buffer.getvalue())).convert("RGB")
    fx, fy = size[0] / image.width, size[1] / image.height
    return Variant(photo.name, "small+jpeg", decoded, lambda p: (p + 0.5) * np.array([fx, fy]) - 0.5)


def _mirrored(photo: Photo) -> Variant:
    image = photo.image
    width = image.width
    return Variant(
        photo.name,
        "mirror",
        image.transpose(Image.Transpose.FLIP_LEFT_RIGHT),
        lambda p: np.stack([width - 1 - p[:, 0], p[:, 1]], axis=1),
    )


def _dimmed(photo: Photo, factor: float = 0.6) -> Variant:
    return Variant(photo.name, "dim", ImageEnhance.Brightness(photo.image).enhance(factor), lambda p: p)


def _in_scene(photo: Photo, background: Image.Image) -> Variant:
    """Pasted, mirrored and dimmed, into a real scene twice its size (OpenCV's fruits.jpg)."""
    image = ImageEnhance.Brightness(photo.image.transpose(Image.Transpose.FLIP_LEFT_RIGHT)).enhance(0.6)
    scene = background.resize((image.width * 2, image.height * 2), Image.Resampling.BICUBIC)
    offset = np.array([image.width * 0.6, image.height * 0.4]).round()
    scene.paste(image, (int(offset[0]), int(offset[1])))
    width = image.width
    return Variant(
        photo.name,
        "scene",
        scene,
        lambda p: np.stack([width - 1 - p[:, 0], p[:, 1]], axis=1) + offset,
    )
