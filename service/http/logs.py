"""Structured logs: one JSON object per line, carrying the id of the request that logged it.

The request id lives in a ContextVar, the one piece of module state here: it is per asyncio task (so per
request), which is exactly what a log line needs and what no argument passing could give to library code
(uvicorn's access log, tritonclient) that logs on our behalf.
"""

from __future__ import annotations

import json
import logging
import re
import time
import uuid
from contextvars import ContextVar

from starlette.types import ASGIApp, Message, Receive, Scope, Send

_REQUEST_ID: ContextVar[str | None] = ContextVar("fer_request_id", default=None)
# Accepted from clients as they are: short, and nothing that could forge a log line or a header.
_VALID_ID = re.compile(r"[A-Za-z0-9._:-]{1,128}")
REQUEST_ID_HEADER = b"x-request-id"


def current_request_id() -> str | None:
    return _REQUEST_ID.get()


class RequestId:
    """Take the client's X-Request-ID when it is sane, else make one; log with it; send it back."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        request_id = _request_id_from(scope)
        token = _REQUEST_ID.set(request_id)

        async def send_with_id(message: Message) -> None:
            if message["type"] == "http.response.start":
                headers = [*message.get("headers", ()), (REQUEST_ID_HEADER, request_id.encode())]
                message = {**message, "headers": headers}
            await send(message)

        try:
            await self.app(scope, receive, send_with_id)
        finally:
            _REQUEST_ID.reset(token)


def _request_id_from(scope: Scope) -> str:
    given = dict(scope.get("headers", ())).get(REQUEST_ID_HEADER, b"").decode("latin-1")
    return given if _VALID_ID.fullmatch(given) else uuid.uuid4().hex


class JsonFormatter(logging.Formatter):
    """``{"time", "level", "logger", "message", "request_id"?, "exception"?}`` on one line."""

    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, object] = {
            "time": time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created))
            + f".{int(record.msecs):03d}Z",
            "level": record.levelname.lower(),
            "logger": record.name,
            "message": record.getMessage(),
        }
        request_id = getattr(record, "request_id", None)
        if request_id:
            entry["request_id"] = request_id
        if record.exc_info:
            entry["exception"] = self.formatException(record.exc_info)
        return json.dumps(entry, ensure_ascii=False)


class RequestIdFilter(logging.Filter):
    """Stamps each record with the request id of the task that logged it (read when it is logged, since
    a handler may format it later, elsewhere)."""

    def filter(self, record: logging.LogRecord) -> bool:
        record.request_id = current_request_id()
        return True


# Query parameters whose values are never logged: secrets, and caller prompts (the caller's own words).
REDACTED_PARAMETERS = frozenset({"api_key", "apikey", "key", "token", "access_token", "prompts", "prompt"})
MAX_LOGGED_VALUE = 64
MAX_LOGGED_TARGET = 256
MAX_LOGGED_METHOD = 16


def redacted_target(target: str) -> str:
    """A request target as the access log may show it: secret and prompt values replaced, other values
    and the whole target length-capped, so a log line never carries a key or grows with the request."""
    path, _, query = target.partition("?")
    if query:
        pairs = (part.partition("=") for part in query.split("&"))
        shown = [
            f"{_capped(name, MAX_LOGGED_VALUE)}{sep}{_logged_value(name, value)}"
            for name, sep, value in pairs
        ]
        path = f"{path}?{'&'.join(shown)}"
    return _capped(path, MAX_LOGGED_TARGET)


def _logged_value(name: str, value: str) -> str:
    if value and name.lower() in REDACTED_PARAMETERS:
        return "[redacted]"
    return _capped(value, MAX_LOGGED_VALUE)


def _capped(text: str, limit: int) -> str:
    return text if len(text) <= limit else f"{text[:limit]}...[{len(text) - limit} more]"


class AccessLogRedaction(logging.Filter):
    """Rewrites uvicorn's access-log arguments (client, method, target, HTTP version, status) in place."""

    def filter(self, record: logging.LogRecord) -> bool:
        if record.name == "uvicorn.access" and isinstance(record.args, tuple) and len(record.args) == 5:
            client, method, target, version, status = record.args
            record.args = (
                client,
                _capped(str(method), MAX_LOGGED_METHOD),
                redacted_target(str(target)),
                version,
                status,
            )
        return True


def log_handler(log_format: str) -> logging.Handler:
    handler = logging.StreamHandler()
    handler.addFilter(AccessLogRedaction())
    handler.addFilter(RequestIdFilter())
    if log_format == "json":
        handler.setFormatter(JsonFormatter())
    else:
        handler.setFormatter(
            logging.Formatter("%(asctime)s %(levelname)s %(name)s [%(request_id)s]: %(message)s")
        )
    return handler


def configure_logging(level: str, log_format: str) -> None:
    """The root logger writes every line, uvicorn's included (uvicorn runs with ``log_config=None``)."""
    root = logging.getLogger()
    root.handlers[:] = [log_handler(log_format)]
    root.setLevel(level.upper())
