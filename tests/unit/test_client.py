"""fer_client against httpx.MockTransport: retries on 429/503 honouring Retry-After, timeouts, the API key,
the query it sends, and parsing into the service's own response models."""

from __future__ import annotations

import email.utils
import json
import time
from collections.abc import Callable
from typing import Any

import httpx
import pytest

from devstack.media import ROOT
from fer_client import AsyncFerClient, ClientSettings, FerClient, FerError, FerTimeout, FerUnreachable
from fer_client.protocol import PredictOptions, retry_after_s
from service.schemas import PredictResponse, VideoPredictResponse

EXAMPLE = (ROOT / "service" / "examples" / "predict_response.json").read_bytes()
Handler = Callable[[httpx.Request], httpx.Response]


def overloaded(retry_after: str | None = "2") -> httpx.Response:
    headers = {"Retry-After": retry_after} if retry_after is not None else {}
    body = {"error": {"code": "overloaded", "message": "32 requests are already in progress; retry later"}}
    return httpx.Response(429, json=body, headers=headers)


def answers(*responses: httpx.Response) -> tuple[Handler, list[httpx.Request]]:
    """A handler giving ``responses`` in turn (the last one repeats), and the requests it saw."""
    seen: list[httpx.Request] = []

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        return responses[min(len(seen), len(responses)) - 1]

    return handler, seen


def client(handler: Handler, waits: list[float], **settings: Any) -> FerClient:
    chosen = ClientSettings(url="http://fer.test", **settings)
    return FerClient(settings=chosen, transport=httpx.MockTransport(handler), sleep=waits.append)


def test_429_is_retried_after_the_seconds_retry_after_asks() -> None:
    handler, seen = answers(overloaded("2"), overloaded("3"), httpx.Response(200, content=EXAMPLE))
    waits: list[float] = []
    with client(handler, waits) as fer:
        result = fer.predict(b"\xff\xd8 jpeg bytes")
    assert isinstance(result, PredictResponse) and result.faces[0].expression.label
    assert waits == [2.0, 3.0] and len(seen) == 3
    assert all(request.url.path == "/predict" for request in seen)


def test_retry_after_as_an_http_date() -> None:
    now = time.time()
    date = email.utils.formatdate(now + 4, usegmt=True)
    assert retry_after_s(date, now=now) == pytest.approx(4, abs=1)
    assert retry_after_s("soon") is None and retry_after_s(None) is None


def test_503_without_retry_after_backs_off_exponentially() -> None:
    unavailable = httpx.Response(503, json={"error": {"code": "inference_unavailable", "message": "down"}})
    handler, _ = answers(unavailable, unavailable, httpx.Response(200, content=EXAMPLE))
    waits: list[float] = []
    with client(handler, waits, backoff_s=0.25) as fer:
        fer.predict(b"x")
    assert waits == [0.25, 0.5]


def test_gives_up_after_max_retries_with_the_service_error() -> None:
    handler, seen = answers(overloaded("1"))
    waits: list[float] = []
    with client(handler, waits, max_retries=2) as fer, pytest.raises(FerError) as raised:
        fer.predict(b"x")
    assert len(seen) == 3 and waits == [1.0, 1.0]
    assert (raised.value.status, raised.value.code, raised.value.retry_after_s) == (429, "overloaded", 1.0)
    assert "already in progress" in raised.value.message


def test_a_retry_after_longer_than_accepted_is_reported_at_once() -> None:
    handler, seen = answers(overloaded("600"))
    waits: list[float] = []
    with client(handler, waits, max_retry_after_s=30) as fer, pytest.raises(FerError):
        fer.predict(b"x")
    assert waits == [] and len(seen) == 1


def test_other_errors_are_not_retried() -> None:
    body = {"error": {"code": "invalid_image", "message": "image data is truncated"}}
    handler, seen = answers(httpx.Response(422, json=body))
    with client(handler, []) as fer, pytest.raises(FerError) as raised:
        fer.predict(b"x")
    assert len(seen) == 1 and raised.value.code == "invalid_image"


def test_a_body_that_is_not_the_envelope_still_gives_a_readable_error() -> None:
    handler, _ = answers(httpx.Response(502, text="<html>bad gateway</html>"))
    with client(handler, []) as fer, pytest.raises(FerError) as raised:
        fer.models()
    assert raised.value.code == "http_error" and "bad gateway" in raised.value.message


def test_timeouts_are_configured_and_a_timeout_is_not_retried() -> None:
    seen: list[httpx.Request] = []

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        raise httpx.ReadTimeout("timed out", request=request)

    with client(handler, [], timeout_s=7.5, connect_timeout_s=1.5) as fer, pytest.raises(FerTimeout):
        fer.predict(b"x")
    assert len(seen) == 1  # the analysis may still be running: sending it again would double the load
    assert seen[0].extensions["timeout"] == {"connect": 1.5, "read": 7.5, "write": 7.5, "pool": 7.5}


