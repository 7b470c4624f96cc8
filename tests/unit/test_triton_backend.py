"""TritonBackend's connection handling against a fake tritonclient that behaves like grpc.aio: closing the
client cancels every call still running on it."""

from __future__ import annotations

import asyncio
from types import SimpleNamespace
from typing import Any

import numpy as np
import pytest

from fermodels.contract import RAFDB_LABELS, ModelConfig
from service.exceptions import InferenceUnavailable
from service.inference import triton
from service.inference.base import ServedModel
from service.inference.triton import TritonBackend, classify_triton_error
from service.metrics import Metrics
from tests.unit.test_errors import FakeTritonError

MODEL = ServedModel(
    config=ModelConfig(name="m", architecture="fake", input_size=8, labels=RAFDB_LABELS),
    version="1",
    max_batch_size=4,
)


class FakeClient:
    """Every infer waits on a future the test settles; close() cancels the pending ones, as grpc.aio does."""

    def __init__(self, *_: Any, **__: Any) -> None:
        self.pending: list[asyncio.Future[Any]] = []
        self.closed = False

    async def infer(self, *_: Any, **__: Any) -> Any:
        future: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        self.pending.append(future)
        return await future

    async def close(self) -> None:
        self.closed = True
        for future in self.pending:
            future.cancel()


class FakeInput:
    def __init__(self, *_: Any) -> None: ...

    def set_data_from_numpy(self, _: Any) -> None: ...


@pytest.fixture
def clients(monkeypatch: pytest.MonkeyPatch) -> list[FakeClient]:
    made: list[FakeClient] = []

    def new_client(*args: Any, **kwargs: Any) -> FakeClient:
        made.append(FakeClient())
        return made[-1]

    module = SimpleNamespace(
        InferenceServerClient=new_client, InferInput=FakeInput, InferRequestedOutput=lambda _: None
    )
    monkeypatch.setattr(triton, "_client_module", lambda _protocol: module)
    return made


async def calls_pending(clients: list[FakeClient], count: int) -> None:
    for _ in range(1000):  # each call reaches the fake client within a few loop iterations
        if clients and len(clients[0].pending) >= count:
            return
        await asyncio.sleep(0)
    raise AssertionError(f"{count} calls never reached the client")


async def test_triton_dying_under_concurrent_calls_gives_each_a_503(clients: list[FakeClient]) -> None:
    backend = TritonBackend("triton:1", protocol="grpc", timeout_s=5, retry_after_s=3, metrics=Metrics())
    crops = np.zeros((1, 3, 8, 8), np.float32)
    calls = [asyncio.create_task(backend.infer_image(MODEL, crops)) for _ in range(3)]
    await calls_pending(clients, 3)
    client = clients[0]
    client.pending[0].set_exception(FakeTritonError("Socket closed", "StatusCode.UNAVAILABLE"))
    with pytest.raises(InferenceUnavailable):
        await calls[0]
    await asyncio.sleep(0)
    assert not client.closed, "the shared client was closed under the calls still using it"
    for future in client.pending[1:]:
        future.set_exception(FakeTritonError("failed to connect to all addresses", "StatusCode.UNAVAILABLE"))
    for call in calls[1:]:
        with pytest.raises(InferenceUnavailable) as raised:
            await call
        assert raised.value.retry_after_s == 3
    assert client.closed  # once its last call ended


async def test_a_call_cancelled_by_the_client_library_is_a_503(clients: list[FakeClient]) -> None:
    backend = TritonBackend("triton:1", protocol="grpc", timeout_s=5, retry_after_s=3, metrics=Metrics())
    call = asyncio.create_task(backend.infer_image(MODEL, np.zeros((1, 3, 8, 8), np.float32)))
    await calls_pending(clients, 1)
    clients[0].pending[0].cancel()  # what grpc.aio does to the calls of a channel closed elsewhere
    with pytest.raises(InferenceUnavailable):
        await call


@pytest.mark.parametrize(
    "exc",
    [
        FakeTritonError("Locally cancelled by application!", "StatusCode.CANCELLED"),
        RuntimeError("Session is closed"),  # aiohttp, after the HTTP client was closed
        type("ClientPayloadError", (Exception,), {"__module__": "aiohttp.client_exceptions"})("cut"),
        type("UsageError", (Exception,), {"__module__": "grpc.aio._base_call"})("Channel is closed"),
    ],
)
def test_connection_level_failures_are_unavailable(exc: Exception) -> None:
    assert isinstance(classify_triton_error(exc, 5), InferenceUnavailable)
