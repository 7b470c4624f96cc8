"""POST /predict: thin; the serving object reads, admits and dispatches (service/serving/predict.py)."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Query, Request

from service.http.dependencies import MemoryDep, ServingDep, SettingsDep
from service.http.errors import openapi_error_responses
from service.http.uploads import UPLOAD_REQUEST_BODY, upload
from service.schemas import PredictQuery, PredictResponse, VideoPredictResponse

router = APIRouter(tags=["predict"])


@router.post(
    "/predict",
    response_model=PredictResponse | VideoPredictResponse,
    responses=openapi_error_responses(),
    openapi_extra=UPLOAD_REQUEST_BODY,
    summary="Every face in an image or clip, with its expression",
    description="`curl -F file=@photo.jpg http://127.0.0.1:8080/predict` or "
    "`curl --data-binary @clip.mp4 -H 'Content-Type: video/mp4' http://127.0.0.1:8080/predict`. "
    "Images: JPEG, PNG, WebP, BMP, TIFF, GIF (first frame); EXIF orientation is honoured; an image without "
    "faces gives 200 with an empty `faces` list. Clips (MP4/MOV, WebM/MKV, AVI, animated GIF; recognised "
    "by their bytes) give a timeline of sampled frames, one track per person with a dynamic expression "
    "from the spatio-temporal model, and a summary.",
)
async def predict(
    request: Request,
    serving: ServingDep,
    settings: SettingsDep,
    memory: MemoryDep,
    options: Annotated[PredictQuery, Query()],
) -> PredictResponse | VideoPredictResponse:
    # Read before admission: a client that uploads slowly must not hold capacity others need.
    async with upload(request, settings, memory) as data:
        return await serving.predict(data, options)
