"""POST /predict: parse the upload, run the pipeline, return the response model."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Query, Request

from service.dependencies import (
    AdmissionDep,
    InferenceDep,
    PipelineDep,
    SettingsDep,
    VideoAdmissionDep,
    VideoPipelineDep,
)
from service.errors import InvalidVideo, ModelTaskMismatch, UnsupportedMediaType, openapi_error_responses
from service.inference.base import InferenceBackend
from service.schemas import PredictQuery, PredictResponse, VideoPredictResponse
from service.uploads import read_upload
from service.vision.video import sniff_video_format

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
            "video/mp4": _BINARY,
            "video/webm": _BINARY,
            "application/octet-stream": _BINARY,
        },
    }
}


@router.post(
    "/predict",
    response_model=PredictResponse | VideoPredictResponse,
    responses=openapi_error_responses(),
    openapi_extra=_REQUEST_BODY,
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
    pipeline: PipelineDep,
    video_pipeline: VideoPipelineDep,
    admission: AdmissionDep,
    video_admission: VideoAdmissionDep,
    settings: SettingsDep,
    inference: InferenceDep,
    options: Annotated[PredictQuery, Query()],
) -> PredictResponse | VideoPredictResponse:
    # The body is read before a slot is taken: a client that uploads slowly (or never finishes) must not
    # hold capacity others need; its read is bounded by FER_BODY_READ_TIMEOUT_S instead.
    data = await read_upload(request, settings.max_upload_bytes, settings.body_read_timeout_s)
    container = media_container(data, options.media)
    if container is None:
        async with admission.slot():
            await ensure_image_model(inference, options.model)
            return await pipeline.predict(data, options.model)
    # A clip takes only a clip slot: images and clips have independent limits, so a flood of images can
    # never take the capacity clips are guaranteed (nor clips the images').
    async with video_admission.slot():
        await ensure_image_model(inference, options.model)
        response = await video_pipeline.predict(data, container, options.video_options(), options.model)
    return with_decoded_frames(response)


def with_decoded_frames(response: VideoPredictResponse) -> VideoPredictResponse:
    """Refuse a clip of which no frame decoded. Some containers (a WebM cut inside its first cluster, an
    AVI whose movi list is empty) open cleanly and end without a frame or an FFmpeg error, where MP4/MKV cut
    the same way fail to open: either way the clip is unusable, and every container must say so alike."""
    if response.video.frames_decoded == 0:
        raise InvalidVideo("no frame of the clip could be decoded: it is cut short or empty")
    return response


async def ensure_image_model(inference: InferenceBackend, name: str | None) -> None:
    """``?model=`` picks the per-face image model, for stills and clips alike: a video model cannot be it
    (Triton would refuse the crops' shape, a 502 for what is the client's mistake)."""
    if name is None:
        return
    task = (await inference.served_model(name)).config.task
    if task != "image":
        raise ModelTaskMismatch(
            f"model {name!r} is a {task} model; ?model= takes an image model (see GET /v1/models)"
        )


def media_container(data: bytes, media: str) -> str | None:
    """The clip container when the upload is to be analysed as a clip, None for a still image."""
    if media == "image":
        return None
    container = sniff_video_format(data)
    if container is None and media == "video":
        raise UnsupportedMediaType(
            "media=video, but the upload is not a supported clip (MP4, WebM, AVI, GIF)"
        )
    return container
