"""Keep the embedded Triton of `python -m service` running: restart it with backoff when it exits, and kill
and restart it when it stops answering (``LivenessWatch``: a frozen process never exits).

A gateway whose Triton is gone answers 503 to every prediction; without this it would do so forever while
looking alive. When restarts keep failing, ``healthy`` turns False and /healthz says so, so whatever runs
the process (systemd, Kubernetes, a person) can restart the whole thing.
"""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass
from typing import Protocol

from prometheus_client import Counter

from service.config import Settings
from service.launcher.liveness import LivenessWatch

logger = logging.getLogger(__name__)


class Restartable(Protocol):
    """What the supervisor needs of a server process (``LocalTriton`` has it)."""

    def is_running(self) -> bool: ...

    def start(self) -> object: ...

    def kill(self) -> None:
        """End the server at once (a frozen one answers no polite signal) and reap it."""


@dataclass(frozen=True)
class RestartPolicy:
    watch_interval_s: float
    backoff_s: float
    backoff_max_s: float
    max_failures: int

    @classmethod
    def from_settings(cls, settings: Settings) -> RestartPolicy:
        return cls(
            watch_interval_s=settings.triton_watch_interval_s,
            backoff_s=settings.triton_restart_backoff_s,
            backoff_max_s=settings.triton_restart_backoff_max_s,
            max_failures=settings.triton_max_restart_failures,
        )


class TritonSupervisor:
    """Watches one server; ``run()`` is the lifespan's background task."""

    def __init__(
        self,
        server: Restartable,
        policy: RestartPolicy,
        restarts: Counter,
        liveness: LivenessWatch | None = None,
    ) -> None:
        self._server, self._policy, self._restarts = server, policy, restarts
        self._liveness = liveness
        self._failures = 0  # consecutive failed restarts

    @property
    def healthy(self) -> bool:
        return self._failures < self._policy.max_failures

    async def run(self) -> None:
        while True:
            await asyncio.sleep(self._policy.watch_interval_s)
            await self.watch_once()

    async def watch_once(self) -> None:
        if not self._server.is_running():
            logger.error("the embedded Triton exited; restarting it")
            await self._restart_until_up()
        elif self._liveness is not None and self._liveness.hung:
            logger.error(
                "the embedded Triton has not answered for %.0f s; killing and restarting it",
                self._liveness.silent_s,
            )
            await asyncio.to_thread(self._server.kill)
            await self._restart_until_up()

    async def _restart_until_up(self) -> None:
        delay = self._policy.backoff_s
        while True:
            await asyncio.sleep(delay)  # a server that dies at once must not be restarted in a hot loop
            if await self._restart_once():
                return
            delay = min(delay * 2, self._policy.backoff_max_s)

    async def _restart_once(self) -> bool:
        try:
            # start() blocks until Triton is ready (seconds): off the event loop, requests keep flowing.
            await asyncio.to_thread(self._server.start)
        except Exception as exc:  # TritonStartError, OSError: try again after the next backoff
            self._failures += 1
            self._restarts.labels("failed").inc()
            logger.error("restarting the embedded Triton failed (%d in a row): %s", self._failures, exc)
            return False
        self._failures = 0
        if self._liveness is not None:
            self._liveness.restarted()
        self._restarts.labels("ok").inc()
        logger.warning("the embedded Triton was restarted and is ready")
        return True
