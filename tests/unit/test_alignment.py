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
