"""Draw the API's answer onto the picture with Pillow: each face's box, its top expression and a few
probability bars; for clips, a contact sheet of analysed frames. Pure functions: no I/O, no app state."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from io import BytesIO
from typing import Literal, TypeVar

import numpy as np
import numpy.typing as npt
from PIL import Image, ImageDraw, ImageFont

from service.schemas import FaceResult, TimelineFrame

OutputFormat = Literal["JPEG", "PNG"]
MEDIA_TYPES: dict[OutputFormat, str] = {"JPEG": "image/jpeg", "PNG": "image/png"}

# Okabe-Ito colours: distinguishable with the common colour-vision deficiencies, and dark text reads on all.
PALETTE = ("#E69F00", "#56B4E9", "#009E73", "#F0E442", "#0072B2", "#D55E00", "#CC79A7")
INK, PAPER = "#111111", "#FFFFFF"
BARS_PER_FACE = 3
SHEET_COLUMNS = 4
UNTRAINED_BANNER = "UNTRAINED MODEL: these labels are NOT predictions"

Font = ImageFont.FreeTypeFont | ImageFont.ImageFont
T = TypeVar("T")


@dataclass(frozen=True)
class SheetTile:
    """One analysed frame, already shrunk, with the factor from source pixels to tile pixels."""

    image: Image.Image
    scale: float
    frame: TimelineFrame


def output_format(accept: str | None) -> OutputFormat:
    """PNG when the client ranks image/png above image/jpeg; JPEG otherwise (the default, also for */*)."""
    png = jpeg = 0.0
    for media_range in (accept or "").split(","):
        kind, _, params = media_range.strip().partition(";")
        quality = _quality(params)
        if kind.strip().lower() == "image/png":
            png = max(png, quality)
        elif kind.strip().lower() in ("image/jpeg", "image/jpg"):
            jpeg = max(jpeg, quality)
    return "PNG" if png > jpeg else "JPEG"


def _quality(params: str) -> float:
    for param in params.split(";"):
        name, _, value = param.strip().partition("=")
        if name.strip().lower() == "q":
            try:
                return float(value)
            except ValueError:
                return 0.0
    return 1.0


def encode(image: Image.Image, fmt: OutputFormat) -> bytes:
    buffer = BytesIO()
    options = {"quality": 90} if fmt == "JPEG" else {}
    image.convert("RGB").save(buffer, format=fmt, **options)
    return buffer.getvalue()


def font_for(width: int, height: int) -> Font:
    """Text that stays readable on a thumbnail and does not swamp a large photo."""
    size = int(np.clip(max(width, height) / 45, 12, 36))
    return ImageFont.load_default(size=size)


def annotated_image(
    rgb: npt.NDArray[np.uint8], faces: Sequence[FaceResult], *, trained: bool, max_side: int
) -> Image.Image:
    """The photo with its faces drawn, shrunk first when its longest side exceeds ``max_side``."""
    image, scale = fitted(rgb, max_side, max_side)
    return drawn(image, scale, faces, trained=trained)


def drawn(image: Image.Image, scale: float, faces: Sequence[FaceResult], *, trained: bool) -> Image.Image:
    """``image`` (the photo at ``scale`` of its full pixels, where the faces' coordinates are) drawn on."""
    draw_faces(image, faces, scale=scale, font=font_for(image.width, image.height))
    if not trained:
        draw_banner(image, UNTRAINED_BANNER, font_for(image.width, image.height))
    return image


def draw_faces(image: Image.Image, faces: Sequence[FaceResult], *, scale: float, font: Font) -> None:
    draw = ImageDraw.Draw(image)
    for index, face in enumerate(faces):
        draw_face(draw, image.size, face, PALETTE[_colour_index(face, index)], scale=scale, font=font)


def _colour_index(face: FaceResult, index: int) -> int:
    # A tracked face keeps its person's colour from frame to frame; a still image colours by position.
    track_id = getattr(face, "track_id", None)
    return (track_id if isinstance(track_id, int) else index) % len(PALETTE)


def face_caption(face: FaceResult) -> str:
    track_id = getattr(face, "track_id", None)
    prefix = f"#{track_id} " if isinstance(track_id, int) else ""
    return f"{prefix}{face.expression.label} {face.expression.probability:.0%}"


Size = tuple[int, int]


def draw_face(
    draw: ImageDraw.ImageDraw, size: Size, face: FaceResult, colour: str, *, scale: float, font: Font
) -> None:
    x1, y1, x2, y2 = (v * scale for v in (face.box.x1, face.box.y1, face.box.x2, face.box.y2))
    line = max(2, round(min(x2 - x1, y2 - y1) / 25))
    draw.rectangle((x1, y1, x2, y2), outline=colour, width=line)
    _tag(draw, size, (x1, y1), face_caption(face), colour, font)
    _bars(draw, size, face, (x1, y2 + line), colour, font)


def _tag(
    draw: ImageDraw.ImageDraw, size: Size, corner: tuple[float, float], text: str, colour: str, font: Font
) -> None:
    """The caption on a filled tag just above the box (inside it when the box touches the top edge)."""
    left, top, right, bottom = draw.textbbox((0, 0), text, font=font)
    pad = 3
    height = bottom - top + 2 * pad
    x, y = corner[0], corner[1] - height if corner[1] >= height else corner[1]
    x = _fit(x, right - left + 2 * pad, size[0])
    draw.rectangle((x, y, x + right - left + 2 * pad, y + height), fill=colour)
    draw.text((x + pad - left, y + pad - top), text, fill=INK, font=font)


def _bars(
    draw: ImageDraw.ImageDraw,
    size: Size,
    face: FaceResult,
    corner: tuple[float, float],
    colour: str,
    font: Font,
) -> None:
    """The top expressions as labelled bars under the box, on white so they read on any background."""
    top = sorted(face.expressions, key=lambda item: item.probability, reverse=True)[:BARS_PER_FACE]
    rows = [f"{item.label} {item.probability:.0%}" for item in top]
    text_w = max(draw.textbbox((0, 0), row, font=font)[2] for row in rows)
    row_h = draw.textbbox((0, 0), "Ag", font=font)[3] + 4
    bar_w = 3 * row_h
    width, height = text_w + bar_w + 12, row_h * len(rows) + 4
    x = _fit(corner[0], width, size[0])
    y = corner[1] if corner[1] + height <= size[1] else max(0.0, corner[1] - height)
    draw.rectangle((x, y, x + width, y + height), fill=PAPER, outline=colour)
    for row, (item, text) in enumerate(zip(top, rows, strict=True)):
        ry = y + 2 + row * row_h
        draw.text((x + 4, ry), text, fill=INK, font=font)
        bx = x + text_w + 8
        draw.rectangle((bx, ry + 3, bx + bar_w, ry + row_h - 3), outline=INK)
        draw.rectangle((bx, ry + 3, bx + bar_w * item.probability, ry + row_h - 3), fill=colour)


def _fit(x: float, width: float, limit: int) -> float:
    """Shift a box of ``width`` left so it stays inside an image ``limit`` pixels wide."""
    return max(0.0, min(x, limit - width))


def draw_banner(image: Image.Image, text: str, font: Font) -> None:
    draw = ImageDraw.Draw(image)
    height = draw.textbbox((0, 0), text, font=font)[3] + 8
    draw.rectangle((0, image.height - height, image.width, image.height), fill=INK)
    draw.text((6, image.height - height + 4), text, fill=PAPER, font=font)


def evenly_spaced(items: Sequence[T], count: int) -> list[T]:
    """At most ``count`` items, first and last included, spread evenly (a long clip's contact sheet)."""
    if len(items) <= count:
        return list(items)
    if count == 1:
        return [items[0]]
    step = (len(items) - 1) / (count - 1)
    return [items[round(i * step)] for i in range(count)]


def thumbnail(rgb: npt.NDArray[np.uint8], width: int) -> tuple[Image.Image, float]:
    """The frame shrunk into a ``width`` square (never enlarged; a tall frame's height is bounded too) and
    the scale applied."""
    return fitted(rgb, width, width)


def fitted(rgb: npt.NDArray[np.uint8], width: int, height: int) -> tuple[Image.Image, float]:
    """The picture shrunk to fit ``width`` x ``height`` (never enlarged) and the scale applied."""
    image = Image.fromarray(rgb).convert("RGB")
    return shrunk(image, width, height)


def shrunk(image: Image.Image, width: int, height: int) -> tuple[Image.Image, float]:
    scale = min(1.0, width / image.width, height / image.height)
    if scale == 1.0:
        return image, scale
    size = (max(1, round(image.width * scale)), max(1, round(image.height * scale)))
    return image.resize(size, Image.Resampling.BILINEAR), scale


def contact_sheet(tiles: Sequence[SheetTile], *, trained: bool) -> Image.Image:
    """The tiles in a grid, each with its faces drawn and its time under it."""
    if not tiles:
        sheet = Image.new("RGB", (640, 120), PAPER)
        ImageDraw.Draw(sheet).text((10, 50), "no frames analysed", fill=INK, font=font_for(640, 120))
        return sheet
    cell_w = max(tile.image.width for tile in tiles)
    font = font_for(cell_w, cell_w)
    caption_h = int(ImageDraw.Draw(tiles[0].image).textbbox((0, 0), "Ag", font=font)[3]) + 8
    cell_h = max(tile.image.height for tile in tiles) + caption_h
    columns = min(SHEET_COLUMNS, len(tiles))
    rows = -(-len(tiles) // columns)
    sheet = Image.new("RGB", (columns * cell_w, rows * cell_h), PAPER)
    for position, tile in enumerate(tiles):
        origin = ((position % columns) * cell_w, (position // columns) * cell_h)
        sheet.paste(_drawn_tile(tile, font), origin)
        caption = f"frame {tile.frame.frame_index}  t={tile.frame.timestamp_s:.2f} s"
        caption_y = origin[1] + tile.image.height + 4
        ImageDraw.Draw(sheet).text((origin[0] + 6, caption_y), caption, fill=INK, font=font)
    if not trained:
        draw_banner(sheet, UNTRAINED_BANNER, font)
    return sheet


def _drawn_tile(tile: SheetTile, font: Font) -> Image.Image:
    image = tile.image.copy()
    draw_faces(image, tile.frame.faces, scale=tile.scale, font=font)
    return image
