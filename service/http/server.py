"""The HTTP server around the app: uvicorn configured from Settings, in one place for `python -m service`
and for the tests that run the real server."""

from __future__ import annotations

import asyncio
import json
import socket
from contextlib import suppress
from typing import Any

import h11
import uvicorn
from fastapi import FastAPI
from uvicorn.protocols.http.h11_impl import H11Protocol
from uvicorn.protocols.websockets.websockets_sansio_impl import WebSocketsSansIOProtocol

from service.config import Settings
from service.exceptions import MalformedRequest, Overloaded, RequestTimeout
from service.http.errors import error_body

_MALFORMED_BODY = json.dumps(
    error_body(MalformedRequest.code, "the request is not valid HTTP/1.1 (request line, headers or framing)")
).encode()
_SLOW_HEAD_BODY = json.dumps(
    error_body(RequestTimeout.code, "the request line and headers did not arrive in time")
).encode()
_FULL_BODY = json.dumps(error_body(Overloaded.code, "too many open connections; retry later")).encode()


class JsonErrorsH11Protocol(H11Protocol):
    """uvicorn's h11 protocol answering what it cannot parse with the API's JSON envelope, not plain text.

    h11 rather than httptools: it bounds the request line and headers (FER_MAX_REQUEST_HEAD_BYTES), and
    lets any method token through to the app, which answers an unknown one with its JSON 405.
    """

    def send_400_response(self, msg: str) -> None:
        self._answer_and_close(400, _MALFORMED_BODY)

    def _answer_and_close(self, status: int, body: bytes, *extra: tuple[bytes, bytes]) -> None:
        headers = [
            (b"content-type", b"application/json"),
            (b"content-length", str(len(body)).encode()),
            (b"connection", b"close"),
            *extra,
        ]
        try:
            for event in (
                h11.Response(status_code=status, headers=headers),
                h11.Data(data=body),
                h11.EndOfMessage(),
            ):
                self.transport.write(self.conn.send(event))
        except h11.LocalProtocolError:  # a response had already begun: nothing more can be said
            pass
        self.transport.close()


class BoundedH11Protocol(JsonErrorsH11Protocol):
    """The gateway's connections, each bounded in time and all of them in number, so that no client can
    hold the server's memory or sockets by being slow:

    - a connection beyond ``max_connections`` is answered 503 and closed before anything is read;
    - a request head (line and headers) must be complete ``head_timeout_s`` after the connection opens or
      the next request's first byte arrives, else 408 and close (slow headers, HTTP/0.9 lines, bare-CR
      headers that h11 waits on for ever);
    - a response the client does not read: once the socket's buffer passes its high-water mark, the client
      has ``write_timeout_s`` to drain it, else the connection is aborted and the buffer freed.

    The limits are class attributes set by ``bounded_protocol(settings)``: uvicorn builds the protocol
    itself, one instance per connection.
    """

    max_connections = 256
    head_timeout_s = 10.0
    write_timeout_s = 30.0
    retry_after_s = 1

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._head_timer: asyncio.TimerHandle | None = None
        self._write_timer: asyncio.TimerHandle | None = None

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        if len(self.connections) > self.max_connections:
            retry = (b"retry-after", str(self.retry_after_s).encode())
            self._answer_and_close(503, _FULL_BODY, retry)
            return
        self._arm_head_timer()

    def connection_lost(self, exc: Exception | None) -> None:
        self._cancel_timers()
        super().connection_lost(exc)

    def data_received(self, data: bytes) -> None:
        if self._awaiting_head() and self._head_timer is None:
            self._arm_head_timer()  # the first bytes of a kept-alive connection's next request
        super().data_received(data)
        if not self._awaiting_head():
            self._cancel_head_timer()

    def handle_websocket_upgrade(self, event: h11.Request) -> None:
        # The connection stops being HTTP here: a head timer left armed would write a 408 into the
        # WebSocket head_timeout_s later (and the write timer is the WebSocket protocol's from now on).
        self._cancel_timers()
        super().handle_websocket_upgrade(event)

    def _awaiting_head(self) -> bool:
        return self.cycle is None or self.cycle.response_complete

    def _arm_head_timer(self) -> None:
        self._cancel_head_timer()
        self._head_timer = self.loop.call_later(self.head_timeout_s, self._head_timed_out)

    def _cancel_head_timer(self) -> None:
        if self._head_timer is not None:
            self._head_timer.cancel()
            self._head_timer = None

    def _head_timed_out(self) -> None:
        self._head_timer = None
        if not self.transport.is_closing() and self._awaiting_head():
            self._answer_and_close(408, _SLOW_HEAD_BODY)

    def pause_writing(self) -> None:
        super().pause_writing()
        if self._write_timer is None:
            self._write_timer = self.loop.call_later(self.write_timeout_s, self._write_timed_out)

    def resume_writing(self) -> None:
        super().resume_writing()
        if self._write_timer is not None:
            self._write_timer.cancel()
            self._write_timer = None

    def _write_timed_out(self) -> None:
        self._write_timer = None
        self.logger.warning(
            "a client read nothing of its response for %g s: connection dropped", self.write_timeout_s
        )
        self.transport.abort()  # frees the buffered response now; close() would wait to flush it

    def _cancel_timers(self) -> None:
        self._cancel_head_timer()
        if self._write_timer is not None:
            self._write_timer.cancel()
            self._write_timer = None


