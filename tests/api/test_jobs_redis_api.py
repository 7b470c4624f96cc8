"""/v1/jobs in Redis mode (FER_JOBS_REDIS_URL) with the fake inference and detector, against a real
redis-server each test starts: the same answers as in SQLite mode, a job handed from a replica that stops
to one that starts, a cancel from the replica that does not run the job, and a Redis gone away → 503."""

from __future__ import annotations

import asyncio
import shutil
import time
from contextlib import ExitStack
from pathlib import Path

import httpx
import pytest
import redis

from devstack.redis_server import redis_server
from tests.api.conftest import FakeInference, running_app
from tests.api.test_jobs_api import RAW, clip, finished

pytestmark = pytest.mark.skipif(shutil.which("redis-server") is None, reason="make redis installs it")


async def test_a_job_runs_and_reads_back_as_in_sqlite_mode(tmp_path: Path) -> None:
    with redis_server(tmp_path / "redis") as url:
        async with running_app(jobs_redis_url=url, jobs_dir=tmp_path / "jobs") as client:
            answer = await client.post("/v1/jobs", params={"stride": 1}, content=clip(), headers=RAW)
            assert answer.status_code == 202, answer.text
            job = answer.json()
            done = await finished(client, job["status_url"])
            result = (await client.get(job["result_url"])).json()
            table = (await client.get(job["result_url"], params={"format": "csv"})).text
            listed = (await client.get("/v1/jobs")).json()["jobs"]
    assert done["state"] == "succeeded" and done["attempts"] == 1, done
    assert done["progress"]["percent"] == 100.0 and result["timeline_frames"] == 12
    assert len(table.strip().splitlines()) == 1 + 12 * 2
    assert [j["id"] for j in listed] == [job["id"]]
    assert not (tmp_path / "jobs" / "jobs.sqlite3").exists()  # the state is in Redis only


async def test_a_replica_that_stops_hands_its_job_to_the_next(tmp_path: Path) -> None:
    gate = asyncio.Event()
    stalled = FakeInference(gate=gate)
    shared = {"jobs_dir": tmp_path / "jobs", "jobs_window_frames": 2}
    with redis_server(tmp_path / "redis") as url:
        async with running_app(stalled, jobs_redis_url=url, **shared) as first:
            job = (await first.post("/v1/jobs", params={"stride": 1}, content=clip(), headers=RAW)).json()
            await asyncio.wait_for(stalled.arrived.acquire(), 10)  # running on the first replica
        async with running_app(jobs_redis_url=url, **shared) as second:  # a clean stop gave it back
            done = await finished(second, job["status_url"])
    assert done["state"] == "succeeded" and done["attempts"] == 1, done  # a clean stop costs no attempt


async def test_a_cancel_reaches_the_replica_running_the_job(tmp_path: Path) -> None:
    gate = asyncio.Event()
    runner = FakeInference(gate=gate)
    shared = {"jobs_dir": tmp_path / "jobs", "jobs_window_frames": 2, "jobs_lease_s": 0.6}
    with redis_server(tmp_path / "redis") as url:
        async with (
            running_app(runner, jobs_redis_url=url, **shared) as running,
            running_app(FakeInference(gate=asyncio.Event()), jobs_redis_url=url, **shared) as other,
        ):
            job = (await running.post("/v1/jobs", params={"stride": 1}, content=clip(), headers=RAW)).json()
            await asyncio.wait_for(runner.arrived.acquire(), 10)
            cancelled = (await other.delete(job["status_url"])).json()
            await asyncio.sleep(0.6)  # the runner's next renewal (a third of the lease) learns of it
            gate.set()
            done = await finished(running, job["status_url"])
            result = await other.get(job["result_url"])
            await idle(running)
    assert len(runner.calls) < 6, runner.calls  # it stopped: 12 frames in windows of 2 would be 6 calls
    assert cancelled["state"] == "cancelled" and done["state"] == "cancelled"
    assert done["progress"]["frames_analysed"] < 12
    assert result.status_code == 409
    assert not any((tmp_path / "jobs" / "uploads").iterdir()) and not (tmp_path / "jobs" / "results").exists()


