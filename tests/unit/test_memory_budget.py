"""The memory budget: reservations before allocation, first come first served, bounded waits."""

from __future__ import annotations

import asyncio
import os
from pathlib import Path

import pytest
from prometheus_client import CollectorRegistry, Counter, Gauge

from service.exceptions import Overloaded
from service.serving.memory import (
    GatewayMemory,
    HeapTrim,
    MemoryBudget,
    RecentReading,
    RestingGrowth,
    resident_bytes,
)

GATE_TIMEOUT_S = 5.0


def budget(total: int, wait_s: float = 5.0) -> MemoryBudget:
    registry = CollectorRegistry()
    return MemoryBudget(
        total,
        wait_s=wait_s,
        retry_after_s=2,
        reserved=Gauge("reserved", "r", registry=registry),
        rejected=Counter("rejected", "r", ["reason"], registry=registry),
    )


async def queued(memory: MemoryBudget, count: int) -> None:
    """Until ``count`` requests wait in the budget's queue (event-loop turns, not wall-clock time)."""
    for _ in range(1000):
        if sum(not granted.done() for _, granted in memory._waiters) == count:
            return
        await asyncio.sleep(0)
    raise AssertionError(f"never {count} waiting: {len(memory._waiters)} in the queue")


async def test_reservations_within_the_budget_go_through_and_are_returned() -> None:
    memory = budget(100)
    async with memory.hold(60), memory.hold(40):
        assert memory.used == 100
    assert memory.used == 0


async def test_a_reservation_that_does_not_fit_waits_for_memory_to_be_returned() -> None:
    memory = budget(100)
    released = asyncio.Event()
    order: list[str] = []

    async def big() -> None:
        async with memory.hold(80):
            order.append("big")
            await asyncio.wait_for(released.wait(), GATE_TIMEOUT_S)

    async def second() -> None:
        async with memory.hold(50):
            order.append("second")

    first = asyncio.create_task(big())
    await asyncio.sleep(0)
    waiting = asyncio.create_task(second())
    await queued(memory, 1)
    assert order == ["big"] and memory.used == 80  # the 50 waits: 80 + 50 > 100
    released.set()
    await asyncio.wait_for(asyncio.gather(first, waiting), GATE_TIMEOUT_S)
    assert order == ["big", "second"] and memory.used == 0


async def test_waiting_is_bounded_then_429_with_retry_after_and_nothing_is_held() -> None:
    memory = budget(100, wait_s=0.1)
    async with memory.hold(100):
        with pytest.raises(Overloaded) as refused:
            async with memory.hold(1):
                pass
    assert refused.value.retry_after_s == 2 and memory.used == 0


async def test_first_come_first_served_a_small_request_does_not_overtake_a_waiting_large_one() -> None:
    memory = budget(100)
    order: list[str] = []
    gate = asyncio.Event()

    async def holder() -> None:
        async with memory.hold(50):
            await asyncio.wait_for(gate.wait(), GATE_TIMEOUT_S)

    async def want(name: str, amount: int) -> None:
        async with memory.hold(amount):
            order.append(name)

    tasks = [asyncio.create_task(holder())]
    await asyncio.sleep(0)
    tasks.append(asyncio.create_task(want("large", 100)))
    await asyncio.sleep(0)
    tasks.append(asyncio.create_task(want("small", 10)))  # would fit now, but the large one came first
    await queued(memory, 2)
    assert order == []
    gate.set()
    await asyncio.wait_for(asyncio.gather(*tasks), GATE_TIMEOUT_S)
    assert order == ["large", "small"] and memory.used == 0


