"""AdmissionControl on its own: a fixed number of slots, refused beyond, every slot given back."""

from __future__ import annotations

import asyncio

import pytest
from prometheus_client import CollectorRegistry, Counter, Gauge

from service.exceptions import Overloaded
from service.serving.admission import AdmissionControl

TIMEOUT_S = 5.0


def control(limit: int, kind: str = "image") -> tuple[AdmissionControl, Counter, Gauge]:
    registry = CollectorRegistry()
    rejected = Counter("rejected", "r", ["reason"], registry=registry)
    in_flight = Gauge("in_flight", "i", registry=registry)
    return AdmissionControl(limit, rejected=rejected, in_flight=in_flight, kind=kind), rejected, in_flight


def refusals(counter: Counter, reason: str) -> float:
    return counter.labels(reason)._value.get()


async def hold_all(
    admission: AdmissionControl, count: int, release: asyncio.Event
) -> list[asyncio.Task[None]]:
    """``count`` tasks each inside a slot until ``release`` is set; returns once all of them are in."""
    inside = asyncio.Semaphore(0)

    async def holder() -> None:
        async with admission.slot():
            inside.release()
            await asyncio.wait_for(release.wait(), TIMEOUT_S)

    tasks = [asyncio.create_task(holder()) for _ in range(count)]
    for _ in range(count):
        await asyncio.wait_for(inside.acquire(), TIMEOUT_S)
    return tasks


async def test_limit_slots_are_given_and_the_next_is_refused_with_retry_after() -> None:
    admission, rejected, in_flight = control(3, kind="video")
    release = asyncio.Event()
    holders = await hold_all(admission, 3, release)
    assert in_flight._value.get() == 3
    with pytest.raises(Overloaded) as refused:
        async with admission.slot():
            pytest.fail("a fourth slot was given")
    assert refused.value.retry_after_s == 1
    assert refused.value.message == "3 videos are already in progress; retry later"
    assert refusals(rejected, "video_overloaded") == 1
    assert in_flight._value.get() == 3  # the refusal took nothing
    release.set()
    await asyncio.wait_for(asyncio.gather(*holders), TIMEOUT_S)
    assert in_flight._value.get() == 0


async def test_a_slot_is_given_back_when_the_work_raises() -> None:
    admission, rejected, in_flight = control(2)
    for _ in range(5):  # more failures than slots: a leaked slot would refuse the next ones
        with pytest.raises(RuntimeError):
            async with admission.slot():
                raise RuntimeError("inference failed mid-way")
    assert in_flight._value.get() == 0
    release = asyncio.Event()
    holders = await hold_all(admission, 2, release)  # all `limit` slots are free again
    with pytest.raises(Overloaded):
        async with admission.slot():
            pass
    release.set()
    await asyncio.wait_for(asyncio.gather(*holders), TIMEOUT_S)
    assert refusals(rejected, "image_overloaded") == 1


async def test_a_slot_is_given_back_when_the_work_is_cancelled() -> None:
    admission, _, in_flight = control(1)
    release = asyncio.Event()
    (holder,) = await hold_all(admission, 1, release)
    holder.cancel()
    with pytest.raises(asyncio.CancelledError):
        await asyncio.wait_for(holder, TIMEOUT_S)
    assert in_flight._value.get() == 0
    async with admission.slot():  # free again
        assert in_flight._value.get() == 1


async def test_sequential_requests_never_run_out_of_slots() -> None:
    admission, _, in_flight = control(1)
    for _ in range(10):
        async with admission.slot():
            assert in_flight._value.get() == 1
    assert in_flight._value.get() == 0


async def test_a_zero_limit_refuses_everything() -> None:
    admission, rejected, _ = control(0)
    with pytest.raises(Overloaded):
        async with admission.slot():
            pass
    assert refusals(rejected, "image_overloaded") == 1
