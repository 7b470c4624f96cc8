"""What the sync and async clients share: building requests, the retry decision, parsing answers."""

from __future__ import annotations

import base64
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
from service.schemas import (
    BatchItemResult,
    BatchLimits,
    BatchPredictResponse,
    PredictResponse,
    VideoPredictResponse,
)

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


# What the batch body adds around the base64 of its images (keys, quotes, ids, options): a generous bound.
BATCH_OVERHEAD_BYTES = 64 * 1024
PER_IMAGE_OVERHEAD_BYTES = 1024
# Used when the server predates GET /v1/limits: the server's defaults.
DEFAULT_LIMITS = BatchLimits(
    max_images=16, max_decoded_bytes=12 * 1024 * 1024, max_body_bytes=20 * 1024 * 1024
)


def batch_chunks(sizes: Sequence[int], limits: BatchLimits) -> list[list[int]]:
    """Indices of consecutive images grouped into batches the server accepts: at most max_images, their
    bytes within max_decoded_bytes and their base64 within the body limit. An image too large for any
    batch is left out (it goes to POST /predict on its own)."""
    body_room = limits.max_body_bytes - BATCH_OVERHEAD_BYTES
    chunks: list[list[int]] = []
    count = decoded = body = 0
    for index, size in enumerate(sizes):
        encoded = 4 * ((size + 2) // 3) + PER_IMAGE_OVERHEAD_BYTES
        if size > limits.max_decoded_bytes or encoded > body_room:
            continue
        if (
            not chunks
            or count == limits.max_images
            or decoded + size > limits.max_decoded_bytes
            or (body + encoded > body_room)
        ):
            chunks.append([])
            count = decoded = body = 0
        chunks[-1].append(index)
        count, decoded, body = count + 1, decoded + size, body + encoded
    return chunks


def batch_body(uploads: Sequence[Upload], options: PredictOptions) -> dict[str, object]:
    """The JSON body of POST /v1/predict for these images (options that apply to stills only)."""
    images = [{"id": u.filename, "data": base64.b64encode(u.data).decode("ascii")} for u in uploads]
    body: dict[str, object] = {"images": images}
    if options.model is not None:
        body["model"] = options.model
    if options.prompts:
        body["prompts"] = list(options.prompts)
    return body


def batch_results(response: httpx.Response) -> list[PredictResponse | FerError]:
    """Each image's answer, or its own error as a FerError (the request itself succeeded)."""
    answer = BatchPredictResponse.model_validate_json(checked(response).content)
    return [_item(result) for result in answer.results]


def _item(result: BatchItemResult) -> PredictResponse | FerError:
    if result.response is not None:
        return result.response
    error = result.error
    return FerError(result.status, error.code if error else "http_error", error.message if error else "")
