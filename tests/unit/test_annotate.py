"""The drawing functions of /annotate (service/serving/drawing.py): pure, on synthetic pictures."""

from __future__ import annotations

import numpy as np
import pytest

from service.schemas import Box, FaceResult, LabelScore, Landmarks, Point, TimelineFrame, TrackedFace
from service.serving.drawing import (
    SheetTile,
    annotated_image,
    contact_sheet,
    evenly_spaced,
    face_caption,
    output_format,
    thumbnail,
)

LABELS = ("neutral", "happiness", "sadness")


def face(x1: float, y1: float, x2: float, y2: float, top: str = "happiness", **extra: int) -> FaceResult:
    centre = Point(x=(x1 + x2) / 2, y=(y1 + y2) / 2)
    scores = [LabelScore(label=label, probability=0.6 if label == top else 0.2) for label in LABELS]
    fields = {
        "box": Box(x1=x1, y1=y1, x2=x2, y2=y2),
        "landmarks": Landmarks(
            left_eye=centre, right_eye=centre, nose=centre, mouth_left=centre, mouth_right=centre
        ),
        "detection_score": 0.99,
        "expression": LabelScore(label=top, probability=0.6),
        "expressions": scores,
        "text_similarity": [],
    }
    return TrackedFace(**fields, track_id=extra["track_id"]) if extra else FaceResult(**fields)


@pytest.mark.parametrize(
    ("accept", "expected"),
    [(None, "JPEG"), ("", "JPEG"), ("image/png", "PNG"), ("IMAGE/PNG;q=0.9,image/jpeg;q=0.8", "PNG"),
     ("image/png;q=bogus", "JPEG"), ("image/png;q=0.5,image/jpeg", "JPEG"), ("image/*", "JPEG")],
)  # fmt: skip
def test_output_format(accept: str | None, expected: str) -> None:
    assert output_format(accept) == expected


def test_evenly_spaced_keeps_first_and_last() -> None:
    assert evenly_spaced(list(range(10)), 4) == [0, 3, 6, 9]
    assert evenly_spaced([1, 2], 5) == [1, 2]
    assert evenly_spaced([1, 2, 3], 1) == [1]


def test_captions_name_the_track_when_there_is_one() -> None:
    assert face_caption(face(0, 0, 10, 10)) == "happiness 60%"
    assert face_caption(face(0, 0, 10, 10, "sadness", track_id=2)) == "#2 sadness 60%"


def test_annotated_image_draws_the_box_and_flags_untrained_models() -> None:
    rgb = np.full((200, 300, 3), 128, np.uint8)
    trained = np.asarray(annotated_image(rgb, [face(100, 60, 160, 120)], trained=True, max_side=2048))
    untrained = np.asarray(annotated_image(rgb, [face(100, 60, 160, 120)], trained=False, max_side=2048))
    assert trained.shape == (200, 300, 3)
    assert (trained[90, 100] != 128).any() and (trained[90, 130] == 128).all()  # edge drawn, inside kept
    assert (untrained[-3:, :50] != trained[-3:, :50]).any()  # the banner along the bottom edge


def test_labels_stay_inside_a_face_at_the_picture_edge() -> None:
    rgb = np.full((100, 100, 3), 128, np.uint8)
    image = annotated_image(
        rgb, [face(70, 0, 100, 40)], trained=True, max_side=2048
    )  # tag and bars would overflow
    assert image.size == (100, 100)


def test_contact_sheet_is_a_grid_of_shrunk_frames() -> None:
    tiles = []
    for index in range(6):
        image, scale = thumbnail(np.zeros((240, 640, 3), np.uint8), 160)
        frame = TimelineFrame(
            frame_index=index, timestamp_s=index / 5, faces=[face(100, 40, 200, 160, track_id=1)]
        )
        tiles.append(SheetTile(image, scale, frame))
    assert tiles[0].scale == 0.25 and tiles[0].image.size == (160, 60)
    sheet = contact_sheet(tiles, trained=True)
    assert sheet.width == 4 * 160 and sheet.height > 2 * 60  # 4 columns, 2 rows, each with its caption
    assert contact_sheet([], trained=True).size == (640, 120)
