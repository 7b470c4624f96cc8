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
    step(tracker, 1.0, [])  # gone from a frame: the track is lost once max_gap passes
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


# --------------------------------------------------------------------------------------------------------
# Crowded and crossing scenes, identities asserted frame by frame. A scene is a list of frames, each a
# timestamp and the faces detected in it as (x, y, look seed, who): `who` is the person the test knows it
# is; the expected ids are written down by person (numbered in the order people first appear), so a track
# that changes hands, a person who gets a fresh id, or one id on two faces all fail the frame they happen.

Frame = tuple[float, list[tuple[float, float, int, str]]]


def track_ids(tracker: FaceTracker, scene: list[Frame]) -> list[list[int]]:
    return [step(tracker, t, [(x, y, seed) for x, y, seed, _ in faces]) for t, faces in scene]


def expected(scene: list[Frame]) -> list[list[int]]:
    """Each person keeps one id, numbered 1, 2, ... in the order people first appear."""
    ids: dict[str, int] = {}
    return [[ids.setdefault(who, len(ids) + 1) for _, _, _, who in faces] for _, faces in scene]


def test_two_overlapping_people_never_share_one_track() -> None:
    """Bug (a): B walks in overlapping A (IoU 0.48 with A's track): a track takes one face per frame."""
    tracker = FaceTracker()
    assert step(tracker, 0.0, [(0.0, 0.0, 1)]) == [1]
    assert step(tracker, 0.1, [(5.0, 0.0, 1), (40.0, 0.0, 2)]) == [1, 2]
    assert step(tracker, 0.2, [(42.0, 0.0, 2), (8.0, 0.0, 1)]) == [2, 1]


def test_a_far_moved_face_and_a_newcomer_never_share_one_track_by_landmarks() -> None:
    """Bug (a) in the landmark stage: two faces within landmark reach of the one track, no IoU overlap."""
    tracker = FaceTracker()
    assert step(tracker, 0.0, [(0.0, 0.0, 1)]) == [1]
    # Both 0.42 and 0.49 face sizes away from the track, IoU 0.25 and 0.18: one of them only is person 1.
    assert step(tracker, 0.1, [(60.0, 0.0, 1), (-70.0, 0.0, 2)]) == [1, 2]


def test_a_crowd_of_overlapping_faces_keeps_every_identity() -> None:
    """Five people, each overlapping her neighbours, swaying and detected in a new order every frame."""
    rng = np.random.default_rng(3)
    home = {who: (60.0 * k, 10.0 * (k % 2)) for k, who in enumerate("ABCDE")}
    scene: list[Frame] = []
    for frame in range(12):
        order = rng.permutation(5) if frame else np.arange(5)
        faces = []
        for k in order:
            who = "ABCDE"[k]
            x, y = home[who]
            sway = 6.0 * np.sin(frame / 2 + k)
            faces.append((x + sway, y - sway / 2, 10 + int(k), who))
        scene.append((0.1 * frame, faces))
    tracker = FaceTracker()
    assert track_ids(tracker, scene) == expected(scene)
    assert sorted(t.track_id for t in tracker.tracks) == [1, 2, 3, 4, 5]


def test_two_people_swapping_sides_keep_their_ids() -> None:
    """A walks left to right, B right to left, 30 px a frame; they pass each other with overlapping boxes
    (IoU up to 0.25 between them, 0.54 with their own last box)."""
    scene: list[Frame] = [
        (0.1 * i, [(30.0 * i, 0.0, 1, "A"), (600.0 - 30.0 * i, 60.0, 2, "B")]) for i in range(21)
    ]
    assert track_ids(FaceTracker(), scene) == expected(scene)


def test_two_fast_people_swapping_sides_are_followed_by_landmarks() -> None:
    """70 px a frame: no box overlaps its own last box enough (IoU 0.18), landmarks decide, best first."""
    scene: list[Frame] = [
        (0.1 * i, [(70.0 * i, 0.0, 1, "A"), (840.0 - 70.0 * i, 90.0, 2, "B")]) for i in range(13)
    ]
    assert track_ids(FaceTracker(), scene) == expected(scene)


def test_landmark_matching_takes_the_closest_pair_first() -> None:
    """Bug (b): face A is within landmark reach of both tracks (0.50 and 0.57 face sizes), B only of track 2
    (0.53). Best first: A→1, B→2. Worst first would give A track 2 and B a new id."""
    tracker = FaceTracker()
    assert step(tracker, 0.0, [(0.0, 0.0, 1), (150.0, 0.0, 2)]) == [1, 2]
    assert step(tracker, 0.1, [(70.0, 0.0, 1), (225.0, 0.0, 2)]) == [1, 2]


