"""Clients that stall or break HTTP, against the real uvicorn server (with the fake backend: no Triton)."""

from __future__ import annotations

import json
import socket
import time
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from urllib.parse import urlsplit

import httpx
import pytest

from devstack.stack import Gateway, serve
from service.config import Settings
from service.http.app import create_app
from tests.api.conftest import FakeDetector, FakeInference, png_bytes

STALLED_HEADERS = (
    b"POST /predict HTTP/1.1\r\nHost: gateway\r\nContent-Type: image/png\r\n"
    b"Content-Length: 1000000\r\n\r\n\x89PNG"
)


@contextmanager
def fake_gateway(**overrides: object) -> Iterator[Gateway]:
    settings = Settings(triton_url="fake:0", default_model="fake_fer", **overrides)  # type: ignore[arg-type]
    app = create_app(settings, inference=lambda _s, _m: FakeInference(), detector=lambda _s: FakeDetector())
    gateway = serve(app, settings)
    try:
        yield gateway
    finally:
        gateway.stop()


def connect(gateway: Gateway, first_bytes: bytes) -> socket.socket:
    address = urlsplit(gateway.url)
    sock = socket.create_connection((address.hostname, address.port), timeout=15)
    sock.sendall(first_bytes)
    return sock


def read_response(sock: socket.socket) -> tuple[int, dict[str, str], bytes]:
    """Status, headers and body of the one response on ``sock`` (read until the server closes or the
    body is complete)."""
    data = b""
    while b"\r\n\r\n" not in data:
        chunk = sock.recv(65536)
        if not chunk:
            break
        data += chunk
    head, _, body = data.partition(b"\r\n\r\n")
    status_line, *lines = head.decode("latin-1").split("\r\n")
    headers = {k.strip().lower(): v.strip() for k, _, v in (line.partition(":") for line in lines)}
    while len(body) < int(headers.get("content-length", "0")):
        chunk = sock.recv(65536)
        if not chunk:
            break
        body += chunk
    return int(status_line.split()[1]), headers, body


def test_stalled_uploads_take_no_admission_slot_and_time_out_with_408() -> None:
    with fake_gateway(max_in_flight=2, body_read_timeout_s=2.0) as gateway, ExitStack() as stack:
        stalled = [stack.enter_context(connect(gateway, STALLED_HEADERS)) for _ in range(4)]
        time.sleep(0.5)  # every stalled request has reached the route
        ok = httpx.post(
            f"{gateway.url}/predict", content=png_bytes(100), headers={"Content-Type": "image/png"}
        )
        assert ok.status_code == 200, ok.text  # was 429: the stalled uploads held every slot
        for sock in stalled:
            status, headers, body = read_response(sock)
            assert status == 408
            assert json.loads(body)["error"]["code"] == "request_timeout"
            assert headers["connection"] == "close"


def test_shutdown_is_not_held_up_by_a_stalled_upload() -> None:
    with (
        fake_gateway(body_read_timeout_s=120.0, graceful_shutdown_timeout_s=1) as gateway,
        connect(gateway, STALLED_HEADERS),
    ):
        time.sleep(0.5)
        began = time.monotonic()
        gateway.server.should_exit = True
        gateway.thread.join(timeout=15)
        assert not gateway.thread.is_alive(), "shutdown waited for the stalled client"
        assert time.monotonic() - began < 10


def test_a_client_dropping_mid_upload_is_a_499_in_the_metrics() -> None:
    with fake_gateway() as gateway:
        connect(gateway, STALLED_HEADERS).close()
        for _ in range(100):
            metrics = httpx.get(f"{gateway.url}/metrics").text
            if "fer_client_disconnects_total 1.0" in metrics:
                break
            time.sleep(0.05)
        assert "fer_client_disconnects_total 1.0" in metrics
        assert 'route="/predict",status="499"' in metrics and 'status="500"' not in metrics


MALFORMED = (400, "malformed_request")


@pytest.mark.parametrize(
    ("raw", "answer"),
    [
        (b"POST /predict HTTP/1.1\r\nHost: x\r\nContent-Length: abc\r\n\r\n", MALFORMED),
        (
            b"POST /predict HTTP/1.1\r\nHost: x\r\nContent-Length: 3\r\nContent-Length: 4\r\n\r\nabc",
            MALFORMED,
        ),
        (b"\x16\x03\x01\x00\xa5\x01\x00\x00\xa1\x03\x03\r\n\r\n", MALFORMED),  # TLS hello, plain port
        # Over FER_MAX_REQUEST_HEAD_BYTES (64 KiB; h11 checks it on what is still incomplete, so well over).
        (b"GET /" + b"a" * 1_000_000 + b" HTTP/1.1\r\nHost: x\r\n\r\n", MALFORMED),
        (b"GET /healthz HTTP/1.1\r\nHost: x\r\nX-Big: " + b"b" * 1_000_000 + b"\r\n\r\n", MALFORMED),
        (b"GET /" + b"a" * 80_000 + b" HTTP/1.1\r\nHost: x\r\n\r\n", (404, "not_found")),
        (b"BREW /predict HTTP/1.1\r\nHost: x\r\n\r\n", (405, "method_not_allowed")),
    ],
    ids=[
        "bad-content-length",
        "two-content-lengths",
        "tls-hello",
        "1mb-url",
        "1mb-header",
        "80kb-url",
        "brew",
    ],
)
def test_protocol_errors_are_json(raw: bytes, answer: tuple[int, str]) -> None:
    with fake_gateway() as gateway, connect(gateway, raw) as sock:
        status, headers, body = read_response(sock)
    assert (status, json.loads(body)["error"]["code"]) == answer
    assert headers["content-type"] == "application/json"
