"""Real parts: the local Triton server, the real gateway over HTTP, real MTCNN, real photos."""

from __future__ import annotations

import io
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest
import uvicorn
from PIL import Image

from service.app import create_app
from service.config import Settings
from service.triton_local import LocalTriton
from tests.media import ROOT, ensure_media

MODEL_REPOSITORY = ROOT / "model_repository"
SERVED_MODELS = ("fer_former", "mini_xception_fer2013", "stt")


@pytest.fixture(scope="session")
def media() -> Path:
    return ensure_media()


@pytest.fixture(scope="session")
def model_repository() -> Path:
    """The project's repository, with model.pt exported if `make models` has not run yet."""
    for name in SERVED_MODELS:
        if not (MODEL_REPOSITORY / name / "1" / "model.pt").exists():
            subprocess.run(
                [
                    sys.executable,
                    "-m",
                    "fermodels",
                    "export",
                    "--model",
                    name,
                    "--repository",
                    str(MODEL_REPOSITORY),
                    "--version",
                    "1",
                ],
                check=True,
                cwd=ROOT,
            )
    return MODEL_REPOSITORY


@pytest.fixture(scope="session")
def triton(model_repository: Path) -> Iterator[LocalTriton]:
    with LocalTriton(model_repository) as server:
        yield server


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
    port = free_port()
    config = uvicorn.Config(create_app(settings), host="127.0.0.1", port=port, log_level="warning")
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, name="gateway", daemon=True)
    thread.start()
    deadline = time.monotonic() + 60
    while not server.started:
        if time.monotonic() > deadline or not thread.is_alive():
            raise RuntimeError("the gateway did not start")
        time.sleep(0.05)
    return Gateway(f"http://127.0.0.1:{port}", server, thread)


def gateway_settings(triton: LocalTriton, **overrides: object) -> Settings:
    return Settings(triton_url=triton.endpoints.grpc_url, **overrides)  # type: ignore[arg-type]


@pytest.fixture(scope="session")
def gateway(triton: LocalTriton) -> Iterator[Gateway]:
    running = start_gateway(gateway_settings(triton))
    yield running
    running.stop()


@pytest.fixture
def client(gateway: Gateway) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=gateway.url, timeout=60) as http:
        yield http


def encode(image: Image.Image, fmt: str, **options: object) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format=fmt, **options)
    return buffer.getvalue()
