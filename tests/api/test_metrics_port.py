"""FER_METRICS_PORT: /metrics and the probes on a listener of their own, /metrics gone from the API port.

The operations server is real (uvicorn on a loopback port, started by the lifespan); the public app is
reached in process like every API test.
"""

from __future__ import annotations

import hashlib
import socket

import httpx
import pytest
from pydantic import ValidationError

from service.config import Settings
from tests.api.conftest import png_bytes, running_app

KEY_SHA256 = hashlib.sha256(b"metrics-port-key").hexdigest()


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


async def test_metrics_and_probes_are_served_on_their_own_port_without_a_key() -> None:
    port = free_port()
    async with running_app(api_key_sha256=(KEY_SHA256,), metrics_port=port) as client:
        refused = await client.post("/predict", content=png_bytes(), headers={"Content-Type": "image/png"})
        public_metrics = await client.get("/metrics")
        async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}", timeout=5.0) as ops:
            scraped = await ops.get("/metrics")
            probes = [await ops.get(path) for path in ("/healthz", "/readyz")]
            api_on_ops = await ops.post(
                "/predict", content=png_bytes(), headers={"Content-Type": "image/png"}
            )
    assert refused.status_code == 401  # keys still guard the API
    assert public_metrics.status_code == 404 and public_metrics.json()["error"]["code"] == "not_found"
    assert scraped.status_code == 200
    # The public app's requests are counted in the registry this port exports (the refused /predict).
    assert 'fer_http_requests_total{method="POST",route="unmatched",status="401"} 1.0' in scraped.text
    assert [probe.status_code for probe in probes] == [200, 200]
    assert api_on_ops.status_code == 404  # the operations port serves nothing else
    with pytest.raises(httpx.ConnectError):  # the lifespan's end closed the listener
        async with httpx.AsyncClient(timeout=2.0) as late:
            await late.get(f"http://127.0.0.1:{port}/healthz")


async def test_without_a_metrics_port_metrics_stay_on_the_api_port() -> None:
    async with running_app() as client:
        assert (await client.get("/metrics")).status_code == 200


async def test_a_metrics_port_in_use_fails_the_start() -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        with pytest.raises(RuntimeError, match="cannot be bound"):
            async with running_app(metrics_port=taken.getsockname()[1]):
                pass


def test_the_metrics_port_must_differ_from_the_api_port() -> None:
    with pytest.raises(ValidationError, match="FER_METRICS_PORT must differ"):
        Settings(port=9000, metrics_port=9000)