def test_a_small_overlap_is_not_the_same_face() -> None:
    """Bug (c): a stranger overlapping the lost face's box a little (IoU 0.06 < 0.3, landmarks 0.63 face
    sizes away, another look) is someone new, not the track."""
    tracker = FaceTracker()
    assert step(tracker, 0.0, [(0.0, 0.0, 1)]) == [1]
    assert step(tracker, 0.1, [(80.0, 40.0, 5)]) == [2]


def test_min_iou_is_inclusive() -> None:
    """IoU exactly min_iou matches (10-px faces 5 px apart: IoU 1/3); just below does not."""
    no_landmarks = TrackerConfig(min_iou=1 / 3, max_landmark_distance=-1.0)
    tracker = FaceTracker(no_landmarks)
    box = np.array([[0.0, 0.0, 10.0, 10.0]])
    moved = np.array([[5.0, 0.0, 15.0, 10.0]])
    points = np.zeros((1, 5, 2))
    tracker.update(0.0, box, points, [look(1)])
    assert tracker.update(0.1, moved, points, [look(2)]) == [1]
    strict = FaceTracker(TrackerConfig(min_iou=0.34, max_landmark_distance=-1.0))
    strict.update(0.0, box, points, [look(1)])
    assert strict.update(0.1, moved, points, [look(2)]) == [2]


def test_one_person_leaves_and_comes_back_among_others() -> None:
    """A, B and C; A leaves for 2 s (beyond max_gap, within the re-id window) and comes back elsewhere; a
    newcomer D arrives where A was while A is away."""
    away = [(0.5 * i, [(400.0, 0.0, 2, "B"), (800.0, 0.0, 3, "C")]) for i in range(2, 6)]
    scene: list[Frame] = [
        (0.0, [(0.0, 0.0, 1, "A"), (400.0, 0.0, 2, "B"), (800.0, 0.0, 3, "C")]),
        (0.5, [(10.0, 0.0, 1, "A"), (405.0, 0.0, 2, "B"), (800.0, 0.0, 3, "C")]),
        *away,
        (3.0, [(400.0, 0.0, 2, "B"), (0.0, 0.0, 4, "D"), (800.0, 0.0, 3, "C")]),
        (3.5, [(1200.0, 0.0, 1, "A"), (400.0, 0.0, 2, "B"), (5.0, 0.0, 4, "D"), (800.0, 0.0, 3, "C")]),
        (4.0, [(1190.0, 0.0, 1, "A"), (400.0, 0.0, 2, "B"), (10.0, 0.0, 4, "D"), (800.0, 0.0, 3, "C")]),
    ]
    tracker = FaceTracker(TrackerConfig(max_gap_s=1.0, reid_window_s=5.0))
    assert track_ids(tracker, scene) == expected(scene)
    assert len(tracker.tracks) == 4


# --------------------------------------------------------------------------------------------------------
# The arithmetic underneath, on boxes that are neither square nor at the origin (mutation survivors).


def test_iou_of_boxes_that_are_not_square_nor_at_the_origin() -> None:
    a, b = np.array([10.0, 20.0, 50.0, 100.0]), np.array([30.0, 40.0, 90.0, 70.0])
    assert iou(a, b) == pytest.approx(600 / (3200 + 1800 - 600))  # 20 x 30 over 40x80 + 60x30 - 600
    assert iou(b, a) == pytest.approx(600 / 4400)
    assert iou(np.array([0.0, 0, 10, 10]), np.array([20.0, 0, 30, 10])) == 0.0  # apart in x only
    assert iou(np.array([0.0, 0, 10, 10]), np.array([0.0, 20, 10, 30])) == 0.0  # apart in y only
    assert iou(np.array([0.0, 0, 10, 10]), np.array([0.0, 10, 10, 20])) == 0.0  # touching edges
    assert iou(np.array([5.0, 5, 5, 5]), np.array([5.0, 5, 5, 5])) == 0.0  # empty boxes: no division by 0


def test_landmark_distance_uses_the_box_diagonal() -> None:
    points = TEMPLATE * 0.3
    assert landmark_distance(
        points, points + np.array([6.0, 8.0]), np.array([7.0, 9.0, 37.0, 49.0])
    ) == pytest.approx(10 / 50)  # a 30 x 40 box: diagonal 50
    assert landmark_distance(
        points, points + np.array([3.0, 4.0]), np.array([5.0, 5.0, 5.0, 5.0])
    ) == pytest.approx(5.0)


