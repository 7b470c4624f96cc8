"""`python -m service`: settings → (embedded local Triton) → create_app → uvicorn."""

from __future__ import annotations

import os

from service.launcher.openmp import limit_malloc_arenas, openmp_defaults

# First thing, before anything imports torch (which loads libgomp, and libgomp reads it once).
os.environ.update(openmp_defaults(os.environ))

import logging
import signal
from collections.abc import Iterator
from contextlib import contextmanager
from types import FrameType
from typing import TYPE_CHECKING

import uvicorn

from service.config import Settings
from service.http.app import create_app
from service.http.logs import configure_logging
from service.http.server import uvicorn_config

if TYPE_CHECKING:
    from service.launcher.triton_local import LocalTriton

logger = logging.getLogger("service")


@contextmanager
def triton_for(settings: Settings) -> Iterator[tuple[Settings, LocalTriton | None]]:
    """Use the configured Triton, or start the embedded one and point the settings at it."""
    if settings.triton_url is not None:
        yield settings, None
        return
    from service.launcher.triton_local import LocalTriton

    local = LocalTriton(
        settings.model_repository.resolve(),
        home=settings.triton_home,  # None: the launcher's default home (it resolves paths itself)
        startup_timeout_s=settings.triton_startup_timeout_s,
    )
    endpoints = local.start()
    url = endpoints.grpc_url if settings.triton_protocol == "grpc" else endpoints.http_url
    logger.info(
        "embedded Triton ready: grpc %s, http %s, metrics %s",
        endpoints.grpc_url,
        endpoints.http_url,
        endpoints.metrics_url,
    )
    try:
        yield settings.model_copy(update={"triton_url": url}), local
    finally:
        local.stop()  # after uvicorn has drained: in-flight requests finish before Triton goes


def _exit_cleanly(signum: int, frame: FrameType | None) -> None:
    # uvicorn drains requests on SIGINT/SIGTERM and then re-raises the signal; turning it into
    # SystemExit(0) lets `triton_for` stop the embedded Triton before the process ends.
    raise SystemExit(0)


def main() -> None:
    limit_malloc_arenas(os.environ)  # before any pool starts a thread (each would get a heap of its own)
    for stop_signal in (signal.SIGINT, signal.SIGTERM):
        signal.signal(stop_signal, _exit_cleanly)
    settings = Settings()
    configure_logging(settings.log_level, settings.log_format)
    with triton_for(settings) as (effective, local):
        app = create_app(effective, triton=local)
        uvicorn.Server(uvicorn_config(app, effective)).run()


if __name__ == "__main__":
    main()
