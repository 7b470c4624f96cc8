"""GET /v1/stream in process (Starlette's TestClient WebSocket, the fake inference and detector): the
opening (keys, options), answers with stable track ids, bad frames, dropped frames, limits, idle timeout."""

from __future__ import annotations

import asyncio
import base64
import hashlib
import json
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import pytest
from fastapi.testclient import TestClient
from starlette.websockets import WebSocketDisconnect

from service.arrays import FloatArray
from service.config import Settings
from service.http.app import create_app
from service.inference.base import ImageOutputs, ServedModel
from tests.api.conftest import FakeDetector, FakeInference, png_bytes

KEY = "stream-secret"
KEY_SHA256 = hashlib.sha256(KEY.encode()).hexdigest()


class SlowInference(FakeInference):
    """The fake model, taking ``delay_s`` per call (so frames arrive while one is analysed)."""

    delay_s: float = 0.3

    async def infer_image(self, model: ServedModel, crops: FloatArray) -> ImageOutputs:
        await asyncio.sleep(self.delay_s)
        return await super().infer_image(model, crops)


@contextmanager
def stream_client(inference: FakeInference | None = None, **overrides: Any) -> Iterator[TestClient]:
    backend = inference or FakeInference()
    settings = Settings(
        triton_url="fake:0", default_model="fake_fer", default_video_model="fake_stt", **overrides
    )
    app = create_app(settings, inference=lambda _s, _m: backend, detector=lambda _s: FakeDetector())
    with TestClient(app) as client:
        yield client


def closed_with(ws: Any) -> tuple[int, str]:
    """The close code and reason of a WebSocket the server closes next."""
    with pytest.raises(WebSocketDisconnect) as closed:
        for _ in range(10):
            ws.receive_json()
    return closed.value.code, closed.value.reason


def test_a_binary_first_message_is_already_a_frame_and_tracks_stay_stable() -> None:
    with stream_client() as client, client.websocket_connect("/v1/stream") as ws:
        ready = ws.receive_json()
        assert ready["type"] == "ready" and ready["model"] == "fake_fer" and ready["fps"] == 10.0
        answers = []
        for _ in range(3):
            ws.send_bytes(png_bytes(300, 100))  # the fake detector: 3 faces, at the same places
            answers.append(ws.receive_json())
        ws.send_bytes(png_bytes(400, 100))  # a fourth person comes in
        answers.append(ws.receive_json())
    assert [a["type"] for a in answers] == ["result"] * 4
    assert [[f["track_id"] for f in a["faces"]] for a in answers] == [[1, 2, 3]] * 3 + [[1, 2, 3, 4]]
    face = answers[2]["faces"][0]
    assert face["smoothed_expression"]["label"] == face["segment"]["label"]
    assert face["segment"]["frames"] == 3 and face["segment"]["start_s"] <= face["segment"]["end_s"]
    assert abs(sum(s["probability"] for s in face["smoothed_expressions"]) - 1.0) < 1e-3
    assert [a["frame"] for a in answers] == [0, 1, 2, 3]
    assert answers[3]["faces"][3]["segment"]["frames"] == 1


def test_json_frames_carry_their_timestamp_and_id() -> None:
    with stream_client() as client, client.websocket_connect("/v1/stream") as ws:
        ws.receive_json()
        data = base64.b64encode(png_bytes()).decode()
        ws.send_text(json.dumps({"type": "frame", "data": data, "timestamp": 12.5, "id": "cam-1"}))
        answer = ws.receive_json()
    assert answer["type"] == "result" and answer["timestamp_s"] == 12.5 and answer["id"] == "cam-1"


def test_a_bad_frame_gets_an_error_message_and_the_stream_goes_on() -> None:
    with (
        stream_client(stream_max_frame_bytes=64 * 1024) as client,
        client.websocket_connect("/v1/stream") as ws,
    ):
        ws.receive_json()
        ws.send_bytes(png_bytes())
        first = ws.receive_json()
        ws.send_bytes(b"\xff\xd8\xff\xe0 not really a jpeg")
        garbage = ws.receive_json()
        ws.send_text("{not json")
        not_json = ws.receive_json()
        ws.send_text(json.dumps({"type": "frame", "data": "%%%"}))
        bad_base64 = ws.receive_json()
        ws.send_bytes(b"\x89PNG" + bytes(70 * 1024))
        too_big = ws.receive_json()
        ws.send_bytes(png_bytes())
        after = ws.receive_json()
    assert first["type"] == "result"
    assert (garbage["type"], garbage["frame"], garbage["error"]["code"]) == ("error", 1, "invalid_image")
    assert not_json["error"]["code"] == "invalid_request"
    assert bad_base64["error"]["code"] == "invalid_request"
    assert too_big["error"]["code"] == "payload_too_large"
    assert after["type"] == "result" and after["frame"] == 5
    assert [f["track_id"] for f in after["faces"]] == [f["track_id"] for f in first["faces"]]


