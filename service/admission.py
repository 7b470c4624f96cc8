"""Bounded in-flight work: beyond the limit a request is refused with 429 instead of queueing."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from service.errors import Overloaded
from service.metrics import Metrics


class AdmissionControl:
    """Counts prediction requests in progress; the event loop is single-threaded, so no lock is needed."""

    def __init__(self, limit: int, metrics: Metrics, kind: str = "request") -> None:
        self._limit = limit
        self._kind = kind
        self._in_flight = 0
        self._metrics = metrics

    @property
    def in_flight(self) -> int:
        return self._in_flight

    @asynccontextmanager
    async def slot(self) -> AsyncIterator[None]:
        if self._in_flight >= self._limit:
            self._metrics.rejected.labels(f"{self._kind}_overloaded").inc()
            raise Overloaded(
                f"{self._limit} {self._kind}s are already in progress; retry later", retry_after_s=1
            )
        self._in_flight += 1
        self._metrics.in_flight.inc()
        try:
            yield
        finally:
            self._in_flight -= 1
            self._metrics.in_flight.dec()
