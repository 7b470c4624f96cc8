"""Whether Triton still answers: a process that is running but frozen (SIGSTOP, a deadlock, a stuck
backend) passes every "is it running" check and answers nothing.

One background task, owned by the app's lifespan, probes Triton's health endpoint every interval, each probe
cut off after its own hard timeout, so a frozen server can never hold the task (nor the app's shutdown, which
cancels it) longer than that. Triton counts as hung once no probe has been answered for ``hang_after_s``:
the supervisor then kills and restarts an embedded Triton, and /healthz answers 503 for an external one. The
clock and the sleep are parameters, so the unit tests drive it without waiting.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

from service.config import Settings

logger = logging.getLogger(__name__)

Probe = Callable[[], Awaitable[object]]


@dataclass(frozen=True)
class LivenessPolicy:
    interval_s: float
    probe_timeout_s: float
    hang_after_s: float

    @classmethod
    def from_settings(cls, settings: Settings) -> LivenessPolicy:
        return cls(
            interval_s=settings.triton_watch_interval_s,
            probe_timeout_s=settings.triton_probe_timeout_s,
            hang_after_s=settings.triton_hang_timeout_s,
        )


class LivenessWatch:
    """The time of Triton's last answer to a health probe; ``run()`` is the lifespan's background task."""

    def __init__(
        self,
        probe: Probe,
        policy: LivenessPolicy,
        *,
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], Awaitable[object]] = asyncio.sleep,
    ) -> None:
        self._probe, self._policy = probe, policy
        self._clock, self._sleep = clock, sleep
        self._last_answer = clock()

    @property
    def silent_s(self) -> float:
        """Seconds since Triton last answered."""
        return self._clock() - self._last_answer

    @property
    def hung(self) -> bool:
        return self.silent_s > self._policy.hang_after_s

    def restarted(self) -> None:
        """A new server from now on: its silence is counted afresh."""
        self._last_answer = self._clock()

    async def check(self) -> bool:
        """One probe, answered within its timeout or not."""
        try:
            async with asyncio.timeout(self._policy.probe_timeout_s):
                await self._probe()
        except TimeoutError:
            return False
        except Exception as exc:  # whatever it is, the server did not answer
            logger.warning("Triton health probe failed: %s", exc)
            return False
        self._last_answer = self._clock()
        return True

    async def run(self) -> None:
        while True:
            await self._sleep(self._policy.interval_s)
            was_hung = self.hung
            if not await self.check() and self.hung and not was_hung:
                logger.error("Triton has not answered a health probe for %.0f s: it is hung", self.silent_s)
