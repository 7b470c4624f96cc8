"""Bytes → RGB pixels, safely: the format is sniffed from the bytes, size is checked before pixels exist."""

from __future__ import annotations

import io
import warnings
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt
from PIL import Image, ImageOps, UnidentifiedImageError

from service.exceptions import EmptyPayload, ImageTooLarge, InvalidImage, UnsupportedMediaType

# Magic numbers of the still-image formats we accept. The declared content type and file name are not
# trusted: a text file named photo.jpg must be refused as what it is.
_SIGNATURES: tuple[tuple[bytes, str], ...] = (
    (b"\xff\xd8\xff", "JPEG"),
    (b"\x89PNG\r\n\x1a\n", "PNG"),
    (b"GIF87a", "GIF"),
    (b"GIF89a", "GIF"),
    (b"BM", "BMP"),
    (b"II*\x00", "TIFF"),
    (b"MM\x00*", "TIFF"),
)
IMAGE_FORMATS = frozenset(name for _, name in _SIGNATURES) | {"WEBP"}


@dataclass(frozen=True)
class DecodedImage:
    rgb: npt.NDArray[np.uint8]  # H x W x 3
    format: str

    @property
    def width(self) -> int:
        return int(self.rgb.shape[1])

    @property
    def height(self) -> int:
        return int(self.rgb.shape[0])


def sniff_image_format(data: bytes) -> str | None:
    """The image format named by the leading bytes, or None when they are not an image we accept."""
    if data[:4] == b"RIFF" and data[8:12] == b"WEBP":
        return "WEBP"
    return next((name for magic, name in _SIGNATURES if data.startswith(magic)), None)


def decode_image(data: bytes, *, max_pixels: int) -> DecodedImage:
    """Decode the first frame, honour EXIF orientation, return RGB uint8."""
    if not data:
        raise EmptyPayload("the request carried no image data")
    image_format = sniff_image_format(data)
    if image_format is None:
        raise UnsupportedMediaType(f"not a supported image; send one of: {', '.join(sorted(IMAGE_FORMATS))}")
    with _open(data) as image:
        _check_pixel_count(image, max_pixels)
        rgb = _load_rgb(image)
    return DecodedImage(rgb=rgb, format=image_format)


def image_pixels(data: bytes) -> int:
    """Width x height from the header alone (0 when there is no readable header: decoding will say why)."""
    if sniff_image_format(data) is None:
        return 0
    try:
        with _open(data) as image:
            width, height = image.size
    except (InvalidImage, ImageTooLarge):
        return 0
    return int(width) * int(height)


def _open(data: bytes) -> Image.Image:
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            return Image.open(io.BytesIO(data))
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as exc:
        raise ImageTooLarge("image dimensions exceed the decoder's safety limit") from exc
    except (UnidentifiedImageError, OSError, ValueError, SyntaxError) as exc:
        raise InvalidImage("the image header could not be parsed") from exc


def _check_pixel_count(image: Image.Image, max_pixels: int) -> None:
    # The header gives the size before any pixel is decoded, so a 20000x20000 PNG bomb costs nothing.
    width, height = image.size
    if width <= 0 or height <= 0:
        raise InvalidImage("the image has no pixels")
    if width * height > max_pixels:
        raise ImageTooLarge(f"image is {width}x{height} pixels; the limit is {max_pixels} pixels")


def _load_rgb(image: Image.Image) -> npt.NDArray[np.uint8]:
    try:
        image.seek(0)  # animated GIF/WebP/TIFF: the first frame
        image.load()
        # No copy that is not needed: a 40-Mpx photo is 120 MB per copy. exif_transpose(in_place=True) does
        # nothing without an orientation tag (otherwise it copies), convert() only when not already RGB,
        # and np.asarray reads the pixels once (read-only: nothing downstream writes into the photo).
        ImageOps.exif_transpose(image, in_place=True)
        rgb = image if image.mode == "RGB" else image.convert("RGB")
        pixels: npt.NDArray[np.uint8] = np.asarray(rgb, dtype=np.uint8)
        return pixels
    except (OSError, ValueError, SyntaxError, EOFError, Image.DecompressionBombError) as exc:
        # Pillow reports truncated or corrupt data as OSError ("image file is truncated", "broken data").
        raise InvalidImage("the image data is truncated or corrupt") from exc


# EXIF orientation → the transpose that shows the picture upright (values 5-8 swap width and height).
_UPRIGHT = {
    2: Image.Transpose.FLIP_LEFT_RIGHT,
    3: Image.Transpose.ROTATE_180,
    4: Image.Transpose.FLIP_TOP_BOTTOM,
    5: Image.Transpose.TRANSPOSE,
    6: Image.Transpose.ROTATE_270,
    7: Image.Transpose.TRANSVERSE,
    8: Image.Transpose.ROTATE_90,
}
_ORIENTATION_TAG = 0x0112
_RESIZABLE = frozenset({"RGB", "RGBA", "L", "LA"})


@dataclass(frozen=True)
class Preview:
    """A photo decoded shrunk into a square, upright, and the factor from its full pixels to these."""

    image: Image.Image  # RGB
    scale: float


def decode_preview(data: bytes, *, max_pixels: int, max_side: int) -> Preview:
    """The photo as ``decode_image`` sees it (first frame, EXIF orientation), shrunk to fit a ``max_side``
    square, without a full-size copy: a JPEG is decoded at a reduced scale by its own DCT (a 6300 px
    photo for 2048 px at half size: a quarter of the memory), any other format shrunk in Pillow's buffer
    before it is turned upright or converted."""
    if sniff_image_format(data) is None:
        raise UnsupportedMediaType(f"not a supported image; send one of: {', '.join(sorted(IMAGE_FORMATS))}")
    with _open(data) as image:
        _check_pixel_count(image, max_pixels)
        transpose = _UPRIGHT.get(int(image.getexif().get(_ORIENTATION_TAG, 1)))
        upright = _upright_size(image.size, transpose)
        scale = min(1.0, max_side / upright[0], max_side / upright[1])
        stored = (max(1, round(image.width * scale)), max(1, round(image.height * scale)))
        shrunk = _load_shrunk(image, stored)
    return Preview(shrunk if transpose is None else shrunk.transpose(transpose), scale)


def _upright_size(size: tuple[int, int], transpose: Image.Transpose | None) -> tuple[int, int]:
    swaps = (Image.Transpose.TRANSPOSE, Image.Transpose.ROTATE_270, Image.Transpose.TRANSVERSE)
    return (size[1], size[0]) if transpose in (*swaps, Image.Transpose.ROTATE_90) else size


def _load_shrunk(image: Image.Image, size: tuple[int, int]) -> Image.Image:
    try:
        image.seek(0)
        image.draft("RGB", size)  # JPEG only (scale 1/2, 1/4, 1/8 at least ``size``); a no-op otherwise
        image.load()
        # Shrunk before converting where the mode resizes as it is (a full-size RGBA → RGB copy is 160 MB at
        # 40 Mpx); palette and other modes are converted first.
        small = image if image.mode in _RESIZABLE else image.convert("RGB")
        if small.size != size:
            small = small.resize(size, Image.Resampling.BILINEAR, reducing_gap=2.0)
        return small if small.mode == "RGB" else small.convert("RGB")
    except (OSError, ValueError, SyntaxError, EOFError, Image.DecompressionBombError) as exc:
        raise InvalidImage("the image data is truncated or corrupt") from exc
