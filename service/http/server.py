"""The HTTP server around the app: uvicorn configured from Settings, in one place for `python -m service`
and for the tests that run the real server."""

from __future__ import annotations

import asyncio
import json
from typing import Any

import h11
import uvicorn
from fastapi import FastAPI
from uvicorn.protocols.http.h11_impl import H11Protocol

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


def bounded_protocol(settings: Settings) -> type[BoundedH11Protocol]:
    """The connection protocol with this deployment's limits."""
    limits = {
        "max_connections": settings.max_connections,
        "head_timeout_s": settings.request_head_timeout_s,
        "write_timeout_s": settings.write_timeout_s,
        "retry_after_s": max(1, round(settings.triton_retry_after_s)),
    }
    return type("GatewayH11Protocol", (BoundedH11Protocol,), limits)


def uvicorn_config(app: FastAPI, settings: Settings) -> uvicorn.Config:
    return uvicorn.Config(
        app,
        host=settings.host,
        port=settings.port,
        log_level=settings.log_level,
        log_config=None,  # uvicorn's lines go through the root handler: same format, with the request id
        http=bounded_protocol(settings),
        h11_max_incomplete_event_size=settings.max_request_head_bytes,
        # Without a bound, one client that never finishes its request keeps SIGTERM from ever completing.
        timeout_graceful_shutdown=settings.graceful_shutdown_timeout_s,
    )
