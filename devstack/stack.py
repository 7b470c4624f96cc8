"""The real stack for tests: the local Triton, the real gateway under uvicorn on loopback, helpers."""

from __future__ import annotations

import io
import os
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import httpx
import uvicorn
from fastapi import FastAPI
from PIL import Image

from devstack.media import ROOT
from service.config import Settings
from service.http.app import create_app
from service.http.server import uvicorn_config
from service.launcher.triton_local import LocalTriton

MODEL_REPOSITORY = ROOT / "model_repository"
SERVED_MODELS = ("fer_former", "mini_xception_fer2013", "poster", "stt")


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@dataclass
class Gateway:
    url: str
    server: uvicorn.Server
    thread: threading.Thread

    def stop(self) -> None:
        self.server.should_exit = True
        self.thread.join(timeout=30)


def start_gateway(settings: Settings) -> Gateway:
    """The real app behind real uvicorn on a loopback port, in a thread of the test process."""
    return serve(create_app(settings), settings)


def serve(app: FastAPI, settings: Settings) -> Gateway:
    """``app`` under uvicorn configured exactly as ``python -m service`` configures it, on a free port."""
    port = free_port()
    config = uvicorn_config(
        app, settings.model_copy(update={"host": "127.0.0.1", "port": port, "log_level": "warning"})
    )
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, name="gateway", daemon=True)
    thread.start()
    deadline = time.monotonic() + 60
    while not server.started:
        if time.monotonic() > deadline or not thread.is_alive():
            raise RuntimeError("the gateway did not start")
        time.sleep(0.05)
    return Gateway(f"http://127.0.0.1:{port}", server, thread)


def wait_until_ready(url: str, process: subprocess.Popen[bytes], within_s: float) -> None:
    """Poll a gateway process's /readyz until 200; fail if it exits first or never gets there."""
    deadline = time.monotonic() + within_s
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError("the service exited during start-up")
        try:
            if httpx.get(f"{url}/readyz", timeout=2).status_code == 200:
                return
        except httpx.TransportError:
            pass
        time.sleep(0.5)
    raise RuntimeError("the service never became ready")


@contextmanager
def gateway_process(
    triton_url: str | None, log: Path, *, within_s: float = 180, **env: str
) -> Iterator[tuple[str, subprocess.Popen[bytes]]]:
    """``python -m service`` as its own process (its memory and signals are its own) against ``triton_url``,
    or, with None, exactly as `make run` runs it (its embedded Triton on this repository); ``env`` adds
    ``FER_*`` variables. Yields its URL and process; SIGTERM (then SIGKILL) on the way out."""
    port = free_port()
    variables = {"FER_MODEL_REPOSITORY": str(MODEL_REPOSITORY), **os.environ, "FER_PORT": str(port), **env}
    if triton_url:
        variables["FER_TRITON_URL"] = triton_url
    with log.open("wb") as out:
        process = subprocess.Popen(
            [sys.executable, "-m", "service"], cwd=ROOT, env=variables, stdout=out, stderr=out
        )
        try:
            url = f"http://127.0.0.1:{port}"
            wait_until_ready(url, process, within_s=within_s)
            yield url, process
        finally:
            if process.poll() is None:
                process.send_signal(signal.SIGTERM)
                try:
                    process.wait(timeout=60)
                except subprocess.TimeoutExpired:
                    process.kill()
                    process.wait()


def memory_mib(pid: int, field: str = "VmHWM") -> float:
    """A memory figure of a process from /proc/<pid>/status: VmHWM (peak resident) or VmRSS (now), MiB."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(f"{field}:"):
            return int(line.split()[1]) / 1024
    raise RuntimeError(f"/proc/{pid}/status has no {field}")


def gateway_settings(triton: LocalTriton, **overrides: object) -> Settings:
    # Each test gateway keeps its jobs apart (a fresh folder unless the test names one).
    overrides.setdefault("jobs_dir", Path(tempfile.mkdtemp(prefix="fer-jobs-")))
    # In the test runner's process the resident memory is pytest's, not the gateway's: budget by the pools
    # only (the memory mix test runs `python -m service` on its own, resident tracking on).
    overrides.setdefault("memory_follow_resident", False)
    return Settings(triton_url=triton.endpoints.grpc_url, **overrides)  # type: ignore[arg-type]


def encode(image: Image.Image, fmt: str, **options: object) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format=fmt, **options)
    return buffer.getvalue()
