"""Pure-ASGI middleware: unambiguous framing, request-body size limit and HTTP metrics (they must see every
request)."""

from __future__ import annotations

import time

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from service.exceptions import MalformedRequest, PayloadTooLarge
from service.http.errors import CLIENT_CLOSED_REQUEST, error_response
from service.metrics import Metrics


class UnambiguousFraming:
    """Refuse a request that declares both Transfer-Encoding and Content-Length (RFC 9112 §6.3): a proxy
    in front may frame it one way and this server the other, the classic request-smuggling setup."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        names = {name for name, _ in scope.get("headers", ())} if scope["type"] == "http" else set()
        if {b"transfer-encoding", b"content-length"} <= names:
            refusal = MalformedRequest("a request may declare Transfer-Encoding or Content-Length, not both")
            await error_response(refusal)(scope, receive, send)
            return
        await self.app(scope, receive, send)


class BodySizeLimit:
    """Refuse bodies over ``max_bytes`` (over ``larger[path]`` on the paths given their own limit, such
    as a long video's job): from Content-Length before reading, else while streaming."""

    def __init__(self, app: ASGIApp, *, max_bytes: int, larger: dict[str, int] | None = None) -> None:
        self.app, self.max_bytes, self.larger = app, max_bytes, larger or {}

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        limit = self.larger.get(scope["path"], self.max_bytes)
        declared = content_length(scope)
        if declared is not None and declared > limit:
            await error_response(self._too_large(limit))(scope, receive, send)
            return
        await self.app(scope, self._counting(receive, limit), send)

    @staticmethod
    def _too_large(limit: int) -> PayloadTooLarge:
        return PayloadTooLarge(f"request body exceeds {limit} bytes")

    def _counting(self, receive: Receive, limit: int) -> Receive:
        received = 0

        async def counting_receive() -> Message:
            nonlocal received
            message = await receive()
            received += len(message.get("body", b""))
            if received > limit:
                # Raised inside the route's body read, so the app's error table answers with 413.
                raise self._too_large(limit)
            return message

        return counting_receive


def content_length(scope: Scope) -> int | None:
    """The request's declared Content-Length, None when absent or not a number."""
    for name, value in scope.get("headers", ()):
        if name == b"content-length":
            try:
                return int(value)
            except ValueError:
                return None
    return None


# Label values come from fixed sets only, so no client can add series: the route is the matched template or
# "unmatched", the method one of these or "other", the status one the app itself chose.
KNOWN_METHODS = frozenset({"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"})


def method_label(method: str) -> str:
    return method if method in KNOWN_METHODS else "other"


class HttpMetrics:
    """Count and time every request by route template (not raw path: ids must not explode labels)."""

    def __init__(self, app: ASGIApp, *, metrics: Metrics) -> None:
        self.app, self.metrics = app, metrics

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        status = 500
        start = time.perf_counter()

        async def recording_send(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = int(message["status"])
            await send(message)

        try:
            await self.app(scope, receive, recording_send)
        finally:
            self._record(scope, status, time.perf_counter() - start)

    def _record(self, scope: Scope, status: int, seconds: float) -> None:
        route = getattr(scope.get("route"), "path", "unmatched")
        method = method_label(scope.get("method", ""))
        self.metrics.requests.labels(route, method, str(status)).inc()
        self.metrics.request_seconds.labels(route, method).observe(seconds)
        if status == CLIENT_CLOSED_REQUEST:
            self.metrics.client_disconnects.inc()
