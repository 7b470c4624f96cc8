"""A job's upload streamed to a file on disk as it arrives, never whole in memory: a raw body chunk by
chunk, a multipart file part through Starlette's parser (which spools parts over 1 MiB to a temporary
file) and then copied across. The container is sniffed from the first bytes: a raw body that is not a clip
is refused before the rest is read.
"""

from __future__ import annotations

import asyncio
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

from starlette.datastructures import UploadFile
from starlette.formparsers import MultiPartException, MultiPartParser
from starlette.requests import Request

from service.exceptions import (
    EmptyPayload,
    InvalidMultipart,
    RequestTimeout,
    TruncatedUpload,
    UnsupportedMediaType,
)
from service.http.middleware import content_length
from service.vision.video import sniff_video_format

SNIFF_BYTES = 64 * 1024  # enough for every signature sniff_video_format reads (a GIF's first frames too)
_RAW_TYPES = ("video/", "application/octet-stream")


@dataclass(frozen=True)
class Spooled:
    container: str
    size: int


async def spool_upload(request: Request, path: Path, timeout_s: float) -> Spooled:
    """The upload written to ``path`` (deleted again on any refusal) within ``timeout_s``."""
    path.parent.mkdir(parents=True, exist_ok=True)
    try:
        async with asyncio.timeout(timeout_s):
            return await _spool(request, path)
    except TimeoutError as exc:
        discard(path)
        raise RequestTimeout(f"the upload was not received within {timeout_s:g} s") from exc
    except BaseException:
        discard(path)
        raise


def discard(path: Path) -> None:
    path.unlink(missing_ok=True)


async def _spool(request: Request, path: Path) -> Spooled:
    content_type = request.headers.get("content-type", "").split(";")[0].strip().lower()
    if content_type == "multipart/form-data":
        return await _spool_multipart(request, path)
    if content_type.startswith(_RAW_TYPES):
        spooled = await _spool_raw(request, path)
        declared = content_length(request.scope)
        if declared is not None and spooled.size < declared:
            raise TruncatedUpload(f"the body ended after {spooled.size} of its {declared} declared bytes")
        return spooled
    raise UnsupportedMediaType(
        "send the video as multipart/form-data (field 'file') or as a raw body with Content-Type video/*"
    )


def sniffed(head: bytes) -> str:
    if not head:
        raise EmptyPayload("the upload is empty")
    container = sniff_video_format(head)
    if container is None:
        raise UnsupportedMediaType("a job takes a video (MP4/MOV, WebM/MKV, AVI, animated GIF)")
    return container


async def _spool_raw(request: Request, path: Path) -> Spooled:
    head, size, container = b"", 0, ""
    with path.open("wb") as out:
        async for chunk in request.stream():
            if not container:
                head += chunk
                if len(head) < SNIFF_BYTES:
                    continue
                container, chunk = sniffed(head), head
            out.write(chunk)
            size += len(chunk)
        if not container:  # the whole body was shorter than the sniffing window
            container = sniffed(head)
            out.write(head)
            size = len(head)
    return Spooled(container, size)


async def _spool_multipart(request: Request, path: Path) -> Spooled:
    parser = MultiPartParser(request.headers, request.stream(), max_files=1, max_fields=8)
    try:
        form = await parser.parse()
    except MultiPartException as exc:
        raise InvalidMultipart(f"malformed multipart body: {exc.message}") from exc
    try:
        field = form.get("file")
        if not isinstance(field, UploadFile):
            raise EmptyPayload("multipart request has no file field named 'file'")
        return await asyncio.to_thread(_copy_part, field.file, path)
    finally:
        await form.close()


def _copy_part(source: BinaryIO, path: Path) -> Spooled:
    source.seek(0)
    container = sniffed(source.read(SNIFF_BYTES))
    source.seek(0)
    with path.open("wb") as out:
        shutil.copyfileobj(source, out, 1024 * 1024)
        return Spooled(container, out.tell())
