"""The image pipeline, top to bottom: decode → detect → align → infer → assemble, each stage timed."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Callable
from concurrent.futures import ThreadPoolExecutor
from contextlib import asynccontextmanager
from functools import cached_property
from typing import TypeVar

from service.arrays import FloatArray
from service.config import Settings
from service.detection.base import Detections, FaceDetector
from service.inference.base import ImageOutputs, InferenceBackend, ServedModel
from service.metrics import Metrics
from service.schemas import ImageInfo, PredictResponse
from service.serving.augment import merged, with_views
from service.serving.batching import run_batched, run_in_batches
from service.serving.prompting import TextScorer
from service.serving.responses import face_results, model_info, model_warnings
from service.serving.similarity import PromptSet
from service.vision.cropping import CropGeometry, CroppedFaces, FaceCropper, FaceSelection
from service.vision.decode import DecodedImage, decode_image

T = TypeVar("T")


def _retrieve(task: asyncio.Task[PromptSet]) -> None:
    if not task.cancelled():
        task.exception()


class PipelineBase:
    """What every pipeline holds: settings, the detector, the inference backend, its threads, metrics."""

    def __init__(
        self,
        *,
        settings: Settings,
        detector: FaceDetector,
        inference: InferenceBackend,
        executor: ThreadPoolExecutor,
        metrics: Metrics,
        text: TextScorer,
    ) -> None:
        self._text = text
        self._settings = settings
        self._detector = detector
        self._inference = inference
        self._executor = executor
        self._metrics = metrics

    async def _offload(self, function: Callable[..., T], *args: object, **kwargs: object) -> T:
        """Run CPU-bound work on the pool so the event loop keeps serving other requests."""
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self._executor, lambda: function(*args, **kwargs))

    @cached_property
    def _selection(self) -> FaceSelection:
        return FaceSelection(self._settings.max_faces, self._settings.detector_min_score)

    @asynccontextmanager
    async def _caller_prompts(
        self, prompts: tuple[str, ...], model_name: str | None
    ) -> AsyncIterator[asyncio.Task[PromptSet]]:
        """The caller's prompts embedding (by the model's own text tower for a CLIP model), started first so
        the encoder call (or cache hit) overlaps decode and detection; cancelled on the way out (a no-op
        once it finished)."""
        name = model_name or self._settings.default_model
        task = asyncio.ensure_future(self._text.caller(prompts, name))
        task.add_done_callback(_retrieve)  # a failure surfaces where it is awaited, never as a stray log
        try:
            yield task
        finally:
            task.cancel()

    async def _infer_images(
        self, model: ServedModel, crops: FloatArray, landmarks: FloatArray
    ) -> ImageOutputs:
        """Every face crop (and its test-time views) through the image model, in batches of at most
        max_batch_size (no face: no call); one merged output row per face. ``landmarks`` (N x 5 x 2 in
        the crops' [0, 1] coordinates) go with them to a model whose config takes them."""
        if model.config.num_landmarks:  # no test-time views: ModelConfig refuses tta with landmarks
            infer = self._inference.infer_image
            parts = await run_in_batches(
                model, len(crops), lambda rows: infer(model, crops[rows], landmarks[rows])
            )
            return ImageOutputs.concatenate(parts)
        views = with_views(crops, model.config.tta)
        outputs = ImageOutputs.concatenate(await run_batched(model, views, self._inference.infer_image))
        return merged(outputs, model.config.tta)


class ImagePipeline(PipelineBase):
    """Turns one uploaded image into per-face expression results."""

    async def predict(
        self, data: bytes, model_name: str | None, prompts: tuple[str, ...] = ()
    ) -> PredictResponse:
        response, _ = await self.predict_with_crops(data, model_name, prompts)
        return response

    async def predict_with_crops(
        self, data: bytes, model_name: str | None, prompts: tuple[str, ...] = ()
    ) -> tuple[PredictResponse, FloatArray]:
        """The answer and its faces' aligned crops, N x 3 x S x S in the answer's face order (a live
        stream's tracker matches re-entries by their appearance, as a clip's does)."""
        async with self._caller_prompts(prompts, model_name) as caller:
            return await self._predict(data, model_name, caller)

    async def _predict(
        self, data: bytes, model_name: str | None, caller: asyncio.Task[PromptSet]
    ) -> tuple[PredictResponse, FloatArray]:
        timings: dict[str, float] = {}
        start = time.perf_counter()
        with self._metrics.time_stage("decode", timings):
            image = await self._offload(decode_image, data, max_pixels=self._settings.max_image_pixels)
        model = await self._inference.served_model(model_name or self._settings.default_model)
        with self._metrics.time_stage("detect", timings):
            found = await self._offload(self._detector.detect, image.rgb)
        with self._metrics.time_stage("align", timings):
            cropped = await self._offload(self._crop, image, found, model)
        with self._metrics.time_stage("infer", timings):
            outputs = await self._infer_images(model, cropped.crops[0], cropped.landmarks[0])
        with self._metrics.time_stage("text", timings):
            text = self._text.score(model.config, outputs, await caller)
        with self._metrics.time_stage("assemble", timings):
            results = face_results(cropped.faces, outputs, text, model.config)
            self._metrics.observe_expressions([face.expression.label for face in results])
        timings["total"] = round((time.perf_counter() - start) * 1000.0, 3)
        response = PredictResponse(
            image=ImageInfo(width=image.width, height=image.height, format=image.format),
            model=model_info(
                model,
                self._text.expression_encoder(model.config),
                self._text.caller_encoder(model.config),
            ),
            faces=results,
            timings_ms=timings,
            warnings=model_warnings(model.config),
        )
        return response, cropped.crops[0]

    def _crop(self, image: DecodedImage, found: Detections, model: ServedModel) -> CroppedFaces:
        cropped = FaceCropper(self._selection, CropGeometry.of(model.config))(image.rgb, found)
        self._metrics.faces_per_image.observe(len(cropped.faces))
        self._metrics.faces.inc(len(cropped.faces))
        return cropped