def test_connection_refused_is_unreachable() -> None:
    def handler(request: httpx.Request) -> httpx.Response:
        raise httpx.ConnectError("connection refused", request=request)

    with client(handler, []) as fer, pytest.raises(FerUnreachable):
        fer.health()


def test_api_key_from_the_environment_is_a_bearer_token(monkeypatch: pytest.MonkeyPatch) -> None:
    handler, seen = answers(httpx.Response(200, json={"status": "ok", "checks": {"triton": True}}))
    monkeypatch.setenv("FER_API_KEY", "s3cret")
    with FerClient("http://fer.test", transport=httpx.MockTransport(handler)) as fer:
        assert fer.health().status == "ok"
    monkeypatch.delenv("FER_API_KEY")
    with FerClient("http://fer.test", transport=httpx.MockTransport(handler)) as fer:
        fer.health()
    assert seen[0].headers["authorization"] == "Bearer s3cret"
    assert "authorization" not in seen[1].headers
    assert "s3cret" not in repr(ClientSettings(api_key="s3cret"))  # a SecretStr never prints


def test_the_query_repeats_prompts_and_the_upload_is_multipart(tmp_path: Any) -> None:
    handler, seen = answers(httpx.Response(200, content=EXAMPLE))
    photo = tmp_path / "messi.jpg"
    photo.write_bytes(b"\xff\xd8 jpeg bytes")
    options = PredictOptions(model="fer_former", prompts=("a smiling face", "a frown"), fps=2.0)
    with client(handler, []) as fer:
        fer.predict(photo, options)
    query = seen[0].url.params
    assert query.get_list("prompts") == ["a smiling face", "a frown"]
    assert query["model"] == "fer_former" and query["fps"] == "2.0"
    assert query.get_list("include") == ["timeline", "tracks"]
    body = seen[0].read()
    assert b'name="file"; filename="messi.jpg"' in body and b"\xff\xd8 jpeg bytes" in body


def test_readiness_503_returns_the_failing_checks() -> None:
    body = {"status": "unavailable", "checks": {"triton": False}}
    handler, _ = answers(httpx.Response(503, json=body, headers={"Retry-After": "1"}))
    with client(handler, [], max_retries=0) as fer:
        health = fer.health()
    assert health.status == "unavailable" and health.checks == {"triton": False}


def test_annotate_asks_for_the_format_it_wants() -> None:
    handler, seen = answers(httpx.Response(200, content=b"\x89PNG...", headers={"Content-Type": "image/png"}))
    with client(handler, []) as fer:
        assert fer.annotate(b"x", png=True) == b"\x89PNG..."
        fer.annotate(b"x")
    assert [r.headers["accept"] for r in seen] == ["image/png", "image/jpeg"]
    assert seen[0].url.path == "/annotate"


def video_example() -> bytes:
    image = json.loads(EXAMPLE)
    face = {**image["faces"][0], "track_id": 1}
    video = {
        "media": "video",
        "video": {"container": "AVI", "codec": "mpeg4", "width": 720, "height": 528, "fps": 24.0,
                  "duration_s": 11.3, "frames_decoded": 270, "frames_analysed": 57, "truncated": False},
        "model": image["model"],
        "video_model": {**image["model"], "name": "stt", "task": "video", "trained": False},
        "timeline": [{"frame_index": 3, "timestamp_s": 0.2, "faces": [face]}],
        "tracks": [{"track_id": 1, "first_s": 0.2, "last_s": 6.4, "frame_indices": [3],
                    "dynamic_expression": face["expression"], "dynamic_expressions": face["expressions"],
                    "dominant": {"label": "sadness", "share": 0.8125}}],
        "summary": {"people": 1, "faces": 1, "dominant": {"label": "sadness", "share": 0.8125}},
        "timings_ms": {"total": 1.0},
        "warnings": [],
    }  # fmt: skip
    return json.dumps(video).encode()


async def test_async_client_retries_and_parses_a_clip() -> None:
    handler, seen = answers(overloaded("1"), httpx.Response(200, content=video_example()))
    waits: list[float] = []

    async def sleep(seconds: float) -> None:
        waits.append(seconds)

    settings = ClientSettings(url="http://fer.test")
    async with AsyncFerClient(settings=settings, transport=httpx.MockTransport(handler), sleep=sleep) as fer:
        result = await fer.predict(b"RIFF....AVI ")
    assert isinstance(result, VideoPredictResponse) and result.tracks and result.tracks[0].track_id == 1
    assert waits == [1.0] and len(seen) == 2


async def test_async_timeout() -> None:
    def handler(request: httpx.Request) -> httpx.Response:
        raise httpx.ReadTimeout("timed out", request=request)

    settings = ClientSettings(url="http://fer.test")
    async with AsyncFerClient(settings=settings, transport=httpx.MockTransport(handler)) as fer:
        with pytest.raises(FerTimeout):
            await fer.models()
