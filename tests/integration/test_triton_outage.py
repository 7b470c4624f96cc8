"""Triton stopped mid-run → 503 with Retry-After; restarted → the same gateway recovers by itself."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from service.triton_local import LocalTriton
from tests.stack import gateway_settings, start_gateway

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
