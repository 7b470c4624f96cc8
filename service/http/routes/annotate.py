"""POST /annotate: the /predict answer drawn onto the picture (a contact sheet for clips)."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Query, Request, Response

from service.http.dependencies import AnnotatorDep, MemoryDep, SettingsDep
from service.http.errors import openapi_error_responses
from service.http.uploads import UPLOAD_REQUEST_BODY, upload
from service.schemas import PredictQuery
from service.serving.drawing import MEDIA_TYPES, output_format

router = APIRouter(tags=["predict"])


_PICTURES: dict[int | str, dict[str, Any]] = {
    200: {
        "description": "The picture with every face's box, top expression and probability bars; for a clip, "
        "a contact sheet of the analysed frames.",
        "content": {"image/jpeg": {}, "image/png": {}},
    }
}


@router.post(
    "/annotate",
    response_class=Response,
    responses={**_PICTURES, **openapi_error_responses()},
    openapi_extra=UPLOAD_REQUEST_BODY,
    summary="The picture with boxes, labels and probabilities drawn on it",
    description="Same inputs and query parameters as `/predict`. `Accept: image/png` gives PNG, anything "
    "else JPEG. Clips give a contact sheet of up to `FER_ANNOTATE_MAX_FRAMES` analysed frames (evenly "
    "spaced), each `FER_ANNOTATE_TILE_WIDTH` pixels wide. An untrained image model is flagged on the "
    "picture.",
)
async def annotate(
    request: Request,
    annotator: AnnotatorDep,
    settings: SettingsDep,
    memory: MemoryDep,
    options: Annotated[PredictQuery, Query()],
) -> Response:
    fmt = output_format(request.headers.get("accept"))
    async with upload(request, settings, memory) as data:
        picture = await annotator.annotate(data, options, fmt)
    return Response(picture, media_type=MEDIA_TYPES[fmt])
