"""POST /v1/predict's JSON body, read and checked before any of it is trusted.

The body is read within FER_MAX_UPLOAD_BYTES and FER_BODY_READ_TIMEOUT_S, its memory reserved (by the
declared length) before a byte is read, as for every upload. Before the JSON parser sees it, one linear scan
bounds its nesting and its number of values, so a deeply nested or value-flooded body is refused without
building it (Python's parser recurses; a million tiny objects cost hundreds of MB). The parser then refuses
a key given twice and NaN/Infinity; the schema (service/schemas.py) refuses wrong types and unknown fields
with 422 invalid_request. Each image's base64 is decoded on its own: a bad one is that image's error.
Nothing here fetches a URL: a server that fetches what callers name is an SSRF risk.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import json
import re
import time
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Any

from fastapi.exceptions import RequestValidationError
from pydantic import ValidationError
from starlette.requests import Request

from service.config import Settings
from service.exceptions import (
    BatchTooLarge,
    EmptyPayload,
    InvalidBase64,
    InvalidJson,
    RequestTimeout,
    ServiceError,
    TooManyImages,
    UnsupportedMediaType,
)
from service.http.errors import http_error
from service.http.middleware import content_length
from service.http.uploads import abandoned_when_disconnected
from service.schemas import (
    BatchImage,
    BatchItemResult,
    BatchPredictRequest,
    BatchPredictResponse,
    ErrorDetail,
    PredictQuery,
    PredictResponse,
)
from service.serving.memory import GatewayMemory

# The API's own nesting is 3 (body → images → image); a little room, never the parser's recursion limit.
MAX_DEPTH = 8
# JSON values a request may hold per image it may carry (its id, data, object) and for its options.
VALUES_PER_IMAGE, VALUES_FOR_OPTIONS = 8, 256
# Quotes, escapes and structural characters: all the scan looks at (a base64 string holds none of them).
_MARKS = re.compile(r'["\\\[\]{},]')
# Marks a request may hold beyond two per value: escapes in its ids and prompts.
MARKS_FOR_ESCAPES = 8192
_URL_SCHEMES = ("http://", "https://", "ftp://", "file:", "//")


@dataclass(frozen=True)
class JsonBatch:
    """A parsed batch: each image's bytes (or why it has none), its id, and the options for all."""

    items: list[bytes | ServiceError]
    ids: list[str | None]
    options: PredictQuery
    started: float  # time.perf_counter() when the request's body began to be read
    read_ms: float


@asynccontextmanager
async def json_batch(request: Request, settings: Settings, memory: GatewayMemory) -> AsyncIterator[JsonBatch]:
    """The request's batch, its memory held for as long as the request uses it."""
    json_content_type(request.headers.get("content-type", ""))
    start = time.perf_counter()
    async with memory.bodies.hold(settings.json_body_reservation_bytes(content_length(request.scope))):
        raw = await read_body(request, settings.body_read_timeout_s)
        parsed = await asyncio.to_thread(parse_batch, raw, settings, start)
        del raw
        async with abandoned_when_disconnected(request):
            yield parsed


def json_content_type(header: str) -> None:
    media, _, parameters = header.partition(";")
    charset = parameters.strip().lower().removeprefix("charset=").strip('"')
    if media.strip().lower() != "application/json" or charset not in ("", "utf-8"):
        raise UnsupportedMediaType(
            "POST /v1/predict takes Content-Type: application/json (UTF-8); upload a file to POST /predict"
        )


async def read_body(request: Request, timeout_s: float) -> bytes:
    try:
        async with asyncio.timeout(timeout_s):
            raw = await request.body()
    except TimeoutError as exc:
        raise RequestTimeout(f"the request body was not received within {timeout_s:g} s") from exc
    if not raw:
        raise EmptyPayload("the request carried no JSON body")
    return raw


def parse_batch(raw: bytes, settings: Settings, start: float) -> JsonBatch:
    """The body as a batch: scanned, parsed, validated, each image decoded (CPU work: off the loop)."""
    body = validated(parse_json(raw, settings.json_max_images))
    if len(body.images) > settings.json_max_images:
        raise too_many_images(len(body.images), settings.json_max_images)
    declared = sum(decoded_size(image.data) for image in body.images)
    if declared > settings.json_max_decoded_bytes:
        raise BatchTooLarge(
            f"the images decode to {declared} bytes; a batch may carry at most "
            f"{settings.json_max_decoded_bytes} (FER_JSON_MAX_DECODED_BYTES): send fewer per request"
        )
    items = [image_bytes(image) for image in body.images]
    read_ms = round((time.perf_counter() - start) * 1000.0, 3)
    return JsonBatch(items, [image.id for image in body.images], body.query(), start, read_ms)


