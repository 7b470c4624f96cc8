"""Several still images in one request (the JSON batch): the image pipeline's stages, each run once for
all of them.

Images are taken in waves whose pixels together fit what one image may have (FER_MAX_IMAGE_PIXELS), so a
batch never reserves more memory than the largest single photo does. In a wave the images are decoded side
by side, detected in one cascade call (one R-Net and one O-Net batch for all of them), cropped, and their
faces sent to Triton together in batches of the model's max_batch_size. An image that cannot be decoded
gets its own error; the others go on.
"""

from __future__ import annotations

import asyncio
import itertools
import time
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

import numpy as np

from service.config import Settings
from service.detection.base import FaceDetector
from service.exceptions import ServiceError
from service.inference.base import ImageOutputs, InferenceBackend, ServedModel
from service.metrics import Metrics
from service.schemas import ImageInfo, PredictResponse
from service.serving.image import ImagePipeline
from service.serving.memory import MemoryBudget
from service.serving.prompting import TextScorer
from service.serving.responses import face_results, model_info, model_warnings
from service.serving.similarity import PromptSet
from service.vision.cropping import CroppedFaces
from service.vision.decode import DecodedImage, decode_image, image_pixels

Item = bytes | ServiceError  # an image's bytes, or why the request's layer could not give them
Outcome = PredictResponse | ServiceError


def waves(pixels: Sequence[int], limit: int) -> list[list[int]]:
    """Consecutive indices grouped so that each group's pixels sum to at most ``limit`` (a larger image
    alone in its group)."""
    groups: list[list[int]] = []
    total = limit + 1
    for index, count in enumerate(pixels):
        if total + count > limit:
            groups.append([])
            total = 0
        groups[-1].append(index)
        total += count
    return groups


@dataclass(frozen=True)
class Analysed:
    """One decoded image of a wave with its faces cut."""

    index: int
    image: DecodedImage
    cropped: CroppedFaces


class ImageBatchPipeline(ImagePipeline):
    """Turns a batch of uploaded images into one answer (or error) per image, in order."""

    def __init__(
        self,
        *,
        settings: Settings,
        detector: FaceDetector,
        inference: InferenceBackend,
        executor: ThreadPoolExecutor,
        metrics: Metrics,
        text: TextScorer,
        memory: MemoryBudget,
    ) -> None:
        super().__init__(
            settings=settings,
            detector=detector,
            inference=inference,
            executor=executor,
            metrics=metrics,
            text=text,
        )
        self._memory = memory

    async def predict_many(
        self, items: Sequence[Item], model_name: str | None, prompts: tuple[str, ...] = ()
    ) -> list[Outcome]:
        outcomes: list[Outcome | None] = [item if isinstance(item, ServiceError) else None for item in items]
        data = {i: item for i, item in enumerate(items) if isinstance(item, bytes)}
        async with self._caller_prompts(prompts, model_name) as caller_task:
            model = await self._inference.served_model(model_name or self._settings.default_model)
            pixels = [image_pixels(item) for item in data.values()]
            for wave in waves(pixels, self._settings.max_image_pixels):
                chosen = {index: data[index] for index in (list(data)[i] for i in wave)}
                cost = self._settings.image_reservation_bytes(sum(pixels[i] for i in wave))
                async with self._memory.hold(cost):
                    found = await self._wave(chosen, model, caller_task)
                for index, outcome in found.items():
                    outcomes[index] = outcome
        return [outcome for outcome in outcomes if outcome is not None]

    async def _wave(
        self, data: dict[int, bytes], model: ServedModel, caller_task: asyncio.Task[PromptSet]
    ) -> dict[int, Outcome]:
        timings: dict[str, float] = {}
        start = time.perf_counter()
        with self._metrics.time_stage("decode", timings):
            decoded = await asyncio.gather(*(self._decode(item) for item in data.values()))
        outcomes: dict[int, Outcome] = {}
        images: dict[int, DecodedImage] = {}
        for index, image in zip(data, decoded, strict=True):
            if isinstance(image, ServiceError):
                outcomes[index] = image
            else:
                images[index] = image
        analysed = await self._analyse(images, model, timings)
        outputs = await self._infer_all(analysed, model, timings)
        caller = await caller_task
        timings["total"] = round((time.perf_counter() - start) * 1000.0, 3)
        for item, rows in zip(analysed, outputs, strict=True):
            outcomes[item.index] = self._answer(item, rows, model, caller, timings)
        return outcomes

    async def _decode(self, data: bytes) -> DecodedImage | ServiceError:
        try:
            return await self._offload(decode_image, data, max_pixels=self._settings.max_image_pixels)
        except ServiceError as error:  # this image's answer; the batch goes on
            return error

    async def _analyse(
        self, images: dict[int, DecodedImage], model: ServedModel, timings: dict[str, float]
    ) -> list[Analysed]:
        """Every image's faces found in one cascade call, then cut for the model."""
        with self._metrics.time_stage("detect", timings):
            found = await self._offload(self._detector.detect_images, [i.rgb for i in images.values()])
        with self._metrics.time_stage("align", timings):
            cropped = await asyncio.gather(
                *(
                    self._offload(self._crop, image, faces, model)
                    for image, faces in zip(images.values(), found, strict=True)
                )
            )
        return [Analysed(i, images[i], c) for i, c in zip(images, cropped, strict=True)]

    async def _infer_all(
        self, analysed: list[Analysed], model: ServedModel, timings: dict[str, float]
    ) -> list[ImageOutputs]:
        """The faces of every image through the model together; one output slice per image."""
        with self._metrics.time_stage("infer", timings):
            if not analysed:
                return []
            crops = np.concatenate([item.cropped.crops[0] for item in analysed])
            landmarks = np.concatenate([item.cropped.landmarks[0] for item in analysed])
            outputs = await self._infer_images(model, crops, landmarks)
        bounds = np.cumsum([0] + [len(item.cropped.faces) for item in analysed])
        return [outputs.rows(int(a), int(b)) for a, b in itertools.pairwise(bounds)]

    def _answer(
        self,
        item: Analysed,
        outputs: ImageOutputs,
        model: ServedModel,
        caller: PromptSet,
        timings: dict[str, float],
    ) -> PredictResponse:
        stages = dict(timings)
        with self._metrics.time_stage("text", stages):
            text = self._text.score(model.config, outputs, caller)
        with self._metrics.time_stage("assemble", stages):
            faces = face_results(item.cropped.faces, outputs, text, model.config)
            self._metrics.observe_expressions([face.expression.label for face in faces])
        image = item.image
        return PredictResponse(
            image=ImageInfo(width=image.width, height=image.height, format=image.format),
            model=model_info(
                model, self._text.expression_encoder(model.config), self._text.caller_encoder(model.config)
            ),
            faces=faces,
            timings_ms=stages,
            warnings=model_warnings(model.config),
        )