async def test_a_stalled_replica_that_lost_its_job_leaves_the_new_attempts_result(tmp_path: Path) -> None:
    gate = asyncio.Event()
    stalled = FakeInference(gate=gate)
    shared = {"jobs_dir": tmp_path / "jobs", "jobs_window_frames": 2}
    with redis_server(tmp_path / "redis") as url:
        async with running_app(stalled, jobs_redis_url=url, jobs_lease_s=30.0, **shared) as first:
            job = (await first.post("/v1/jobs", params={"stride": 1}, content=clip(), headers=RAW)).json()
            await asyncio.wait_for(stalled.arrived.acquire(), 10)
            # The first replica stalls past its lease (its next renewal is 10 s away): the lease lapses.
            redis.Redis.from_url(url).zadd("fer:jobs:state:running", {job["id"]: 0})
            async with running_app(jobs_redis_url=url, jobs_lease_s=0.6, **shared) as second:
                done = await finished(second, job["status_url"])  # taken over, run again, succeeded
                gate.set()  # the stalled replica wakes up and finishes its stale attempt too
                await idle(first)
                result = await second.get(job["result_url"], params={"limit": 100})
    assert done["state"] == "succeeded" and done["attempts"] == 2, done
    assert result.status_code == 200 and result.json()["timeline_frames"] == 12  # not deleted by the first


async def test_a_stalled_replica_that_finishes_first_does_not_break_the_new_attempt(tmp_path: Path) -> None:
    """The other order: the replica that lost the job finishes its stale attempt while the new attempt
    still runs. The new attempt's result is the job's; the stale attempt's files are gone."""
    first_gate, second_gate = asyncio.Event(), asyncio.Event()
    stalled, taking_over = FakeInference(gate=first_gate), FakeInference(gate=second_gate)
    shared = {"jobs_dir": tmp_path / "jobs", "jobs_window_frames": 2}
    with redis_server(tmp_path / "redis") as url:
        async with running_app(stalled, jobs_redis_url=url, jobs_lease_s=30.0, **shared) as first:
            job = (await first.post("/v1/jobs", params={"stride": 1}, content=clip(), headers=RAW)).json()
            await asyncio.wait_for(stalled.arrived.acquire(), 10)
            redis.Redis.from_url(url).zadd("fer:jobs:state:running", {job["id"]: 0})  # its lease lapses
            async with running_app(taking_over, jobs_redis_url=url, jobs_lease_s=0.6, **shared) as second:
                await asyncio.wait_for(taking_over.arrived.acquire(), 10)  # attempt 2 runs on the second
                first_gate.set()  # the stalled replica wakes up and finishes attempt 1 first
                await idle(first)
                second_gate.set()
                done = await finished(second, job["status_url"])
                result = await second.get(job["result_url"], params={"limit": 100})
    assert done["state"] == "succeeded" and done["attempts"] == 2, done
    assert result.status_code == 200 and result.json()["timeline_frames"] == 12
    attempts = sorted(path.name for path in (tmp_path / "jobs" / "results" / job["id"]).iterdir())
    assert attempts == ["attempt-2"]


async def idle(client: httpx.AsyncClient, within_s: float = 10.0) -> None:
    """Until the replica's worker runs no job (its fer_job_workers_busy is 0)."""
    deadline = time.monotonic() + within_s
    while "fer_job_workers_busy 0.0" not in (await client.get("/metrics")).text:
        assert time.monotonic() < deadline, "the replica still runs the cancelled job"
        await asyncio.sleep(0.05)


async def test_a_redis_gone_away_is_503_and_the_gateway_still_stops(tmp_path: Path) -> None:
    with ExitStack() as redis:
        url = redis.enter_context(redis_server(tmp_path / "redis"))
        async with running_app(jobs_redis_url=url, jobs_dir=tmp_path / "jobs") as client:
            redis.close()  # Redis stops under the running gateway
            status = await client.get("/v1/jobs/0123")
            listed = await client.get("/v1/jobs")
            submitted = await client.post("/v1/jobs", params={"stride": 1}, content=clip(), headers=RAW)
    for answer in (status, listed, submitted):
        assert answer.status_code == 503, answer.text
        assert answer.json()["error"]["code"] == "jobs_unavailable"
        assert answer.headers["retry-after"] == "5"
    assert not any((tmp_path / "jobs" / "uploads").iterdir())  # the refused upload was not kept
