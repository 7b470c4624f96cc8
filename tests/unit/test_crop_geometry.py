"""Crop geometry pinned to pixels computed independently of service/vision and ModelConfig.

Nothing here calls the code under test to get an expected value: the ArcFace template and every served
model's window are written out, the template in crop pixels is computed here from them, and the expected
sample positions come from a similarity transform chosen (or fitted, closed form) by the test itself.
The image is a coordinate ramp (every channel = x, or = y, an integer below 256), so a bilinear sample of
it IS the image coordinate it was taken at: the crop tells, pixel by pixel, where in the image it looked.
"""

from __future__ import annotations

import json
import math
import re
from pathlib import Path

import numpy as np
import pytest

from fermodels.contract import ModelConfig
from fermodels.ports.fer_keras import fer_model_config
from service.vision.cropping import CropGeometry, box_faces

ROOT = Path(__file__).resolve().parents[2]

# ArcFace's 5-point template for a 112-px crop (Deng et al., insightface), written out.
ARCFACE = np.array(
    [
        [38.2946, 51.6963],
        [73.5318, 51.5014],
        [56.0252, 71.7366],
        [41.5493, 92.3655],
        [70.7299, 92.2041],
    ]
)

# Every served model (model_repository/*/config.pbtxt): (window centre x, centre y, side) in ArcFace-112
# units, the side of the crop in pixels, grey or colour. Written out: a window with x and y swapped, a
# changed side, or a model cut at another size must disagree with this table.
SERVED_WINDOWS: dict[str, tuple[tuple[float, float, float], int, str]] = {
    "fer_former": ((55.5, 55.5, 112.0), 112, "rgb"),
    "mini_xception_fer2013": (
        (55.3, 62.1, 122.6),
        64,
        "gray",
    ),  # the default model (fermodels/ports/fer_keras.py)
    "poster": ((55.5, 55.5, 112.0), 112, "rgb"),
    "stt": ((55.5, 55.5, 112.0), 112, "rgb"),
}


def served_config(name: str) -> ModelConfig:
    """The ModelConfig the gateway reads from Triton: the fer_config parameter of the committed pbtxt."""
    text = (ROOT / "model_repository" / name / "config.pbtxt").read_text()
    match = re.search(r'key: "fer_config" value \{ string_value: "(.*)" \} \}', text)
    assert match, f"{name}: no fer_config parameter"
    return ModelConfig.from_json(json.loads(f'"{match.group(1)}"'))


def template_in_crop_pixels(window: tuple[float, float, float], size: int) -> np.ndarray:
    """The 5 template points in a size-px crop of ``window``; pixel centres on integers, so the crop's
    left edge (window left) is at -0.5 and its right edge (window right) at size - 0.5."""
    centre_x, centre_y, side = window
    left, top = centre_x - side / 2, centre_y - side / 2
    return np.column_stack(
        [(ARCFACE[:, 0] - left) * size / side - 0.5, (ARCFACE[:, 1] - top) * size / side - 0.5]
    )


def similarity(scale: float, angle_deg: float, tx: float, ty: float) -> np.ndarray:
    """2x3 map image px → crop px: rotate by angle, scale, translate."""
    c, s = scale * math.cos(math.radians(angle_deg)), scale * math.sin(math.radians(angle_deg))
    return np.array([[c, -s, tx], [s, c, ty]])


def inverse(matrix: np.ndarray) -> np.ndarray:
    """The inverse of a 2x3 similarity, from its own parameters (not a general matrix inverse)."""
    (a, b), (c, d) = matrix[:, :2]
    det = a * d - b * c
    linear = np.array([[d, -b], [-c, a]]) / det
    return np.hstack([linear, -(linear @ matrix[:, 2])[:, None]])


def apply(matrix: np.ndarray, points: np.ndarray) -> np.ndarray:
    return points @ matrix[:, :2].T + matrix[:, 2]


def fit_similarity(src: np.ndarray, dst: np.ndarray) -> np.ndarray:
    """Closed-form least-squares similarity (Umeyama without reflection) in complex numbers: dst ≈ a·src + b,
    a = Σ conj(s̃)·d̃ / Σ|s̃|² on the centred points, b = mean(dst) - a·mean(src)."""
    zs, zd = src[:, 0] + 1j * src[:, 1], dst[:, 0] + 1j * dst[:, 1]
    sc, dc = zs - zs.mean(), zd - zd.mean()
    a = (np.conj(sc) * dc).sum() / (np.abs(sc) ** 2).sum()
    b = zd.mean() - a * zs.mean()
    return np.array([[a.real, -a.imag, b.real], [a.imag, a.real, b.imag]])


def ramps(width: int = 256, height: int = 256) -> tuple[np.ndarray, np.ndarray]:
    """Two uint8 RGB images: every channel = the pixel's x, and = its y (grey of either is the same)."""
    ys, xs = np.mgrid[0:height, 0:width]
    return (
        np.repeat(xs[..., None], 3, axis=2).astype(np.uint8),
        np.repeat(ys[..., None], 3, axis=2).astype(np.uint8),
    )


def sampled_positions(geometry: CropGeometry, landmarks: np.ndarray) -> np.ndarray:
    """size x size x 2: the image (x, y) each crop pixel was sampled at, read back from the ramps."""
    x_ramp, y_ramp = ramps()
    xs = geometry.crop(x_ramp, landmarks[None])[0]
    ys = geometry.crop(y_ramp, landmarks[None])[0]
    assert np.allclose(xs[0], xs[1]) and np.allclose(xs[0], xs[2])  # grey or colour: three equal channels
    return np.stack([xs[0], ys[0]], axis=-1).astype(np.float64) * 255.0


