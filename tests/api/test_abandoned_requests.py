"""A client that leaves before its answer gives back everything its request held: the handler is
cancelled at the disconnect, the admission slot and memory come back, and the outcome is a 499."""

from __future__ import annotations

import asyncio

import httpx
import pytest
from prometheus_client import generate_latest
from starlette.types import Message

from service.config import Settings
from service.http.app import create_app
from tests.api.conftest import FakeDetector, FakeInference, png_bytes
from tests.api.test_disconnects import upload_scope
from tests.api.test_video_api import clip

STEP_TIMEOUT_S = 5.0


def scope(body: bytes, content_type: bytes) -> dict[str, object]:
    """test_disconnects' /predict upload scope, for this body and media type."""
    length = str(len(body)).encode()
    headers = [(b"host", b"t"), (b"content-type", content_type), (b"content-length", length)]
    return {**upload_scope(), "headers": headers}


@pytest.mark.parametrize(("body", "content_type"), [(clip(), b"video/mp4"), (png_bytes(), b"image/png")])
async def test_a_request_whose_client_leaves_mid_analysis_frees_its_slot_at_once(
    body: bytes, content_type: bytes
) -> None:
    gate = asyncio.Event()
    fake = FakeInference(gate=gate)  # inference waits until the gate opens: the request is mid-analysis
    settings = Settings(  # type: ignore[call-arg]
        triton_url="fake:0",
        default_model="fake_fer",
        default_video_model="fake_stt",
        max_in_flight=1,
        video_max_in_flight=1,
    )
    app = create_app(settings, inference=lambda _s, _m: fake, detector=lambda _s: FakeDetector())
    left = asyncio.Event()
    sent: list[Message] = []

    pending: list[Message] = [{"type": "http.request", "body": body, "more_body": False}]

    async def receive() -> Message:
        if pending:
            return pending.pop()
        await left.wait()
        return {"type": "http.disconnect"}

    async def send(message: Message) -> None:
        sent.append(message)

    async with app.router.lifespan_context(app):
        call = asyncio.create_task(app(scope(body, content_type), receive, send))
        await asyncio.wait_for(fake.arrived.acquire(), STEP_TIMEOUT_S)  # inference reached: slot held
        left.set()  # the client goes away
        await asyncio.wait_for(call, STEP_TIMEOUT_S)  # cancelled at the disconnect, not at the gate
        assert sent[0]["status"] == 499
        # The only slot of its kind is free again: the next request is served (gate open now).
        gate.set()
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://t") as client:
            again = await asyncio.wait_for(
                client.post("/predict", content=body, headers={"Content-Type": content_type.decode()}),
                STEP_TIMEOUT_S,
            )
        assert again.status_code == 200, again.text
        assert app.state.resources.memory.used == 0
    metrics = generate_latest(app.state.metrics.registry).decode()
    assert 'status="499"} 1.0' in metrics and 'status="500"' not in metrics