async def test_a_waiter_that_goes_away_releases_its_place_and_leaks_nothing() -> None:
    memory = budget(100)
    gate = asyncio.Event()

    async def holder() -> None:
        async with memory.hold(100):
            await asyncio.wait_for(gate.wait(), GATE_TIMEOUT_S)

    held = asyncio.create_task(holder())
    await asyncio.sleep(0)
    waiter = asyncio.create_task(memory.hold(30).__aenter__())
    await queued(memory, 1)
    waiter.cancel()
    with pytest.raises(asyncio.CancelledError):
        await waiter
    gate.set()
    await asyncio.wait_for(held, GATE_TIMEOUT_S)
    assert memory.used == 0
    async with memory.hold(100):  # the whole budget is free again
        assert memory.used == 100


async def test_a_request_larger_than_the_budget_waits_for_all_of_it_instead_of_never_running() -> None:
    memory = budget(100)
    async with memory.hold(500):
        assert memory.used == 100


async def test_a_refusal_is_counted_as_memory_and_says_why() -> None:
    memory = budget(100, wait_s=0.05)
    async with memory.hold(100):
        with pytest.raises(Overloaded) as refused:
            async with memory.hold(1):
                pass
    assert (
        refused.value.message == "the gateway's memory budget is taken by requests in progress; retry later"
    )
    assert memory._rejected.labels("memory")._value.get() == 1  # type: ignore[attr-defined]


async def test_a_waiter_is_not_granted_before_its_bytes_are_free() -> None:
    memory = budget(100)
    gate_a, gate_b = asyncio.Event(), asyncio.Event()
    got: list[str] = []

    async def holder(amount: int, gate: asyncio.Event) -> None:
        async with memory.hold(amount):
            await asyncio.wait_for(gate.wait(), GATE_TIMEOUT_S)

    async def waiter() -> None:
        async with memory.hold(50):
            got.append("c")

    a, b = asyncio.create_task(holder(60, gate_a)), asyncio.create_task(holder(30, gate_b))
    await asyncio.sleep(0)
    c = asyncio.create_task(waiter())
    await queued(memory, 1)
    gate_b.set()
    await asyncio.wait_for(b, GATE_TIMEOUT_S)
    await asyncio.sleep(0)
    assert got == [] and memory.used == 60  # 60 + 50 > 100: still waiting
    gate_a.set()
    await asyncio.wait_for(asyncio.gather(a, c), GATE_TIMEOUT_S)
    assert got == ["c"] and memory.used == 0


async def test_a_waiter_behind_one_that_gave_up_is_granted_at_once_when_it_fits() -> None:
    """50 held; a 60 waits (no room), a 30 queues behind it (first come, first served). When the 60 gives up,
    the 30 fits and is granted then, not only when the 50 is released."""
    memory = budget(100)
    gate = asyncio.Event()
    inside = asyncio.Event()

    async def holder() -> None:
        async with memory.hold(50):
            await asyncio.wait_for(gate.wait(), GATE_TIMEOUT_S)

    async def small() -> None:
        async with memory.hold(30):
            inside.set()

    held = asyncio.create_task(holder())
    await asyncio.sleep(0)
    large = asyncio.create_task(memory.hold(60).__aenter__())
    second = asyncio.create_task(small())
    await queued(memory, 2)
    large.cancel()
    with pytest.raises(asyncio.CancelledError):
        await large
    await asyncio.wait_for(inside.wait(), GATE_TIMEOUT_S)  # while the 50 is still held
    assert not gate.is_set()
    gate.set()
    await asyncio.wait_for(asyncio.gather(held, second), GATE_TIMEOUT_S)
    assert memory.used == 0


def pool(total: int, shortfall: RestingGrowth | None = None, wait_s: float = 5.0) -> MemoryBudget:
    registry = CollectorRegistry()
    return MemoryBudget(
        total,
        wait_s=wait_s,
        retry_after_s=2,
        reserved=Gauge("reserved", "r", registry=registry),
        rejected=Counter("rejected", "r", ["reason"], registry=registry),
        shortfall=shortfall,
    )


async def test_bodies_waiting_for_their_work_cannot_take_the_works_memory() -> None:
    """Bodies fill their own pool; a body's work is still granted at once (with one pool it waited for
    memory held only by bodies that waited too, until every request was refused)."""
    memory = GatewayMemory(bodies=pool(40), work=pool(100))
    async with memory.bodies.hold(20), memory.bodies.hold(20), memory.work.hold(100):
        assert memory.used == 140
    assert memory.used == 0


