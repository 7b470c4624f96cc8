"""Typed dependencies: routes reach the app's resources only through these."""

from __future__ import annotations

from typing import Annotated

from fastapi import Depends, Request

from service.config import Settings
from service.http.state import Resources
from service.inference.base import InferenceBackend
from service.jobs.runner import JobRunner
from service.metrics import Metrics
from service.serving.annotation import Annotator
from service.serving.memory import GatewayMemory
from service.serving.predict import PredictService
from service.serving.prompting import TextScorer


def get_resources(request: Request) -> Resources:
    resources: Resources = request.app.state.resources
    return resources


ResourcesDep = Annotated[Resources, Depends(get_resources)]


def get_settings(resources: ResourcesDep) -> Settings:
    return resources.settings


def get_inference(resources: ResourcesDep) -> InferenceBackend:
    return resources.inference


def get_serving(resources: ResourcesDep) -> PredictService:
    return resources.serving


def get_annotator(resources: ResourcesDep) -> Annotator:
    return resources.annotator


def get_memory(resources: ResourcesDep) -> GatewayMemory:
    return resources.memory


def get_text(resources: ResourcesDep) -> TextScorer:
    return resources.text


def get_jobs(resources: ResourcesDep) -> JobRunner:
    return resources.jobs


def get_metrics(request: Request) -> Metrics:
    metrics: Metrics = request.app.state.metrics
    return metrics


SettingsDep = Annotated[Settings, Depends(get_settings)]
InferenceDep = Annotated[InferenceBackend, Depends(get_inference)]
MetricsDep = Annotated[Metrics, Depends(get_metrics)]
ServingDep = Annotated[PredictService, Depends(get_serving)]
AnnotatorDep = Annotated[Annotator, Depends(get_annotator)]
MemoryDep = Annotated[GatewayMemory, Depends(get_memory)]
TextDep = Annotated[TextScorer, Depends(get_text)]
JobsDep = Annotated[JobRunner, Depends(get_jobs)]
