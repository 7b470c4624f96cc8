"""Session fixtures shared by every test layer that needs real parts: real photos, the exported model
repository, one local Triton server and one real gateway on loopback (started only when a test asks)."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from devstack.media import ROOT, ensure_media
from devstack.stack import MODEL_REPOSITORY, SERVED_MODELS, Gateway, gateway_settings, start_gateway
from fermodels.contract import DETECTOR_STAGE_NAMES, TEXT_ENCODER
from service.launcher.triton_local import LocalTriton

# The gateways these tests build live in pytest's process, whose resident memory is not theirs: they budget
# by the pools only. A test of the resident tracking itself runs `python -m service` with it switched on.
os.environ.setdefault("FER_MEMORY_FOLLOW_RESIDENT", "false")


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
    if not all((MODEL_REPOSITORY / name / "1" / "model.pt").exists() for name in DETECTOR_STAGE_NAMES):
        export = [sys.executable, "-m", "fermodels", "export-detector", "--repository", str(MODEL_REPOSITORY)]
        subprocess.run([*export, "--force"], check=True, cwd=ROOT)
    if not (MODEL_REPOSITORY / TEXT_ENCODER.name / "1" / "model.pt").exists():
        export = [sys.executable, "-m", "fermodels", "export-text", "--repository", str(MODEL_REPOSITORY)]
        subprocess.run([*export, "--force"], check=True, cwd=ROOT)
    return MODEL_REPOSITORY


@pytest.fixture(scope="session")
def triton(model_repository: Path) -> Iterator[LocalTriton]:
    with LocalTriton(model_repository) as server:
        yield server


@pytest.fixture(scope="session")
def gateway(triton: LocalTriton) -> Iterator[Gateway]:
    running = start_gateway(gateway_settings(triton))
    yield running
    running.stop()


@pytest.fixture
def client(gateway: Gateway) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=gateway.url, timeout=60) as http:
        yield http