async def test_the_work_pool_shrinks_by_the_resting_memorys_growth_over_the_reserve() -> None:
    resident = [1000]
    growth = RestingGrowth(reserve=1000, resident=lambda: resident[0])
    memory = GatewayMemory(bodies=pool(40), work=pool(100, growth, wait_s=0.05))
    growth.memory = memory
    async with memory.work.hold(100):  # at rest as configured: the whole pool
        pass
    resident[0] = 1030  # the rest grew by 30 (heaps, caches): 70 left
    with pytest.raises(Overloaded):
        async with memory.work.hold(80):
            pass
    async with memory.work.hold(70):
        resident[0] = 1030 + 70  # what the request allocated is not counted as growth
        async with memory.bodies.hold(10):
            resident[0] += 10
            assert growth() == 30


async def test_a_gateway_starting_above_its_reserve_serves_and_counts_growth_from_its_start() -> None:
    resident = [1500]  # warm start already 500 over the configured reserve (an embedded app, more models)
    growth = RestingGrowth(reserve=1000, resident=lambda: resident[0])
    memory = GatewayMemory(bodies=pool(40), work=pool(100, growth, wait_s=0.05))
    growth.memory = memory
    async with memory.work.hold(100):  # the whole pool: the start is the baseline
        pass
    resident[0] = 1540  # grew 40 since the start: 60 left
    with pytest.raises(Overloaded):
        async with memory.work.hold(70):
            pass
    async with memory.work.hold(60):
        pass


async def test_free_heap_is_handed_back_before_growth_shrinks_the_pool() -> None:
    """Issue 26's mix: a near-limit request left 300 free in the heaps; counted as growth, it refused every
    later one. Trimmed first, only what stays resident counts."""
    resident, trims = [1300], []

    def trim() -> bool:
        trims.append(resident[0])
        resident[0] = 1020  # the heaps' free pages went back; 20 is really held (a cache)
        return True

    growth = RestingGrowth(reserve=1000, resident=lambda: resident[0], trim=trim)
    memory = GatewayMemory(bodies=pool(40), work=pool(100, growth, wait_s=0.05))
    growth.memory = memory
    async with memory.work.hold(80):  # 1300 measured at the start was the baseline: trim is not needed
        pass
    assert trims == []
    resident[0] = 1600  # a large request came and went: 300 over the start, all of it free heap
    async with memory.work.hold(100):
        pass
    assert trims == [1600] and growth() == 0  # 1020 is under the 1300 baseline


async def test_growth_that_a_trim_cannot_return_still_shrinks_the_pool() -> None:
    resident = [1000]
    growth = RestingGrowth(reserve=1000, resident=lambda: resident[0], trim=lambda: True)
    memory = GatewayMemory(bodies=pool(40), work=pool(100, growth, wait_s=0.05))
    growth.memory = memory
    growth()
    resident[0] = 1050  # held for real: the trim returns nothing
    with pytest.raises(Overloaded):
        async with memory.work.hold(60):
            pass


def test_heap_trim_runs_at_most_once_per_interval_and_is_counted() -> None:
    now = [100.0]
    trims = Counter("trims", "t", registry=CollectorRegistry())
    trim = HeapTrim(1.0, trims, clock=lambda: now[0])
    assert trim() is True  # glibc here: the call exists and ran
    assert trim() is False
    now[0] += 1.0
    assert trim() is True
    assert trims._value.get() == 2


def test_heap_trim_returns_free_heap_pages_to_the_system() -> None:
    """The real call: a heap freed by Python objects is resident until trimmed (glibc keeps it)."""
    trim = HeapTrim(0.0, Counter("trims", "t", registry=CollectorRegistry()))
    chunks = [bytearray(4096) for _ in range(60_000)]  # ~240 MiB of small allocations on the heap
    keep = chunks[-1]
    del chunks
    before = resident_bytes()
    assert trim() is True
    assert resident_bytes() < before - 100 * 2**20, (before, resident_bytes())
    del keep