def test_appearance_descriptor_is_the_centred_16x16_block_mean() -> None:
    rng = np.random.default_rng(4)
    crop = rng.random((3, 70, 70)).astype(np.float32)  # 70 px: the 64 px at the top left are used
    grey = crop.mean(axis=0)[:64, :64].astype(np.float64)
    blocks = np.array(
        [[grey[4 * r : 4 * r + 4, 4 * c : 4 * c + 4].mean() for c in range(16)] for r in range(16)]
    )
    centred = blocks.ravel() - blocks.mean()
    np.testing.assert_allclose(appearance_descriptor(crop), centred / np.linalg.norm(centred), atol=1e-6)
    flat = appearance_descriptor(np.full((3, 32, 32), 0.5, np.float32))
    assert not np.isnan(flat).any() and not flat.any()  # nothing to describe: zeros, not NaN


def test_a_moving_face_keeps_its_id_late_in_a_clip_whatever_its_look() -> None:
    """Timestamps far from 0, and a look that changes every frame: motion alone must keep the id."""
    tracker = FaceTracker()
    ids = [step(tracker, 100.0 + i * 0.5, [(10.0 + 15 * i, 50.0, 100 + i)]) for i in range(10)]
    assert ids == [[1]] * 10


def test_a_slow_stream_keeps_its_people_however_far_apart_its_frames_are() -> None:
    """A live stream answered every 2.5 s (a busy server): seen in the frame before is never a gap."""
    tracker = FaceTracker(TrackerConfig(max_gap_s=1.0, reid_window_s=5.0))
    ids = [step(tracker, i * 2.5, [(10.0 + 20 * i, 50.0, 100 + i)]) for i in range(6)]
    assert ids == [[1]] * 6


def test_a_face_missing_from_one_slow_frame_has_a_gap() -> None:
    tracker = FaceTracker(TrackerConfig(max_gap_s=1.0, reid_window_s=2.0))
    step(tracker, 0.0, [(10.0, 50.0, 1)])
    step(tracker, 2.5, [])
    assert step(tracker, 5.0, [(10.0, 50.0, 2)]) == [2]  # 5 s unseen, another look: someone new
    assert tracker.forget(5.0) == [1]


def test_the_gap_and_the_reid_window_are_inclusive() -> None:
    tracker = FaceTracker(TrackerConfig(max_gap_s=1.0, reid_window_s=3.0))
    step(tracker, 0.0, [(0.0, 0.0, 1)])
    assert step(tracker, 1.0, [(10.0, 0.0, 2)]) == [1]  # exactly max_gap later, another look: still motion
    assert step(tracker, 4.0, [(600.0, 0.0, 1)]) == [1]  # exactly reid_window later, far away: appearance


def test_a_track_matched_by_motion_is_not_also_given_to_a_lookalike() -> None:
    tracker = FaceTracker()
    step(tracker, 0.0, [(0.0, 0.0, 1)])
    assert step(tracker, 0.1, [(5.0, 0.0, 1), (500.0, 0.0, 1)]) == [1, 2]  # a twin far away: someone new


def test_a_face_equidistant_from_two_tracks_goes_to_the_older_one() -> None:
    tracker = FaceTracker()
    step(tracker, 0.0, [(0.0, 0.0, 1), (140.0, 0.0, 2)])
    assert step(tracker, 0.1, [(70.0, 0.0, 3)]) == [1]  # 0.49 face sizes from both, IoU 0.18 with both


def test_landmark_pairs_are_ranked_by_distance_not_by_detection_order() -> None:
    """X (detected first) is 0.57 from track 1 and 0.50 from track 2; Y only reaches track 1 (0.53)."""
    tracker = FaceTracker()
    assert step(tracker, 0.0, [(150.0, 0.0, 1), (0.0, 0.0, 2)]) == [1, 2]
    assert step(tracker, 0.1, [(70.0, 0.0, 2), (225.0, 0.0, 1)]) == [2, 1]


def test_returning_people_are_matched_to_their_own_tracks_best_first() -> None:
    tracker = FaceTracker(TrackerConfig(max_gap_s=0.5, reid_window_s=5.0))
    step(tracker, 0.0, [(0.0, 0.0, 1), (400.0, 0.0, 2)])
    assert step(tracker, 2.0, [(900.0, 500.0, 2), (1500.0, 500.0, 1)]) == [2, 1]


