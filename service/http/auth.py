"""API keys: the gateway stores only their SHA-256 hashes and compares in constant time.

A key comes as ``Authorization: Bearer KEY`` or ``X-API-Key: KEY``. Probes and /metrics stay open: the
kubelet and Prometheus carry no key, and neither endpoint reveals anything a client sent. The demo page
(``/`` and its ``/static/`` files) stays open too: a browser cannot send a header to load it, and the page
itself only sends the key the user types to /predict. WebSocket connections (GET /v1/stream) pass through
here: the stream checks the same keys itself (service/http/streaming.py), from a header or its first
message, since a browser cannot set a header on a WebSocket.
Keys are never logged: nothing here logs a header.
"""

from __future__ import annotations

import hashlib
import hmac

from starlette.types import ASGIApp, Receive, Scope, Send

from service.exceptions import Forbidden, ServiceError, Unauthorized
from service.http.errors import error_response

EXEMPT_PATHS = frozenset({"/healthz", "/readyz", "/metrics", "/"})
EXEMPT_PREFIXES = ("/static/",)  # the page's own files: static, no request data


class ApiKeyAuth:
    """Refuse requests without an accepted key (401 without one, 403 with a wrong one) before any body
    is read; a pass-through when no key is configured."""

    def __init__(self, app: ASGIApp, *, key_sha256: tuple[str, ...]) -> None:
        self.app, self.key_sha256 = app, key_sha256

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        refusal = self._refusal(scope) if scope["type"] == "http" and self.key_sha256 else None
        if refusal is None:
            await self.app(scope, receive, send)
        else:
            await error_response(refusal)(scope, receive, send)

    def _refusal(self, scope: Scope) -> ServiceError | None:
        if scope["path"] in EXEMPT_PATHS or scope["path"].startswith(EXEMPT_PREFIXES):
            return None
        return key_refusal(presented_key(scope), self.key_sha256)


def key_refusal(key: str | None, key_sha256: tuple[str, ...]) -> ServiceError | None:
    """Why a presented key (None: no key) is refused, or None when it is accepted; the HTTP middleware and
    the live stream (which takes the key from a header or its first message) decide alike."""
    if key is None:
        return Unauthorized("an API key is required: send 'Authorization: Bearer <key>' or 'X-API-Key'")
    if not key_accepted(key, key_sha256):
        return Forbidden("the API key is not accepted")
    return None


def presented_key(scope: Scope) -> str | None:
    headers = dict(scope.get("headers", ()))
    if b"x-api-key" in headers:
        return headers[b"x-api-key"].decode("latin-1").strip() or None
    scheme, _, credentials = headers.get(b"authorization", b"").decode("latin-1").partition(" ")
    return credentials.strip() or None if scheme.lower() == "bearer" else None


def key_accepted(key: str, key_sha256: tuple[str, ...]) -> bool:
    digest = hashlib.sha256(key.encode("utf-8", "surrogateescape")).hexdigest()
    # Every hash is compared, in constant time, with no early exit: timing tells nothing about which
    # hash matched or how much of one did.
    matches = [hmac.compare_digest(digest, expected) for expected in key_sha256]
    return any(matches)


def owner_of(scope: Scope) -> str:
    """Who a job belongs to: the SHA-256 of the key the request presented ("" when none is needed)."""
    key = presented_key(scope)
    return hashlib.sha256(key.encode("utf-8", "surrogateescape")).hexdigest() if key else ""
