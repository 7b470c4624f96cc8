"""The app factory and the lifespan that owns every long-lived resource."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator, Callable
from concurrent.futures import ThreadPoolExecutor
from contextlib import asynccontextmanager

import torch
from fastapi import FastAPI

from service.config import Settings
from service.detection.base import FaceDetector
from service.detection.factory import build_detector
from service.http.auth import ApiKeyAuth
from service.http.errors import install_error_handlers
from service.http.logs import RequestId
from service.http.middleware import BodySizeLimit, HttpMetrics, UnambiguousFraming
from service.http.ops import serving_ops
from service.http.routes import annotate, health, jobs, models, predict, predict_json, stream, web
from service.http.state import Resources
from service.inference.base import InferenceBackend
from service.inference.triton import TritonBackend
from service.jobs.backend import open_store
from service.jobs.runner import JobRunner
from service.jobs.store import AsyncJobStore
from service.launcher.liveness import LivenessPolicy, LivenessWatch
from service.launcher.supervisor import Restartable, RestartPolicy, TritonSupervisor
from service.metrics import Metrics
from service.serving.admission import AdmissionControl
from service.serving.annotation import Annotator
from service.serving.batch import ImageBatchPipeline
from service.serving.clip import VideoPipeline
from service.serving.image import ImagePipeline
from service.serving.memory import (
    GatewayMemory,
    HeapTrim,
    MemoryBudget,
    RecentReading,
    RestingGrowth,
    resident_bytes,
)
from service.serving.predict import PredictService
from service.serving.prompting import ClassPrompts, PromptEncoder, TextScorer

logger = logging.getLogger(__name__)

# How old a resident-memory reading the budget may use (service/serving/memory.py, RecentReading).
RESIDENT_MAX_AGE_S = 0.1

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


def memory_budget(settings: Settings, metrics: Metrics) -> GatewayMemory:
    """The two pools; the work pool shrinks by what the resting memory has grown over the reserve."""
    metrics.memory_budget.set(settings.memory_budget_bytes)
    growth = RestingGrowth(
        settings.memory_reserve_bytes,
        RecentReading(resident_bytes, RESIDENT_MAX_AGE_S),
        trim=HeapTrim(settings.memory_trim_interval_s, metrics.heap_trims),
        growth=metrics.memory_growth,
    )
    follow = growth if settings.memory_follow_resident else None
    memory = GatewayMemory(
        bodies=memory_pool(settings, metrics, "bodies", settings.memory_bodies_bytes, None),
        work=memory_pool(settings, metrics, "work", settings.memory_work_bytes, follow),
    )
    growth.memory = memory
    return memory


def memory_pool(
    settings: Settings, metrics: Metrics, name: str, total: int, shortfall: RestingGrowth | None
) -> MemoryBudget:
    return MemoryBudget(
        total,
        wait_s=settings.memory_wait_s,
        retry_after_s=settings.triton_retry_after_s,
        reserved=metrics.memory_reserved.labels(name),
        rejected=metrics.rejected,
        shortfall=shortfall,
    )


def open_resources(
    settings: Settings, metrics: Metrics, inference: InferenceFactory, detector: DetectorFactory
) -> Resources:
    torch.set_num_threads(settings.torch_threads)
    executor = ThreadPoolExecutor(settings.cpu_workers, thread_name_prefix="fer-cpu")
    backend, face_detector = inference(settings, metrics), detector(settings)
    text = TextScorer(PromptEncoder(settings, backend, metrics), ClassPrompts())
    pipeline = ImagePipeline(
        settings=settings,
        detector=face_detector,
        inference=backend,
        executor=executor,
        metrics=metrics,
        text=text,
    )
    admission = AdmissionControl(
        settings.max_in_flight, rejected=metrics.rejected, in_flight=metrics.in_flight, kind="image"
    )
    # Clips get their own threads and limit, independent of the images': neither can starve the other.
    video_executor = ThreadPoolExecutor(settings.video_workers, thread_name_prefix="fer-video")
    video_pipeline = VideoPipeline(
        settings=settings,
        detector=face_detector,
        inference=backend,
        executor=video_executor,
        metrics=metrics,
        text=text,
    )
    video_admission = AdmissionControl(
        settings.video_max_in_flight, rejected=metrics.rejected, in_flight=metrics.in_flight, kind="video"
    )
    memory = memory_budget(settings, metrics)
    batch = ImageBatchPipeline(
        settings=settings,
        detector=face_detector,
        inference=backend,
        executor=executor,
        metrics=metrics,
        text=text,
        memory=memory.work,
    )
    serving = PredictService(
        settings=settings,
        inference=backend,
        image_admission=admission,
        video_admission=video_admission,
        pipeline=pipeline,
        batch_pipeline=batch,
        video_pipeline=video_pipeline,
        memory=memory.work,
    )
    return Resources(
        settings=settings,
        metrics=metrics,
        inference=backend,
        detector=face_detector,
        executor=executor,
        video_executor=video_executor,
        memory=memory,
        serving=serving,
        annotator=Annotator(serving, settings, image_executor=executor, clip_executor=video_executor),
        text=text,
        streams=AdmissionControl(
            settings.stream_max_open, rejected=metrics.rejected, in_flight=metrics.streams_open, kind="stream"
        ),
        jobs=JobRunner(
            settings,
            AsyncJobStore(open_store(settings)),
            video_pipeline,
            memory.work,
            metrics,
        ),
    )


async def close_resources(resources: Resources) -> None:
    await resources.jobs.stop()  # first: its running jobs go back to the queue while the store is open
    resources.jobs.store.sync.close()
    await resources.inference.close()
    resources.executor.shutdown(wait=True, cancel_futures=True)
    resources.video_executor.shutdown(wait=True, cancel_futures=True)
    resources.detector.close()  # after the pools: no worker is left waiting on a detection


WATCH_STOP_TIMEOUT_S = 5.0


@asynccontextmanager
async def supervising(resources: Resources, triton: Restartable | None) -> AsyncIterator[None]:
    """Watch that Triton answers and, for the embedded one, keep it running, for as long as the app serves."""
    settings = resources.settings
    if settings.triton_hang_timeout_s > 0:
        resources.liveness = LivenessWatch(
            resources.inference.server_ready, LivenessPolicy.from_settings(settings)
        )
    if triton is not None:
        resources.supervisor = TritonSupervisor(
            triton,
            RestartPolicy.from_settings(settings),
            resources.metrics.triton_restarts,
            liveness=resources.liveness,
        )
    watchers = [resources.liveness, resources.supervisor]
    tasks = [asyncio.create_task(w.run(), name=type(w).__name__) for w in watchers if w is not None]
    try:
        yield
    finally:
        await cancelled(tasks)


async def cancelled(tasks: list[asyncio.Task[None]]) -> None:
    """Cancel the watchers and wait for them, bounded: a shutdown never waits on a frozen Triton."""
    for task in tasks:
        task.cancel()
    if tasks:
        await asyncio.wait(tasks, timeout=WATCH_STOP_TIMEOUT_S)


def create_app(
    settings: Settings,
    *,
    inference: InferenceFactory = triton_backend,
    detector: DetectorFactory = build_detector,
    triton: Restartable | None = None,
) -> FastAPI:
    """Build the gateway; tests pass their own settings and, for the API layer, fake factories.
    ``triton``: the embedded Triton this gateway started, which it then keeps running."""
    metrics = Metrics()

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        app.state.resources = open_resources(settings, metrics, inference, detector)
        await app.state.resources.jobs.start()
        logger.info("gateway ready: Triton %s over %s", settings.triton_url, settings.triton_protocol)
        try:
            async with supervising(app.state.resources, triton), serving_ops(app.state.resources):
                yield
        finally:
            await close_resources(app.state.resources)

    app = FastAPI(
        title="FER service",
        version="0.1.0",
        description=API_DESCRIPTION,
        lifespan=lifespan,
        # Starlette builds the trailing-slash redirect's Location from the client's Host header (an open
        # redirect); paths are exact instead, and `/predict/` gets the JSON 404.
        redirect_slashes=False,
    )
    app.state.metrics = metrics
    install_error_handlers(app)
    routers = (
        predict.router,
        predict_json.router,
        annotate.router,
        health.router,
        models.router,
        stream.router,
        jobs.router,
        web.router,
    )
    for router in routers:
        app.include_router(router)
    if settings.metrics_port is None:  # else on the operations port only (service/http/ops.py)
        app.include_router(health.metrics_router)
    app.add_middleware(
        BodySizeLimit,
        max_bytes=settings.max_upload_bytes,
        larger={"/v1/jobs": settings.jobs_max_upload_bytes},
    )
    app.add_middleware(UnambiguousFraming)  # before the size limit trusts Content-Length
    app.add_middleware(ApiKeyAuth, key_sha256=settings.api_key_sha256)  # outside the body limit, so first
    app.add_middleware(HttpMetrics, metrics=metrics)
    app.add_middleware(RequestId)  # outermost: every line logged for a request, uvicorn's too, carries its id
    return app
