"""The long-lived resources of one app, opened and closed by its lifespan."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

from service.config import Settings
from service.detection.base import FaceDetector
from service.inference.base import InferenceBackend
from service.jobs.runner import JobRunner
from service.launcher.supervisor import TritonSupervisor
from service.metrics import Metrics
from service.serving.annotation import Annotator
from service.serving.memory import MemoryBudget
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
    memory: MemoryBudget
    serving: PredictService
    annotator: Annotator
    text: TextScorer
    jobs: JobRunner
    supervisor: TritonSupervisor | None = None  # only when the gateway runs its own Triton
