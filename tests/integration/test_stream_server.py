"""GET /v1/stream through the real uvicorn server the gateway runs (bounded h11 + its WebSocket protocol),
with the fake backend (no Triton): the upgrade outlives the HTTP head timeout."""

from __future__ import annotations

import json
import time

import httpx
from websockets.sync.client import connect

from fer_client.stream import stream_url
from tests.api.conftest import png_bytes
from tests.integration.test_slow_clients import fake_gateway


def streams_open(url: str) -> float:
    for line in httpx.get(f"{url}/metrics", timeout=10).text.splitlines():
        if line.startswith("fer_streams_open "):
            return float(line.split()[1])
    raise AssertionError("fer_streams_open is not exported")


def test_a_stream_outlives_the_http_head_timeout() -> None:
    # Before the fix, the h11 protocol's head timer, still armed after the upgrade, wrote an HTTP 408 into
    # the WebSocket request_head_timeout_s after it opened.
    with fake_gateway(request_head_timeout_s=1.0) as gateway, connect(stream_url(gateway.url)) as ws:
        assert json.loads(ws.recv(timeout=10))["type"] == "ready"
        time.sleep(2.5)
        ws.send(png_bytes())
        assert json.loads(ws.recv(timeout=10))["type"] == "result"
