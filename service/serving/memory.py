"""One memory budget for the whole gateway: per-request memory is reserved before it is allocated.

A request's bytes are reserved in the layer that knows them, before they exist: the body as it is about to
be read (its declared length), the decoded pixels and the analysis of an image as soon as its header gives
its size, a clip's frames by the clip limits, a rendered /annotate picture by its bounded size. Admission
counts requests; this counts bytes, so a few near-limit photos cannot do what many small ones may.

A reservation that does not fit waits, first come first served, for at most ``wait_s``; then the request is
refused with 429 and ``Retry-After`` before it has allocated anything. The budget is what the pod's limit
leaves once the gateway's resting memory (models, nets, pools) is set aside (Settings).

Two pools share it (``GatewayMemory``): bodies being read, and the work done on them. A request holds its
body while it waits for its work's share, so with one pool bodies could take all of it and every request
would wait for memory that only requests waiting themselves hold (each then refused after ``wait_s``). With
the bodies' share capped, the work's share is only ever held by requests that wait for nothing.

The resting memory is measured as well as configured: the process's resident memory less what is
reserved is what it holds at rest now (allocator heaps and detector caches grow with traffic); when that is
over the configured reserve, the work pool shrinks by the difference, so the limit holds either way.

Most of that growth is not held by anything: glibc keeps the pages a large request freed in its heaps
(resident, reusable, but not returned to the system), and a pool shrunk by them can refuse every
near-limit request for as long as the process lives. So before the growth shrinks the pool, the free heap
is handed back (``HeapTrim``: glibc's ``malloc_trim``, at most once per interval), and only what is still
resident after that counts.
"""

from __future__ import annotations

import asyncio
import ctypes
import ctypes.util
import logging
import os
import time
from collections import deque
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass

from prometheus_client import Counter, Gauge

from service.exceptions import Overloaded

logger = logging.getLogger(__name__)


class MemoryBudget:
    """Bytes reserved against ``total``; event-loop only (no lock needed)."""

    def __init__(
        self,
        total: int,
        *,
        wait_s: float,
        retry_after_s: int,
        reserved: Gauge,
        rejected: Counter,
        shortfall: Callable[[int], int] | None = None,
    ) -> None:
        """``shortfall(spare)``: bytes of ``total`` that are not there now (memory held outside the
        budget); ``spare``, what the budget could lose and still grant, lets it reclaim only when needed."""
        self.total = total
        self._wait_s, self._retry_after_s = wait_s, retry_after_s
        self._used = 0
        self._waiters: deque[tuple[int, asyncio.Future[None]]] = deque()
        self._reserved, self._rejected = reserved, rejected
        self._shortfall = shortfall

    @property
    def used(self) -> int:
        return self._used

    @asynccontextmanager
    async def hold(self, nbytes: int) -> AsyncIterator[None]:
        """Reserve ``nbytes`` for the block (a request larger than the whole budget waits for all of it)."""
        amount = min(max(0, nbytes), self.total)
        await self._acquire(amount)
        try:
            yield
        finally:
            self._release(amount)

    async def _acquire(self, amount: int) -> None:
        if not self._waiters and self._fits(amount):
            self._take(amount)
            return
        granted: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._waiters.append((amount, granted))
        try:
            await asyncio.wait_for(granted, self._wait_s)
        except TimeoutError:
            self._rejected.labels("memory").inc()
            raise Overloaded(
                "the gateway's memory budget is taken by requests in progress; retry later",
                retry_after_s=self._retry_after_s,
            ) from None
        except asyncio.CancelledError:
            if granted.done() and not granted.cancelled():
                self._release(amount)  # granted in the same instant the caller went away
            raise
        finally:
            self._grant()  # a waiter that gave up at the head must not hold up those behind it

    def _fits(self, amount: int) -> bool:
        if self._used + amount > self.total:
            return False
        if self._shortfall is None:
            return True
        # Measured only when the static budget would allow it (a /proc read).
        spare = self.total - self._used - amount
        return self._shortfall(spare) <= spare

    def _take(self, amount: int) -> None:
        self._used += amount
        self._reserved.set(self._used)

    def _release(self, amount: int) -> None:
        self._used -= amount
        self._reserved.set(self._used)
        self._grant()

    def _grant(self) -> None:
        while self._waiters:
            amount, granted = self._waiters[0]
            if granted.done():  # timed out or cancelled
                self._waiters.popleft()
                continue
            if not self._fits(amount):
                return
            self._waiters.popleft()
            self._take(amount)
            granted.set_result(None)


