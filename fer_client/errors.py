"""What the client raises: the API's error envelope, a timeout, or no answer at all."""

from __future__ import annotations

import json


class FerError(Exception):
    """The service answered with an error: ``code`` and ``message`` come from its JSON envelope."""

    def __init__(self, status: int, code: str, message: str, retry_after_s: float | None = None) -> None:
        super().__init__(f"{status} {code}: {message}")
        self.status, self.code, self.message, self.retry_after_s = status, code, message, retry_after_s

    @classmethod
    def from_body(cls, status: int, body: bytes, retry_after_s: float | None = None) -> FerError:
        try:
            error = json.loads(body)["error"]
            return cls(status, str(error["code"]), str(error["message"]), retry_after_s)
        except (ValueError, KeyError, TypeError):
            # Not the service's envelope (a proxy's page, say): keep a short, printable excerpt.
            excerpt = body[:200].decode("utf-8", errors="replace").strip()
            return cls(status, "http_error", excerpt or f"HTTP {status}", retry_after_s)


class FerTimeout(FerError):
    def __init__(self, message: str) -> None:
        super().__init__(0, "timeout", message)


class FerUnreachable(FerError):
    def __init__(self, message: str) -> None:
        super().__init__(0, "unreachable", message)