def parse_json(raw: bytes, max_images: int) -> Any:
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise InvalidJson(f"the body is not UTF-8 (byte {exc.start})") from None
    check_shape(text, max_images)
    try:
        return json.loads(text, object_pairs_hook=unique_keys, parse_constant=no_constant)
    except ValueError as exc:  # JSONDecodeError, a duplicate key, NaN, a number too long to convert
        raise InvalidJson(f"the body is not valid JSON: {exc}") from None


def check_shape(text: str, max_images: int) -> None:
    """Refuse nesting deeper than MAX_DEPTH and more values than a batch of ``max_images`` needs, in one
    linear pass that stops at the first excess (a string is crossed by one C-level search, however long)."""
    depth = objects = values = 0
    max_values = VALUES_FOR_OPTIONS + VALUES_PER_IMAGE * max_images
    for char in structure(text, 4 * max_values + MARKS_FOR_ESCAPES):
        if char in "]}":
            depth -= 1
            continue
        values += 1
        if char in "[{":
            depth += 1
            objects += char == "{"
        if depth > MAX_DEPTH:
            raise InvalidJson(f"the body nests deeper than {MAX_DEPTH} levels")
        if objects > max_images + 2:  # the body, its options, one per image
            raise too_many_images(objects - 2, max_images, at_least=True)
        if values > max_values:
            raise InvalidJson(f"the body holds more than {max_values} JSON values")


def structure(text: str, max_marks: int) -> Iterator[str]:
    """The structural characters of ``text`` outside its strings, in order; at most ``max_marks`` quotes,
    escapes and structural characters are looked at (a flood of escaped quotes is refused, not walked)."""
    in_string, skip = False, 0
    for count, match in enumerate(_MARKS.finditer(text)):
        if count >= max_marks:
            raise InvalidJson("the body holds more quotes, escapes and separators than a batch needs")
        position = match.start()
        char = text[position]
        if position < skip:  # the character after a backslash
            continue
        if char == "\\":
            skip = position + 2
        elif char == '"':
            in_string = not in_string
        elif not in_string:
            yield char


def unique_keys(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    found: dict[str, Any] = {}
    for key, value in pairs:
        if key in found:
            raise ValueError(f"the key {key[:64]!r} is given twice in one object")
        found[key] = value
    return found


def no_constant(name: str) -> Any:
    raise ValueError(f"{name} is not JSON")


def validated(document: Any) -> BatchPredictRequest:
    try:
        return BatchPredictRequest.model_validate(document)
    except ValidationError as exc:  # answered as FastAPI's own: 422 invalid_request, "where: what"
        errors = exc.errors(include_url=False, include_input=False)
        raise RequestValidationError([{**e, "loc": ("body", *e["loc"])} for e in errors]) from None


def too_many_images(count: int, limit: int, *, at_least: bool = False) -> TooManyImages:
    given = f"at least {count}" if at_least else str(count)
    return TooManyImages(
        f"{given} images given; a batch takes at most {limit} (FER_JSON_MAX_IMAGES): send several requests"
    )


def decoded_size(data: str) -> int:
    """What base64 ``data`` decodes to at most (a data: URL's header counts: an upper bound)."""
    return len(data) * 3 // 4


def image_bytes(image: BatchImage) -> bytes | ServiceError:
    """One image's bytes, or its own error (the batch goes on)."""
    data = image.data
    if data.startswith(_URL_SCHEMES):
        return InvalidBase64("`data` holds a URL; the service never fetches URLs: send the image as base64")
    if data.startswith("data:"):
        header, comma, data = data.partition(",")
        if not comma or not header.endswith(";base64"):
            return InvalidBase64("a data: URL in `data` must be base64 (data:image/jpeg;base64,...)")
    try:
        return base64.b64decode(data, validate=True)
    except (binascii.Error, ValueError):
        return InvalidBase64(
            "`data` is not standard base64 (RFC 4648 §4: A-Z a-z 0-9 + /, padded with =, no line breaks)"
        )


def batch_response(batch: JsonBatch, outcomes: list[PredictResponse | ServiceError]) -> BatchPredictResponse:
    results = [item_result(i, batch.ids[i], outcome) for i, outcome in enumerate(outcomes)]
    total = round((time.perf_counter() - batch.started) * 1000.0, 3)
    return BatchPredictResponse(results=results, timings_ms={"read": batch.read_ms, "total": total})


def item_result(index: int, image_id: str | None, outcome: PredictResponse | ServiceError) -> BatchItemResult:
    if isinstance(outcome, PredictResponse):
        return BatchItemResult(index=index, id=image_id, status=200, response=outcome)
    error = ErrorDetail(code=outcome.code, message=outcome.message)
    return BatchItemResult(index=index, id=image_id, status=http_error(outcome).status, error=error)