@dataclass(frozen=True)
class GatewayMemory:
    """The budget's two pools: bodies being read, and the work on them (decode, analysis, pictures)."""

    bodies: MemoryBudget
    work: MemoryBudget

    @property
    def used(self) -> int:
        return self.bodies.used + self.work.used


@dataclass
class RestingGrowth:
    """How far the gateway's memory at rest has grown: resident memory, less the reservations in use (an
    upper bound of what they have allocated), less the larger of ``reserve`` and the resident memory the
    first time it is asked (the warm start, before any request ran). The work pool's ``shortfall``.

    The baseline is measured, not only configured: a gateway that starts above its reserve (more models,
    another allocator, an app embedded in a bigger process such as the test runner) would otherwise refuse
    every request from the start; what matters is what grows after it (heaps fragmenting, caches filling)."""

    reserve: int
    resident: Callable[[], int]
    memory: GatewayMemory | None = None
    baseline: int | None = None
    trim: Callable[[], bool] | None = None  # frees the allocator's unused heap; False when it did not run
    growth: Gauge | None = None

    def __call__(self, spare: int = 0) -> int:
        """The growth now; over ``spare`` (it would refuse the request at hand), the free heap is handed
        back first, so ordinary traffic, which leaves room, never pays for a trim."""
        grown = self._measure()
        if grown > spare and self.trim is not None and self.trim():
            grown = self._measure()
        if self.growth is not None:
            self.growth.set(grown)
        return grown

    def _measure(self) -> int:
        held = self.memory.used if self.memory is not None else 0
        now = self.resident() - held
        if self.baseline is None:
            self.baseline = max(self.reserve, now)
        return max(0, now - self.baseline)


class HeapTrim:
    """glibc's ``malloc_trim(0)``: hands the free pages of every malloc heap back to the system. It walks
    the whole heap on the event loop (its cost is on docs/robustness.md), so it runs at most once per
    ``interval_s`` and only once resting memory has grown; does nothing where the C library is not glibc
    (there is no such call, and other allocators return memory on their own terms)."""

    def __init__(
        self, interval_s: float, trims: Counter, *, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self._interval_s, self._trims, self._clock = interval_s, trims, clock
        self._last = -float("inf")
        self._call = _malloc_trim()

    def __call__(self) -> bool:
        now = self._clock()
        if self._call is None or now - self._last < self._interval_s:
            return False
        self._last = now
        self._call(0)
        self._trims.inc()
        return True


def _malloc_trim() -> Callable[[int], int] | None:
    name = ctypes.util.find_library("c")
    try:
        call: Callable[[int], int] = ctypes.CDLL(name).malloc_trim
    except (OSError, AttributeError, TypeError):
        logger.info("no malloc_trim in the C library (%s): freed heap memory is not handed back", name)
        return None
    return call


class RecentReading:
    """A reading reused for ``max_age_s``: /proc is read with three system calls, each of which lets the
    event loop's thread give up the GIL and wait to get it back behind the detector's threads; the budget
    asks for resident memory on every reservation, and a reading a tenth of a second old is as good."""

    def __init__(
        self, read: Callable[[], int], max_age_s: float, *, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self._read, self._max_age_s, self._clock = read, max_age_s, clock
        self._value, self._at = 0, -float("inf")

    def __call__(self) -> int:
        now = self._clock()
        if now - self._at >= self._max_age_s:
            self._value, self._at = self._read(), now
        return self._value


def resident_bytes() -> int:
    """This process's resident memory now (Linux /proc; 0 where there is none: nothing is measured)."""
    try:
        with open("/proc/self/statm", "rb") as statm:
            return int(statm.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
    except (OSError, ValueError, IndexError):
        return 0
