"""GET /v1/stream, the WebSocket side: open (key, options), then receive, analyse and send as three tasks.

Real time by design, and bounded everywhere:
- the receiver keeps only the newest frame: one that arrives while another waits is dropped and counted,
  and the next answer says how many (``dropped``), so latency stays at one analysis, never a backlog;
- the analyser takes that frame at most ``fps`` times a second and answers it (or sends an error message:
  the stream goes on);
- the sender drains a queue of at most FER_STREAM_SEND_QUEUE answers; a client that stops reading fills it
  and is closed (4408 slow_reader); the server's own write timeout drops a socket that never drains;
- silence longer than FER_STREAM_IDLE_TIMEOUT_S closes the stream (4408 request_timeout); streams beyond
  FER_STREAM_MAX_OPEN are closed at once (4429 overloaded); each open stream holds its share of the memory
  budget (Settings.stream_reservation_bytes), and each frame an image's while it is analysed.
Close codes are 4000 + the error's HTTP status from the one error table, the reason its error code.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import json
import logging
import math
import time
from collections.abc import Awaitable, Callable
from contextlib import suppress
from dataclasses import dataclass
from typing import Any

import anyio
from pydantic import ValidationError
from starlette.types import Message
from starlette.websockets import WebSocket, WebSocketDisconnect, WebSocketState

from service.config import Settings
from service.exceptions import (
    Forbidden,
    InvalidRequest,
    PayloadTooLarge,
    RequestTimeout,
    ServiceError,
    SlowReader,
)
from service.http.auth import key_refusal, presented_key
from service.http.errors import close_code
from service.http.state import Resources
from service.schemas import ErrorDetail, StreamError, StreamLimits, StreamOptions, StreamReady
from service.serving.stream import Drops, Frame, StreamAnalyser, StreamConfig, stream_config

logger = logging.getLogger(__name__)

URL_KEY_NAMES = frozenset({"api_key", "apikey", "key", "token", "access_token"})


async def serve_stream(websocket: WebSocket, resources: Resources) -> None:
    """One stream from accept to close; every refusal is a close code and reason, never a 500."""
    await websocket.accept()
    try:
        async with (
            resources.streams.slot(),
            resources.memory.work.hold(resources.settings.stream_reservation_bytes),
        ):
            session = StreamSession(websocket, resources)
            await session.open()
            await session.run()
    except ServiceError as error:
        await close_with(websocket, error, resources.settings.write_timeout_s)
    except WebSocketDisconnect:
        pass


async def close_with(websocket: WebSocket, error: ServiceError, within_s: float) -> None:
    """Close with the error's code and reason (bounded: a client that reads nothing cannot hold it)."""
    if websocket.application_state == WebSocketState.DISCONNECTED:
        return
    reason = f"{error.code}: {error.message}".encode()[:123].decode(errors="ignore")  # RFC 6455 limit
    with suppress(Exception):
        await asyncio.wait_for(websocket.close(close_code(error), reason), within_s)


@dataclass
class Newest:
    """The one frame waiting for analysis; a newer one replaces it (and counts as dropped)."""

    frame: Frame | None = None
    dropped_total: int = 0
    dropped_since_answer: int = 0

    def put(self, frame: Frame) -> bool:
        """Keep ``frame``; True when it replaced one that was waiting (that one is dropped)."""
        replaced = self.frame is not None
        self.frame = frame
        if replaced:
            self.count_drop()
        return replaced

    def count_drop(self) -> None:
        self.dropped_total += 1
        self.dropped_since_answer += 1

    def take(self) -> tuple[Frame | None, Drops]:
        frame, self.frame = self.frame, None
        drops = Drops(self.dropped_since_answer, self.dropped_total)
        self.dropped_since_answer = 0
        return frame, drops


