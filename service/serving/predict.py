"""One /predict from request to response: read the upload, admit it by kind, run the image or clip pipeline.

The route stays thin (it fetches this object and calls ``predict``); the order of the steps is the point:
the body is read before any admission slot is taken, and images and clips take only their own kind's slot.
"""

from __future__ import annotations

from dataclasses import dataclass

from starlette.requests import Request

from service.config import Settings
from service.exceptions import InvalidVideo, ModelTaskMismatch, UnsupportedMediaType
from service.http.uploads import read_upload
from service.inference.base import InferenceBackend
from service.schemas import PredictQuery, PredictResponse, VideoPredictResponse
from service.serving.admission import AdmissionControl
from service.serving.clip import ClipRequest, VideoPipeline
from service.serving.image import ImagePipeline
from service.serving.prompting import validate_prompts
from service.vision.video import sniff_video_format


@dataclass(frozen=True, kw_only=True)
class PredictService:
    settings: Settings
    inference: InferenceBackend
    image_admission: AdmissionControl
    video_admission: AdmissionControl
    pipeline: ImagePipeline
    video_pipeline: VideoPipeline

    async def predict(
        self, request: Request, options: PredictQuery
    ) -> PredictResponse | VideoPredictResponse:
        # Read before admission: a client that uploads slowly (or never finishes) must not hold capacity
        # others need; its read is bounded by FER_BODY_READ_TIMEOUT_S instead.
        return await self.respond(await self.read(request), options)

    async def read(self, request: Request) -> bytes:
        settings = self.settings
        return await read_upload(request, settings.max_upload_bytes, settings.body_read_timeout_s)

    async def respond(
        self, data: bytes, options: PredictQuery, *, timeline: bool = False
    ) -> PredictResponse | VideoPredictResponse:
        """An upload already read → its response (``timeline``: a clip's timeline whatever ``include`` says,
        for /annotate's contact sheet)."""
        validate_prompts(options.prompts, self.settings)  # a 422 before any slot is taken
        container = media_container(data, options.media)
        if container is None:
            return await self._predict_image(data, options)
        return await self._predict_clip(data, container, options, timeline)

    async def _predict_image(self, data: bytes, options: PredictQuery) -> PredictResponse:
        async with self.image_admission.slot():
            await ensure_image_model(self.inference, options.model)
            prompts = validate_prompts(options.prompts, self.settings)
            return await self.pipeline.predict(data, options.model, prompts)

    async def _predict_clip(
        self, data: bytes, container: str, options: PredictQuery, timeline: bool
    ) -> VideoPredictResponse:
        # Only a clip slot: images and clips have independent limits, so a flood of images can never take
        # the capacity clips are guaranteed (nor clips the images').
        clip = ClipRequest.of(options, self.settings, timeline=timeline)
        async with self.video_admission.slot():
            await ensure_image_model(self.inference, options.model)
            prompts = validate_prompts(options.prompts, self.settings)
            response = await self.video_pipeline.predict(data, container, clip, options.model, prompts)
        return with_decoded_frames(response)


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


def with_decoded_frames(response: VideoPredictResponse) -> VideoPredictResponse:
    """Refuse a clip of which no frame decoded. Some containers (a WebM cut inside its first cluster, an
    AVI whose movi list is empty) open cleanly and end without a frame or an FFmpeg error, where MP4/MKV cut
    the same way fail to open: either way the clip is unusable, and every container must say so alike."""
    if response.video.frames_decoded == 0:
        raise InvalidVideo("no frame of the clip could be decoded: it is cut short or empty")
    return response
