"""The gateway's embedded Triton is restarted when it exits, and /healthz says when it cannot come back."""

from __future__ import annotations

import asyncio
import logging
import threading
from dataclasses import dataclass, field

import httpx
import pytest
from fastapi import FastAPI

from service.config import Settings
from service.http.app import create_app
from tests.api.conftest import FakeDetector, FakeInference

FAST_RESTARTS = {
    "triton_watch_interval_s": 0.01,
    "triton_restart_backoff_s": 0.01,
    "triton_restart_backoff_max_s": 0.02,
    "triton_max_restart_failures": 3,
}


@dataclass
class FakeTriton:
    running: bool = True
    starts: int = 0
    can_start: bool = True

    def is_running(self) -> bool:
        return self.running

    started: threading.Event = field(default_factory=threading.Event)  # set by a successful start

    def start(self) -> None:
        self.starts += 1
        if not self.can_start:
            raise OSError("tritonserver exited (1) before ready")
        self.running = True
        self.started.set()


def app_supervising(triton: FakeTriton) -> FastAPI:
    settings = Settings(triton_url="fake:0", default_model="fake_fer", **FAST_RESTARTS)  # type: ignore[arg-type]
    return create_app(
        settings,
        inference=lambda _s, _m: FakeInference(),
        detector=lambda _s: FakeDetector(),
        triton=triton,
    )


async def poll(client: httpx.AsyncClient, path: str, status: int) -> httpx.Response:
    for _ in range(500):
        response = await client.get(path)
        if response.status_code == status:
            return response
        await asyncio.sleep(0.01)
    raise AssertionError(f"{path} never answered {status}")


async def test_a_triton_that_exits_is_restarted_and_counted(caplog: pytest.LogCaptureFixture) -> None:
    triton = FakeTriton()
    app = app_supervising(triton)
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://test") as client:
            with caplog.at_level(logging.WARNING, logger="service.launcher.supervisor"):
                triton.running = False
                # The supervisor restarts it from a worker thread: wait for that start, bounded.
                assert await asyncio.wait_for(asyncio.to_thread(triton.started.wait, 30.0), 35.0)
            assert triton.running and triton.starts == 1
            assert (await client.get("/healthz")).status_code == 200
            metrics = (await client.get("/metrics")).text
    assert 'fer_triton_restarts_total{outcome="ok"} 1.0' in metrics
    assert any("restarted" in record.getMessage() for record in caplog.records)


async def test_healthz_fails_when_triton_cannot_come_back() -> None:
    triton = FakeTriton(can_start=False)
    app = app_supervising(triton)
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://test") as client:
            assert (await client.get("/healthz")).status_code == 200
            triton.running = False
            unhealthy = await poll(client, "/healthz", 503)
            assert unhealthy.json() == {"status": "unavailable", "checks": {"embedded_triton": False}}
            metrics = (await client.get("/metrics")).text
            triton.can_start = True  # it comes back after all: healthy again
            await poll(client, "/healthz", 200)
    failed = next(line for line in metrics.splitlines() if line.startswith(FAILED_RESTARTS))
    assert float(failed.split()[-1]) >= 3


FAILED_RESTARTS = 'fer_triton_restarts_total{outcome="failed"}'


@dataclass
class FreezableInference(FakeInference):
    """A fake Triton whose health endpoint can stop answering (a SIGSTOPped server)."""

    frozen: bool = False

    async def server_ready(self) -> bool:
        if self.frozen:
            await asyncio.Event().wait()  # never answers: the probe's own timeout must end it
        return self.ready


async def test_healthz_fails_while_an_external_triton_does_not_answer() -> None:
    fake = FreezableInference()
    settings = Settings(  # type: ignore[call-arg]
        triton_url="fake:0",
        default_model="fake_fer",
        triton_watch_interval_s=0.01,
        triton_probe_timeout_s=0.01,
        triton_hang_timeout_s=0.2,
    )
    app = create_app(settings, inference=lambda _s, _m: fake, detector=lambda _s: FakeDetector())
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://test") as client:
            alive = await client.get("/healthz")
            assert alive.json() == {"status": "ok", "checks": {"triton_answers": True}}
            fake.frozen = True
            hung = await poll(client, "/healthz", 503)
            assert hung.json() == {"status": "unavailable", "checks": {"triton_answers": False}}
            fake.frozen = False
            await poll(client, "/healthz", 200)
    # leaving the lifespan while a probe may be in flight returned: the shutdown did not wait on it
