"""The app factory and the lifespan that owns every long-lived resource."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator, Callable
from concurrent.futures import ThreadPoolExecutor
from contextlib import asynccontextmanager

import torch
from fastapi import FastAPI

from service.admission import AdmissionControl
from service.config import Settings
from service.errors import install_error_handlers
from service.inference.base import InferenceBackend
from service.inference.triton import TritonBackend
from service.metrics import Metrics
from service.middleware import BodySizeLimit, HttpMetrics
from service.pipeline import ImagePipeline
from service.routes import annotate, health, models, predict, web
from service.state import Resources
from service.video_pipeline import VideoPipeline
from service.vision.detection import FaceDetector, MTCNNDetector

logger = logging.getLogger(__name__)

InferenceFactory = Callable[[Settings, Metrics], InferenceBackend]
DetectorFactory = Callable[[Settings], FaceDetector]

API_DESCRIPTION = """
Facial expression recognition for every face in an image.

Faces are found by MTCNN, aligned on 5 landmarks to the served model's canonical crop, and classified by a
TorchScript model served by Triton. Each face gets its box, landmarks, detection score, the expression
probability distribution and the similarity of its embedding to a text prompt per expression.

Check `model.trained` and `warnings` in every response: untrained weights give no predictions.
"""


def triton_backend(settings: Settings, metrics: Metrics) -> InferenceBackend:
    if settings.triton_url is None:
        raise ValueError("FER_TRITON_URL is not set; `python -m service` starts a local Triton and sets it")
    return TritonBackend(
        settings.triton_url,
        protocol=settings.triton_protocol,
        timeout_s=settings.triton_timeout_s,
        retry_after_s=settings.triton_retry_after_s,
        metrics=metrics,
    )


def mtcnn_detector(settings: Settings) -> FaceDetector:
    return MTCNNDetector(
        thresholds=settings.detector_thresholds,
        min_face_size=settings.detector_min_face_size,
        device=settings.device,
    )


def open_resources(
    settings: Settings, metrics: Metrics, inference: InferenceFactory, detector: DetectorFactory
) -> Resources:
    torch.set_num_threads(settings.torch_threads)
    executor = ThreadPoolExecutor(settings.cpu_workers, thread_name_prefix="fer-cpu")
    backend, face_detector = inference(settings, metrics), detector(settings)
    pipeline = ImagePipeline(
        settings=settings, detector=face_detector, inference=backend, executor=executor, metrics=metrics
    )
    admission = AdmissionControl(
        settings.max_in_flight, rejected=metrics.rejected, in_flight=metrics.in_flight
    )
    # Clips get their own threads and limit: a long clip must not starve still images.
    video_executor = ThreadPoolExecutor(settings.video_workers, thread_name_prefix="fer-video")
    video_pipeline = VideoPipeline(
        settings=settings, detector=face_detector, inference=backend, executor=video_executor, metrics=metrics
    )
    video_admission = AdmissionControl(settings.video_max_in_flight, rejected=metrics.rejected, kind="video")
    return Resources(
        settings,
        metrics,
        backend,
        face_detector,
        executor,
        admission,
        pipeline,
        video_executor,
        video_admission,
        video_pipeline,
    )


async def close_resources(resources: Resources) -> None:
    await resources.inference.close()
    resources.executor.shutdown(wait=True, cancel_futures=True)
    resources.video_executor.shutdown(wait=True, cancel_futures=True)


def create_app(
    settings: Settings,
    *,
    inference: InferenceFactory = triton_backend,
    detector: DetectorFactory = mtcnn_detector,
) -> FastAPI:
    """Build the gateway; tests pass their own settings and, for the API layer, fake factories."""
    metrics = Metrics()

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        app.state.resources = open_resources(settings, metrics, inference, detector)
        logger.info("gateway ready: Triton %s over %s", settings.triton_url, settings.triton_protocol)
        try:
            yield
        finally:
            await close_resources(app.state.resources)

    app = FastAPI(title="FER service", version="0.1.0", description=API_DESCRIPTION, lifespan=lifespan)
    app.state.metrics = metrics
    install_error_handlers(app)
    for router in (predict.router, annotate.router, health.router, models.router, web.router):
        app.include_router(router)
    app.add_middleware(BodySizeLimit, max_bytes=settings.max_upload_bytes)
    app.add_middleware(HttpMetrics, metrics=metrics)
    return app
