"""POST /v1/predict: several still images as base64 in one JSON body, one result per image (thin: the body
is read in service/http/json_batch.py, the images analysed together by the serving layer)."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Request

from service.http.dependencies import MemoryDep, ServingDep, SettingsDep
from service.http.errors import JSON_BATCH_ERRORS, openapi_error_responses
from service.http.json_batch import batch_response, json_batch
from service.schemas import BatchLimits, BatchPredictRequest, BatchPredictResponse

router = APIRouter(tags=["predict"])

# A real photo's base64 is megabytes: the example carries a stand-in (the first bytes of a JPEG).
_EXAMPLE = {
    "images": [
        {"id": "messi5.jpg", "data": "/9j/4AAQSkZJRgABAQEASABIAAD..."},
        {"id": "astronaut.png", "data": "iVBORw0KGgoAAAANSUhEUgAAAgAAAAIACAIAAAB7GkOt..."},
    ],
    "prompts": ["a person smiling broadly"],
}


def inline_schema(model: type[BatchPredictRequest]) -> dict[str, Any]:
    """The model's JSON schema with its $defs written in place (the body is read by hand, so FastAPI does
    not register the request model among the components)."""
    schema = model.model_json_schema()
    defs = schema.pop("$defs", {})

    def resolve(node: Any) -> Any:
        if isinstance(node, dict):
            ref = node.get("$ref", "")
            if ref.startswith("#/$defs/"):
                return resolve(defs[ref.removeprefix("#/$defs/")])
            return {key: resolve(value) for key, value in node.items()}
        if isinstance(node, list):
            return [resolve(item) for item in node]
        return node

    resolved: dict[str, Any] = resolve(schema)
    return resolved


JSON_BATCH_REQUEST_BODY: dict[str, Any] = {
    "requestBody": {
        "required": True,
        "content": {
            "application/json": {
                "schema": inline_schema(BatchPredictRequest),
                "examples": {"two photos": {"summary": "Two photos and a prompt", "value": _EXAMPLE}},
            }
        },
    }
}


@router.post(
    "/v1/predict",
    response_model=BatchPredictResponse,
    responses=openapi_error_responses(*JSON_BATCH_ERRORS),
    openapi_extra=JSON_BATCH_REQUEST_BODY,
    summary="Several still images as base64 in one JSON body, one result per image",
    description='For programs: `{"images": [{"data": "<base64>", "id": "a.jpg"}, ...], '
    '"model": ..., "prompts": [...], "options": {...}}` answers `{"results": [...]}` in the images\' '
    "order, each with `response` (what POST /predict answers for that image) or its own `error` (a corrupt "
    "image does not fail the others). The images' faces are detected in one cascade call and sent to the "
    "model together. Limits: FER_JSON_MAX_IMAGES images, FER_JSON_MAX_DECODED_BYTES decoded, "
    "FER_MAX_UPLOAD_BYTES of body. URLs are never fetched (SSRF): send the bytes. Clips go to POST /predict.",
)
async def predict_json(
    request: Request, serving: ServingDep, settings: SettingsDep, memory: MemoryDep
) -> BatchPredictResponse:
    async with json_batch(request, settings, memory) as batch:
        outcomes = await serving.predict_batch(batch.items, batch.options)
        return batch_response(batch, outcomes)


@router.get(
    "/v1/limits",
    response_model=BatchLimits,
    summary="What one JSON batch, one clip and one job may carry",
    description="Clients (fer-client) split a folder of photos into batches by these limits; the page "
    "sends a video over the clip limits to POST /v1/jobs.",
)
async def limits(settings: SettingsDep) -> BatchLimits:
    return BatchLimits(
        max_images=settings.json_max_images,
        max_decoded_bytes=settings.json_max_decoded_bytes,
        max_body_bytes=settings.max_upload_bytes,
        clip_max_bytes=settings.max_upload_bytes,
        clip_max_duration_s=settings.video_max_duration_s,
        job_max_bytes=settings.jobs_max_upload_bytes,
        job_max_duration_s=settings.jobs_max_duration_s,
    )
