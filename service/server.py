"""The HTTP server around the app: uvicorn configured from Settings, in one place for `python -m service`
and for the tests that run the real server."""

from __future__ import annotations

import uvicorn
from fastapi import FastAPI

from service.config import Settings


def uvicorn_config(app: FastAPI, settings: Settings) -> uvicorn.Config:
    return uvicorn.Config(
        app,
        host=settings.host,
        port=settings.port,
        log_level=settings.log_level,
        # Without a bound, one client that never finishes its request keeps SIGTERM from ever completing.
        timeout_graceful_shutdown=settings.graceful_shutdown_timeout_s,
    )
