"""`python -m service` (what `make run` runs): embedded Triton, real request, clean stop on Ctrl-C/SIGTERM,
and within the graceful-shutdown bound when a client stalls."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path
from urllib.parse import urlsplit

import httpx
import pytest

from devstack.media import ROOT
from devstack.stack import free_port, gateway_process, wait_until_ready
from service.launcher.triton_local import LocalTriton
from tests.integration.test_slow_clients import STALLED_HEADERS

pytestmark = pytest.mark.integration


def tritonservers() -> set[int]:
    """PIDs of every running tritonserver process."""
    found = set()
    for entry in Path("/proc").iterdir():
        try:
            if entry.name.isdigit() and (entry / "comm").read_text().strip() == "tritonserver":
                found.add(int(entry.name))
        except OSError:  # the process ended while we looked
            continue
    return found


def children(parent: int, pids: set[int]) -> set[int]:
    """The PIDs among ``pids`` whose parent is ``parent`` (other test runs may start Tritons meanwhile)."""
    found = set()
    for pid in pids:
        try:
            status = Path(f"/proc/{pid}/status").read_text()
        except OSError:
            continue
        if f"\nPPid:\t{parent}\n" in status:
            found.add(pid)
    return found


@pytest.mark.parametrize("stop_signal", [signal.SIGINT, signal.SIGTERM])
def test_run_serves_and_stops_cleanly(
    model_repository: Path, media: Path, tmp_path: Path, stop_signal: signal.Signals
) -> None:
    port = free_port()
    before = tritonservers()
    env = {**os.environ, "FER_PORT": str(port), "FER_MODEL_REPOSITORY": str(model_repository)}
    log = (tmp_path / "service.log").open("wb")
    process = subprocess.Popen([sys.executable, "-m", "service"], cwd=ROOT, env=env, stdout=log, stderr=log)
    try:
        url = f"http://127.0.0.1:{port}"
        wait_until_ready(url, process, within_s=180)
        ours = children(process.pid, tritonservers() - before)
        assert len(ours) == 1, "the service should start exactly one embedded Triton"
        response = httpx.post(
            f"{url}/predict", files={"file": ("m.jpg", (media / "messi5.jpg").read_bytes())}, timeout=60
        )
        assert response.status_code == 200 and len(response.json()["faces"]) == 1
        process.send_signal(stop_signal)
        assert process.wait(timeout=60) == 0
        assert not (ours & tritonservers()), "the embedded Triton outlived the service"
    finally:
        if process.poll() is None:
            process.kill()
        log.close()


def test_run_restarts_its_triton_when_it_dies(model_repository: Path, media: Path, tmp_path: Path) -> None:
    port = free_port()
    env = {**os.environ, "FER_PORT": str(port), "FER_MODEL_REPOSITORY": str(model_repository)}
    log_path = tmp_path / "service.log"
    log = log_path.open("wb")
    process = subprocess.Popen([sys.executable, "-m", "service"], cwd=ROOT, env=env, stdout=log, stderr=log)
    try:
        url = f"http://127.0.0.1:{port}"
        wait_until_ready(url, process, within_s=180)
        (first,) = children(process.pid, tritonservers())
        os.kill(first, signal.SIGKILL)
        deadline = time.monotonic() + 30
        while first in tritonservers() and time.monotonic() < deadline:  # until it has been reaped
            time.sleep(0.1)
        wait_until_ready(url, process, within_s=180)  # /readyz is 503 until the restarted one is up
        (second,) = children(process.pid, tritonservers())
        assert second != first
        response = httpx.post(
            f"{url}/predict", files={"file": ("m.jpg", (media / "messi5.jpg").read_bytes())}, timeout=60
        )
        assert response.status_code == 200, response.text
        assert httpx.get(f"{url}/healthz").status_code == 200
        metrics = httpx.get(f"{url}/metrics").text
        assert 'fer_triton_restarts_total{outcome="ok"} 1.0' in metrics
        process.send_signal(signal.SIGTERM)
        assert process.wait(timeout=60) == 0
        assert "restarted" in log_path.read_text()
    finally:
        if process.poll() is None:
            process.kill()
        log.close()


def test_sigterm_with_a_stalled_client_exits_within_the_grace(triton: LocalTriton, tmp_path: Path) -> None:
    """A client that sent its headers and then nothing must not hold SIGTERM past
    FER_GRACEFUL_SHUTDOWN_TIMEOUT_S (its body timeout here is far longer than the grace)."""
    grace_s = 2
    env = {"FER_GRACEFUL_SHUTDOWN_TIMEOUT_S": str(grace_s), "FER_BODY_READ_TIMEOUT_S": "120"}
    with gateway_process(triton.endpoints.grpc_url, tmp_path / "gateway.log", **env) as (url, process):
        address = urlsplit(url)
        with socket.create_connection((address.hostname, address.port)) as stalled:
            stalled.sendall(STALLED_HEADERS)
            time.sleep(0.5)  # the request has reached the route and waits for its body
            began = time.monotonic()
            process.send_signal(signal.SIGTERM)
            assert process.wait(timeout=grace_s + 20) == 0
            took = time.monotonic() - began
    assert took < grace_s + 5, f"exited {took:.1f} s after SIGTERM (grace {grace_s} s)"


def test_run_kills_and_restarts_a_frozen_triton(model_repository: Path, tmp_path: Path) -> None:
    """Issue 26, point 13: a SIGSTOPped Triton never exits; silent for FER_TRITON_HANG_TIMEOUT_S, it is
    killed and a new one started."""
    port = free_port()
    env = {
        **os.environ,
        "FER_PORT": str(port),
        "FER_MODEL_REPOSITORY": str(model_repository),
        "FER_TRITON_HANG_TIMEOUT_S": "5",
        "FER_TRITON_PROBE_TIMEOUT_S": "1",
    }
    log = (tmp_path / "service.log").open("wb")
    process = subprocess.Popen([sys.executable, "-m", "service"], cwd=ROOT, env=env, stdout=log, stderr=log)
    frozen: int | None = None
    try:
        url = f"http://127.0.0.1:{port}"
        wait_until_ready(url, process, within_s=180)
        (frozen,) = children(process.pid, tritonservers())
        os.kill(frozen, signal.SIGSTOP)
        deadline = time.monotonic() + 60
        while frozen in tritonservers() and time.monotonic() < deadline:  # killed and reaped
            time.sleep(0.2)
        assert frozen not in tritonservers(), "the frozen Triton was not killed"
        wait_until_ready(url, process, within_s=180)
        (second,) = children(process.pid, tritonservers())
        assert second != frozen
        assert httpx.get(f"{url}/healthz").status_code == 200
        assert 'fer_triton_restarts_total{outcome="ok"} 1.0' in httpx.get(f"{url}/metrics").text
    finally:
        if frozen is not None and frozen in tritonservers():
            os.kill(frozen, signal.SIGCONT)
            os.kill(frozen, signal.SIGKILL)
        if process.poll() is None:
            process.kill()
        log.close()