class StreamSession:
    def __init__(self, websocket: WebSocket, resources: Resources) -> None:
        self._ws, self._resources = websocket, resources
        self._settings, self._metrics = resources.settings, resources.metrics
        self._started = time.monotonic()
        self._received = 0
        self._newest = Newest()
        self._arrived = asyncio.Event()
        self._outbox: asyncio.Queue[tuple[str, float]] = asyncio.Queue(self._settings.stream_send_queue)
        self._analyser: StreamAnalyser | None = None
        self._first: Message | None = None  # a frame that came as the first message

    # ----------------------------------------------------------------------------- opening

    async def open(self) -> None:
        """Key and options: a header key, else the first message's; query options, then the first
        message's. Sends ``ready`` as soon as the stream is usable (again after an opening message)."""
        query = options_from_query(self._ws)
        keys = self._settings.api_key_sha256
        header_key = presented_key(self._ws.scope)
        if keys and header_key is not None and (refusal := key_refusal(header_key, keys)) is not None:
            raise refusal
        authorised = not keys or header_key is not None
        if authorised:
            await self._configure(query)
        first = await self._receive()
        start = opening_message(first)
        if start is None:
            if not authorised:
                raise key_refusal(None, keys) or Forbidden("an API key is required")
            self._first = first
            return
        if not authorised and (refusal := key_refusal(start.pop("api_key", None), keys)) is not None:
            raise refusal
        start.pop("api_key", None)
        await self._configure(merged_options(query, start))

    async def _configure(self, options: StreamOptions) -> None:
        config = await stream_config(options, self._resources.serving)
        self._analyser = StreamAnalyser(self._resources.serving, config, self._settings)
        await self._ws.send_text(ready(config, self._settings).model_dump_json())

    async def _receive(self) -> Message:
        try:
            message = await asyncio.wait_for(self._ws.receive(), self._settings.stream_idle_timeout_s)
        except TimeoutError:
            raise RequestTimeout(f"nothing came for {self._settings.stream_idle_timeout_s:g} s") from None
        if message["type"] == "websocket.disconnect":
            raise WebSocketDisconnect(int(message.get("code", 1000)))
        return message

    # ----------------------------------------------------------------------------- running

    async def run(self) -> None:
        """Receive, analyse and send until the client leaves or one of them fails (the others stop).

        An anyio task group, not bare asyncio tasks: when the server (or a test client) cancels this
        connection while its loops are being stopped, anyio's cancel scopes account for both cancellations;
        cancelling and gathering asyncio tasks by hand let a stray CancelledError escape the scope."""
        if self._first is not None:
            self._take(self._first)
        ended: list[Exception] = []
        async with anyio.create_task_group() as group:
            for loop in (self._receive_loop, self._analyse_loop, self._send_loop):
                group.start_soon(self._first_to_end, loop, group.cancel_scope, ended)
        if ended:
            raise ended[0]

    @staticmethod
    async def _first_to_end(
        loop: Callable[[], Awaitable[None]], scope: anyio.CancelScope, ended: list[Exception]
    ) -> None:
        """Run one loop; whichever ends first (a client gone, a refusal) stops the other two."""
        try:
            await loop()
        except Exception as error:  # kept, and raised by run() once the other two have stopped
            ended.append(error)
        finally:
            scope.cancel()

    async def _receive_loop(self) -> None:
        while True:
            self._take(await self._receive())

    def _take(self, message: Message) -> None:
        number = self._received
        self._received += 1
        self._metrics.stream_frames.labels("received").inc()
        try:
            frame = self._frame(number, message)
        except ServiceError as error:
            self._metrics.stream_frames.labels("failed").inc()
            self._enqueue(error_message(number, None, error, Drops(0, self._newest.dropped_total)), None)
            return
        if self._newest.put(frame):
            self._metrics.stream_frames.labels("dropped").inc()
        self._arrived.set()

    def _frame(self, number: int, message: Message) -> Frame:
        now = time.monotonic()
        if message.get("bytes") is not None:
            return Frame(number, self._sized(message["bytes"]), now - self._started, received_at=now)
        fields = json_message(message.get("text") or "")
        if fields.get("type") != "frame":
            raise InvalidRequest('a message is a frame: binary, or JSON {"type": "frame", "data": base64}')
        data = self._sized(frame_data(fields.get("data")))
        timestamp = fields.get("timestamp", now - self._started)
        if (
            not isinstance(timestamp, int | float)
            or isinstance(timestamp, bool)
            or not math.isfinite(timestamp)
        ):
            raise InvalidRequest("a frame's timestamp is a number of seconds")
        frame_id = fields.get("id")
        if frame_id is not None and (not isinstance(frame_id, str) or len(frame_id) > 128):
            raise InvalidRequest("a frame's id is a string of at most 128 characters")
        return Frame(number, data, float(timestamp), frame_id, received_at=now)

    def _sized(self, data: bytes) -> bytes:
        if len(data) > self._settings.stream_max_frame_bytes:
            raise PayloadTooLarge(f"a frame may have at most {self._settings.stream_max_frame_bytes} bytes")
        return data

    async def _analyse_loop(self) -> None:
        assert self._analyser is not None
        interval, last_start, last_time = 1.0 / self._analyser.config.fps, -math.inf, -math.inf
        while True:
            await self._arrived.wait()
            if (delay := last_start + interval - time.monotonic()) > 0:
                await asyncio.sleep(delay)  # at most fps frames a second: newer frames replace this one
            self._arrived.clear()
            frame, drops = self._newest.take()
            if frame is None:
                continue
            last_start = time.monotonic()
            frame = frame.at(max(frame.timestamp_s, last_time))  # the tracker's time never runs backwards
            last_time = frame.timestamp_s
            self._enqueue(await self._answer(frame, drops), frame.received_at)

    async def _answer(self, frame: Frame, drops: Drops) -> str:
        assert self._analyser is not None
        try:
            result = await self._analyser.analyse(frame, drops)
        except ServiceError as error:
            self._metrics.stream_frames.labels("failed").inc()
            return error_message(frame.number, frame.id, error, drops)
        self._metrics.stream_frames.labels("analysed").inc()
        return result.model_dump_json()

    def _enqueue(self, text: str, received_at: float | None) -> None:
        try:
            self._outbox.put_nowait((text, received_at if received_at is not None else time.monotonic()))
        except asyncio.QueueFull:
            raise SlowReader(
                f"{self._settings.stream_send_queue} answers are waiting unread: the client reads too slowly"
            ) from None

    async def _send_loop(self) -> None:
        while True:
            text, received_at = await self._outbox.get()
            await self._ws.send_text(text)
            self._metrics.stream_answer_seconds.observe(time.monotonic() - received_at)


