"""The one face-cropping component: model geometry, face selection, and the same crops on both paths."""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pytest
from PIL import Image

from devstack.clips import encode
from fermodels.contract import FER2013_LABELS, ModelConfig
from service.detection.base import Detections
from service.inference.base import ImageOutputs
from service.serving.augment import merged, with_views
from service.vision.alignment import to_gray
from service.vision.clip_analysis import AnalysisOptions, analyse_clip
from service.vision.cropping import CropGeometry, FaceCropper, FaceSelection, box_faces, integer_boxes
from service.vision.tracking import TrackerConfig
from service.vision.video import ClipReader, SamplingPlan, VideoLimits
from tests.api.conftest import FakeDetector

GREY = ModelConfig(
    name="g",
    architecture="a",
    input_size=64,
    labels=FER2013_LABELS,
    crop_window=(55.0, 62.0, 100.0),
    crop_color="gray",
    crop_source_size=48,
)
COLOUR = ModelConfig(name="c", architecture="a", input_size=32)


def noisy_frames(count: int = 3) -> list[np.ndarray]:
    rng = np.random.default_rng(0)
    return [rng.integers(0, 256, (240, 320, 3), dtype=np.uint8) for _ in range(count)]


def test_grey_geometry_gives_three_equal_channels_at_the_input_size() -> None:
    frame = noisy_frames(1)[0]
    crops = CropGeometry.of(GREY).crop(frame, FakeDetector().detect(frame).landmarks)
    assert crops.shape == (3, 3, 64, 64) and crops.dtype == np.float32
    np.testing.assert_array_equal(crops[:, 0], crops[:, 1])
    np.testing.assert_array_equal(crops[:, 0], crops[:, 2])


def test_a_48_px_source_is_cut_in_uint8_steps_then_upsampled() -> None:
    frame = noisy_frames(1)[0]
    landmarks = FakeDetector().detect(frame).landmarks
    plain = CropGeometry.of(replace(GREY, crop_source_size=0)).crop(frame, landmarks)
    from_48 = CropGeometry.of(GREY).crop(frame, landmarks)
    assert plain.shape == from_48.shape
    assert not np.allclose(plain, from_48)  # the 48-px detour loses detail, as FER2013's images did


def test_windows_are_the_crop_square_in_image_pixels() -> None:
    frame = noisy_frames(1)[0]
    found = FakeDetector().detect(frame)
    windows = CropGeometry.of(COLOUR).windows(found.landmarks)
    assert windows.shape == (3, 4, 2)
    sides = np.linalg.norm(windows[:, 1] - windows[:, 0], axis=1)
    np.testing.assert_allclose(sides, np.linalg.norm(windows[:, 2] - windows[:, 1], axis=1))
    assert np.all(windows[:, 0, 0] < found.landmarks[:, 0, 0])  # the window contains the eyes


def test_selection_keeps_the_most_confident_faces_above_the_threshold() -> None:
    frame = noisy_frames(1)[0]
    found = FakeDetector().detect(frame)  # scores 0.99, 0.97, 0.95
    cropped = FaceCropper(FaceSelection(max_faces=2, min_score=0.96), CropGeometry.of(COLOUR))(frame, found)
    np.testing.assert_allclose(cropped.faces.scores, [0.99, 0.97])
    assert cropped.crops[0].shape == (2, 3, 32, 32)


def test_one_geometry_shared_by_two_models_is_cut_once() -> None:
    frame = noisy_frames(1)[0]
    geometry = CropGeometry.of(COLOUR)
    cropped = FaceCropper(FaceSelection(8, 0.0), geometry, geometry)(frame, FakeDetector().detect(frame))
    assert cropped.crops[0] is cropped.crops[1]


