"""The job table and its state machine: moves, claims, retention, re-queue after a crash, progress.

The table's contract runs against both stores: SQLite, and Redis on a real redis-server each test starts
(tests/unit/test_jobs_redis.py has what only the shared store does: leases, takeover, concurrent claims).
"""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest

from devstack.redis_server import redis_server
from service.jobs.redis_store import RedisJobStore
from service.jobs.runner import expected_frames
from service.jobs.states import IllegalMove, Job, check_move, progress_of
from service.jobs.store import JobStore, JobTable
from service.vision.video import ClipInfo, SamplingPlan

NO_REDIS = shutil.which("redis-server") is None


def job(job_id: str, created: float = 0.0, owner: str = "a") -> Job:
    return Job(job_id, owner, "queued", created, "AVI", 10, "{}")


@pytest.fixture(params=["sqlite", "redis"])
def store(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[JobTable]:
    if request.param == "sqlite":
        table: JobTable = JobStore(tmp_path / "jobs.sqlite3")
        yield table
        table.close()
        return
    if NO_REDIS:
        pytest.skip("redis-server is not installed (make redis)")
    with redis_server(tmp_path / "redis") as url:
        table = RedisJobStore(url, lease_s=30.0)
        yield table
        table.close()


def test_finished_states_are_final_and_a_queued_job_cannot_succeed() -> None:
    check_move("queued", "running")
    check_move("running", "queued")  # an interrupted job's retry
    for final in ("succeeded", "failed", "cancelled"):
        with pytest.raises(IllegalMove):
            check_move(final, "running")
    with pytest.raises(IllegalMove):
        check_move("queued", "succeeded")


def test_jobs_are_claimed_oldest_first_once(store: JobTable) -> None:
    store.add(job("late", 2.0))
    store.add(job("early", 1.0))
    first, second = store.claim(10.0), store.claim(10.0)
    assert first is not None and second is not None
    assert (first.id, first.state, first.attempts) == ("early", "running", 1) and second.id == "late"
    assert store.claim(10.0) is None


def test_a_cancelled_job_cannot_be_finished_by_its_worker(store: JobTable) -> None:
    store.add(job("j"))
    store.claim(1.0)
    assert store.finish("j", "cancelled", 2.0, 60.0)
    assert not store.finish("j", "succeeded", 3.0, 60.0)  # the race's loser learns it lost
    found = store.get("j")
    assert found is not None and found.state == "cancelled" and found.expires_at == 62.0


def test_a_queued_job_cannot_succeed_in_the_table(store: JobTable) -> None:
    store.add(job("j"))
    assert not store.finish("j", "succeeded", 1.0, 60.0)


def test_retention_lists_only_expired_jobs(store: JobTable) -> None:
    for name in ("old", "new", "open"):
        store.add(job(name))
    store.claim(0.0), store.claim(0.0)
    store.finish("old", "succeeded", 10.0, 5.0)
    store.finish("new", "failed", 10.0, 100.0, ("invalid_video", "broken"))
    assert [j.id for j in store.expired(20.0)] == ["old"]
    failed = store.get("new")
    assert failed is not None and (failed.error_code, failed.error_message) == ("invalid_video", "broken")


def test_ownership_lists_only_the_owners_jobs(store: JobTable) -> None:
    store.add(job("mine", 1.0, owner="a"))
    store.add(job("theirs", 2.0, owner="b"))
    assert [j.id for j in store.owned("a", 10)] == ["mine"]


def test_a_crash_mid_job_requeues_it_until_its_attempts_run_out(tmp_path: Path) -> None:
    path = tmp_path / "jobs.sqlite3"
    crashed = JobStore(path)
    crashed.add(job("j"))
    crashed.claim(1.0)
    crashed.progress("j", 40, 100, 3.0)
    # The process dies without closing anything; the next one opens the same file.
    for attempt in (1, 2):
        restarted = JobStore(path)
        assert restarted.requeue_running(max_attempts=3, now=5.0, retention_s=60.0) == (1, 0)
        found = restarted.get("j")
        assert found is not None and found.state == "queued" and found.frames_done == 0
        claimed = restarted.claim(6.0)
        assert claimed is not None and claimed.attempts == attempt + 1
    last = JobStore(path)
    assert last.requeue_running(max_attempts=3, now=7.0, retention_s=60.0) == (0, 1)
    found = last.get("j")
    assert found is not None and found.state == "failed" and found.error_code == "job_interrupted"


def test_a_clean_stop_gives_the_attempt_back(store: JobTable) -> None:
    store.add(job("j"))
    store.claim(1.0)
    store.release("j")
    found = store.get("j")
    assert found is not None and (found.state, found.attempts) == ("queued", 0)


def test_progress_is_written_only_while_running_and_read_back(store: JobTable) -> None:
    store.add(job("j"))
    store.progress("j", 5, 10, 1.0)  # queued: ignored
    assert store.get("j") == job("j")
    claimed = store.claim(3.0)
    assert claimed is not None and claimed.started_at == 3.0
    store.progress("j", 40, 100, 2.5)
    found = store.get("j")
    assert found is not None and (found.frames_done, found.frames_expected, found.run_seconds) == (
        40,
        100,
        2.5,
    )
    assert store.counts() == {"running": 1} and store.oldest_queued() is None


def test_counts_queue_age_and_delete(store: JobTable) -> None:
    store.add(job("a", 4.0))
    store.add(job("b", 7.0, owner="x"))
    assert (store.queued_count(), store.oldest_queued(), store.counts()) == (2, 4.0, {"queued": 2})
    store.delete("a")
    store.delete("a")  # twice: a no-op
    assert store.get("a") is None and store.queued_count() == 1 and store.owned("a", 10) == []


def test_renew_and_an_attempt_guard_tell_a_worker_its_job_is_no_longer_its_own(store: JobTable) -> None:
    store.add(job("j"))
    claimed = store.claim(1.0)
    assert claimed is not None and store.renew("j", claimed.attempts)
    assert not store.renew("j", claimed.attempts + 1)  # a stale attempt number
    store.progress("j", 7, 10, 1.0, attempt=claimed.attempts + 1)  # a stale attempt writes nothing
    found = store.get("j")
    assert found is not None and found.frames_done == 0
    assert not store.finish("j", "succeeded", 2.0, 60.0, attempt=claimed.attempts + 1)
    assert store.finish("j", "cancelled", 2.0, 60.0)  # a cancel from any replica: no attempt guard
    assert not store.renew("j", claimed.attempts)  # the worker learns it at its next heartbeat


def test_progress_and_eta() -> None:
    running = Job(
        "j", "a", "running", 0.0, "AVI", 1, "{}", started_at=100.0, frames_done=25, frames_expected=100
    )
    progress = progress_of(running, now=110.0)
    assert (progress.percent, progress.elapsed_s, progress.eta_s) == (25.0, 10.0, 30.0)
    queued = progress_of(job("q"), now=5.0)
    assert (queued.percent, queued.eta_s) == (0.0, None)


def test_expected_frames_follow_the_sampling() -> None:
    info = ClipInfo("AVI", "mpeg4", 320, 240, 25.0, 180.0)
    assert (
        expected_frames(info, SamplingPlan(fps=2.0, stride=None, max_frames=10_000, max_duration_s=1e9))
        == 360
    )
    assert (
        expected_frames(info, SamplingPlan(fps=None, stride=10, max_frames=10_000, max_duration_s=1e9)) == 450
    )
    assert (
        expected_frames(info, SamplingPlan(fps=50.0, stride=None, max_frames=100, max_duration_s=1e9)) == 100
    )
