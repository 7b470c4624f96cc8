"""Triton's liveness watch and the supervisor's answer to a frozen server, on a fake clock: no waiting."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field

import pytest
from prometheus_client import CollectorRegistry, Counter

from service.launcher.liveness import LivenessPolicy, LivenessWatch
from service.launcher.supervisor import RestartPolicy, TritonSupervisor

POLICY = LivenessPolicy(interval_s=1.0, probe_timeout_s=0.05, hang_after_s=10.0)
STEP_TIMEOUT_S = 5.0


@dataclass
class Clock:
    now: float = 100.0

    def __call__(self) -> float:
        return self.now


@dataclass
class Probe:
    """Answers at once, or never (a frozen server: the probe's timeout must end it)."""

    frozen: bool = False
    calls: int = 0
    twelfth: asyncio.Event = field(default_factory=asyncio.Event)

    async def __call__(self) -> bool:
        self.calls += 1
        if self.calls == 12:
            self.twelfth.set()
        if self.frozen:
            await asyncio.Event().wait()
        return True


async def test_a_server_that_answers_is_never_hung() -> None:
    clock, probe = Clock(), Probe()
    watch = LivenessWatch(probe, POLICY, clock=clock)
    for _ in range(30):
        clock.now += 1.0
        assert await watch.check()
    assert not watch.hung and watch.silent_s == 0


async def test_silence_longer_than_the_hang_timeout_is_a_hang_and_an_answer_ends_it() -> None:
    clock, probe = Clock(), Probe(frozen=True)
    watch = LivenessWatch(probe, POLICY, clock=clock)
    clock.now += 9.0
    assert not await asyncio.wait_for(watch.check(), STEP_TIMEOUT_S)  # cut off by the probe timeout
    assert not watch.hung  # 9 s of silence: not yet
    clock.now += 2.0
    assert not await asyncio.wait_for(watch.check(), STEP_TIMEOUT_S)
    assert watch.hung and watch.silent_s == 11.0
    probe.frozen = False
    assert await watch.check()
    assert not watch.hung


async def test_a_probe_that_raises_is_no_answer() -> None:
    async def broken() -> None:
        raise ConnectionError("refused")

    clock = Clock()
    watch = LivenessWatch(broken, POLICY, clock=clock)
    clock.now += 11.0
    assert not await watch.check() and watch.hung


async def test_the_watch_task_probes_every_interval_and_stops_when_cancelled() -> None:
    clock, probe = Clock(), Probe(frozen=True)
    slept: list[float] = []

    async def sleep(seconds: float) -> None:
        slept.append(seconds)
        clock.now += seconds
        await asyncio.sleep(0)

    watch = LivenessWatch(probe, POLICY, clock=clock, sleep=sleep)
    task = asyncio.create_task(watch.run())
    await asyncio.wait_for(probe.twelfth.wait(), STEP_TIMEOUT_S)
    assert watch.hung and set(slept) == {1.0}
    task.cancel()  # mid-probe: a frozen server must not hold the shutdown
    done, _ = await asyncio.wait({task}, timeout=STEP_TIMEOUT_S)
    assert task in done and task.cancelled()


@dataclass
class FakeServer:
    running: bool = True
    kills: int = 0
    starts: int = 0
    events: list[str] = field(default_factory=list)

    def is_running(self) -> bool:
        return self.running

    def kill(self) -> None:
        self.kills += 1
        self.running = False
        self.events.append("kill")

    def start(self) -> None:
        self.starts += 1
        self.running = True
        self.events.append("start")


def supervisor(server: FakeServer, watch: LivenessWatch) -> TritonSupervisor:
    policy = RestartPolicy(watch_interval_s=1.0, backoff_s=0.001, backoff_max_s=0.002, max_failures=3)
    restarts = Counter("restarts", "r", ["outcome"], registry=CollectorRegistry())
    return TritonSupervisor(server, policy, restarts, liveness=watch)


async def test_a_hung_embedded_triton_is_killed_restarted_and_watched_afresh() -> None:
    clock, server = Clock(), FakeServer()
    watch = LivenessWatch(Probe(frozen=True), POLICY, clock=clock)
    supervising = supervisor(server, watch)
    clock.now += 5.0
    await supervising.watch_once()
    assert server.events == []  # silent 5 s: not hung yet
    clock.now += 6.0
    await asyncio.wait_for(supervising.watch_once(), STEP_TIMEOUT_S)
    assert server.events == ["kill", "start"] and supervising.healthy
    assert not watch.hung  # the new server's silence counts from its start


@pytest.mark.parametrize("hung", [False, True])
async def test_a_running_answering_triton_is_left_alone(hung: bool) -> None:
    clock, server = Clock(), FakeServer()
    watch = LivenessWatch(Probe(), POLICY, clock=clock)
    clock.now += 11.0 if hung else 1.0
    await asyncio.wait_for(supervisor(server, watch).watch_once(), STEP_TIMEOUT_S)
    assert server.events == (["kill", "start"] if hung else [])