class BoundedWebSocketProtocol(WebSocketsSansIOProtocol):
    """uvicorn's WebSocket protocol (the sans-I/O one, on the ``websockets`` package) with the HTTP side's
    write bound: once the socket's buffer passes its high-water mark, a client has ``write_timeout_s`` to
    drain it, else the connection is aborted. Without it a client that stops reading parks the stream's
    sender (and its close frame) for ever. The kernel's send buffer is fixed at ``send_buffer_bytes``
    instead of auto-tuned to megabytes: a live stream's answers are small, and its backlog should show up
    where the stream can see it (its bounded queue), not pile up in the kernel.
    """

    write_timeout_s = 30.0
    send_buffer_bytes = 128 * 1024

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._write_timer: asyncio.TimerHandle | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        super().connection_made(transport)
        sock = transport.get_extra_info("socket")
        if sock is not None:
            with suppress(OSError):
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, self.send_buffer_bytes)

    def pause_writing(self) -> None:
        super().pause_writing()
        if self._write_timer is None:
            self._write_timer = self.loop.call_later(self.write_timeout_s, self._write_timed_out)

    def resume_writing(self) -> None:
        super().resume_writing()
        self._cancel_write_timer()

    def connection_lost(self, exc: Exception | None) -> None:
        self._cancel_write_timer()
        super().connection_lost(exc)

    def _cancel_write_timer(self) -> None:
        if self._write_timer is not None:
            self._write_timer.cancel()
            self._write_timer = None

    def _write_timed_out(self) -> None:
        self._write_timer = None
        self.logger.warning(
            "a stream's client read nothing for %g s: connection dropped", self.write_timeout_s
        )
        self.transport.abort()


def bounded_protocol(settings: Settings) -> type[BoundedH11Protocol]:
    """The connection protocol with this deployment's limits."""
    limits = {
        "max_connections": settings.max_connections,
        "head_timeout_s": settings.request_head_timeout_s,
        "write_timeout_s": settings.write_timeout_s,
        "retry_after_s": max(1, round(settings.triton_retry_after_s)),
    }
    return type("GatewayH11Protocol", (BoundedH11Protocol,), limits)


def bounded_websocket_protocol(settings: Settings) -> type[BoundedWebSocketProtocol]:
    limits = {"write_timeout_s": settings.write_timeout_s}
    return type("GatewayWebSocketProtocol", (BoundedWebSocketProtocol,), limits)


def uvicorn_config(app: FastAPI, settings: Settings) -> uvicorn.Config:
    return uvicorn.Config(
        app,
        host=settings.host,
        port=settings.port,
        log_level=settings.log_level,
        log_config=None,  # uvicorn's lines go through the root handler: same format, with the request id
        http=bounded_protocol(settings),
        h11_max_incomplete_event_size=settings.max_request_head_bytes,
        # WebSockets (GET /v1/stream) named, not "auto": a frame in its base64 JSON is the largest message;
        # no per-message deflate (JPEG does not compress, and inflating costs CPU and memory per message).
        ws=bounded_websocket_protocol(settings),
        ws_max_size=settings.stream_message_bytes,
        ws_per_message_deflate=False,
        # Without a bound, one client that never finishes its request keeps SIGTERM from ever completing.
        timeout_graceful_shutdown=settings.graceful_shutdown_timeout_s,
    )
