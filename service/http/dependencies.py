"""Typed dependencies: routes reach the app's resources only through these."""

from __future__ import annotations

from typing import Annotated

from fastapi import Depends, Request

from service.config import Settings
from service.http.state import Resources
from service.inference.base import InferenceBackend
from service.metrics import Metrics
from service.serving.admission import AdmissionControl
from service.serving.clip import VideoPipeline
from service.serving.image import ImagePipeline
from service.serving.predict import PredictService
from service.serving.prompting import TextScorer


def get_resources(request: Request) -> Resources:
    resources: Resources = request.app.state.resources
    return resources


ResourcesDep = Annotated[Resources, Depends(get_resources)]


def get_settings(resources: ResourcesDep) -> Settings:
    return resources.settings


def get_pipeline(resources: ResourcesDep) -> ImagePipeline:
    return resources.pipeline


def get_inference(resources: ResourcesDep) -> InferenceBackend:
    return resources.inference


def get_admission(resources: ResourcesDep) -> AdmissionControl:
    return resources.admission


def get_video_pipeline(resources: ResourcesDep) -> VideoPipeline:
    return resources.video_pipeline


def get_video_admission(resources: ResourcesDep) -> AdmissionControl:
    return resources.video_admission


def get_serving(resources: ResourcesDep) -> PredictService:
    return resources.serving


def get_text(resources: ResourcesDep) -> TextScorer:
    return resources.text


def get_metrics(request: Request) -> Metrics:
    metrics: Metrics = request.app.state.metrics
    return metrics


SettingsDep = Annotated[Settings, Depends(get_settings)]
PipelineDep = Annotated[ImagePipeline, Depends(get_pipeline)]
InferenceDep = Annotated[InferenceBackend, Depends(get_inference)]
AdmissionDep = Annotated[AdmissionControl, Depends(get_admission)]
MetricsDep = Annotated[Metrics, Depends(get_metrics)]
VideoPipelineDep = Annotated[VideoPipeline, Depends(get_video_pipeline)]
VideoAdmissionDep = Annotated[AdmissionControl, Depends(get_video_admission)]
ServingDep = Annotated[PredictService, Depends(get_serving)]
TextDep = Annotated[TextScorer, Depends(get_text)]
