"""Get the media bytes out of a request: a multipart ``file`` field or the raw body, kept in memory.

Starlette's multipart parser spools file parts over 1 MiB to a temporary file on disk; uploads here never
touch the disk (the issue's rule for clips, and images are no different): the spool threshold is raised to
the body limit, which BodySizeLimit has already enforced, so memory stays bounded by the same number.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

from starlette.datastructures import FormData, UploadFile
from starlette.formparsers import MultiPartException, MultiPartParser
from starlette.requests import ClientDisconnect, Request

from service.config import Settings
from service.exceptions import EmptyPayload, InvalidMultipart, RequestTimeout, UnsupportedMediaType
from service.http.middleware import content_length
from service.serving.memory import GatewayMemory

# Raw bodies must declare a media type; anything image-like, video-like or opaque binary is sniffed.
_RAW_TYPES = ("image/", "video/", "application/octet-stream")


_BINARY = {"schema": {"type": "string", "format": "binary"}}
# The body is read by hand (multipart or raw media), so OpenAPI is told both shapes explicitly.
UPLOAD_REQUEST_BODY: dict[str, Any] = {
    "requestBody": {
        "required": True,
        "content": {
            "multipart/form-data": {
                "schema": {
                    "type": "object",
                    "properties": {"file": {"type": "string", "format": "binary"}},
                    "required": ["file"],
                },
            },
            "image/jpeg": _BINARY,
            "image/png": _BINARY,
            "image/webp": _BINARY,
            "video/mp4": _BINARY,
            "video/webm": _BINARY,
            "application/octet-stream": _BINARY,
        },
    }
}


@asynccontextmanager
async def upload(request: Request, settings: Settings, memory: GatewayMemory) -> AsyncIterator[bytes]:
    """The request's media bytes within the settings' size and time limits, their memory reserved (by
    the declared length; the most a body may be when it is chunked) before a byte is read, and held for
    as long as the request uses them."""
    declared = content_length(request.scope)
    async with memory.bodies.hold(settings.body_reservation_bytes(declared)):
        data = await read_upload(request, settings.max_upload_bytes, settings.body_read_timeout_s)
        async with abandoned_when_disconnected(request):
            yield data


@asynccontextmanager
async def abandoned_when_disconnected(request: Request) -> AsyncIterator[None]:
    """Cancel the request's work when its client goes away before the answer: nobody would read it, and
    its admission slot, memory and threads are someone else's to use (a clip runs for seconds).

    Once the body is read, the only message left for the app is ``http.disconnect``; a watcher waits for
    it and cancels the handler, which leaves as a client disconnect (499), not as an error."""
    handler = asyncio.current_task()
    gone = asyncio.Event()

    async def watch() -> None:
        while (await request.receive())["type"] != "http.disconnect":
            pass
        gone.set()
        if handler is not None:
            handler.cancel()

    watcher = asyncio.create_task(watch(), name="disconnect-watcher")
    try:
        yield
    except asyncio.CancelledError:
        if not gone.is_set() or handler is None:
            raise
        handler.uncancel()
        raise ClientDisconnect() from None
    finally:
        watcher.cancel()


async def read_upload(request: Request, max_bytes: int, timeout_s: float) -> bytes:
    """The media bytes, however they arrived, within ``timeout_s``; the format is sniffed from them later,
    never taken from the declared type or file name."""
    try:
        async with asyncio.timeout(timeout_s):
            return await _read_body(request, max_bytes)
    except TimeoutError as exc:
        raise RequestTimeout(f"the request body was not received within {timeout_s:g} s") from exc


async def _read_body(request: Request, max_bytes: int) -> bytes:
    content_type = request.headers.get("content-type", "").split(";")[0].strip().lower()
    if content_type == "multipart/form-data":
        return await _read_multipart(request, max_bytes)
    if content_type.startswith(_RAW_TYPES):
        return await request.body()
    raise UnsupportedMediaType(
        "send the media as multipart/form-data (field 'file') "
        "or as a raw body with Content-Type image/* or video/*"
    )


class InMemoryMultiPartParser(MultiPartParser):
    """Starlette's parser with file parts held in memory up to ``max_bytes``."""

    def __init__(self, request: Request, max_bytes: int) -> None:
        super().__init__(request.headers, request.stream(), max_files=1, max_fields=8)
        self.spool_max_size = max_bytes


async def _parse_form(request: Request, max_bytes: int) -> FormData:
    try:
        return await InMemoryMultiPartParser(request, max_bytes).parse()
    except MultiPartException as exc:
        raise InvalidMultipart(f"malformed multipart body: {exc.message}") from exc


async def _read_multipart(request: Request, max_bytes: int) -> bytes:
    form = await _parse_form(request, max_bytes)
    try:
        field = form.get("file")
        if not isinstance(field, UploadFile):
            raise EmptyPayload("multipart request has no file field named 'file'")
        return await field.read()
    finally:
        await form.close()
