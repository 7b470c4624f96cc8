"""GET /v1/models: what Triton serves, with each model's labels, prompts and weight provenance."""

from __future__ import annotations

from fastapi import APIRouter

from fermodels.contract import DETECTOR_STAGE_NAMES
from service.config import Settings
from service.exceptions import Forbidden, InferenceFailed, InferenceUnavailable, Unauthorized
from service.http.dependencies import InferenceDep, SettingsDep, TextDep
from service.http.errors import openapi_error_responses
from service.inference.base import InferenceBackend, RepositoryEntry
from service.schemas import ModelsResponse, ModelState
from service.serving.prompting import TextScorer
from service.serving.responses import model_info, text_encoder_info

router = APIRouter(tags=["models"])


@router.get(
    "/v1/models",
    response_model=ModelsResponse,
    responses=openapi_error_responses(Unauthorized, Forbidden, InferenceUnavailable),
    summary="Served models, versions, labels, prompts and whether their weights are trained",
)
async def list_models(inference: InferenceDep, settings: SettingsDep, text: TextDep) -> ModelsResponse:
    statuses = await inference.model_statuses()
    states = [await _model_state(inference, status, settings, text) for status in statuses]
    return ModelsResponse(
        default_model=settings.default_model,
        default_video_model=settings.default_video_model,
        text_encoder_model=settings.text_encoder_model,
        models=states,
    )


async def _model_state(
    inference: InferenceBackend, status: RepositoryEntry, settings: Settings, text: TextScorer
) -> ModelState:
    if status.name == settings.text_encoder_model:
        return await _text_encoder_state(inference, status)
    if (
        status.name in DETECTOR_STAGE_NAMES
    ):  # MTCNN's nets (FER_DETECTOR_BACKEND=triton): no expression config
        return ModelState(name=status.name, version=status.version, state=status.state, kind="detector")
    if not status.ready:
        return ModelState(name=status.name, version=status.version, state=status.state)
    try:
        served = await inference.served_model(status.name)
    except InferenceFailed:
        # No expression config: another text encoder, e.g. a CLIP model's own text tower (<name>_text).
        return await _text_encoder_state(inference, status)
    info = model_info(served, text.expression_encoder(served.config), text.caller_encoder(served.config))
    return ModelState(name=status.name, version=served.version, state=status.state, info=info)


async def _text_encoder_state(inference: InferenceBackend, status: RepositoryEntry) -> ModelState:
    encoder = await inference.served_text_encoder(status.name) if status.ready else None
    return ModelState(
        name=status.name,
        version=status.version,
        state=status.state,
        kind="text_encoder",
        text_encoder=text_encoder_info(encoder.config) if encoder else None,
    )
