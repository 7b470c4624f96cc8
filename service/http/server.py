"""The HTTP server around the app: uvicorn configured from Settings, in one place for `python -m service`
and for the tests that run the real server."""

from __future__ import annotations

import json

import h11
import uvicorn
from fastapi import FastAPI
from uvicorn.protocols.http.h11_impl import H11Protocol

from service.config import Settings
from service.exceptions import MalformedRequest
from service.http.errors import error_body

_MALFORMED_BODY = json.dumps(
    error_body(MalformedRequest.code, "the request is not valid HTTP/1.1 (request line, headers or framing)")
).encode()


class JsonErrorsH11Protocol(H11Protocol):
    """uvicorn's h11 protocol answering what it cannot parse with the API's JSON envelope, not plain text.

    h11 rather than httptools: it bounds the request line and headers (FER_MAX_REQUEST_HEAD_BYTES), and
    lets any method token through to the app, which answers an unknown one with its JSON 405.
    """

    def send_400_response(self, msg: str) -> None:
        headers = [
            (b"content-type", b"application/json"),
            (b"content-length", str(len(_MALFORMED_BODY)).encode()),
            (b"connection", b"close"),
        ]
        response = h11.Response(status_code=400, headers=headers, reason=b"Bad Request")
        for event in (response, h11.Data(data=_MALFORMED_BODY), h11.EndOfMessage()):
            self.transport.write(self.conn.send(event))
        self.transport.close()


def uvicorn_config(app: FastAPI, settings: Settings) -> uvicorn.Config:
    return uvicorn.Config(
        app,
        host=settings.host,
        port=settings.port,
        log_level=settings.log_level,
        log_config=None,  # uvicorn's lines go through the root handler: same format, with the request id
        http=JsonErrorsH11Protocol,
        h11_max_incomplete_event_size=settings.max_request_head_bytes,
        # Without a bound, one client that never finishes its request keeps SIGTERM from ever completing.
        timeout_graceful_shutdown=settings.graceful_shutdown_timeout_s,
    )
