"""The operations port (FER_METRICS_PORT): /metrics, /healthz and /readyz on a listener of their own.

Deployments keep this port off the public Service: Prometheus and the kubelet reach it, clients do not. The
public app then serves no /metrics at all, so API keys guard everything a client can reach except the probes
and the demo page. The server runs inside the gateway's lifespan, on the same event loop and with the same
resources, and stops after the public server has drained (its probes and metrics answer until the end).
"""

from __future__ import annotations

import asyncio
import logging
import socket
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager, contextmanager

import uvicorn
from fastapi import FastAPI

from service.config import Settings
from service.http.errors import install_error_handlers
from service.http.routes import health
from service.http.state import Resources

logger = logging.getLogger(__name__)

_START_TIMEOUT_S = 10.0
_STOP_TIMEOUT_S = 5.0
_POLL_S = 0.02


class _EmbeddedServer(uvicorn.Server):
    """A uvicorn server that leaves SIGINT/SIGTERM to the public server: it stops when the lifespan ends."""

    @contextmanager
    def capture_signals(self) -> Iterator[None]:
        yield


def create_ops_app(resources: Resources) -> FastAPI:
    """The probes and /metrics over the public app's resources; no docs, no auth, nothing else."""
    app = FastAPI(openapi_url=None, docs_url=None, redoc_url=None, redirect_slashes=False)
    app.state.resources, app.state.metrics = resources, resources.metrics
    install_error_handlers(app)
    app.include_router(health.router)
    app.include_router(health.metrics_router)
    return app


def ops_server(settings: Settings, app: FastAPI) -> uvicorn.Server:
    config = uvicorn.Config(
        app,
        host=settings.host,
        port=settings.metrics_port or 0,
        lifespan="off",
        log_config=None,
        access_log=False,  # scrapes and probes every few seconds would drown the request log
        timeout_graceful_shutdown=int(_STOP_TIMEOUT_S),
    )
    return _EmbeddedServer(config)


@asynccontextmanager
async def serving_ops(resources: Resources) -> AsyncIterator[uvicorn.Server | None]:
    """Serve the operations port while the body runs, when FER_METRICS_PORT is set."""
    if resources.settings.metrics_port is None:
        yield None
        return
    listener = bound_listener(resources.settings.host, resources.settings.metrics_port)
    server = ops_server(resources.settings, create_ops_app(resources))
    task = asyncio.create_task(server.serve(sockets=[listener]), name="ops-server")
    await _started(server, task)
    logger.info("metrics and probes on port %d", resources.settings.metrics_port)
    try:
        yield server
    finally:
        server.should_exit = True
        await asyncio.wait_for(task, _STOP_TIMEOUT_S * 2)


def bound_listener(host: str, port: int) -> socket.socket:
    """The operations port bound here, before uvicorn runs: uvicorn answers a port in use with SystemExit
    from inside its task, which would take the event loop down instead of failing the start-up cleanly."""
    try:
        return socket.create_server((host, port), reuse_port=False)
    except OSError as exc:
        raise RuntimeError(f"FER_METRICS_PORT {port} cannot be bound on {host}: {exc.strerror}") from None


async def _started(server: uvicorn.Server, task: asyncio.Task[None]) -> None:
    """Wait until the listener is bound; a port that cannot be bound fails the gateway's start-up."""
    async with asyncio.timeout(_START_TIMEOUT_S):
        while not server.started:
            if task.done():
                task.result()  # uvicorn exits (SystemExit) when it cannot bind
                raise RuntimeError("the operations server stopped before it started")
            await asyncio.sleep(_POLL_S)