def test_resting_growth_without_a_gateway_counts_from_the_larger_of_reserve_and_warm_start() -> None:
    resident = [150]
    growth = RestingGrowth(reserve=200, resident=lambda: resident[0])
    assert growth() == 0  # 150 resident, under the 200 reserve: the baseline is the reserve
    resident[0] = 260
    assert growth() == 60
    warm = RestingGrowth(reserve=100, resident=lambda: resident[0])
    assert warm() == 0  # 260 resident at the first call: that is the baseline
    resident[0] = 300
    assert warm() == 40


def test_resident_bytes_is_this_processs_resident_memory() -> None:
    status = Path("/proc/self/status").read_text()
    rss_kib = int(next(line for line in status.splitlines() if line.startswith("VmRSS:")).split()[1])
    measured = resident_bytes()
    assert measured % os.sysconf("SC_PAGE_SIZE") == 0
    assert abs(measured - rss_kib * 1024) < 0.05 * rss_kib * 1024  # read a moment apart


async def test_the_heap_is_trimmed_only_when_growth_would_refuse_the_request() -> None:
    """Ordinary traffic leaves room in the pool: it must never pay for a trim (a walk of the whole heap on
    the event loop); only a request that the growth would refuse triggers one."""
    resident, trims = [1000], []

    def trim() -> bool:
        trims.append(resident[0])
        return True

    growth = RestingGrowth(reserve=1000, resident=lambda: resident[0], trim=trim)
    memory = GatewayMemory(bodies=pool(40), work=pool(100, growth, wait_s=0.05))
    growth.memory = memory
    growth()  # the warm start: 1000
    resident[0] = 1030  # grown by 30 that a trim cannot return
    async with memory.work.hold(50):  # 50 spare after it: 30 of growth still fits
        pass
    assert trims == []
    with pytest.raises(Overloaded):
        async with memory.work.hold(80):  # 20 spare < 30 grown: try a trim, then refuse
            pass
    assert trims  # tried (once per check while it waited; HeapTrim itself rate-limits the real call)


def test_a_recent_reading_is_reused_until_it_is_max_age_old() -> None:
    now, reads = [0.0], []

    def read() -> int:
        reads.append(now[0])
        return len(reads)

    reading = RecentReading(read, 0.1, clock=lambda: now[0])
    assert [reading(), reading()] == [1, 1]
    now[0] = 0.099
    assert reading() == 1
    now[0] = 0.1
    assert reading() == 2 and reads == [0.0, 0.1]


async def test_growth_counts_against_what_is_left_after_the_requests_in_progress() -> None:
    resident = [1000]
    growth = RestingGrowth(reserve=1000, resident=lambda: resident[0])
    memory = GatewayMemory(bodies=pool(40), work=pool(100, growth, wait_s=0.05))
    growth.memory = memory
    growth()
    resident[0] = 1030  # 30 of growth
    async with memory.work.hold(40):
        resident[0] += 40  # what the request in progress allocated is not growth
        async with memory.work.hold(30):  # 100 - 40 - 30 = 30 left: exactly the growth
            pass
        with pytest.raises(Overloaded):  # 100 - 40 - 31 = 29 left < 30 grown
            async with memory.work.hold(31):
                pass


def test_the_growth_gauge_shows_the_growth_after_the_trim() -> None:
    resident = [1000]
    gauge = Gauge("growth", "g", registry=CollectorRegistry())

    def trim() -> bool:
        resident[0] -= 50  # 50 of the 80 were free heap
        return True

    growth = RestingGrowth(reserve=1000, resident=lambda: resident[0], trim=trim, growth=gauge)
    growth()
    resident[0] = 1080
    assert growth() == 30 and gauge._value.get() == 30
