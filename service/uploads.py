"""Get the media bytes out of a request: a multipart ``file`` field or the raw body."""

from __future__ import annotations

from starlette.datastructures import UploadFile
from starlette.requests import Request

from service.errors import EmptyPayload, UnsupportedMediaType
from service.pipeline import Upload

# Raw bodies must declare a media type; anything image-like or opaque binary is sniffed by content.
_RAW_TYPES = ("image/", "video/", "application/octet-stream")


async def read_upload(request: Request) -> Upload:
    content_type = request.headers.get("content-type", "").split(";")[0].strip().lower()
    if content_type == "multipart/form-data":
        return await _read_multipart(request)
    if content_type.startswith(_RAW_TYPES):
        return Upload(data=await request.body(), content_type=content_type)
    raise UnsupportedMediaType(
        "send the media as multipart/form-data (field 'file') "
        "or as a raw body with Content-Type image/* or video/*"
    )


async def _read_multipart(request: Request) -> Upload:
    form = await request.form(max_files=1, max_fields=8)
    try:
        field = form.get("file")
        if not isinstance(field, UploadFile):
            raise EmptyPayload("multipart request has no file field named 'file'")
        data = await field.read()
        return Upload(data=data, content_type=field.content_type or "", filename=field.filename)
    finally:
        await form.close()
