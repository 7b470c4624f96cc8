"""Clips through the real gateway, MTCNN and Triton: real clips (OpenCV's Megamind.avi, vtest.avi) and clips
synthesised from real face photos in every supported container/codec."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest

from devstack import clips

pytestmark = pytest.mark.integration


def post_clip(client: httpx.Client, data: bytes, name: str, mime: str, **params: Any) -> httpx.Response:
    return client.post("/predict", params=params, files={"file": (name, data, mime)})


def analysed(
    client: httpx.Client, data: bytes, name: str = "clip.mp4", mime: str = "video/mp4", **params: Any
) -> Any:
    response = post_clip(client, data, name, mime, **params)
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["media"] == "video"
    check_consistency(body)
    return body


def check_consistency(body: dict[str, Any]) -> None:
    """Every timeline face belongs to a listed track, distributions sum to 1, time moves forward."""
    track_ids = {track["track_id"] for track in body["tracks"] or []}
    stamps = [frame["timestamp_s"] for frame in body["timeline"] or []]
    assert stamps == sorted(stamps)
    for frame in body["timeline"] or []:
        for face in frame["faces"]:
            assert face["track_id"] in track_ids
            assert sum(item["probability"] for item in face["expressions"]) == pytest.approx(1.0, abs=1e-4)
    for track in body["tracks"] or []:
        assert sum(item["probability"] for item in track["dynamic_expressions"]) == pytest.approx(
            1.0, abs=1e-4
        )
        assert track["first_s"] <= track["last_s"]
        assert 0.0 < track["dominant"]["share"] <= 1.0
    assert body["summary"]["people"] == len(track_ids)


def test_real_clip_megamind(client: httpx.Client, media: Path) -> None:
    body = analysed(client, (media / "Megamind.avi").read_bytes(), "Megamind.avi", "video/x-msvideo")
    video = body["video"]
    assert video["container"] == "AVI" and (video["width"], video["height"]) == (720, 528)
    assert video["duration_s"] == pytest.approx(11.26, abs=0.1) and video["frames_decoded"] == 270
    assert 50 <= video["frames_analysed"] <= 60  # 5 fps default over 11.26 s
    assert body["tracks"], "Megamind's face is on screen for most of the clip"
    assert body["video_model"]["name"] == "stt" and body["video_model"]["trained"] is False
    assert any("stt" in warning for warning in body["warnings"])


def test_megamind_tracks_come_from_the_trained_image_model_with_segments(
    client: httpx.Client, media: Path
) -> None:
    body = analysed(client, (media / "Megamind.avi").read_bytes(), "Megamind.avi", "video/x-msvideo")
    assert body["tracks"]
    for track in body["tracks"]:
        assert track["dynamic_method"].startswith("mini_xception_fer2013 per-frame")
        assert track["stt_expression"] is None  # the untrained STT is left out by default
        assert len(track["timeline"]) == len(track["frame_indices"])
        segments = track["segments"]
        assert segments[0]["start_s"] == track["first_s"] and segments[-1]["end_s"] == track["last_s"]
        assert sum(segment["frames"] for segment in segments) == len(track["frame_indices"])
        starts = [segment["start_s"] for segment in segments]
        assert starts == sorted(starts)
    assert "video_infer" not in body["timings_ms"]


def test_include_stt_shows_the_untrained_spatio_temporal_model(client: httpx.Client, media: Path) -> None:
    data = clips.encode(clips.moving_face(media, count=10), fps=10)
    body = analysed(client, data, include=["timeline", "tracks", "stt"])
    (track,) = body["tracks"]
    assert track["stt_expression"]["label"] and len(track["stt_expressions"]) == 7
    assert any("'stt' serves untrained" in w and "NOT predictions" in w for w in body["warnings"])


def test_a_person_who_changes_expression_shows_two_segments(client: httpx.Client, media: Path) -> None:
    """Barack Obama smiling (obama.jpg) for 2 s, then frowning (obama2.jpg) at the same place."""
    body = analysed(client, clips.encode(clips.changing_expression(media), fps=10))
    (track,) = body["tracks"]
    first, second = track["segments"]
    assert first["label"] == "happiness" and second["label"] != "happiness"
    assert 1.4 <= second["start_s"] <= 2.8  # the change happens at 2.0 s; smoothing may shift it a little
    assert first["end_s"] < second["start_s"]


def test_real_clip_over_the_duration_limit(client: httpx.Client, media: Path) -> None:
    """vtest.avi lasts 79.5 s, over the default 60 s limit: refused before decoding a frame."""
    response = post_clip(client, (media / "vtest.avi").read_bytes(), "vtest.avi", "video/x-msvideo")
    assert response.status_code == 422
    assert response.json()["error"]["code"] == "video_too_long"


@pytest.mark.parametrize("kind", [*clips.FORMATS, "gif"])
def test_a_moving_face_in_every_container_and_codec(client: httpx.Client, media: Path, kind: str) -> None:
    data = clips.encode(clips.moving_face(media), fps=10, kind=kind)
    _, _, _, suffix, mime = clips.FORMATS.get(kind, ("", "", "", "gif", "image/gif"))
    body = analysed(client, data, f"clip.{suffix}", mime)
    assert body["video"]["frames_decoded"] == 20 and body["video"]["frames_analysed"] == 10  # 2 s at 5 fps
    (track,) = body["tracks"]
    assert len(track["frame_indices"]) == 10  # the same person in every analysed frame
    xs = [frame["faces"][0]["box"]["x1"] for frame in body["timeline"]]
    assert xs == sorted(xs) and xs[-1] - xs[0] > 150  # and the box follows her to the right


def test_two_people_get_two_stable_tracks(client: httpx.Client, media: Path) -> None:
    body = analysed(client, clips.encode(clips.two_people(media), fps=8), stride=1)
    assert body["summary"]["people"] == 2
    orders = set()
    for frame in body["timeline"]:
        by_id = {face["track_id"]: face["box"]["x1"] for face in frame["faces"]}
        assert len(by_id) == 2
        orders.add(tuple(sorted(by_id, key=lambda track_id: by_id[track_id])))
    assert len(orders) == 1  # the person on the left keeps one id, the one on the right the other


def test_a_person_leaving_and_returning_keeps_their_id(client: httpx.Client, media: Path) -> None:
    body = analysed(client, clips.encode(clips.leaving_and_returning(media), fps=10), stride=1)
    (track,) = body["tracks"]
    seen = [frame["timestamp_s"] for frame in body["timeline"] if frame["faces"]]
    assert min(seen) < 1.0 < 2.5 <= max(seen)  # seen before and after the absence
    assert len(track["frame_indices"]) == len(seen) == 20


def test_a_clip_without_faces(client: httpx.Client, media: Path) -> None:
    from PIL import Image

    fruits = np.asarray(Image.open(media / "fruits.jpg").convert("RGB").resize((320, 240)))
    frames = [np.roll(fruits, 8 * i, axis=1) for i in range(10)]
    body = analysed(client, clips.encode(frames, fps=10))
    assert body["tracks"] == [] and body["summary"] == {
        "people": 0,
        "faces": 0,
        "dominant": {"label": None, "share": 0.0},
    }
    assert all(frame["faces"] == [] for frame in body["timeline"])


def test_a_one_frame_clip(client: httpx.Client, media: Path) -> None:
    body = analysed(client, clips.encode(clips.moving_face(media, count=1), fps=10))
    assert body["video"]["frames_decoded"] == body["video"]["frames_analysed"] == 1
    (track,) = body["tracks"]
    assert track["frame_indices"] == [0] and track["dynamic_expression"]["label"]


def test_a_corrupt_clip(client: httpx.Client, media: Path) -> None:
    data = clips.encode(clips.moving_face(media), fps=10)
    corrupt = data[:48] + bytes(len(data) - 48)
    response = post_clip(client, corrupt, "broken.mp4", "video/mp4")
    assert response.status_code == 422 and response.json()["error"]["code"] == "invalid_video"
    assert post_clip(client, data, "ok.mp4", "video/mp4").status_code == 200  # still serving


def test_oversized_frames_are_refused(client: httpx.Client) -> None:
    big = [np.zeros((1200, 2000, 3), np.uint8)] * 2
    response = post_clip(client, clips.encode(big, fps=10), "big.mp4", "video/mp4")
    assert response.status_code == 422 and response.json()["error"]["code"] == "video_too_large"


def test_request_options(client: httpx.Client, media: Path) -> None:
    data = clips.encode(clips.moving_face(media), fps=10)  # 20 frames, 2 s
    assert analysed(client, data, fps=2)["video"]["frames_analysed"] == 4
    assert analysed(client, data, stride=4)["video"]["frames_analysed"] == 5
    capped = analysed(client, data, stride=1, max_frames=3)
    assert capped["video"]["frames_analysed"] == 3 and capped["video"]["truncated"] is True
    assert analysed(client, data, stride=1, max_duration_s=0.45)["video"]["frames_analysed"] == 5
    only_tracks = analysed(client, data, include="tracks")
    assert only_tracks["timeline"] is None and only_tracks["tracks"]
    first_frame = client.post(
        "/predict",
        params={"media": "image"},
        files={"file": ("c.gif", clips.encode(clips.moving_face(media), kind="gif"), "image/gif")},
    )
    assert first_frame.status_code == 200 and first_frame.json()["media"] == "image"
    assert client.post("/predict", params={"fps": -1}, files={"file": ("c.mp4", data)}).status_code == 422


def test_video_metrics(client: httpx.Client, media: Path) -> None:
    analysed(client, clips.encode(clips.moving_face(media), fps=10))
    text = client.get("/metrics").text
    assert 'fer_video_frames_total{kind="analysed"}' in text
    assert 'fer_stage_duration_seconds_count{stage="video_analyse"}' in text
    assert "fer_video_realtime_factor_count" in text
