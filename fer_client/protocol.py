"""What the sync and async clients share: building requests, the retry decision, parsing answers."""

from __future__ import annotations

import email.utils
import mimetypes
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Annotated

import httpx
from pydantic import Field, TypeAdapter

from fer_client.config import ClientSettings
from fer_client.errors import FerError
from service.schemas import PredictResponse, VideoPredictResponse

# The answer's `media` says which model it is: an image's or a clip's.
Prediction = Annotated[PredictResponse | VideoPredictResponse, Field(discriminator="media")]
PREDICTION = TypeAdapter[PredictResponse | VideoPredictResponse](Prediction)
RETRYABLE = frozenset({429, 503})


@dataclass(frozen=True)
class PredictOptions:
    """Query parameters of /predict and /annotate; None leaves the server's default."""

    model: str | None = None
    prompts: Sequence[str] = ()
    fps: float | None = None
    stride: int | None = None
    max_frames: int | None = None
    include: Sequence[str] = ("timeline", "tracks")
    media: str | None = None

    def params(self) -> list[tuple[str, str]]:
        # A list of pairs, not a dict: `prompts` and `include` repeat.
        pairs = [("model", self.model), ("fps", self.fps), ("stride", self.stride)]
        pairs += [("max_frames", self.max_frames), ("media", self.media)]
        found = [(name, str(value)) for name, value in pairs if value is not None]
        return found + [("prompts", p) for p in self.prompts] + [("include", i) for i in self.include]


@dataclass(frozen=True)
class Upload:
    """Media bytes and the name they are sent under (the service sniffs the format from the bytes)."""

    data: bytes
    filename: str = "upload"
    content_type: str = "application/octet-stream"

    @classmethod
    def of(cls, source: bytes | Path | str) -> Upload:
        if isinstance(source, bytes):
            return cls(source)
        path = Path(source)
        guessed = mimetypes.guess_type(path.name)[0] or "application/octet-stream"
        return cls(path.read_bytes(), path.name, guessed)

    def files(self) -> dict[str, tuple[str, bytes, str]]:
        return {"file": (self.filename, self.data, self.content_type)}


@dataclass
class RetryState:
    """How many retries a request has used; ``delay`` decides whether and how long to wait next."""

    settings: ClientSettings
    attempts: int = 0
    waited_s: list[float] = field(default_factory=list)

    def delay(self, response: httpx.Response) -> float | None:
        """Seconds to wait before retrying ``response``, or None to return it as it is."""
        if response.status_code not in RETRYABLE or self.attempts >= self.settings.max_retries:
            return None
        wait = retry_after_s(response.headers.get("retry-after"))
        if wait is None:
            wait = self.settings.backoff_s * 2**self.attempts
        if wait > self.settings.max_retry_after_s:
            return None  # the server asks for longer than the caller accepts: report it now
        self.attempts += 1
        self.waited_s.append(wait)
        return wait


def retry_after_s(header: str | None, now: float | None = None) -> float | None:
    """Retry-After as seconds: delta-seconds or an HTTP date (RFC 9110 §10.2.3); None if absent or bad."""
    if header is None:
        return None
    value = header.strip()
    if value.isdigit():
        return float(value)
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    return max(0.0, when.timestamp() - (time.time() if now is None else now))


def headers(settings: ClientSettings) -> dict[str, str]:
    if settings.api_key is None:
        return {}
    return {"Authorization": f"Bearer {settings.api_key.get_secret_value()}"}


def timeout(settings: ClientSettings) -> httpx.Timeout:
    return httpx.Timeout(settings.timeout_s, connect=settings.connect_timeout_s)


def checked(response: httpx.Response) -> httpx.Response:
    """The response when it is a success; the service's error as FerError otherwise."""
    if response.is_success:
        return response
    wait = retry_after_s(response.headers.get("retry-after"))
    raise FerError.from_body(response.status_code, response.content, wait)


def prediction(response: httpx.Response) -> PredictResponse | VideoPredictResponse:
    return PREDICTION.validate_json(checked(response).content)
