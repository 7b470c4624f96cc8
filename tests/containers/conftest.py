"""The compose stack for real on a Docker engine (`make test-containers`; docs/containers.md).

The session fixture starts a private dockerd when none answers (deploy/offline/engine.sh), builds every
image offline (deploy/offline/build-images.sh, from a local index of the pinned wheels), brings the stack up
with deploy/compose/offline.yml on free loopback ports, and tears everything down at the end: the compose
project with its volumes, the wheelhouse server and the daemon it started. Collected only when
FER_CONTAINER_TEST=1 (the make target sets it): a plain `pytest` must not start a Docker engine.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import signal
import socket
import subprocess
import time
from collections.abc import Iterator
from contextlib import ExitStack
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest

from devstack.media import ROOT

if os.environ.get("FER_CONTAINER_TEST") != "1":
    collect_ignore_glob = ["test_*.py"]

WORK = ROOT / ".cache" / "containers"
ENGINE_DIR = WORK / "engine"
PROJECT = "fer-containers-test"
API_KEY = "container-test-key"
BUILD_TIMEOUT_S = 3600  # a cold build (no layer cache) downloads and installs ~6 GB of wheels
UP_TIMEOUT_S = 600
HEALTHY_TIMEOUT_S = 90  # the image's HEALTHCHECK runs every 15 s
# Free disk a cold image build needs once the wheelhouse is filled: the engine's data root peaked at 10.2 GB
# in a cold build, while committing the CUDA libraries' layer (docs/containers.md), plus a margin.
COLD_BUILD_FREE_BYTES = 11 * 10**9
PORT_NAMES = (
    "GATEWAY_PORT",
    "GATEWAY_METRICS_PORT",
    "TRITON_HTTP_PORT",
    "TRITON_GRPC_PORT",
    "TRITON_METRICS_PORT",
    "PROMETHEUS_PORT",
)


@dataclass(frozen=True)
class Stack:
    env: dict[str, str]
    ports: dict[str, int]
    api_key: str
    build_report: list[dict[str, object]]
    compose_file: Path  # docker-compose.yml + deploy/compose/offline.yml (deploy/offline/compose-config.py)

    @property
    def gateway(self) -> str:
        return f"http://127.0.0.1:{self.ports['GATEWAY_PORT']}"

    @property
    def metrics(self) -> str:
        return f"http://127.0.0.1:{self.ports['GATEWAY_METRICS_PORT']}"

    @property
    def prometheus(self) -> str:
        return f"http://127.0.0.1:{self.ports['PROMETHEUS_PORT']}"

    def compose(self, *args: str, timeout: float = 120) -> subprocess.CompletedProcess[str]:
        command = ["docker-compose", "-p", PROJECT, "-f", str(self.compose_file), *args]
        return subprocess.run(
            command, cwd=ROOT, env=self.env, capture_output=True, text=True, timeout=timeout, check=False
        )

    def docker(self, *args: str, timeout: float = 60) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            ["docker", *args], env=self.env, capture_output=True, text=True, timeout=timeout, check=False
        )

    def container(self, service: str) -> str:
        return self.compose("ps", "-q", service).stdout.strip()


def free_ports(count: int) -> list[int]:
    with ExitStack() as stack:
        sockets = [stack.enter_context(socket.socket()) for _ in range(count)]
        for sock in sockets:
            sock.bind(("127.0.0.1", 0))
        return [int(sock.getsockname()[1]) for sock in sockets]


def checked(command: list[str], env: dict[str, str], timeout: float) -> str:
    result = subprocess.run(command, cwd=ROOT, env=env, capture_output=True, text=True, timeout=timeout)
    if result.returncode != 0:
        output = f"{result.stdout[-3000:]}\n{result.stderr[-3000:]}"
        pytest.fail(f"{' '.join(command)} exited {result.returncode}:\n{output}")
    return result.stdout


def prometheus_config(ports: dict[str, int], target: Path) -> Path:
    """deploy/compose/prometheus-offline.yml at this run's ports, scraping every 2 s."""
    text = (ROOT / "deploy" / "compose" / "prometheus-offline.yml").read_text()
    for default, name in (
        ("18081", "GATEWAY_METRICS_PORT"),
        ("18002", "TRITON_METRICS_PORT"),
        ("19090", "PROMETHEUS_PORT"),
    ):
        text = text.replace(f"127.0.0.1:{default}", f"127.0.0.1:{ports[name]}")
    text = text.replace("scrape_interval: 15s", "scrape_interval: 2s").replace(
        "scrape_timeout: 10s", "scrape_timeout: 2s"
    )
    target.write_text(text)
    target.chmod(0o644)
    return target