def test_frames_that_arrive_during_an_analysis_are_dropped_and_counted() -> None:
    with stream_client(SlowInference()) as client, client.websocket_connect("/v1/stream?fps=60") as ws:
        ws.receive_json()
        for _ in range(10):
            ws.send_bytes(png_bytes())
        answers = [ws.receive_json()]
        while answers[-1]["frame"] != 9:
            answers.append(ws.receive_json())
    assert all(a["type"] == "result" for a in answers)
    assert len(answers) <= 3  # the newest frame only, never a backlog of ten
    assert len(answers) + answers[-1]["dropped_total"] == 10
    assert sum(a["dropped"] for a in answers) == answers[-1]["dropped_total"] >= 7


def test_options_from_the_query_and_from_the_opening_message() -> None:
    with stream_client() as client:
        with client.websocket_connect("/v1/stream?model=fake_cls&fps=5&prompts=a%20smile") as ws:
            ready = ws.receive_json()
        assert (ready["model"], ready["fps"], ready["prompts"]) == ("fake_cls", 5.0, ["a smile"])
        with client.websocket_connect("/v1/stream?fps=5") as ws:
            ws.receive_json()
            ws.send_text(json.dumps({"type": "start", "fps": 100 / 3, "smoothing_s": 2}))
            again = ws.receive_json()
            ws.send_bytes(png_bytes())
            assert ws.receive_json()["type"] == "result"
        assert (again["type"], again["fps"], again["smoothing_s"]) == ("ready", 30.0, 2.0)  # capped


@pytest.mark.parametrize(
    ("url", "opening", "code", "reason"),
    [
        ("/v1/stream?fps=0", None, 4422, "invalid_request"),
        ("/v1/stream?colour=red", None, 4422, "invalid_request"),
        ("/v1/stream", {"type": "start", "model": "nope"}, 4404, "model_not_found"),
        ("/v1/stream", {"type": "start", "model": "fake_stt"}, 4422, "model_task_mismatch"),
        ("/v1/stream", {"type": "start", "prompts": [" "]}, 4422, "invalid_prompt"),
    ],
)
def test_bad_options_close_with_the_error_tables_code(
    url: str, opening: dict[str, Any] | None, code: int, reason: str
) -> None:
    with stream_client() as client, client.websocket_connect(url) as ws:
        if opening is not None:
            ws.receive_json()
            ws.send_text(json.dumps(opening))
        closed = closed_with(ws)
    assert closed[0] == code and closed[1].startswith(reason + ":")


def test_api_keys_in_a_header_or_the_first_message_never_the_url() -> None:
    with stream_client(api_key_sha256=(KEY_SHA256,)) as client:
        with client.websocket_connect("/v1/stream", headers={"X-API-Key": KEY}) as ws:
            assert ws.receive_json()["type"] == "ready"
        with client.websocket_connect("/v1/stream") as ws:
            ws.send_text(json.dumps({"type": "start", "api_key": KEY}))
            assert ws.receive_json()["type"] == "ready"
            ws.send_bytes(png_bytes())
            assert ws.receive_json()["type"] == "result"
        with client.websocket_connect("/v1/stream") as ws:
            ws.send_bytes(png_bytes())  # a frame first, no key anywhere
            assert closed_with(ws)[0] == 4401
        with client.websocket_connect("/v1/stream") as ws:
            ws.send_text(json.dumps({"type": "start", "api_key": "wrong"}))
            assert closed_with(ws)[0] == 4403
        with client.websocket_connect("/v1/stream", headers={"Authorization": "Bearer wrong"}) as ws:
            assert closed_with(ws)[0] == 4403
        with client.websocket_connect(f"/v1/stream?api_key={KEY}") as ws:
            code, reason = closed_with(ws)
        assert code == 4403 and "never goes in the URL" in reason


def test_streams_beyond_the_limit_are_closed_with_4429() -> None:
    with stream_client(stream_max_open=1) as client, client.websocket_connect("/v1/stream") as first:
        first.receive_json()
        with client.websocket_connect("/v1/stream") as second:
            assert closed_with(second) == (4429, "overloaded: 1 streams are already in progress; retry later")
        first.send_bytes(png_bytes())
        assert first.receive_json()["type"] == "result"
        metrics = client.get("/metrics").text
    assert "fer_streams_open 1.0" in metrics
    assert 'fer_rejected_requests_total{reason="stream_overloaded"} 1.0' in metrics


def test_an_idle_stream_is_closed_with_4408() -> None:
    with stream_client(stream_idle_timeout_s=0.3) as client, client.websocket_connect("/v1/stream") as ws:
        ws.receive_json()
        ws.send_bytes(png_bytes())
        assert ws.receive_json()["type"] == "result"
        code, reason = closed_with(ws)
    assert code == 4408 and reason.startswith("request_timeout:")


def test_stream_metrics_count_frames_and_time_answers() -> None:
    with stream_client() as client:
        with client.websocket_connect("/v1/stream") as ws:
            ws.receive_json()
            ws.send_bytes(png_bytes())
            ws.receive_json()
            ws.send_bytes(b"junk")
            ws.receive_json()
        metrics = client.get("/metrics").text
    assert 'fer_stream_frames_total{kind="received"} 2.0' in metrics
    assert 'fer_stream_frames_total{kind="analysed"} 1.0' in metrics
    assert 'fer_stream_frames_total{kind="failed"} 1.0' in metrics
    assert 'fer_stream_frames_total{kind="dropped"} 0.0' in metrics
    assert "fer_stream_answer_seconds_count 2.0" in metrics
    assert "fer_streams_open 0.0" in metrics