def test_the_clip_path_cuts_exactly_what_the_image_path_cuts() -> None:
    frames = noisy_frames()
    data = encode(frames, fps=10, kind="avi-mjpeg")
    plan = SamplingPlan(fps=None, stride=1, max_frames=8, max_duration_s=60)
    limits = VideoLimits(60, 1920 * 1080, 100)
    selection = FaceSelection(max_faces=8, min_score=0.0)
    options = AnalysisOptions(plan, limits, TrackerConfig(), 8, selection, 10**9)
    analysis = analyse_clip(data, "avi", FakeDetector(), GREY, COLOUR, options)
    decoded = [frame.rgb for frame in ClipReader(data, "avi", plan, limits)]
    image_path = FaceCropper(selection, CropGeometry.of(GREY), CropGeometry.of(COLOUR))
    expected = [image_path(rgb, FakeDetector().detect(rgb)) for rgb in decoded]
    np.testing.assert_array_equal(
        np.stack(analysis.image_crops), np.concatenate([e.crops[0] for e in expected])
    )
    np.testing.assert_array_equal(
        np.stack(analysis.video_crops), np.concatenate([e.crops[1] for e in expected])
    )


def test_flip_tta_sends_every_view_and_merges_them_per_face() -> None:
    crops = np.arange(2 * 3 * 4 * 4, dtype=np.float32).reshape(2, 3, 4, 4)
    views = with_views(crops, "flip")
    assert views.shape == (4, 3, 4, 4)
    np.testing.assert_array_equal(views[2], crops[0, :, :, ::-1])
    probabilities = np.array([[0.8, 0.2], [0.4, 0.6], [0.6, 0.4], [0.2, 0.8]], np.float32)
    embeddings = np.array([[1, 0], [0, 1], [0, 1], [0, 1]], np.float32)
    out = merged(ImageOutputs(probabilities, embeddings, np.zeros((4, 0), np.float32)), "flip")
    np.testing.assert_allclose(out.probabilities, [[0.7, 0.3], [0.3, 0.7]])
    np.testing.assert_allclose(out.embeddings[0], [2**-0.5, 2**-0.5], rtol=1e-6)
    assert with_views(crops, "none") is crops


LANDMARK_MODEL = ModelConfig(name="p", architecture="poster", input_size=32, num_landmarks=5)


def _similar_face(scale: float, angle: float, shift: tuple[float, float]) -> np.ndarray:
    """The model's own template points moved by a similarity (what alignment undoes exactly)."""
    template = np.asarray(LANDMARK_MODEL.landmark_template(), dtype=np.float64)
    rotation = np.array([[np.cos(angle), -np.sin(angle)], [np.sin(angle), np.cos(angle)]])
    return scale * template @ rotation.T + np.asarray(shift)


def test_crop_landmarks_of_an_aligned_face_are_the_normalised_template() -> None:
    geometry = CropGeometry.of(LANDMARK_MODEL)
    faces = np.stack([_similar_face(1.0, 0.0, (0, 0)), _similar_face(3.1, 0.4, (200.0, 80.0))])
    moved = geometry.crop_landmarks(faces)
    template = np.asarray(LANDMARK_MODEL.normalised_landmark_template())
    assert moved.shape == (2, 5, 2) and moved.dtype == np.float32
    np.testing.assert_allclose(moved, np.stack([template, template]), atol=1e-5)
    assert ((moved > 0) & (moved < 1)).all()


def test_crop_landmarks_keep_what_alignment_cannot_remove() -> None:
    """A mouth corner pulled outwards (a smile) stays outwards in crop coordinates, at any pose."""
    geometry = CropGeometry.of(LANDMARK_MODEL)
    neutral = _similar_face(2.0, -0.3, (50.0, 40.0))
    smiling = neutral.copy()
    outwards = (neutral[4] - neutral[3]) * 0.15
    smiling[3], smiling[4] = neutral[3] - outwards, neutral[4] + outwards
    before, after = geometry.crop_landmarks(np.stack([neutral, smiling]))
    assert after[4, 0] - after[3, 0] > before[4, 0] - before[3, 0] + 0.02


def test_the_cropper_returns_the_landmarks_of_each_geometry() -> None:
    found = FakeDetector().detect(np.zeros((100, 200, 3), dtype=np.uint8))
    cropped = FaceCropper(FaceSelection(4, 0.5), CropGeometry.of(COLOUR), CropGeometry.of(GREY))(
        np.zeros((100, 200, 3), dtype=np.uint8), found
    )
    assert [points.shape for points in cropped.landmarks] == [(2, 5, 2), (2, 5, 2)]
    assert not np.allclose(cropped.landmarks[0], cropped.landmarks[1])  # different windows


