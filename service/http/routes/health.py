"""Liveness, readiness and the Prometheus endpoint."""

from __future__ import annotations

from fastapi import APIRouter, Response
from fastapi.responses import JSONResponse
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from service.exceptions import ServiceError
from service.http.dependencies import InferenceDep, MetricsDep, ResourcesDep
from service.http.state import Resources
from service.inference.base import InferenceBackend
from service.schemas import HealthResponse

router = APIRouter(tags=["health"])
# Apart from the probes: with FER_METRICS_PORT set it is served on that port only (service/http/ops.py).
metrics_router = APIRouter(tags=["health"])


@router.get(
    "/healthz",
    response_model=HealthResponse,
    responses={
        503: {
            "model": HealthResponse,
            "description": "The embedded Triton cannot be restarted, or an external one is frozen",
        }
    },
    summary="The process is alive (and can keep its embedded Triton running; an external one answers)",
)
async def healthz(resources: ResourcesDep) -> JSONResponse:
    checks = liveness_checks(resources)
    alive = all(checks.values())
    body = HealthResponse(status="ok" if alive else "unavailable", checks=checks)
    return JSONResponse(body.model_dump(), status_code=200 if alive else 503)


def liveness_checks(resources: Resources) -> dict[str, bool]:
    """Triton being down for a while is readiness (/readyz); a Triton that cannot come back is liveness:
    an embedded one that restarts keep failing, an external one that is frozen (nothing here can restart
    it: restarting the gateway's pod along with it is what is left)."""
    if resources.supervisor is not None:
        return {"embedded_triton": resources.supervisor.healthy}
    if resources.liveness is not None:
        return {"triton_answers": not resources.liveness.hung}
    return {}


@router.get(
    "/readyz",
    response_model=HealthResponse,
    responses={503: {"model": HealthResponse, "description": "Triton or a model is not ready"}},
    summary="Ready when Triton and every model in its repository are ready",
)
async def readyz(inference: InferenceDep) -> JSONResponse:
    checks = await readiness_checks(inference)
    ready = all(checks.values())
    body = HealthResponse(status="ok" if ready else "unavailable", checks=checks)
    return JSONResponse(body.model_dump(), status_code=200 if ready else 503)


async def readiness_checks(inference: InferenceBackend) -> dict[str, bool]:
    checks = {"triton": await inference.server_ready()}
    if not checks["triton"]:
        return checks
    try:
        statuses = await inference.model_statuses()
    except ServiceError:
        return {**checks, "models": False}
    checks["models"] = bool(statuses)
    checks.update({f"model:{status.name}": status.ready for status in statuses})
    return checks


@metrics_router.get("/metrics", summary="Prometheus metrics", response_class=Response)
async def metrics(registry: MetricsDep) -> Response:
    return Response(generate_latest(registry.registry), media_type=CONTENT_TYPE_LATEST)
