import io

import numpy as np
import pytest
from PIL import Image

from service.exceptions import EmptyPayload, ImageTooLarge, InvalidImage, UnsupportedMediaType
from service.vision.decode import decode_image, sniff_image_format

LIMIT = 40_000_000


def encode(image: Image.Image, fmt: str, **options: object) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format=fmt, **options)
    return buffer.getvalue()


def gradient(width: int = 64, height: int = 48) -> Image.Image:
    x = np.linspace(0, 255, width, dtype=np.uint8)
    rgb = np.stack([np.tile(x, (height, 1))] * 3, axis=-1)
    rgb[..., 1] = 40
    return Image.fromarray(rgb)


@pytest.mark.parametrize("fmt", ["JPEG", "PNG", "WEBP", "BMP", "TIFF", "GIF"])
def test_every_supported_format_decodes_to_rgb(fmt: str) -> None:
    decoded = decode_image(encode(gradient(), fmt), max_pixels=LIMIT)
    assert decoded.format == fmt
    assert decoded.rgb.shape == (48, 64, 3) and decoded.rgb.dtype == np.uint8
    assert decoded.rgb[:, -1, 0].mean() > 200 > 50 > decoded.rgb[:, 0, 0].mean()


def test_grayscale_and_rgba_become_rgb() -> None:
    assert decode_image(encode(gradient().convert("L"), "PNG"), max_pixels=LIMIT).rgb.shape == (48, 64, 3)
    assert decode_image(encode(gradient().convert("RGBA"), "PNG"), max_pixels=LIMIT).rgb.shape == (48, 64, 3)


def test_first_frame_of_an_animated_gif() -> None:
    frames = [Image.new("RGB", (8, 8), colour) for colour in ("red", "blue")]
    data = encode(frames[0], "GIF", save_all=True, append_images=frames[1:])
    rgb = decode_image(data, max_pixels=LIMIT).rgb
    assert rgb[0, 0, 0] > 200 and rgb[0, 0, 2] < 50


def test_exif_orientation_is_honoured() -> None:
    exif = Image.Exif()
    exif[0x0112] = 6  # rotate 90° clockwise to display
    data = encode(gradient(64, 48), "JPEG", exif=exif)
    decoded = decode_image(data, max_pixels=LIMIT)
    assert decoded.rgb.shape == (64, 48, 3)


def test_empty_body() -> None:
    with pytest.raises(EmptyPayload):
        decode_image(b"", max_pixels=LIMIT)


def test_text_named_like_an_image_is_unsupported() -> None:
    with pytest.raises(UnsupportedMediaType):
        decode_image(b"hello, I am not a JPEG\n" * 10, max_pixels=LIMIT)


def test_truncated_jpeg_is_invalid() -> None:
    data = encode(gradient(640, 480), "JPEG")
    with pytest.raises(InvalidImage):
        decode_image(data[: len(data) // 2], max_pixels=LIMIT)


def test_header_only_garbage_is_invalid() -> None:
    with pytest.raises(InvalidImage):
        decode_image(b"\x89PNG\r\n\x1a\n" + b"\x00" * 50, max_pixels=LIMIT)


def test_decompression_bomb_is_refused_before_decoding() -> None:
    bomb = encode(Image.new("1", (20_000, 20_000)), "PNG")  # ~50 KB on the wire, 400 Mpx decoded
    assert len(bomb) < 200_000
    with pytest.raises(ImageTooLarge):
        decode_image(bomb, max_pixels=LIMIT)


def test_configured_pixel_limit() -> None:
    with pytest.raises(ImageTooLarge):
        decode_image(encode(gradient(100, 100), "PNG"), max_pixels=9_999)


@pytest.mark.parametrize(
    ("head", "expected"),
    [
        (b"\xff\xd8\xff\xe0", "JPEG"),
        (b"RIFF\x00\x00\x00\x00WEBPVP8 ", "WEBP"),
        (b"GIF89a", "GIF"),
        (b"%PDF", None),
    ],
)
def test_sniff(head: bytes, expected: str | None) -> None:
    assert sniff_image_format(head) == expected
