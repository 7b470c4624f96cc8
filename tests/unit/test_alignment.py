import math

import numpy as np
import pytest

from fermodels.contract import ModelConfig
from service.vision.alignment import affine_inverse, align_faces, crop_corners, estimate_similarity, to_gray

TEMPLATE = np.asarray(ModelConfig(name="m", architecture="a").landmark_template())


def similarity(scale: float, angle_deg: float, tx: float, ty: float) -> np.ndarray:
    a = math.radians(angle_deg)
    return np.array(
        [[scale * math.cos(a), -scale * math.sin(a), tx], [scale * math.sin(a), scale * math.cos(a), ty]]
    )


def apply(matrix: np.ndarray, points: np.ndarray) -> np.ndarray:
    return points @ matrix[:, :2].T + matrix[:, 2]


@pytest.mark.parametrize(
    ("scale", "angle", "tx", "ty"), [(1.0, 0, 0, 0), (2.5, 30, 100, -20), (0.4, -75, 3, 7)]
)
def test_estimate_similarity_recovers_a_known_transform(
    scale: float, angle: float, tx: float, ty: float
) -> None:
    truth = similarity(scale, angle, tx, ty)
    estimated = estimate_similarity(TEMPLATE, apply(truth, TEMPLATE))
    np.testing.assert_allclose(estimated, truth, atol=1e-9)


def test_estimate_similarity_is_least_squares_under_noise() -> None:
    rng = np.random.default_rng(0)
    truth = similarity(1.7, 12, 40, 60)
    noisy = apply(truth, TEMPLATE) + rng.normal(0, 0.5, TEMPLATE.shape)
    estimated = estimate_similarity(TEMPLATE, noisy)
    residual = np.linalg.norm(apply(estimated, TEMPLATE) - noisy)
    assert residual <= np.linalg.norm(apply(truth, TEMPLATE) - noisy)  # best fit beats the truth on the data
    np.testing.assert_allclose(estimated[:, :2], truth[:, :2], atol=0.02)


def test_estimate_similarity_never_reflects() -> None:
    mirrored = TEMPLATE * np.array([-1.0, 1.0])
    matrix = estimate_similarity(TEMPLATE, mirrored)
    assert np.linalg.det(matrix[:, :2]) > 0


