import numpy as np
import pytest

from service.vision.tracking import FaceTracker, TrackerConfig, appearance_descriptor, iou, landmark_distance

TEMPLATE = np.array([[30.0, 40], [70, 40], [50, 60], [35, 75], [65, 75]])


def face_at(x: float, y: float, size: float = 100.0) -> tuple[np.ndarray, np.ndarray]:
    box = np.array([x, y, x + size, y + size])
    return box, TEMPLATE * size / 100.0 + [x, y]


def look(seed: int) -> np.ndarray:
    return appearance_descriptor(np.random.default_rng(seed).random((3, 64, 64)).astype(np.float32))


def step(tracker: FaceTracker, t: float, faces: list[tuple[float, float, int]]) -> list[int]:
    placed = [face_at(x, y) for x, y, _ in faces]
    boxes = np.array([b for b, _ in placed]).reshape(-1, 4)
    landmarks = np.array([p for _, p in placed]).reshape(-1, 5, 2)
    return tracker.update(t, boxes, landmarks, [look(seed) for _, _, seed in faces])


def test_iou_and_landmark_distance() -> None:
    assert iou(np.array([0, 0, 10, 10.0]), np.array([0, 0, 10, 10.0])) == 1.0
    assert iou(np.array([0, 0, 10, 10.0]), np.array([5, 0, 15, 10.0])) == pytest.approx(1 / 3)
    assert iou(np.array([0, 0, 1, 1.0]), np.array([2, 2, 3, 3.0])) == 0.0
    box, points = face_at(0, 0)
    assert landmark_distance(points, points + np.array([10.0, 0.0]), box) == pytest.approx(
        10 / np.hypot(100, 100)
    )


def test_a_moving_face_keeps_its_id() -> None:
    tracker = FaceTracker()
    ids = [step(tracker, i * 0.1, [(10.0 + 15 * i, 50.0, 1)]) for i in range(20)]
    assert ids == [[1]] * 20


def test_a_fast_face_is_followed_by_landmarks_when_boxes_stop_overlapping() -> None:
    tracker = FaceTracker()
    assert step(tracker, 0.0, [(0.0, 0.0, 1)]) == [1]
    assert step(tracker, 0.1, [(60.0, 0.0, 1)]) == [1]  # IoU 0.25 < 0.3, landmarks 0.42 face sizes


def test_two_people_get_two_ids_in_any_detection_order() -> None:
    tracker = FaceTracker()
    assert step(tracker, 0.0, [(0.0, 0.0, 1), (400.0, 0.0, 2)]) == [1, 2]
    assert step(tracker, 0.1, [(405.0, 0.0, 2), (5.0, 0.0, 1)]) == [2, 1]


def test_a_short_occlusion_keeps_the_id() -> None:
    tracker = FaceTracker(TrackerConfig(max_gap_s=1.0))
    step(tracker, 0.0, [(0.0, 0.0, 1)])
    step(tracker, 0.5, [])
    assert step(tracker, 0.9, [(10.0, 0.0, 1)]) == [1]


def test_a_person_leaving_and_returning_is_recognised_by_appearance() -> None:
    tracker = FaceTracker(TrackerConfig(max_gap_s=0.5, reid_window_s=5.0))
    step(tracker, 0.0, [(0.0, 0.0, 1), (400.0, 0.0, 2)])
    step(tracker, 1.0, [(400.0, 0.0, 2)])  # person 1 left
    assert step(tracker, 3.0, [(700.0, 0.0, 1), (400.0, 0.0, 2)]) == [1, 2]  # back elsewhere: same id


def test_a_new_person_in_a_lost_track_place_gets_a_new_id() -> None:
    tracker = FaceTracker(TrackerConfig(max_gap_s=0.5))
    step(tracker, 0.0, [(0.0, 0.0, 1)])
    assert step(tracker, 2.0, [(0.0, 0.0, 7)]) == [2]  # lost track, different appearance


def test_appearance_descriptor_is_unit_norm_and_discriminative() -> None:
    a, b = look(1), look(2)
    assert np.linalg.norm(a) == pytest.approx(1.0)
    assert a @ a == pytest.approx(1.0) and abs(a @ b) < 0.5


def test_a_jump_motion_cannot_explain_is_rejoined_by_appearance() -> None:
    tracker = FaceTracker()
    step(tracker, 0.0, [(0.0, 0.0, 1)])
    assert step(tracker, 0.1, [(500.0, 200.0, 1)]) == [1]  # a cut: far away, same face
    assert step(tracker, 0.2, [(0.0, 0.0, 3)]) == [2]  # someone else where she was
