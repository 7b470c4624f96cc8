"""Redis mode with real parts: two `python -m service` processes share one real redis-server (started here)
and one jobs folder, against the real local Triton and real MTCNN, on clips made from the test media.
Both replicas take jobs and either answers any job's status and result; a replica SIGKILLed mid-job has
its job finished by the other once its lease lapses; a cancel sent to one replica stops the other's work.
"""

from __future__ import annotations

import re
import signal
import time
from collections.abc import Iterator
from contextlib import ExitStack
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest

from devstack.clips import long_video
from devstack.redis_server import redis_server
from devstack.stack import gateway_process
from service.launcher.triton_local import LocalTriton
from tests.integration.test_jobs_triton import submit, wait_for_frames, watch

pytestmark = pytest.mark.integration
LEASE_S = 3.0  # short, so a takeover happens within the test: lease + a sweep (half a lease)


@dataclass
class Replica:
    name: str
    url: str
    process: Any

    def metric(self, name: str, labels: str = "") -> float:
        text = httpx.get(f"{self.url}/metrics", timeout=10).text
        found = re.search(rf"^{name}{re.escape(labels)} (\S+)$", text, re.MULTILINE)
        assert found, f"{name}{labels} missing from {self.name}'s /metrics"
        return float(found.group(1))


@pytest.fixture(scope="module")
def two_minutes(media: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    return long_video(media, 120.0, tmp_path_factory.mktemp("redis-jobs") / "two-minutes.avi")


@pytest.fixture(scope="module")
def replicas(triton: LocalTriton, tmp_path_factory: pytest.TempPathFactory) -> Iterator[list[Replica]]:
    folder = tmp_path_factory.mktemp("redis-mode")
    with ExitStack() as stack:
        url = stack.enter_context(redis_server(folder / "redis"))
        env = {
            "FER_JOBS_REDIS_URL": url,
            "FER_JOBS_DIR": str(folder / "shared-jobs"),  # the volume both replicas mount
            "FER_JOBS_LEASE_S": str(LEASE_S),
            "FER_JOBS_PROGRESS_INTERVAL_S": "0.2",
            "FER_JOBS_WINDOW_FRAMES": "8",
            "FER_LOG_FORMAT": "text",
        }
        started = []
        for name in ("a", "b"):
            log = folder / f"gateway-{name}.log"
            address, process = stack.enter_context(gateway_process(triton.endpoints.grpc_url, log, **env))
            started.append(Replica(name, address, process))
        yield started


def client(replica: Replica) -> httpx.Client:
    return httpx.Client(base_url=replica.url, timeout=60)


def test_both_replicas_take_jobs_and_either_answers(replicas: list[Replica], media: Path) -> None:
    a, b = replicas
    started = time.monotonic()
    with client(a) as on_a, client(b) as on_b:
        jobs = [submit(on_a if n % 2 else on_b, media / "Megamind.avi", fps=2) for n in range(4)]
        for job in jobs:  # each followed on the replica that did not accept it... and on the other too
            assert watch(on_a, job, within_s=120)[-1]["state"] == "succeeded"
            assert on_b.get(job["status_url"]).json()["state"] == "succeeded"
        results = [(on_a.get(j["result_url"]).json(), on_b.get(j["result_url"]).json()) for j in jobs]
        tables = [on_b.get(j["result_url"], params={"format": "csv"}).text for j in jobs]
    for from_a, from_b in results:
        assert from_a == from_b and from_a["timeline_frames"] > 10 and from_a["tracks"]
    assert all(table.count("\n") > 10 for table in tables)
    done = [r.metric("fer_jobs_finished_total", '{state="succeeded"}') for r in replicas]
    assert sum(done) == 4 and min(done) >= 1, done  # both took jobs, none ran one twice
    print(f"4 jobs in {time.monotonic() - started:.1f} s, run by replica a/b: {done}")


def test_a_cancel_on_one_replica_stops_the_other_replicas_work(
    replicas: list[Replica], two_minutes: Path
) -> None:
    a, b = replicas
    with client(a) as on_a, client(b) as on_b:
        job = submit(on_a, two_minutes, fps=1)
        wait_for_frames(on_a, job, within_s=60)
        runner = busy(replicas)
        other = on_b if runner is a else on_a
        assert other.delete(job["status_url"]).json()["state"] == "cancelled"
        cancelled_at = time.monotonic()
        idle(runner, within_s=LEASE_S + 10)  # its heartbeat (every third of the lease) hears of it
        print(f"the other replica stopped {time.monotonic() - cancelled_at:.1f} s after the cancel")
        frames = runner.metric("fer_job_frames_total")
        time.sleep(1.0)
        assert runner.metric("fer_job_frames_total") == frames  # it analyses no more
        final = on_a.get(job["status_url"]).json()
        assert final["state"] == "cancelled" and final["progress"]["frames_analysed"] < 120


def idle(replica: Replica, within_s: float) -> None:
    deadline = time.monotonic() + within_s
    while replica.metric("fer_job_workers_busy") != 0.0:
        assert time.monotonic() < deadline, f"replica {replica.name} still runs the cancelled job"
        time.sleep(0.2)


def busy(replicas: list[Replica], within_s: float = 30.0) -> Replica:
    """The replica whose worker runs the (one) job now."""
    deadline = time.monotonic() + within_s
    while time.monotonic() < deadline:
        running = [r for r in replicas if r.metric("fer_job_workers_busy") == 1.0]
        if len(running) == 1:
            return running[0]
        time.sleep(0.2)
    raise AssertionError("no single replica runs the job")


def test_a_sigkilled_replicas_job_is_finished_by_the_other(
    replicas: list[Replica], two_minutes: Path, tmp_path: Path
) -> None:
    a, b = replicas
    with client(a) as on_a:
        job = submit(on_a, two_minutes, fps=1)
        wait_for_frames(on_a, job, within_s=60)
    victim = busy(replicas)
    survivor = b if victim is a else a
    victim.process.send_signal(signal.SIGKILL)
    victim.process.wait(timeout=30)
    killed_at, killed_wall = time.monotonic(), time.time()
    with client(survivor) as on_survivor:
        seen = watch(on_survivor, job, within_s=150)
        result = on_survivor.get(job["result_url"]).json()
    done = seen[-1]
    assert done["state"] == "succeeded" and done["attempts"] == 2, done
    assert result["timeline_frames"] == 120 and result["tracks"]
    taken = done["started_at"] - killed_wall
    print(f"taken over {taken:.1f} s and finished {time.monotonic() - killed_at:.1f} s after the SIGKILL")
    assert taken <= 2 * LEASE_S + 3.0  # a lease, a sweep (half a lease), a poll, and slack for a busy CI
