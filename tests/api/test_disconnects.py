"""A client that goes away mid-upload is a client disconnect (status 499, its own counter), not a 500."""

from __future__ import annotations

import asyncio
import logging

import pytest
from prometheus_client import generate_latest
from starlette.types import Message

from service.config import Settings
from service.http.app import create_app
from tests.api.conftest import FakeDetector, FakeInference


def upload_scope() -> dict[str, object]:
    return {
        "type": "http",
        "asgi": {"version": "3.0"},
        "http_version": "1.1",
        "method": "POST",
        "scheme": "http",
        "path": "/predict",
        "raw_path": b"/predict",
        "root_path": "",
        "query_string": b"",
        "headers": [(b"host", b"test"), (b"content-type", b"image/png"), (b"content-length", b"100000")],
        "client": ("127.0.0.1", 50000),
        "server": ("test", 80),
    }


async def test_a_client_dropping_mid_upload_is_counted_as_a_disconnect(
    caplog: pytest.LogCaptureFixture,
) -> None:
    settings = Settings(triton_url="fake:0", default_model="fake_fer")  # type: ignore[call-arg]
    app = create_app(settings, inference=lambda _s, _m: FakeInference(), detector=lambda _s: FakeDetector())
    messages: list[Message] = [
        {"type": "http.request", "body": b"\x89PNG\r\n\x1a\n", "more_body": True},
        {"type": "http.disconnect"},
    ]

    async def receive() -> Message:
        return messages.pop(0) if messages else await asyncio.Future()

    async def send(message: Message) -> None:
        return None

    async with app.router.lifespan_context(app):
        with caplog.at_level(logging.INFO):
            await app(upload_scope(), receive, send)  # raised ClientDisconnect out of the app before
    metrics = generate_latest(app.state.metrics.registry).decode()
    assert 'fer_http_requests_total{method="POST",route="/predict",status="499"} 1.0' in metrics
    assert "fer_client_disconnects_total 1.0" in metrics
    assert 'status="500"' not in metrics
    assert not [record for record in caplog.records if record.exc_info or record.levelno >= logging.ERROR]
