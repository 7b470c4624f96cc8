"""Bounded in-flight work: beyond the limit a request is refused with 429 instead of queueing."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from prometheus_client import Counter, Gauge

from service.errors import Overloaded


class AdmissionControl:
    """Counts work in progress; the event loop is single-threaded, so no lock is needed.

    ``in_flight`` is the gauge this control keeps, if any: a clip holds a request slot and a clip slot, and
    only the request-level control reports to ``fer_in_flight_requests`` so a clip is not counted twice.
    """

    def __init__(
        self, limit: int, *, rejected: Counter, in_flight: Gauge | None = None, kind: str = "request"
    ) -> None:
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
        if self._gauge is not None:
            self._gauge.inc()
        try:
            yield
        finally:
            self._count -= 1
            if self._gauge is not None:
                self._gauge.dec()
