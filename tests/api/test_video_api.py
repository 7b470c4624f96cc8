import asyncio

import numpy as np
import pytest

from devstack import clips
from tests.api.conftest import FakeInference, png_bytes, running_app


def clip(width: int = 200, count: int = 6) -> bytes:
    return clips.encode([np.full((100, width, 3), 40 * i, np.uint8) for i in range(count)], fps=10)


async def test_a_clip_is_recognised_by_content_and_answered_per_track() -> None:
    fake = FakeInference()
    async with running_app(fake) as client:
        response = await client.post(
            "/predict",
            # The untrained fake STT runs only when asked for (include=stt).
            params={"stride": 1, "include": ["timeline", "tracks", "stt"]},
            content=clip(),
            headers={"Content-Type": "application/octet-stream"},
        )
        metrics = (await client.get("/metrics")).text
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["media"] == "video" and body["video"]["frames_analysed"] == 6
    assert body["summary"]["people"] == 2 and len(body["tracks"]) == 2  # FakeDetector: 2 faces at 200 px
    assert all(len(frame["faces"]) == 2 for frame in body["timeline"])
    assert fake.clip_calls == [(2, 4)]  # both tracks in one call, resampled to clip_length 4
    assert body["video_model"]["name"] == "fake_stt"
    assert "fer_faces_total 12.0" in metrics  # 2 faces in each of 6 frames count like image faces


async def test_media_video_on_an_image_is_415() -> None:
    async with running_app() as client:
        response = await client.post(
            "/predict",
            params={"media": "video"},
            content=b"\x89PNG\r\n\x1a\n",
            headers={"Content-Type": "image/png"},
        )
    assert response.status_code == 415


async def test_unknown_query_parameters_are_refused() -> None:
    async with running_app() as client:
        response = await client.post(
            "/predict", params={"fsp": 3}, content=clip(), headers={"Content-Type": "video/mp4"}
        )
    assert response.status_code == 422 and response.json()["error"]["code"] == "invalid_request"


async def test_clips_have_their_own_limit_and_images_still_pass() -> None:
    gate = asyncio.Event()
    fake = FakeInference(gate=gate)
    async with running_app(fake, video_max_in_flight=1, max_in_flight=4) as client:
        first = asyncio.create_task(
            client.post("/predict", content=clip(), headers={"Content-Type": "video/mp4"})
        )
        await asyncio.wait_for(fake.arrived.acquire(), timeout=30)  # the first clip holds the only clip slot
        second = await client.post("/predict", content=clip(), headers={"Content-Type": "video/mp4"})
        metrics = (await client.get("/metrics")).text
        assert "fer_in_flight_requests 1.0" in metrics  # one clip is one request, not two
        image = await client.post(
            "/predict",
            content=clips.encode_gif([np.zeros((60, 60, 3), np.uint8)], 10),
            headers={"Content-Type": "image/gif"},
        )
        gate.set()  # the image above was answered while the clip was still running
        assert (await first).status_code == 200
    assert second.status_code == 429 and second.json()["error"]["code"] == "overloaded"
    assert image.status_code == 200


async def test_clip_timings_cover_every_stage() -> None:
    async with running_app() as client:
        response = await client.post(
            "/predict",
            params={"include": ["timeline", "tracks", "stt"]},
            content=clip(),
            headers={"Content-Type": "video/mp4"},
        )
    timings = response.json()["timings_ms"]
    assert {"video_analyse", "infer", "video_infer", "assemble", "total"} <= set(timings)
    assert timings["total"] >= timings["video_analyse"]


@pytest.mark.parametrize(
    "data",
    [
        clips.size_changing_mjpeg([(320, 120)] * 4 + [(640, 240)] * 4),
        clips.with_unknown_codec(clips.encode([np.zeros((120, 320, 3), np.uint8)] * 4, kind="webm-vp8")),
    ],
    ids=["frame-size-changes", "unknown-codec-id"],
)
async def test_undecodable_clip_structures_are_422_invalid_video(data: bytes) -> None:
    async with running_app() as client:
        response = await client.post("/predict", content=data, headers={"Content-Type": "video/webm"})
    assert response.status_code == 422, response.text
    assert response.json()["error"]["code"] == "invalid_video"


async def test_an_image_flood_leaves_clips_their_own_slots() -> None:
    gate = asyncio.Event()
    fake = FakeInference(gate=gate)
    async with running_app(fake, max_in_flight=2, video_max_in_flight=1) as client:
        images = [
            asyncio.create_task(
                client.post("/predict", content=png_bytes(300), headers={"Content-Type": "image/png"})
            )
            for _ in range(2)
        ]
        for _ in images:  # both image slots are held, waiting on inference
            await asyncio.wait_for(fake.arrived.acquire(), timeout=30)
        refused = await client.post("/predict", content=png_bytes(300), headers={"Content-Type": "image/png"})
        # Frames 60 px wide hold no face for the fake detector: the clip needs no (gated) inference.
        faceless_clip = clip(width=60)
        video = await client.post("/predict", content=faceless_clip, headers={"Content-Type": "video/mp4"})
        gate.set()
        answered = [await image for image in images]
    assert [response.status_code for response in answered] == [200, 200]
    assert refused.status_code == 429
    assert video.status_code == 200, video.text  # was 429: the images held every request slot


@pytest.mark.parametrize(
    ("data", "content_type"),
    [
        (clips.encode(clips.noise_frames(10), kind="webm-vp8")[:12_000], "video/webm"),  # cut at ~30 %
        (clips.avi_without_frames(clips.encode(clips.noise_frames(4), kind="avi-mjpeg")), "video/x-msvideo"),
    ],
    ids=["webm-cut-at-30-percent", "avi-with-no-frames"],
)
async def test_a_clip_with_no_decodable_frame_is_422_like_in_every_container(
    data: bytes, content_type: str
) -> None:
    async with running_app() as client:
        response = await client.post("/predict", content=data, headers={"Content-Type": content_type})
    assert response.status_code == 422, response.text  # was 200 with frames_decoded 0
    assert response.json()["error"]["code"] == "invalid_video"
