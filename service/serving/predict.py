"""One /predict from upload to answer: validate the query, admit the upload by kind, run the image or clip
pipeline, and finish the answer while the slot is still held.

The route reads the body first (service/http/uploads.py) and hands over its bytes, so a client that uploads
slowly never holds a slot; images and clips take only their own kind's slot; whatever is done with the
answer (/annotate draws it) happens inside that slot, so admission bounds it too.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import TypeVar

from fermodels.contract import DETECTOR_STAGE_NAMES, TEXT_ENCODER
from service.arrays import FloatArray
from service.config import Settings
from service.exceptions import ModelTaskMismatch, UnsupportedMediaType
from service.inference.base import InferenceBackend
from service.schemas import PredictQuery, PredictResponse, VideoPredictResponse
from service.serving.admission import AdmissionControl
from service.serving.batch import ImageBatchPipeline, Item, Outcome
from service.serving.clip import ClipRequest, VideoPipeline
from service.serving.image import ImagePipeline
from service.serving.memory import MemoryBudget
from service.serving.prompting import validate_prompts
from service.vision.decode import image_pixels
from service.vision.video import sniff_video_format

Answer = PredictResponse | VideoPredictResponse
R = TypeVar("R")


@dataclass(frozen=True, kw_only=True)
class PredictService:
    settings: Settings
    inference: InferenceBackend
    image_admission: AdmissionControl
    video_admission: AdmissionControl
    pipeline: ImagePipeline
    batch_pipeline: ImageBatchPipeline
    video_pipeline: VideoPipeline
    memory: MemoryBudget

    async def predict(self, data: bytes, options: PredictQuery) -> Answer:
        return await self.answer(data, options, _unchanged)

    async def answer(
        self,
        data: bytes,
        options: PredictQuery,
        finish: Callable[[Answer], Awaitable[R]],
        *,
        finish_bytes: int = 0,
    ) -> R:
        """The upload's answer passed through ``finish`` while the request still holds its slot and its
        memory (``finish_bytes``: what ``finish`` itself needs)."""
        prompts = validate_prompts(options.prompts, self.settings)  # a 422 before any slot is taken
        container = media_container(data, options.media)
        if container is None:
            cost = self.settings.image_reservation_bytes(image_pixels(data)) + finish_bytes
            async with self.memory.hold(cost), self.image_admission.slot():
                await ensure_image_model(self.inference, options.model)
                return await finish(await self.pipeline.predict(data, options.model, prompts))
        # Only a clip slot: images and clips have independent limits, so a flood of images can never take
        # the capacity clips are guaranteed (nor clips the images').
        clip = ClipRequest.of(options, self.settings)
        cost = self.settings.clip_reservation_bytes + finish_bytes
        async with self.memory.hold(cost), self.video_admission.slot():
            await ensure_image_model(self.inference, options.model)
            response = await self.video_pipeline.predict(data, container, clip, options.model, prompts)
            return await finish(response)

    async def predict_batch(self, items: Sequence[Item], options: PredictQuery) -> list[Outcome]:
        """Several still images under one image slot: each image's answer, or its own error, in order.
        Their memory is reserved wave by wave inside the pipeline (service/serving/batch.py)."""
        prompts = validate_prompts(options.prompts, self.settings)
        async with self.image_admission.slot():
            await ensure_image_model(self.inference, options.model)
            return await self.batch_pipeline.predict_many(items, options.model, prompts)

    async def predict_frame(
        self, data: bytes, model: str | None, prompts: tuple[str, ...]
    ) -> tuple[PredictResponse, FloatArray]:
        """One live-stream frame (its options were checked when the stream opened): an image's memory and
        slot, and the faces' aligned crops with the answer (for the stream's tracker)."""
        cost = self.settings.image_reservation_bytes(image_pixels(data))
        async with self.memory.hold(cost), self.image_admission.slot():
            return await self.pipeline.predict_with_crops(data, model, prompts)


async def _unchanged(answer: Answer) -> Answer:
    return answer


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
    if name == TEXT_ENCODER.name or name in DETECTOR_STAGE_NAMES:
        raise ModelTaskMismatch(
            f"model {name!r} is not an expression model; ?model= takes an image model (see GET /v1/models)"
        )
    task = (await inference.served_model(name)).config.task
    if task != "image":
        raise ModelTaskMismatch(
            f"model {name!r} is a {task} model; ?model= takes an image model (see GET /v1/models)"
        )
