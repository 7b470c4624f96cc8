"""/v1/jobs with the fake inference and detector: submit, follow, read back, cancel, own, refuse."""

from __future__ import annotations

import asyncio
import hashlib
import time
from typing import Any

import httpx
import numpy as np

from devstack import clips
from tests.api.conftest import FakeInference, png_bytes, running_app

RAW = {"Content-Type": "video/mp4"}


def clip(width: int = 200, count: int = 12) -> bytes:
    return clips.encode([np.full((100, width, 3), 20 * i, np.uint8) for i in range(count)], fps=10)


async def finished(client: httpx.AsyncClient, url: str, within_s: float = 30.0, **kw: Any) -> dict[str, Any]:
    deadline = time.monotonic() + within_s
    while time.monotonic() < deadline:
        body: dict[str, Any] = (await client.get(url, **kw)).json()
        if body["state"] in ("succeeded", "failed", "cancelled"):
            return body
        await asyncio.sleep(0.05)
    raise AssertionError(f"job {url} did not finish within {within_s} s")


async def test_a_job_gives_the_same_answer_as_predict() -> None:
    data = clip()
    async with running_app() as client:
        sync = (await client.post("/predict", params={"stride": 1}, content=data, headers=RAW)).json()
        answer = await client.post("/v1/jobs", params={"stride": 1}, content=data, headers=RAW)
        assert answer.status_code == 202, answer.text
        job = answer.json()
        assert answer.headers["location"] == job["status_url"] == f"/v1/jobs/{job['id']}"
        assert job["state"] == "queued" and job["container"] == "QuickTime/MP4"
        done = await finished(client, job["status_url"])
        result = (await client.get(job["result_url"])).json()
        table = (await client.get(job["result_url"], params={"format": "csv"})).text
        listed = (await client.get("/v1/jobs")).json()["jobs"]
    assert done["state"] == "succeeded", done
    assert done["progress"]["percent"] == 100.0 and done["progress"]["frames_analysed"] == 12
    assert result.pop("timeline_frames") == 12
    for body in (result, sync):
        body.pop("timings_ms")
    assert result == sync
    rows = table.strip().splitlines()
    assert rows[0].startswith("timestamp_s,frame_index,track_id,x1,y1,x2,y2,detection_score,expression,")
    assert len(rows) == 1 + 12 * 2  # one row per frame per person (two fake faces per frame)
    assert [j["id"] for j in listed] == [job["id"]]


async def test_the_timeline_comes_in_pages() -> None:
    async with running_app() as client:
        job = (await client.post("/v1/jobs", params={"stride": 1}, content=clip(), headers=RAW)).json()
        await finished(client, job["status_url"])
        first = await client.get(job["result_url"], params={"limit": 5})
        last = await client.get(job["result_url"], params={"limit": 5, "offset": 10})
    assert first.headers["x-timeline-total"] == "12"
    assert 'offset=5&limit=5>; rel="next"' in first.headers["link"]
    assert [f["frame_index"] for f in first.json()["timeline"]] == [0, 1, 2, 3, 4]
    assert [f["frame_index"] for f in last.json()["timeline"]] == [10, 11] and "link" not in last.headers


async def test_the_upload_is_deleted_once_analysed(tmp_path: Any) -> None:
    async with running_app(jobs_dir=tmp_path) as client:
        job = (await client.post("/v1/jobs", content=clip(), headers=RAW)).json()
        await finished(client, job["status_url"])
        assert not (tmp_path / "uploads" / job["id"]).exists()
        assert (tmp_path / "results" / job["id"] / "attempt-1" / "frames.csv").exists()
        deleted = await client.delete(job["status_url"])
        gone = await client.get(job["status_url"])
    assert deleted.status_code == 200 and deleted.json()["state"] == "succeeded"
    assert not (tmp_path / "results" / job["id"]).exists()
    assert gone.status_code == 404 and gone.json()["error"]["code"] == "job_not_found"