def wait_healthy(stack: Stack, service: str, timeout_s: float) -> None:
    """Until Docker's own HEALTHCHECK of the image (deploy/docker/healthcheck.py) reports healthy."""
    deadline, status = time.monotonic() + timeout_s, ""
    while time.monotonic() < deadline:
        inspect = ["inspect", "--format", "{{.State.Health.Status}}", stack.container(service)]
        status = stack.docker(*inspect).stdout.strip()
        if status == "healthy":
            return
        time.sleep(1.0)
    pytest.fail(f"{service}'s HEALTHCHECK says {status!r} after {timeout_s} s")


def wait_ready(url: str, timeout_s: float) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        try:
            if httpx.get(url, timeout=3.0).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(1.0)
    pytest.fail(f"{url} not ready within {timeout_s} s")


@pytest.fixture(scope="session")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    env = dict(os.environ)
    started_engine = not (
        env.get("DOCKER_HOST")
        and subprocess.run(
            ["docker", "version"], env=env, capture_output=True, timeout=20, check=False
        ).returncode
        == 0
    )
    env["DOCKER_HOST"] = checked(["deploy/offline/engine.sh", "start", str(ENGINE_DIR)], env, 120).strip()
    started_engine = started_engine and (ENGINE_DIR / "run" / "dockerd.pid").exists()
    try:
        yield from _built_and_up(env, tmp_path_factory.mktemp("containers"))
    finally:
        if started_engine:
            subprocess.run(
                ["deploy/offline/engine.sh", "stop", str(ENGINE_DIR)], cwd=ROOT, timeout=120, check=False
            )
            assert_nothing_left(env["DOCKER_HOST"])


def assert_nothing_left(docker_host: str) -> None:
    """The engine this session started is gone, and nothing it mounted under its directory remains."""
    mounts = [line.split()[1] for line in Path("/proc/mounts").read_text().splitlines()]
    left = [mount for mount in mounts if mount.startswith(f"{ENGINE_DIR}/")]
    answered = subprocess.run(
        ["docker", "-H", docker_host, "version"], capture_output=True, timeout=20, check=False
    )
    assert not left and answered.returncode != 0, (
        f"left behind: mounts {left}, engine answers: {not answered.returncode}"
    )


def enough_disk_for_a_cold_build(env: dict[str, str]) -> None:
    """Fail at once, saying why, rather than minutes into a build that would run the disk full."""
    gateway = subprocess.run(
        ["docker", "image", "inspect", "fer-gateway:0.1.0"],
        env=env,
        capture_output=True,
        timeout=60,
        check=False,
    )
    free = shutil.disk_usage(WORK).free
    if gateway.returncode != 0 and free < COLD_BUILD_FREE_BYTES:
        pytest.fail(
            f"a cold image build needs {COLD_BUILD_FREE_BYTES / 1e9:.0f} GB free under {WORK}; "
            f"{free / 1e9:.1f} GB are (docs/containers.md has the measured peak)"
        )


def _built_and_up(env: dict[str, str], scratch: Path) -> Iterator[Stack]:
    start = time.monotonic()
    print(checked(["deploy/offline/wheelhouse.sh", "fill", str(WORK / "wheelhouse")], env, BUILD_TIMEOUT_S))
    enough_disk_for_a_cold_build(env)
    server = int(checked(["deploy/offline/wheelhouse.sh", "serve", str(WORK / "wheelhouse")], env, 60))
    try:
        print(checked(["deploy/offline/build-images.sh", str(WORK / "work")], env, BUILD_TIMEOUT_S))
    finally:
        os.kill(server, signal.SIGTERM)
    print(f"wheelhouse + images: {time.monotonic() - start:.0f} s")
    report = json.loads((WORK / "work" / "build-report.json").read_text())
    ports = dict(zip(PORT_NAMES, free_ports(len(PORT_NAMES)), strict=True))
    env.update({f"FER_OFFLINE_{name}": str(port) for name, port in ports.items()})
    env["FER_OFFLINE_PROMETHEUS_CONFIG"] = str(prometheus_config(ports, scratch / "prometheus.yml"))
    env["FER_API_KEY_SHA256"] = json.dumps([hashlib.sha256(API_KEY.encode()).hexdigest()])
    compose_file = scratch / "compose.yml"
    checked(["/usr/bin/python3", "deploy/offline/compose-config.py", str(compose_file)], env, 60)
    stack = Stack(env=env, ports=ports, api_key=API_KEY, build_report=report, compose_file=compose_file)
    try:
        start = time.monotonic()
        up = stack.compose("up", "-d", "--no-build", timeout=UP_TIMEOUT_S)
        assert up.returncode == 0, up.stdout + up.stderr
        wait_ready(f"{stack.metrics}/readyz", UP_TIMEOUT_S)
        print(f"stack up and ready: {time.monotonic() - start:.0f} s")
        wait_healthy(stack, "gateway", HEALTHY_TIMEOUT_S)
        print(stack.compose("ps").stdout)
        yield stack
    finally:
        logs = stack.compose("logs", "--no-color", "--tail=40", timeout=60)
        print(logs.stdout[-6000:])
        down = stack.compose("down", "-v", "--timeout", "40", timeout=300)
        print(down.stdout, down.stderr)
