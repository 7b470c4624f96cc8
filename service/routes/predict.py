"""POST /predict: parse the upload, run the pipeline, return the response model."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Query, Request

from service.dependencies import AdmissionDep, PipelineDep
from service.errors import openapi_error_responses
from service.schemas import PredictResponse
from service.uploads import read_upload

router = APIRouter(tags=["predict"])

_BINARY = {"schema": {"type": "string", "format": "binary"}}
# The body is read by hand (multipart or raw image), so OpenAPI is told both shapes explicitly.
_REQUEST_BODY: dict[str, Any] = {
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
            "application/octet-stream": _BINARY,
        },
    }
}


@router.post(
    "/predict",
    response_model=PredictResponse,
    responses=openapi_error_responses(),
    openapi_extra=_REQUEST_BODY,
    summary="Detect every face in an image and recognise its expression",
    description="`curl -F file=@photo.jpg http://127.0.0.1:8080/predict` or "
    "`curl --data-binary @photo.jpg -H 'Content-Type: image/jpeg' http://127.0.0.1:8080/predict`. "
    "JPEG, PNG, WebP, BMP, TIFF and GIF (first frame); EXIF orientation is honoured. "
    "An image without faces gives 200 with an empty `faces` list.",
)
async def predict(
    request: Request,
    pipeline: PipelineDep,
    admission: AdmissionDep,
    model: Annotated[str | None, Query(description="Served model name; default from settings.")] = None,
) -> PredictResponse:
    async with admission.slot():
        upload = await read_upload(request)
        return await pipeline.predict(upload, model)
