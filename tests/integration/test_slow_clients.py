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
    overrides.setdefault("memory_follow_resident", False)  # pytest's resident memory is not the app's
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


def test_a_request_head_that_trickles_in_gets_408_and_is_closed() -> None:
    """A slowloris head (one header line now and then) is answered at the head timeout, not held open."""
    with fake_gateway(request_head_timeout_s=1.0) as gateway:
        socks = [connect(gateway, b"GET /healthz HTTP/1.1\r\nHost: x\r\n") for _ in range(8)]
        started = time.monotonic()
        for sock in socks:
            status, _, body = read_response(sock)
            assert status == 408 and json.loads(body)["error"]["code"] == "request_timeout"
        assert time.monotonic() - started < 10  # bounded by the timeout, not by the test's own


@pytest.mark.parametrize("line", [b"GET /healthz\r\n", b"GET /healthz HTTP/1.1\rHost: x\r\r"])
def test_heads_that_h11_waits_on_for_ever_are_closed_at_the_head_timeout(line: bytes) -> None:
    """An HTTP/0.9 request line and headers ending in bare CR never complete a head: the timer ends them."""
    with fake_gateway(request_head_timeout_s=1.0) as gateway, connect(gateway, line) as sock:
        status, _, _ = read_response(sock)
        assert status in (400, 408)


def test_an_idle_connection_is_closed_at_the_head_timeout() -> None:
    with fake_gateway(request_head_timeout_s=1.0) as gateway, connect(gateway, b"") as sock:
        status, _, _ = read_response(sock)
        assert status == 408


def test_connections_beyond_the_cap_get_a_json_503_and_the_others_are_served() -> None:
    with fake_gateway(max_connections=4, request_head_timeout_s=30.0) as gateway:
        held = [connect(gateway, b"GET /healthz HTTP/1.1\r\nHost: x\r\n") for _ in range(4)]
        time.sleep(0.2)  # the four are accepted before the fifth connects (accept order, not a race)
        with connect(gateway, b"") as extra:
            status, headers, body = read_response(extra)
        assert status == 503 and headers["retry-after"] and json.loads(body)["error"]["code"] == "overloaded"
        for sock in held:
            sock.sendall(b"\r\n")
            assert read_response(sock)[0] == 200
            sock.close()


def test_a_client_that_never_reads_its_response_is_dropped_at_the_write_timeout() -> None:
    """The response sits in the socket buffer; past the write timeout the connection is aborted."""
    with fake_gateway(write_timeout_s=1.0) as gateway:
        sock = connect(gateway, b"")
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        # /openapi.json is large enough to fill a small receive window and the server's write buffer;
        # pipelined requests keep the server writing while nothing is read.
        sock.sendall(b"GET /openapi.json HTTP/1.1\r\nHost: x\r\n\r\n" * 64)
        time.sleep(4.0)  # the client reads nothing for longer than the write timeout
        received = drain(sock, seconds=10)
        sock.close()
        assert received.count(b"HTTP/1.1 200") < 64  # cut off before it got every response


def drain(sock: socket.socket, seconds: float) -> bytes:
    """Everything the server still sends until it closes, resets, or goes quiet for 2 s."""
    received, deadline = b"", time.monotonic() + seconds
    sock.settimeout(2)
    while time.monotonic() < deadline:
        try:
            chunk = sock.recv(1 << 20)
        except (ConnectionResetError, TimeoutError):
            break
        if not chunk:
            break
        received += chunk
    return received