BOX_MODEL = ModelConfig(name="b", architecture="a", input_size=40, crop_mode="box")


def test_a_box_geometry_cuts_the_detectors_integer_box_stretched_to_a_square() -> None:
    frame = noisy_frames(1)[0]
    found = FakeDetector().detect(frame)
    geometry = CropGeometry.of(BOX_MODEL)
    cropped = FaceCropper(FaceSelection(8, 0.0), geometry)(frame, found)
    boxes = cropped.faces.boxes
    assert cropped.crops[0].shape == (len(boxes), 3, 40, 40)
    x0, y0, x1, y1 = boxes[0].astype(int)
    corner = frame[y0:y1, x0:x1][0, 0] / 255.0  # PIL's bilinear keeps a flat corner's colour nearby
    assert np.abs(cropped.crops[0][0, :, 0, 0] - corner).max() < 0.5
    windows = geometry.windows(cropped.faces.landmarks, boxes)
    np.testing.assert_array_equal(windows[:, 0], boxes[:, :2].astype(int))
    np.testing.assert_array_equal(windows[:, 2], boxes[:, 2:].astype(int))
    inside = cropped.landmarks[0]
    assert inside.shape == (len(boxes), 5, 2) and np.all((inside > 0) & (inside < 1))


def test_a_box_geometry_needs_the_boxes() -> None:
    frame = noisy_frames(1)[0]
    with pytest.raises(ValueError, match="box"):
        CropGeometry.of(BOX_MODEL).crop(frame, FakeDetector().detect(frame).landmarks)


def test_a_box_on_the_image_edge_still_gets_a_crop() -> None:
    frame = noisy_frames(1)[0]
    edge = np.array([[320.0, 100.0, 320.0, 150.0], [10.0, 239.6, 60.0, 240.0]])
    crops = CropGeometry.of(BOX_MODEL).crop(frame, np.zeros((2, 5, 2)), edge)
    assert crops.shape == (2, 3, 40, 40) and np.isfinite(crops).all()


def test_integer_boxes_truncate_and_keep_at_least_one_pixel() -> None:
    boxes = np.array([[10.7, 20.2, 42.9, 52.99], [5.2, 6.8, 5.9, 6.9], [3.0, 4.0, 2.0, 1.0]])
    np.testing.assert_array_equal(integer_boxes(boxes), [[10, 20, 42, 52], [5, 6, 6, 7], [3, 4, 4, 5]])
    assert integer_boxes(np.zeros((0, 4))).shape == (0, 4)


def pil_bilinear(pixels: np.ndarray, size: int) -> np.ndarray:
    """What the HSEmotion authors' transform does to a cut: PIL's bilinear resize to size x size."""
    return np.asarray(Image.fromarray(np.ascontiguousarray(pixels)).resize((size, size), Image.BILINEAR))


def test_a_box_crop_is_pils_bilinear_resize_of_the_integer_box() -> None:
    frame = noisy_frames(1)[0]
    boxes = np.array([[10.7, 20.2, 90.9, 60.5], [100.0, 30.0, 120.0, 200.0]])  # wide, then tall
    crops = box_faces(frame, boxes, 40)
    assert crops.shape == (2, 3, 40, 40) and crops.dtype == np.float32
    for crop, (x0, y0, x1, y1) in zip(crops, [(10, 20, 90, 60), (100, 30, 120, 200)], strict=True):
        expected = pil_bilinear(frame[y0:y1, x0:x1], 40).transpose(2, 0, 1) / 255.0
        np.testing.assert_allclose(crop, expected, atol=1e-7)
    grey = box_faces(frame, boxes[:1], 40, gray=True)
    assert grey.shape == (1, 1, 40, 40)
    expected_grey = pil_bilinear(to_gray(frame[20:60, 10:90])[..., 0], 40) / 255.0
    np.testing.assert_allclose(grey[0, 0], expected_grey, atol=1e-7)