def dot_image(points: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """A black RGB image with a bright 5x5 square centred on each point."""
    image = np.zeros((size[1], size[0], 3), dtype=np.uint8)
    for x, y in np.round(points).astype(int):
        image[y - 2 : y + 3, x - 2 : x + 3] = 255
    return image


def bright_centroids(crop: np.ndarray, around: np.ndarray, radius: int = 6) -> np.ndarray:
    gray = crop.mean(axis=0)
    found = []
    for x, y in np.round(around).astype(int):
        window = gray[y - radius : y + radius + 1, x - radius : x + radius + 1]
        ys, xs = np.mgrid[y - radius : y + radius + 1, x - radius : x + radius + 1]
        found.append([(xs * window).sum() / window.sum(), (ys * window).sum() / window.sum()])
    return np.asarray(found)


@pytest.mark.parametrize(("scale", "angle"), [(2.0, 0.0), (3.0, 25.0), (1.5, -40.0)])
def test_align_faces_puts_landmarks_on_the_template(scale: float, angle: float) -> None:
    landmarks = apply(similarity(scale, angle, 150, 120), TEMPLATE - 56) + 0  # a face somewhere in the image
    image = dot_image(landmarks, (480, 400))
    crops = align_faces(image, landmarks[None], TEMPLATE, 112)
    assert crops.shape == (1, 3, 112, 112) and crops.dtype == np.float32
    np.testing.assert_allclose(bright_centroids(crops[0], TEMPLATE), TEMPLATE, atol=0.6)


def test_align_faces_batches_every_face_and_handles_none() -> None:
    faces = np.stack([apply(similarity(2.0, a, 200, 200), TEMPLATE - 56) for a in (0, 10, 20)])
    crops = align_faces(np.full((400, 400, 3), 128, np.uint8), faces, TEMPLATE, 64)
    assert crops.shape == (3, 3, 64, 64)
    np.testing.assert_allclose(crops, 128 / 255, atol=1e-5)
    assert align_faces(np.zeros((10, 10, 3), np.uint8), np.zeros((0, 5, 2)), TEMPLATE, 64).shape == (
        0,
        3,
        64,
        64,
    )


def fine_pattern(size: int) -> np.ndarray:
    """A 1-px checkerboard on a slow gradient: everything above the crop's Nyquist limit must vanish."""
    ys, xs = np.mgrid[0:size, 0:size]
    checker = ((xs + ys) % 2) * 120.0
    gradient = 60.0 * xs / size + 40.0 * ys / size
    gray = (checker + gradient).astype(np.uint8)
    return np.repeat(gray[..., None], 3, axis=2)


def five_to_one(template: np.ndarray, offset: float) -> np.ndarray:
    """Landmarks such that crop pixel i covers image pixels [5 i + offset, 5 i + 5 + offset) exactly."""
    return (template + 0.5) * 5.0 - 0.5 + offset


def test_downscaled_crops_match_an_area_downsampled_reference() -> None:
    template = np.asarray(ModelConfig(name="m", architecture="a", input_size=64).landmark_template())
    image = fine_pattern(480)
    reference = image[40:360, 40:360, 0].reshape(64, 5, 64, 5).mean(axis=(1, 3)) / 255.0
    crop = align_faces(image, five_to_one(template, 40.0)[None], template, 64)[0, 0]
    naive = align_faces(image, five_to_one(template, 40.0)[None], template, 64, antialias=False)[0, 0]
    inner = slice(2, -2)  # the filter's support reaches past the window's edge; compare the inside
    assert np.abs(crop - reference)[inner, inner].max() < 0.03
    # Without the reduction, bilinear reads one pixel in five: the checkerboard aliases into the crop.
    assert np.abs(naive - reference)[inner, inner].max() > 0.2


def test_grey_crops_equal_opencv_luma_of_the_colour_crop() -> None:
    rng = np.random.default_rng(1)
    image = rng.integers(0, 256, (200, 200, 3), dtype=np.uint8)
    template = np.asarray(ModelConfig(name="m", architecture="a", input_size=64).landmark_template())
    landmarks = apply(similarity(1.5, 10.0, 30, 40), template)[None]
    colour = align_faces(image, landmarks, template, 64)
    grey = align_faces(image, landmarks, template, 64, gray=True)
    assert grey.shape == (1, 1, 64, 64)
    luma = (colour[0] * np.array([0.299, 0.587, 0.114])[:, None, None]).sum(axis=0)
    np.testing.assert_allclose(grey[0, 0], luma, atol=1.0 / 255)  # OpenCV rounds grey to uint8 first


def test_to_gray_is_opencv_bit_exact_on_known_values() -> None:
    pixels = np.array([[[255, 0, 0], [0, 255, 0], [0, 0, 255], [255, 255, 255], [10, 200, 30]]], np.uint8)
    # cv2.cvtColor(pixels, cv2.COLOR_RGB2GRAY) on these values.
    np.testing.assert_array_equal(to_gray(pixels)[0, :, 0], [76, 150, 29, 255, 124])
    assert to_gray(pixels).dtype == np.uint8 and to_gray(pixels).shape == (1, 5, 1)


def test_a_crop_never_converts_the_whole_image() -> None:
    huge = np.zeros((4000, 4000, 3), np.uint8)  # 48 MB; a float copy of it would be 192 MB
    template = np.asarray(ModelConfig(name="m", architecture="a", input_size=64).landmark_template())
    matrix = similarity(0.25, 0.0, 0.0, 0.0)
    corners = crop_corners(matrix, 64)
    assert (corners.max(axis=0) - corners.min(axis=0)).max() == pytest.approx(256.0)
    crops = align_faces(huge, five_to_one(template, 1000.0)[None], template, 64)
    assert crops.shape == (1, 3, 64, 64)


@pytest.mark.parametrize("seed", range(5))
def test_affine_inverse_undoes_the_map(seed: int) -> None:
    rng = np.random.default_rng(seed)
    matrix = np.vstack([rng.normal(size=(2, 3)) * [[3.0, 3.0, 100.0]], [0.0, 0.0, 1.0]])
    inverse = affine_inverse(matrix)
    np.testing.assert_allclose(inverse @ matrix, np.eye(3), atol=1e-9)
    np.testing.assert_allclose(inverse, np.linalg.inv(matrix), rtol=1e-9, atol=1e-12)


def is_similarity(matrix: np.ndarray) -> bool:
    """Rotation and uniform scale only: [[a, -b], [b, a]]."""
    (a, minus_b), (b, d) = matrix[:, :2]
    return bool(np.isclose(a, d, atol=1e-9) and np.isclose(minus_b, -b, atol=1e-9))


def test_a_mirrored_face_still_gets_a_similarity_not_a_shear() -> None:
    matrix = estimate_similarity(TEMPLATE, TEMPLATE * np.array([-1.0, 1.0]) + 30.0)
    assert is_similarity(matrix) and np.linalg.det(matrix[:, :2]) > 0


def test_tiny_and_degenerate_landmarks() -> None:
    # A face a hundred times smaller than the template (landmark spread under one pixel) scales by 100.
    np.testing.assert_allclose(
        estimate_similarity(TEMPLATE * 0.01, TEMPLATE), similarity(100, 0, 0, 0), atol=1e-7
    )
    # Five landmarks on one point (a degenerate detection): a finite map at scale 1, not NaN.
    matrix = estimate_similarity(np.full((5, 2), 40.0), TEMPLATE)
    assert np.isfinite(matrix).all() and np.linalg.det(matrix[:, :2]) == pytest.approx(1.0)
    np.testing.assert_allclose(apply(matrix, np.array([[40.0, 40.0]]))[0], TEMPLATE.mean(axis=0), atol=1e-9)


@pytest.mark.parametrize(
    "offset",
    [
        (37, 21),  # inside
        (3, 150),  # low x, high y: the region's x bound is read from x, not y
        (150, 3),
        (-10, -7),  # over the top-left corner: the image's edge pixels continue
        (250, 230),  # over the bottom-right corner
        (400, 20),  # wholly right of the image
        (20, 400),  # wholly below it
        (-200, 30),  # wholly left of it
        (30, -200),  # wholly above it
    ],
)
def test_a_crop_at_scale_one_is_the_shifted_image_with_its_edges_continued(offset: tuple[int, int]) -> None:
    """Landmarks on the template shifted by integers: crop pixel (u, v) is image pixel (u + dx, v + dy),
    clamped to the image (grid_sample's "border": a face at the edge continues the edge pixels)."""
    rng = np.random.default_rng(5)
    image = rng.integers(0, 256, (300, 320, 3), dtype=np.uint8)
    dx, dy = offset
    crops = align_faces(image, (TEMPLATE + np.array([dx, dy]))[None], TEMPLATE, 112)
    rows = np.clip(np.arange(112) + dy, 0, 299)
    cols = np.clip(np.arange(112) + dx, 0, 319)
    expected = image[rows[:, None], cols[None, :]].transpose(2, 0, 1) / 255.0
    np.testing.assert_allclose(crops[0], expected, atol=1e-4)


def bilinear(image: np.ndarray, xs: np.ndarray, ys: np.ndarray) -> np.ndarray:
    """Bilinear samples of an H x W x C image at (xs, ys), edges clamped."""
    height, width = image.shape[:2]
    x0, y0 = np.floor(xs).astype(int), np.floor(ys).astype(int)
    wx, wy = (xs - x0)[..., None], (ys - y0)[..., None]

    def at(y: np.ndarray, x: np.ndarray) -> np.ndarray:
        return image[np.clip(y, 0, height - 1), np.clip(x, 0, width - 1)].astype(np.float64)

    top = at(y0, x0) * (1 - wx) + at(y0, x0 + 1) * wx
    bottom = at(y0 + 1, x0) * (1 - wx) + at(y0 + 1, x0 + 1) * wx
    return top * (1 - wy) + bottom * wy


@pytest.mark.parametrize(("scale", "angle"), [(1.5, 0.0), (1.9, 20.0), (1.0, -35.0)])
def test_an_enlarging_crop_is_one_bilinear_sample_per_pixel(scale: float, angle: float) -> None:
    """At crop scales of 1 and above nothing is reduced first: each crop pixel is the bilinear sample of the
    image at the pixel's pre-image (a noisy image, where a second resampling would show)."""
    rng = np.random.default_rng(6)
    image = rng.integers(0, 256, (200, 200, 3), dtype=np.uint8)
    image_to_crop = similarity(scale, angle, 0.0, 0.0)
    image_to_crop[:, 2] = 31.5 - apply(image_to_crop, np.array([[100.0, 100.0]]))[0]
    template = TEMPLATE * 64 / 112
    landmarks = apply(np.linalg.inv(np.vstack([image_to_crop, [0, 0, 1]]))[:2], template)
    crop = align_faces(image, landmarks[None], template, 64)[0]
    v, u = np.mgrid[0:64, 0:64].astype(np.float64)
    crop_to_image = np.linalg.inv(np.vstack([image_to_crop, [0, 0, 1]]))
    xs = crop_to_image[0, 0] * u + crop_to_image[0, 1] * v + crop_to_image[0, 2]
    ys = crop_to_image[1, 0] * u + crop_to_image[1, 1] * v + crop_to_image[1, 2]
    expected = bilinear(image, xs, ys).transpose(2, 0, 1) / 255.0
    np.testing.assert_allclose(crop, expected, atol=2e-5)


@pytest.mark.parametrize("axis", [0, 1])
def test_stripes_across_either_axis_are_filtered_out_when_reducing(axis: int) -> None:
    """A one-pixel line every 5 pixels along x, then along y (each 5 x 5 block holds one: its mean is flat);
    a direction that is sampled instead of reduced reads a line or misses it."""
    template = np.asarray(ModelConfig(name="m", architecture="a", input_size=64).landmark_template())
    coords = np.mgrid[0:480, 0:480][axis]
    gray = ((coords % 5 == 2) * 200.0 + 40.0 * np.mgrid[0:480, 0:480][1 - axis] / 480).astype(np.uint8)
    image = np.repeat(gray[..., None], 3, axis=2)
    reference = image[40:360, 40:360, 0].reshape(64, 5, 64, 5).mean(axis=(1, 3)) / 255.0
    crop = align_faces(image, five_to_one(template, 40.0)[None], template, 64)[0, 0]
    assert np.abs(crop - reference)[2:-2, 2:-2].max() < 0.03


def test_a_reduced_crops_edge_sees_the_image_just_outside_its_window() -> None:
    """A 5:1 reduction filters over ~5 image pixels on each side of a crop pixel: a bright line 2 px outside
    the window's left edge reaches the crop's first column, as a reduction of the whole image would have it,
    and nothing further in."""
    template = np.asarray(ModelConfig(name="m", architecture="a", input_size=64).landmark_template())
    image = np.zeros((480, 480, 3), np.uint8)
    image[:, 38] = 255  # the window covers x in [40, 360)
    crop = align_faces(image, five_to_one(template, 40.0)[None], template, 64)[0, 0]
    assert crop[2:-2, 0].min() > 0.01
    assert crop[:, 2:].max() == 0.0


def test_no_face_gives_an_empty_float32_batch_of_the_right_channels() -> None:
    for gray, channels in ((False, 3), (True, 1)):
        empty = align_faces(np.zeros((10, 10, 3), np.uint8), np.zeros((0, 5, 2)), TEMPLATE, 64, gray=gray)
        assert empty.shape == (0, channels, 64, 64) and empty.dtype == np.float32