def expected_positions(crop_to_image: np.ndarray, size: int) -> np.ndarray:
    v, u = np.mgrid[0:size, 0:size].astype(np.float64)
    return np.stack([u, v], axis=-1) @ crop_to_image[:, :2].T + crop_to_image[:, 2]


def test_the_served_windows_are_pinned() -> None:
    """The committed pbtxt configs (what Triton serves) and the default model's source carry the windows."""
    for name, (window, size, color) in SERVED_WINDOWS.items():
        config = served_config(name)
        assert config.crop_window == window, name
        assert (config.crop_size, config.crop_color, config.crop_mode) == (size, color, "aligned"), name
    assert fer_model_config().crop_window == (55.3, 62.1, 122.6)
    assert fer_model_config().crop_color == "gray" and fer_model_config().input_size == 64


@pytest.mark.parametrize("name", sorted(SERVED_WINDOWS))
def test_landmark_template_is_the_window_in_crop_pixels(name: str) -> None:
    window, size, _ = SERVED_WINDOWS[name]
    np.testing.assert_allclose(
        served_config(name).landmark_template(), template_in_crop_pixels(window, size), atol=1e-9
    )


def test_the_default_models_template_written_out() -> None:
    """mini_xception_fer2013's 5 points in its 64-px crop, by hand: window left 55.3 - 122.6/2 = -6.0, top
    62.1 - 61.3 = 0.8, so x' = (x + 6.0) * 64/122.6 - 0.5 and y' = (y - 0.8) * 64/122.6 - 0.5."""
    expected = [
        (22.6228, 26.0690),
        (41.0174, 25.9673),
        (31.8786, 36.5305),
        (24.3218, 47.2993),
        (39.5548, 47.2150),
    ]
    np.testing.assert_allclose(fer_model_config().landmark_template(), expected, atol=1e-4)


@pytest.mark.parametrize("name", sorted(SERVED_WINDOWS))
@pytest.mark.parametrize(("scale", "angle"), [(1.25, 0.0), (1.6, 17.0), (1.1, -28.0)])
def test_every_crop_pixel_samples_where_the_window_says(name: str, scale: float, angle: float) -> None:
    """Landmarks placed exactly where a known similarity sends the template: each crop pixel (u, v) must
    have sampled the image at that similarity's inverse of (u, v), to 0.1 px."""
    window, size, _ = SERVED_WINDOWS[name]
    template = template_in_crop_pixels(window, size)
    # Crop px per image px = scale (≥ 1: no anti-alias reduction); the face centred in the 256-px image.
    image_to_crop = similarity(scale, angle, 0.0, 0.0)
    centre = apply(image_to_crop, np.array([[128.0, 128.0]]))[0]
    image_to_crop[:, 2] = (size - 1) / 2 - centre
    landmarks = apply(inverse(image_to_crop), template)
    got = sampled_positions(CropGeometry.of(served_config(name)), landmarks)
    want = expected_positions(inverse(image_to_crop), size)
    assert np.abs(got - want).max() < 0.1


@pytest.mark.parametrize("name", sorted(SERVED_WINDOWS))
def test_noisy_landmarks_are_fitted_by_least_squares(name: str) -> None:
    """Landmarks off the template (expression, detector noise): the crop follows the closed-form fit."""
    window, size, _ = SERVED_WINDOWS[name]
    template = template_in_crop_pixels(window, size)
    rng = np.random.default_rng(7)
    image_to_crop = similarity(1.3, 9.0, 0.0, 0.0)
    image_to_crop[:, 2] = (size - 1) / 2 - apply(image_to_crop, np.array([[128.0, 128.0]]))[0]
    landmarks = apply(inverse(image_to_crop), template) + rng.normal(0.0, 2.0, template.shape)
    fitted = fit_similarity(landmarks, template)
    got = sampled_positions(CropGeometry.of(served_config(name)), landmarks)
    assert np.abs(got - expected_positions(inverse(fitted), size)).max() < 0.1


def test_landmarks_on_the_template_at_scale_one_cut_an_exact_sub_image() -> None:
    """A face whose landmarks sit at template + (dx, dy) integer pixels: the crop is image[dy:, dx:]."""
    config = served_config("fer_former")
    template = template_in_crop_pixels(SERVED_WINDOWS["fer_former"][0], 112)
    rng = np.random.default_rng(1)
    image = rng.integers(0, 256, (300, 320, 3), dtype=np.uint8)
    crop = CropGeometry.of(config).crop(image, (template + np.array([37.0, 21.0]))[None])[0]
    np.testing.assert_allclose(crop * 255.0, image[21:133, 37:149].transpose(2, 0, 1), atol=0.01)


def test_a_box_crop_is_the_integer_sub_image() -> None:
    """crop_mode "box": rgb[int(y1):int(y2), int(x1):int(x2)], resized only when the size differs."""
    rng = np.random.default_rng(2)
    image = rng.integers(0, 256, (120, 160, 3), dtype=np.uint8)
    crops = box_faces(image, np.array([[10.7, 20.2, 42.9, 52.99]]), 32)  # → x 10..42, y 20..52: 32 x 32
    np.testing.assert_array_equal(np.round(crops[0] * 255.0), image[20:52, 10:42].transpose(2, 0, 1))