def test_a_box_on_the_far_edges_cuts_the_last_row_and_column() -> None:
    frame = noisy_frames(1)[0]  # 320 x 240
    edge = np.array([[320.0, 100.0, 320.0, 150.0], [10.0, 240.0, 60.0, 240.0]])
    crops = box_faces(frame, edge, 8)
    np.testing.assert_allclose(crops[0], pil_bilinear(frame[100:150, 319:320], 8).transpose(2, 0, 1) / 255.0)
    np.testing.assert_allclose(crops[1], pil_bilinear(frame[239:240, 10:60], 8).transpose(2, 0, 1) / 255.0)


def test_landmarks_in_a_box_crop_are_relative_to_the_integer_box() -> None:
    geometry = CropGeometry.of(BOX_MODEL)
    boxes = np.array([[10.7, 20.2, 50.9, 80.5]])  # integers 10, 20, 50, 80: 40 wide, 60 high
    landmarks = np.array([[[20.0, 50.0], [30.0, 20.0], [50.0, 80.0], [10.0, 35.0], [40.0, 65.0]]])
    moved = geometry.crop_landmarks(landmarks, boxes)
    expected = [[0.25, 0.5], [0.5, 0.0], [1.0, 1.0], [0.0, 0.25], [0.75, 0.75]]
    np.testing.assert_allclose(moved[0], expected)
    assert moved.dtype == np.float32
    with pytest.raises(ValueError, match="one detector box per face"):
        geometry.crop_landmarks(landmarks, boxes[:0])


def test_a_box_window_is_the_integer_box_clockwise_from_top_left() -> None:
    windows = CropGeometry.of(BOX_MODEL).windows(
        np.zeros((2, 5, 2)), np.array([[10.7, 20.2, 50.9, 80.5]] * 2)
    )
    np.testing.assert_array_equal(windows[0], [[10, 20], [50, 20], [50, 80], [10, 80]])
    assert windows.shape == (2, 4, 2) and windows.dtype == np.float64


def test_an_aligned_window_is_the_template_window_carried_into_the_image() -> None:
    """Landmarks on the template shifted by (dx, dy) at scale 1: the window is the crop square shifted."""
    geometry = CropGeometry.of(COLOUR)  # 32 px
    template = np.asarray(COLOUR.landmark_template())
    shifts = np.array([[40.0, 7.0], [3.0, 90.0]])
    windows = geometry.windows(template[None] + shifts[:, None])
    square = np.array([[-0.5, -0.5], [31.5, -0.5], [31.5, 31.5], [-0.5, 31.5]])
    np.testing.assert_allclose(windows, square[None] + shifts[:, None], atol=1e-9)
    assert geometry.windows(np.zeros((0, 5, 2))).shape == (0, 4, 2)


@pytest.mark.parametrize("config", [GREY, COLOUR, BOX_MODEL])
def test_no_face_gives_no_crop_of_the_models_shape(config: ModelConfig) -> None:
    geometry = CropGeometry.of(config)
    crops = geometry.crop(noisy_frames(1)[0], np.zeros((0, 5, 2)), np.zeros((0, 4)))
    assert crops.shape == (0, 3, config.input_size, config.input_size) and crops.dtype == np.float32
    assert geometry.crop_landmarks(np.zeros((0, 5, 2)), np.zeros((0, 4))).shape == (0, 5, 2)


def checkerboard_face(size: int = 480) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """A 1-px checkerboard, the landmarks that cut its [40, 360) square at 5 image px per crop px (a 64-px
    crop), and that square's 5 x 5 block means (what an anti-aliased reduction approaches)."""
    ys, xs = np.mgrid[0:size, 0:size]
    gray = (((xs + ys) % 2) * 200).astype(np.uint8)
    template = np.asarray(COLOUR_64.landmark_template())
    landmarks = (template + 0.5) * 5.0 - 0.5 + 40.0
    reference = gray[40:360, 40:360].reshape(64, 5, 64, 5).mean(axis=(1, 3)) / 255.0
    return np.repeat(gray[..., None], 3, axis=2), landmarks, reference


COLOUR_64 = ModelConfig(name="c64", architecture="a", input_size=64)


