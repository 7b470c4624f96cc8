"""Bounded in-flight work: beyond the limit a request is refused with 429 instead of queueing."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from prometheus_client import Counter, Gauge

from service.exceptions import Overloaded


class AdmissionControl:
    """Counts work in progress; the event loop is single-threaded, so no lock is needed.

    Images and clips each have their own control (a request holds exactly one slot, of its kind); both
    report to the same ``in_flight`` gauge, ``fer_in_flight_requests``.
    """

    def __init__(self, limit: int, *, rejected: Counter, in_flight: Gauge, kind: str) -> None:
        self._limit = limit
        self._kind = kind
        self._count = 0
        self._rejected = rejected
        self._gauge = in_flight

    @asynccontextmanager
    async def slot(self) -> AsyncIterator[None]:
        if self._count >= self._limit:
            self._rejected.labels(f"{self._kind}_overloaded").inc()
            raise Overloaded(
                f"{self._limit} {self._kind}s are already in progress; retry later", retry_after_s=1
            )
        self._count += 1
        self._gauge.inc()
        try:
            yield
        finally:
            self._count -= 1
            self._gauge.dec()
