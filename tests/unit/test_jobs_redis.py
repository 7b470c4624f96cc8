"""What only the shared job store does, against a real redis-server each test starts: leases that lapse
when a replica dies (its jobs taken over, or failed once out of attempts), claims raced by several
replicas (each job claimed once), prefixes kept apart, and a Redis gone away answered as a typed error."""

from __future__ import annotations

import shutil
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from devstack.redis_server import redis_server
from service.exceptions import JobStoreUnavailable
from service.jobs.redis_store import RedisJobStore
from service.jobs.states import Job

pytestmark = pytest.mark.skipif(shutil.which("redis-server") is None, reason="make redis installs it")
LEASE_S = 0.3


def job(job_id: str, created: float = 0.0) -> Job:
    return Job(job_id, "a", "queued", created, "AVI", 10, "{}")


@pytest.fixture
def url(tmp_path: Path) -> Iterator[str]:
    with redis_server(tmp_path) as running:
        yield running


def replica(url: str, lease_s: float = LEASE_S) -> RedisJobStore:
    return RedisJobStore(url, lease_s=lease_s)


def test_a_dead_replicas_job_is_taken_over_once_its_lease_lapses(url: str) -> None:
    dead, alive = replica(url), replica(url)
    dead.add(job("j"))
    claimed = dead.claim(1.0)
    assert claimed is not None
    dead.progress("j", 30, 90, 2.0)
    assert alive.requeue_running(3, 2.0, 60.0) == (0, 0)  # the lease holds: nobody takes it
    time.sleep(LEASE_S + 0.2)  # the dead replica renews no more
    assert alive.requeue_running(3, 3.0, 60.0) == (1, 0)
    taken = alive.claim(4.0)
    assert taken is not None and (taken.id, taken.attempts, taken.frames_done) == ("j", 2, 0)
    assert not dead.renew("j", claimed.attempts)  # were it only stalled, it learns it lost the job
    assert not dead.finish("j", "succeeded", 5.0, 60.0, attempt=claimed.attempts)
    assert alive.finish("j", "succeeded", 6.0, 60.0, attempt=taken.attempts)


def test_a_renewed_lease_is_not_taken_over(url: str) -> None:
    worker, sweeper = replica(url), replica(url)
    worker.add(job("j"))
    claimed = worker.claim(1.0)
    assert claimed is not None
    for _ in range(4):  # renewing every third of the lease for longer than a lease
        time.sleep(LEASE_S / 3)
        assert worker.renew("j", claimed.attempts)
        assert sweeper.requeue_running(3, 2.0, 60.0) == (0, 0)


def test_a_job_interrupted_too_often_fails(url: str) -> None:
    store = replica(url)
    store.add(job("j"))
    for outcome in ((1, 0), (0, 1)):  # the first lapse re-queues it, the second (attempt 2 of 2) fails it
        assert store.claim(1.0) is not None
        time.sleep(LEASE_S + 0.1)
        assert store.requeue_running(2, 2.0, 60.0) == outcome
    found = store.get("j")
    assert found is not None and found.state == "failed" and found.error_code == "job_interrupted"
    assert found.expires_at == 62.0 and store.counts() == {"failed": 1}


def test_replicas_racing_for_jobs_claim_each_once(url: str) -> None:
    stores = [replica(url, lease_s=60.0) for _ in range(4)]
    for n in range(40):
        stores[0].add(job(f"j{n:02d}", float(n)))

    def drain(store: RedisJobStore) -> list[str]:
        claimed: list[str] = []
        while (found := store.claim(1.0)) is not None:
            claimed.append(found.id)
        return claimed

    with ThreadPoolExecutor(len(stores)) as pool:
        taken = [name for names in pool.map(drain, stores) for name in names]
    assert sorted(taken) == [f"j{n:02d}" for n in range(40)]  # every job once, none twice
    assert stores[0].counts() == {"running": 40}


def test_prefixes_keep_deployments_apart(url: str) -> None:
    first, second = RedisJobStore(url, 30.0, "one"), RedisJobStore(url, 30.0, "two")
    first.add(job("j"))
    assert second.get("j") is None and second.claim(1.0) is None and second.queued_count() == 0


def test_a_redis_gone_away_is_a_typed_error(tmp_path: Path) -> None:
    with redis_server(tmp_path) as running:
        store = replica(running)
    with pytest.raises(JobStoreUnavailable):
        store.get("j")
    with pytest.raises(JobStoreUnavailable):
        replica(running)  # a gateway does not start against no Redis
