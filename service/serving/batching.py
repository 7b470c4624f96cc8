"""The batching policy of every pipeline: how a request's rows are split into Triton calls.

Each call carries at most the model's ``max_batch_size`` rows, and one request keeps at most
``BATCHES_IN_FLIGHT`` of its calls in Triton at a time; Triton's dynamic batcher merges across requests.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import TypeVar

from service.arrays import FloatArray
from service.inference.base import ServedModel

T = TypeVar("T")


# Calls one request keeps in Triton at once: one running and one queued keeps the model busy, while a
# request with hundreds of faces cannot fill the queue and time out everyone's requests (and its own).
BATCHES_IN_FLIGHT = 2


async def run_batched(
    model: ServedModel, items: FloatArray, call: Callable[[ServedModel, FloatArray], Awaitable[T]]
) -> list[T]:
    """Never more than the model's max_batch_size per call, at most BATCHES_IN_FLIGHT calls at a time."""
    return await run_in_batches(model, len(items), lambda part: call(model, items[part]))


async def run_in_batches(model: ServedModel, count: int, call: Callable[[slice], Awaitable[T]]) -> list[T]:
    """``run_batched`` for calls that slice several arrays: ``call(rows)`` for each batch of rows."""
    gate = asyncio.Semaphore(BATCHES_IN_FLIGHT)

    async def one(part: slice) -> T:
        async with gate:
            return await call(part)

    return list(await asyncio.gather(*(one(part) for part in batches(count, model.max_batch_size))))


def batches(count: int, max_batch_size: int) -> list[slice]:
    """Consecutive slices of at most ``max_batch_size`` rows covering ``count`` rows."""
    return [slice(start, min(start + max_batch_size, count)) for start in range(0, count, max_batch_size)]
