"""The long-lived resources of one app, opened and closed by its lifespan."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

from service.config import Settings
from service.detection.base import FaceDetector
from service.inference.base import InferenceBackend
from service.jobs.runner import JobRunner
from service.launcher.liveness import LivenessWatch
from service.launcher.supervisor import TritonSupervisor
from service.metrics import Metrics
from service.serving.admission import AdmissionControl
from service.serving.annotation import Annotator
from service.serving.memory import GatewayMemory
from service.serving.predict import PredictService
from service.serving.prompting import TextScorer


@dataclass(kw_only=True)
class Resources:
    settings: Settings
    metrics: Metrics
    inference: InferenceBackend
    detector: FaceDetector
    executor: ThreadPoolExecutor
    video_executor: ThreadPoolExecutor
    memory: GatewayMemory
    serving: PredictService
    annotator: Annotator
    text: TextScorer
    streams: AdmissionControl  # open live streams (GET /v1/stream), FER_STREAM_MAX_OPEN
    jobs: JobRunner
    supervisor: TritonSupervisor | None = None  # only when the gateway runs its own Triton
    liveness: LivenessWatch | None = None  # unless FER_TRITON_HANG_TIMEOUT_S is 0
