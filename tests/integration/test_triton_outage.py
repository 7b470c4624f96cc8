"""Triton stopped mid-run → 503 with Retry-After; restarted → the same gateway recovers by itself. Killed
under load → only 503s, then recovery; frozen (SIGSTOP) → 504 within FER_TRITON_TIMEOUT_S."""

from __future__ import annotations

import os
import signal
import threading
import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from devstack.stack import gateway_settings, start_gateway
from service.launcher.triton_local import LocalTriton

pytestmark = pytest.mark.integration


@pytest.fixture
def own_triton(model_repository: Path) -> Iterator[LocalTriton]:
    with LocalTriton(model_repository) as server:  # its own server: this test stops it
        yield server


def post_messi(client: httpx.Client, media: Path) -> httpx.Response:
    return client.post(
        "/predict", files={"file": ("m.jpg", (media / "messi5.jpg").read_bytes(), "image/jpeg")}
    )


def test_triton_outage_and_recovery(own_triton: LocalTriton, media: Path) -> None:
    gateway = start_gateway(gateway_settings(own_triton, triton_timeout_s=5, triton_retry_after_s=3))
    try:
        with httpx.Client(base_url=gateway.url, timeout=60) as client:
            assert post_messi(client, media).status_code == 200
            own_triton.stop()
            down = post_messi(client, media)
            assert down.status_code == 503, down.text
            assert down.json()["error"]["code"] == "inference_unavailable"
            assert down.headers["retry-after"] == "3"
            assert client.get("/readyz").status_code == 503
            assert client.get("/healthz").status_code == 200  # alive, just not ready
            own_triton.start()
            assert _eventually_ok(client, media, within_s=60)
            assert client.get("/readyz").status_code == 200
    finally:
        gateway.stop()


def _eventually_ok(client: httpx.Client, media: Path, within_s: float) -> bool:
    deadline = time.monotonic() + within_s
    while time.monotonic() < deadline:
        if post_messi(client, media).status_code == 200:
            return True
        time.sleep(0.5)
    return False


def hammer(url: str, media: Path, until: threading.Event, statuses: list[tuple[int, str | None]]) -> None:
    """Post messi5.jpg back to back until ``until`` is set; record (status, Retry-After)."""
    data = (media / "messi5.jpg").read_bytes()
    with httpx.Client(base_url=url, timeout=60) as client:
        while not until.is_set():
            response = client.post("/predict", files={"file": ("m.jpg", data, "image/jpeg")})
            statuses.append((response.status_code, response.headers.get("retry-after")))


def test_triton_killed_under_load_is_only_503_then_recovers(own_triton: LocalTriton, media: Path) -> None:
    gateway = start_gateway(gateway_settings(own_triton, triton_timeout_s=5, triton_retry_after_s=3))
    done, statuses = threading.Event(), list[tuple[int, str | None]]()
    clients = [threading.Thread(target=hammer, args=(gateway.url, media, done, statuses)) for _ in range(4)]
    try:
        for thread in clients:
            thread.start()
        time.sleep(3)  # under load: requests in flight in every stage when the kill lands
        assert own_triton.pid is not None
        os.killpg(own_triton.pid, signal.SIGKILL)  # no graceful drain: the process and its stubs vanish
        time.sleep(3)
        outage = statuses[:]
        done.set()
        for thread in clients:
            thread.join(timeout=60)
        during = Counter(status for status, _ in outage)
        assert set(during) <= {200, 503}, during
        assert during[503] > 0 and all(after == "3" for status, after in outage if status == 503)
        own_triton.start()  # reaps the killed one, same ports
        with httpx.Client(base_url=gateway.url, timeout=60) as client:
            assert _eventually_ok(client, media, within_s=60)
    finally:
        done.set()
        gateway.stop()


def test_triton_frozen_is_504_within_the_timeout(own_triton: LocalTriton, media: Path) -> None:
    timeout_s = 2.0
    gateway = start_gateway(gateway_settings(own_triton, triton_timeout_s=timeout_s))
    assert own_triton.pid is not None
    try:
        with httpx.Client(base_url=gateway.url, timeout=60) as client:
            assert post_messi(client, media).status_code == 200
            os.kill(own_triton.pid, signal.SIGSTOP)  # alive, port open, answers nothing
            began = time.monotonic()
            frozen = post_messi(client, media)
            took = time.monotonic() - began
            assert frozen.status_code == 504, frozen.text
            assert frozen.json()["error"]["code"] == "inference_timeout"
            assert took < timeout_s + 3, f"504 after {took:.1f} s"  # + detection and decode on 2 cores
            began = time.monotonic()
            assert client.get("/readyz").status_code == 503
            assert time.monotonic() - began < timeout_s + 3
            os.kill(own_triton.pid, signal.SIGCONT)
            assert _eventually_ok(client, media, within_s=30)
    finally:
        os.kill(own_triton.pid, signal.SIGCONT)  # never leave a stopped server for the fixture to stop
        gateway.stop()


def test_a_frozen_external_triton_fails_healthz_and_recovers(own_triton: LocalTriton) -> None:
    """Issue 26, point 13: nothing here can restart an external Triton, so liveness says it is hung."""
    hang_s = 3.0
    gateway = start_gateway(
        gateway_settings(own_triton, triton_hang_timeout_s=hang_s, triton_probe_timeout_s=1.0)
    )
    assert own_triton.pid is not None
    try:
        with httpx.Client(base_url=gateway.url, timeout=10) as client:
            assert client.get("/healthz").json() == {"status": "ok", "checks": {"triton_answers": True}}
            os.kill(own_triton.pid, signal.SIGSTOP)
            began = time.monotonic()
            assert _eventually(client, "/healthz", 503, within_s=hang_s + 15)
            # Silence is counted from the last answered probe, which came up to one watch interval before
            # the SIGSTOP: not before the configured time, measured from there.
            interval_s = gateway_settings(own_triton).triton_watch_interval_s
            assert time.monotonic() - began >= hang_s - interval_s
            os.kill(own_triton.pid, signal.SIGCONT)
            assert _eventually(client, "/healthz", 200, within_s=30)
    finally:
        os.kill(own_triton.pid, signal.SIGCONT)
        gateway.stop()


def _eventually(client: httpx.Client, path: str, status: int, within_s: float) -> bool:
    deadline = time.monotonic() + within_s
    while time.monotonic() < deadline:
        if client.get(path).status_code == status:
            return True
        time.sleep(0.2)
    return False