def test_a_geometry_reduces_before_warping_unless_told_not_to() -> None:
    image, landmarks, reference = checkerboard_face()
    smooth = CropGeometry.of(COLOUR_64).crop(image, landmarks[None])[0, 0]
    assert np.abs(smooth - reference)[2:-2, 2:-2].max() < 0.03
    aliased = CropGeometry.of(COLOUR_64, antialias=False).crop(image, landmarks[None])[0, 0]
    assert np.abs(aliased - reference)[2:-2, 2:-2].max() > 0.2  # one image pixel in five, read as is


def upsampled_reference(cut: np.ndarray, size: int) -> np.ndarray:
    """cv2.resize(INTER_LINEAR) of an S x S image to size x size: pixel centres aligned, edges clamped."""
    source = cut.shape[-1]
    centres = (np.arange(size) + 0.5) * source / size - 0.5
    low = np.clip(np.floor(centres).astype(int), 0, source - 1)
    high = np.clip(low + 1, 0, source - 1)
    weight = np.clip(centres - np.floor(centres), 0, 1)
    weight = np.where(centres < 0, 0.0, weight)
    rows = cut[..., low, :] * (1 - weight)[:, None] + cut[..., high, :] * weight[:, None]
    return rows[..., low] * (1 - weight) + rows[..., high] * weight


def test_a_48_px_cut_is_rounded_to_uint8_levels_then_upsampled_bilinearly() -> None:
    frame = noisy_frames(1)[0]
    landmarks = FakeDetector().detect(frame).landmarks
    cut_48 = CropGeometry.of(replace(GREY, input_size=48, crop_source_size=0)).crop(frame, landmarks)
    levels = np.round(cut_48[:, :1].astype(np.float64) * 255.0) / 255.0  # FER2013's uint8 faces
    expected = upsampled_reference(levels, 64)
    got = CropGeometry.of(GREY).crop(frame, landmarks)
    assert got.shape == (3, 3, 64, 64)
    np.testing.assert_allclose(got[:, :1], expected, atol=1e-6)


def test_a_grey_box_model_cuts_the_grey_of_the_box() -> None:
    frame = noisy_frames(1)[0]
    grey_box = ModelConfig(name="gb", architecture="a", input_size=40, crop_mode="box", crop_color="gray")
    boxes = np.array([[10.7, 20.2, 90.9, 60.5]])
    crops = CropGeometry.of(grey_box).crop(frame, np.zeros((1, 5, 2)), boxes)
    expected = pil_bilinear(to_gray(frame[20:60, 10:90])[..., 0], 40) / 255.0
    for channel in range(3):
        np.testing.assert_allclose(crops[0, channel], expected, atol=1e-7)


def test_a_one_pixel_thin_box_cuts_one_row_or_one_column() -> None:
    frame = noisy_frames(1)[0]
    thin = np.array([[10.2, 20.5, 60.0, 20.9], [30.0, 40.0, 30.4, 90.0]])  # 50 x 1, then 1 x 50
    crops = box_faces(frame, thin, 8)
    np.testing.assert_allclose(crops[0], pil_bilinear(frame[20:21, 10:60], 8).transpose(2, 0, 1) / 255.0)
    np.testing.assert_allclose(crops[1], pil_bilinear(frame[40:90, 30:31], 8).transpose(2, 0, 1) / 255.0)


def test_the_cropper_keeps_max_faces_and_clips_boxes_to_a_non_square_image() -> None:
    frame = np.zeros((120, 300, 3), np.uint8)  # 300 wide, 120 high
    landmarks = np.array([[[30, 40], [70, 40], [50, 60], [35, 75], [65, 75]]], np.float64)
    boxes = np.array([[-20.0, -5.0, 320.0, 150.0], [10.0, 10.0, 90.0, 90.0], [5.0, 5.0, 50.0, 50.0]])
    found = Detections(boxes, np.repeat(landmarks, 3, axis=0), np.array([0.99, 0.98, 0.97]))
    cropped = FaceCropper(FaceSelection(max_faces=2, min_score=0.0), CropGeometry.of(BOX_MODEL))(frame, found)
    np.testing.assert_array_equal(cropped.faces.boxes, [[0.0, 0.0, 300.0, 120.0], [10.0, 10.0, 90.0, 90.0]])
    assert cropped.crops[0].shape == (2, 3, 40, 40)