def test_a_tracks_appearance_is_the_normalised_running_blend() -> None:
    tracker = FaceTracker()
    step(tracker, 0.0, [(0.0, 0.0, 1)])
    step(tracker, 0.1, [(5.0, 0.0, 2)])
    blended = 0.7 * look(1) + 0.3 * look(2)
    np.testing.assert_allclose(tracker.tracks[0].appearance, blended / np.linalg.norm(blended), atol=1e-12)


def test_iou_of_boxes_smaller_than_a_pixel() -> None:
    assert iou(np.array([0.0, 0.0, 0.5, 0.5]), np.array([0.0, 0.0, 0.5, 0.5])) == 1.0


def test_max_landmark_distance_is_inclusive() -> None:
    """A 30 x 40 face (diagonal 50) moved by (6, 8): exactly 0.2 face sizes, with IoU matching disabled."""
    tracker = FaceTracker(TrackerConfig(min_iou=2.0, max_landmark_distance=0.2))
    points = TEMPLATE * 0.3
    tracker.update(0.0, np.array([[0.0, 0.0, 30.0, 40.0]]), points[None], [look(1)])
    moved = tracker.update(
        0.1, np.array([[6.0, 8.0, 36.0, 48.0]]), (points + np.array([6.0, 8.0]))[None], [look(2)]
    )
    assert moved == [1]


def unit(*components: float) -> np.ndarray:
    vector = np.zeros(256)
    vector[: len(components)] = components
    return vector


def test_lookalikes_returning_together_get_their_own_tracks_by_best_similarity() -> None:
    """Two lost tracks whose looks are 0.9 alike (both above 0.8): each face goes to its most similar one."""
    tracker = FaceTracker(TrackerConfig(max_gap_s=0.5, reid_window_s=5.0))
    a, b = unit(1.0), unit(0.9, np.sqrt(1 - 0.81))
    boxes = np.array([[0.0, 0.0, 100.0, 100.0], [400.0, 0.0, 500.0, 100.0]])
    points = np.stack([TEMPLATE, TEMPLATE + np.array([400.0, 0.0])])
    assert tracker.update(0.0, boxes, points, [a, b]) == [1, 2]
    far = boxes + np.array([1000.0, 800.0, 1000.0, 800.0])
    assert tracker.update(2.0, far, points + np.array([1000.0, 800.0]), [a, b]) == [1, 2]
    assert tracker.update(
        4.0, far[::-1].copy(), (points + np.array([1000.0, 800.0]))[::-1].copy(), [b, a]
    ) == [2, 1]


def test_min_appearance_similarity_is_inclusive() -> None:
    tracker = FaceTracker(TrackerConfig(max_gap_s=0.5, min_appearance_similarity=1.0))
    tracker.update(0.0, np.array([[0.0, 0.0, 100.0, 100.0]]), TEMPLATE[None], [unit(1.0)])
    far = np.array([[900.0, 900.0, 1000.0, 1000.0]])
    assert tracker.update(2.0, far, (TEMPLATE + np.array([900.0, 900.0]))[None], [unit(1.0)]) == [1]


def test_forgetting_drops_only_tracks_unseen_for_longer_than_the_reid_window() -> None:
    tracker = FaceTracker(TrackerConfig(max_gap_s=1.0, reid_window_s=2.0))
    step(tracker, 1.0, [(0.0, 0.0, 1)])
    step(tracker, 2.0, [(0.0, 0.0, 1), (400.0, 0.0, 2)])
    assert tracker.forget(3.0) == []  # track 1 unseen exactly 1 s, track 2 just seen
    assert tracker.forget(4.0) == []  # exactly the re-identification window: still kept
    assert [t.track_id for t in tracker.tracks] == [1, 2]
    assert tracker.forget(4.5) == [1, 2] and tracker.tracks == []


def test_a_gap_counts_from_when_the_track_was_last_seen() -> None:
    """Seen at 1.0, missing from the frame at 1.5, back at 2.0 with another look: exactly max_gap_s unseen,
    so still matched by motion (the frame just before did not have it)."""
    tracker = FaceTracker(TrackerConfig(max_gap_s=1.0, reid_window_s=5.0))
    step(tracker, 1.0, [(0.0, 0.0, 1)])
    step(tracker, 1.5, [])
    assert step(tracker, 2.0, [(10.0, 0.0, 2)]) == [1]
    later = FaceTracker(TrackerConfig(max_gap_s=1.0, reid_window_s=5.0))
    step(later, 1.0, [(0.0, 0.0, 1)])
    step(later, 1.5, [])
    assert step(later, 2.5, [(10.0, 0.0, 2)]) == [2]  # 1.5 s unseen, another look: someone new