async def test_a_running_job_is_cancelled_and_its_files_deleted(tmp_path: Any) -> None:
    gate = asyncio.Event()
    fake = FakeInference(gate=gate)
    async with running_app(fake, jobs_dir=tmp_path, jobs_window_frames=2) as client:
        job = (await client.post("/v1/jobs", params={"stride": 1}, content=clip(), headers=RAW)).json()
        await asyncio.wait_for(fake.arrived.acquire(), 10)  # the first window is at inference
        cancelled = (await client.delete(job["status_url"])).json()
        gate.set()
        done = await finished(client, job["status_url"])
        result = await client.get(job["result_url"])
    assert cancelled["state"] == "cancelled" and done["state"] == "cancelled"
    assert done["progress"]["frames_analysed"] < 12
    assert result.status_code == 409 and result.json()["error"]["code"] == "job_not_finished"
    assert not any((tmp_path / "uploads").iterdir()) and not (tmp_path / "results").exists()


async def test_another_keys_job_is_not_found() -> None:
    keys = {"Authorization": "Bearer alice"}, {"Authorization": "Bearer bob"}
    hashes = [hashlib.sha256(k.encode()).hexdigest() for k in ("alice", "bob")]
    async with running_app(api_key_sha256=hashes) as client:
        job = (await client.post("/v1/jobs", content=clip(), headers={**RAW, **keys[0]})).json()
        mine = await client.get(job["status_url"], headers=keys[0])
        theirs = [
            await client.get(job["status_url"], headers=keys[1]),
            await client.get(job["result_url"], headers=keys[1]),
            await client.delete(job["status_url"], headers=keys[1]),
        ]
        listed = (await client.get("/v1/jobs", headers=keys[1])).json()["jobs"]
    assert mine.status_code == 200
    assert [r.status_code for r in theirs] == [404, 404, 404] and listed == []
    assert {r.json()["error"]["code"] for r in theirs} == {"job_not_found"}


async def test_bad_uploads_are_refused_before_queueing(tmp_path: Any) -> None:
    async with running_app(jobs_dir=tmp_path, jobs_max_upload_bytes=4096, jobs_max_duration_s=0.5) as client:
        image = await client.post("/v1/jobs", content=png_bytes(), headers={"Content-Type": "video/mp4"})
        big = await client.post("/v1/jobs", content=b"\0" * 5000, headers=RAW)
        long = await client.post("/v1/jobs", content=clip(count=12), headers=RAW)
        empty = await client.post("/v1/jobs", content=b"", headers=RAW)
        unknown = await client.get("/v1/jobs/0123456789abcdef")
        listed = (await client.get("/v1/jobs")).json()["jobs"]
    assert (image.status_code, image.json()["error"]["code"]) == (415, "unsupported_media_type")
    assert (big.status_code, big.json()["error"]["code"]) == (413, "payload_too_large")
    assert (long.status_code, long.json()["error"]["code"]) == (422, "video_too_long")
    assert (empty.status_code, empty.json()["error"]["code"]) == (400, "empty_payload")
    assert (unknown.status_code, unknown.json()["error"]["code"]) == (404, "job_not_found")
    assert listed == [] and not any((tmp_path / "uploads").iterdir())


async def test_a_multipart_upload_is_spooled_like_a_raw_one() -> None:
    async with running_app() as client:
        answer = await client.post("/v1/jobs", files={"file": ("clip.mp4", clip(), "video/mp4")})
        done = await finished(client, answer.json()["status_url"])
    assert answer.status_code == 202 and done["state"] == "succeeded"


async def test_a_corrupt_video_fails_with_the_error_envelope() -> None:
    data = clip()
    async with running_app() as client:
        answer = await client.post("/v1/jobs", content=data[:64] + b"\0" * 2000, headers=RAW)
    assert answer.status_code == 422 and answer.json()["error"]["code"] == "invalid_video"


async def test_a_full_queue_is_429() -> None:
    gate = asyncio.Event()
    async with running_app(FakeInference(gate=gate), jobs_max_queued=1) as client:
        answers = [(await client.post("/v1/jobs", content=clip(), headers=RAW)) for _ in range(3)]
        gate.set()
    assert [a.status_code for a in answers][-1] == 429
    assert answers[-1].json()["error"]["code"] == "job_queue_full"


async def test_job_metrics() -> None:
    async with running_app() as client:
        job = (await client.post("/v1/jobs", params={"stride": 1}, content=clip(), headers=RAW)).json()
        await finished(client, job["status_url"])
        text = (await client.get("/metrics")).text
    assert 'fer_jobs_finished_total{state="succeeded"} 1.0' in text
    assert "fer_job_frames_total 12.0" in text and "fer_job_queue_age_seconds" in text