def options_from_query(websocket: WebSocket) -> StreamOptions:
    params = websocket.query_params
    if URL_KEY_NAMES & {name.lower() for name in params}:
        raise Forbidden("an API key never goes in the URL: send it in a header or the first message")
    fields: dict[str, Any] = {name: params[name] for name in params if name != "prompts"}
    if "prompts" in params:
        fields["prompts"] = params.getlist("prompts")
    return validated_options(fields)


def validated_options(fields: dict[str, Any]) -> StreamOptions:
    try:
        return StreamOptions.model_validate(fields)
    except ValidationError as error:
        first = error.errors()[0]
        where = ".".join(str(part) for part in first.get("loc", ()))
        raise InvalidRequest(f"{where}: {first.get('msg', 'invalid option')}") from None


def merged_options(query: StreamOptions, start: dict[str, Any]) -> StreamOptions:
    """The opening message's options over the query string's."""
    return validated_options({**query.model_dump(exclude_unset=True), **start})


def opening_message(message: Message) -> dict[str, Any] | None:
    """The first message's options (and key) when it is ``{"type": "start", ...}``; None for a frame."""
    if message.get("text") is None:
        return None
    fields = json_message(message["text"])
    if fields.get("type") != "start":
        return None
    fields.pop("type")
    return fields


def json_message(text: str) -> dict[str, Any]:
    try:
        fields = json.loads(text)
    except (ValueError, RecursionError):
        raise InvalidRequest("a text message must be a JSON object") from None
    if not isinstance(fields, dict):
        raise InvalidRequest("a text message must be a JSON object")
    return fields


def frame_data(value: object) -> bytes:
    if not isinstance(value, str) or not value:
        raise InvalidRequest("a JSON frame carries its image as base64 in 'data'")
    try:
        return base64.b64decode(value, validate=True)
    except (binascii.Error, ValueError):
        raise InvalidRequest("a JSON frame's 'data' is not valid base64") from None


def error_message(number: int | None, frame_id: str | None, error: ServiceError, drops: Drops) -> str:
    detail = ErrorDetail(code=error.code, message=error.message)
    body = StreamError(
        frame=number, id=frame_id, error=detail, dropped=drops.since_last, dropped_total=drops.total
    )
    return body.model_dump_json()


def ready(config: StreamConfig, settings: Settings) -> StreamReady:
    return StreamReady(
        model=config.model,
        prompts=list(config.prompts),
        fps=config.fps,
        smoothing_s=config.smoothing.window_s,
        limits=StreamLimits(
            max_frame_bytes=settings.stream_max_frame_bytes,
            idle_timeout_s=settings.stream_idle_timeout_s,
            send_queue=settings.stream_send_queue,
        ),
    )
