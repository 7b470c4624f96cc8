"""The hostile corpus (tests/corpus.py) against the real gateway and Triton: no 5xx, every answer JSON, no
hang. The figure (inputs tried, statuses, 5xx, non-JSON, hangs) is printed on every run."""

from __future__ import annotations

import contextlib
import json
import socket
import time
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit

import pytest

from devstack.stack import Gateway, gateway_settings, start_gateway
from service.launcher.triton_local import LocalTriton
from tests.corpus import Probe, corpus, json_probes

pytestmark = pytest.mark.integration

BODY_READ_TIMEOUT_S = 2.0  # lying Content-Lengths wait this long for the missing bytes, then 408
HANG_S = 15.0  # no answer within this: a hang (the slowest honest probe, a clip, takes ~1 s)


@dataclass(frozen=True)
class Outcome:
    probe: str
    status: int | None  # None: the connection closed without an answer, or it hung
    json_body: bool
    seconds: float

    @property
    def hung(self) -> bool:
        return self.status is None and self.seconds >= HANG_S


@pytest.fixture(scope="module")
def fuzz_gateway(triton: LocalTriton) -> Iterator[Gateway]:
    running = start_gateway(gateway_settings(triton, body_read_timeout_s=BODY_READ_TIMEOUT_S))
    yield running
    running.stop()


def send(sock: socket.socket, raw: bytes) -> None:
    # The server may answer and close before taking the whole body (413, 400): read that answer anyway.
    with contextlib.suppress(OSError):
        sock.sendall(raw)


def read_head(sock: socket.socket, data: bytes) -> tuple[bytes, bytes]:
    """The first final response's head and what followed it (a 100 Continue before it is skipped)."""
    while True:
        while b"\r\n\r\n" not in data:
            chunk = sock.recv(65536)
            if not chunk:
                raise ConnectionError("closed before a whole response head")
            data += chunk
        head, _, rest = data.partition(b"\r\n\r\n")
        if not head.startswith(b"HTTP/1.1 100"):
            return head, rest
        data = rest


def read_body(sock: socket.socket, head: bytes, body: bytes) -> bytes:
    lines = head.decode("latin-1").split("\r\n")[1:]
    headers = {k.strip().lower(): v.strip() for k, _, v in (line.partition(":") for line in lines)}
    length = int(headers.get("content-length", "-1"))
    while length < 0 or len(body) < length:
        chunk = sock.recv(65536)
        if not chunk:
            break
        body += chunk
    return body if length < 0 else body[:length]


def is_json(body: bytes) -> bool:
    try:
        json.loads(body)
    except ValueError:
        return False
    return True


def probe(gateway: Gateway, item: Probe) -> Outcome:
    address = urlsplit(gateway.url)
    began = time.monotonic()
    try:
        with socket.create_connection((address.hostname, address.port), timeout=HANG_S) as sock:
            send(sock, item.raw)
            head, rest = read_head(sock, b"")
            body = read_body(sock, head, rest)
    except TimeoutError:
        return Outcome(item.name, None, False, HANG_S)
    except OSError:
        return Outcome(item.name, None, False, time.monotonic() - began)
    return Outcome(item.name, int(head.split()[1]), is_json(body), time.monotonic() - began)


def figure(outcomes: list[Outcome]) -> str:
    statuses = Counter(str(o.status) for o in outcomes)
    server_errors = sum(1 for o in outcomes if o.status is not None and o.status >= 500)
    lines = [
        f"fuzz corpus: {len(outcomes)} inputs tried; 5xx: {server_errors}; "
        f"non-JSON: {sum(1 for o in outcomes if o.status is not None and not o.json_body)}; "
        f"hangs (> {HANG_S:g} s): {sum(1 for o in outcomes if o.hung)}; "
        f"no answer: {sum(1 for o in outcomes if o.status is None and not o.hung)}; "
        f"slowest: {max(o.seconds for o in outcomes):.2f} s",
        "statuses: " + ", ".join(f"{status}: {n}" for status, n in sorted(statuses.items())),
    ]
    return "\n".join(lines)


def test_hostile_corpus_gets_only_json_4xx_or_200(
    fuzz_gateway: Gateway, media: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    outcomes = [probe(fuzz_gateway, item) for item in corpus(media)]
    with capsys.disabled():
        print("\n" + figure(outcomes))
    bad = [o for o in outcomes if o.status is None or o.status >= 500 or not o.json_body]
    assert not bad, "\n".join(
        f"{o.probe}: status {o.status}, json {o.json_body}, {o.seconds:.1f} s" for o in bad
    )


# What the JSON API's corpus must answer for some of its probes (the rest: any JSON 200 or 4xx).
JSON_EXPECTED = {
    "json: every still format": 200,
    "json: JPEG mutants beside a good image": 200,
    "json: bad base64": 200,
    "json: 100000 images": 422,
    "json: 17 images": 422,
    "json: nesting 100000 deep": 400,
    "json: duplicate keys": 400,
    "json: 500000 prompts": 400,
    "json: 19 MB of base64 A": 413,
    "json: 1 MB id": 422,
    "json: Content-Type text/plain": 415,
    "json: Content-Length over the body": 408,
}


def test_hostile_json_corpus_gets_only_json_4xx_or_200(
    fuzz_gateway: Gateway, media: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    outcomes = [probe(fuzz_gateway, item) for item in json_probes(media)]
    with capsys.disabled():
        print("\njson " + figure(outcomes))
    bad = [o for o in outcomes if o.status is None or o.status >= 500 or not o.json_body]
    assert not bad, "\n".join(
        f"{o.probe}: status {o.status}, json {o.json_body}, {o.seconds:.1f} s" for o in bad
    )
    statuses = {o.probe: o.status for o in outcomes}
    assert {name: statuses[name] for name in JSON_EXPECTED} == JSON_EXPECTED
