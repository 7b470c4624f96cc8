import io

import numpy as np
import pytest
from PIL import Image

from service.exceptions import EmptyPayload, ImageTooLarge, InvalidImage, UnsupportedMediaType
from service.vision.decode import decode_image, decode_preview, sniff_image_format

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


@pytest.mark.parametrize("orientation", [1, 2, 3, 4, 5, 6, 7, 8])
@pytest.mark.parametrize("fmt", ["JPEG", "PNG"])
def test_a_preview_is_the_decoded_photo_shrunk(orientation: int, fmt: str) -> None:
    """/annotate draws on the preview with the pipeline's coordinates: same orientation, same content."""
    exif = Image.Exif()
    exif[0x0112] = orientation
    photo = gradient(640, 480)
    photo.paste((255, 0, 0), (0, 0, 160, 120))  # a red corner shows where the top left went
    data = encode(photo, fmt, exif=exif, **({"quality": 95} if fmt == "JPEG" else {}))
    full = decode_image(data, max_pixels=LIMIT).rgb
    preview = decode_preview(data, max_pixels=LIMIT, max_side=200)
    assert preview.image.mode == "RGB" and max(preview.image.size) == 200
    assert preview.scale == pytest.approx(200 / 640)
    expected = Image.fromarray(full).resize(preview.image.size, Image.Resampling.BILINEAR)
    difference = np.abs(np.asarray(preview.image, np.int16) - np.asarray(expected, np.int16))
    assert difference.mean() < 6


def test_a_preview_never_enlarges_and_keeps_the_limits() -> None:
    preview = decode_preview(encode(gradient(64, 48), "PNG"), max_pixels=LIMIT, max_side=2048)
    assert preview.image.size == (64, 48) and preview.scale == 1.0
    with pytest.raises(ImageTooLarge):
        decode_preview(encode(gradient(64, 48), "PNG"), max_pixels=1000, max_side=2048)
    with pytest.raises(InvalidImage):
        decode_preview(b"\x89PNG\r\n\x1a\n" + b"\x00" * 50, max_pixels=LIMIT, max_side=2048)
    with pytest.raises(UnsupportedMediaType):
        decode_preview(b"hello", max_pixels=LIMIT, max_side=2048)
