"""Triton behind a typed interface: one coroutine per model kind, InferInput plumbing hidden here.

One async client (gRPC aio by default) is reused across requests. When Triton goes away the client is
dropped and rebuilt on the next call, so a restarted Triton is picked up without restarting the gateway.
"""

from __future__ import annotations

import asyncio
import functools
import logging
import time
from collections.abc import Awaitable, Callable, Sequence
from typing import Any

import numpy as np

from fermodels.contract import (
    EMBEDDING_OUTPUT,
    IMAGE_INPUT,
    LANDMARKS_INPUT,
    PBTXT_PARAMETER_KEY,
    PROBABILITIES_OUTPUT,
    TEXT_ENCODER_INPUTS,
    TEXT_ENCODER_OUTPUT,
    TEXT_ENCODER_PARAMETER_KEY,
    ModelConfig,
    TextEncoderConfig,
)
from service.arrays import FloatArray, IntArray
from service.exceptions import (
    InferenceFailed,
    InferenceTimeout,
    InferenceUnavailable,
    ModelNotFound,
    Overloaded,
    ServiceError,
)
from service.inference.base import ClipOutputs, ImageOutputs, RepositoryEntry, ServedModel, ServedTextEncoder
from service.inference.connection import SharedClient
from service.metrics import Metrics

logger = logging.getLogger(__name__)

NamedTensors = Sequence[tuple[str, FloatArray | IntArray]]  # (input name, values)
_TRITON_DTYPES: dict[type, str] = {np.float32: "FP32", np.int64: "INT64"}
# gRPC reconnect backoff grows to 120 s by default; a restarted Triton should be found within seconds.
_GRPC_CHANNEL_ARGS = [
    ("grpc.max_send_message_length", 2**31 - 1),
    ("grpc.max_receive_message_length", 2**31 - 1),
    ("grpc.initial_reconnect_backoff_ms", 200),
    ("grpc.max_reconnect_backoff_ms", 2000),
    # Spread calls over every address the name resolves to (a headless Kubernetes Service lists each
    # Triton pod), instead of pinning this gateway to the first pod it connected to.
    ("grpc.lb_policy_name", "round_robin"),
]


class TritonBackend:
    """``InferenceBackend`` over Triton's gRPC or HTTP protocol."""

    def __init__(
        self, url: str, *, protocol: str, timeout_s: float, retry_after_s: int, metrics: Metrics
    ) -> None:
        self._url, self._protocol = url, protocol
        self._timeout_s, self._retry_after_s = timeout_s, retry_after_s
        self._metrics = metrics
        self._client: SharedClient | None = None
        self._module = _client_module(protocol)
        self._models: dict[str, ServedModel] = {}
        self._text_encoders: dict[str, ServedTextEncoder] = {}

    # -- lifecycle -------------------------------------------------------------------------------
    def _connection(self) -> SharedClient:
        if self._client is None:
            self._client = SharedClient(self._new_client())
        return self._client

    def _new_client(self) -> Any:
        if self._protocol == "grpc":
            return self._module.InferenceServerClient(self._url, channel_args=_GRPC_CHANNEL_ARGS)
        return self._module.InferenceServerClient(self._url, conn_timeout=self._timeout_s)

    async def _drop_connection(self, shared: SharedClient) -> None:
        """Retire ``shared``; a newer client, made after it broke, is left alone."""
        if self._client is shared:
            self._client = None
            self._models.clear()  # a restarted server may serve other versions
            self._text_encoders.clear()
        await shared.retire()

    async def close(self) -> None:
        if self._client is not None:
            await self._drop_connection(self._client)

    # -- health and model configs ----------------------------------------------------------------
    async def server_ready(self) -> bool:
        try:
            return bool(await self._call(lambda client: client.is_server_ready()))
        except ServiceError:
            return False

    async def model_statuses(self) -> list[RepositoryEntry]:
        index = await self._call(self._repository_index)
        return [
            RepositoryEntry(
                name=entry["name"], version=str(entry.get("version", "")), state=entry.get("state", "")
            )
            for entry in index
        ]

    async def _repository_index(self, client: Any) -> list[dict[str, Any]]:
        if self._protocol == "grpc":
            index: dict[str, Any] = await client.get_model_repository_index(as_json=True)
            return list(index.get("models", []))
        return list(await client.get_model_repository_index())

    async def served_model(self, name: str) -> ServedModel:
        if name not in self._models:
            self._models[name] = await self._call(functools.partial(self._load_served_model, name))
        return self._models[name]

    async def _load_served_model(self, name: str, client: Any) -> ServedModel:
        return parse_served_model(*await self._config_and_metadata(name, client))

    async def served_text_encoder(self, name: str) -> ServedTextEncoder:
        if name not in self._text_encoders:
            loaded = await self._call(functools.partial(self._config_and_metadata, name))
            self._text_encoders[name] = parse_text_encoder(*loaded)
        return self._text_encoders[name]

    async def _config_and_metadata(self, name: str, client: Any) -> tuple[dict[str, Any], dict[str, Any]]:
        if not await client.is_model_ready(name):
            raise ModelNotFound(f"model {name!r} is not served or not ready")
        if self._protocol == "grpc":
            config = (await client.get_model_config(name, as_json=True))["config"]
            return config, await client.get_model_metadata(name, as_json=True)
        return await client.get_model_config(name), await client.get_model_metadata(name)

    # -- inference -------------------------------------------------------------------------------
    async def infer_image(
        self, model: ServedModel, crops: FloatArray, landmarks: FloatArray | None = None
    ) -> ImageOutputs:
        """One Triton call; the caller keeps ``len(crops) <= model.max_batch_size``. ``landmarks``: the
        model's second input, for a model whose config has ``num_landmarks``."""
        config = model.config
        result = await self._timed_call(model, crops, landmarks)
        probabilities, embeddings, *text = (
            np.asarray(result.as_numpy(name), dtype=np.float32) for name in config.output_names
        )
        none = np.zeros((len(crops), 0), dtype=np.float32)  # a model without prompts has no OUTPUT__2
        affect = (
            np.asarray(result.as_numpy(config.affect_output_names[0]), dtype=np.float32)
            if config.affect_outputs
            else none
        )
        return ImageOutputs(probabilities, embeddings, text[0] if text else none, affect)

    async def infer_clip(self, model: ServedModel, clips: FloatArray) -> ClipOutputs:
        """One Triton call with N clips of T aligned crops each; N <= ``model.max_batch_size``."""
        result = await self._timed_call(model, clips)
        probabilities, embeddings = (
            np.asarray(result.as_numpy(name), np.float32) for name in (PROBABILITIES_OUTPUT, EMBEDDING_OUTPUT)
        )
        return ClipOutputs(probabilities, embeddings)

    async def infer_text(self, encoder: ServedTextEncoder, ids: IntArray, mask: IntArray) -> FloatArray:
        """One Triton call with N tokenised prompts (ids and attention mask, N x L)."""
        if len(ids) > encoder.config.max_batch_size:
            raise ValueError(f"{len(ids)} prompts exceed max_batch_size {encoder.config.max_batch_size}")
        inputs = list(zip(TEXT_ENCODER_INPUTS, (ids, mask), strict=True))
        result = await self._timed_infer(encoder.name, inputs, (TEXT_ENCODER_OUTPUT,))
        return np.asarray(result.as_numpy(TEXT_ENCODER_OUTPUT), dtype=np.float32)

    async def _timed_call(
        self, model: ServedModel, batch: FloatArray, landmarks: FloatArray | None = None
    ) -> Any:
        if len(batch) > model.max_batch_size:
            raise ValueError(f"{len(batch)} items exceed max_batch_size {model.max_batch_size}")
        self._metrics.batch_size.labels(model.name).observe(len(batch))
        inputs: list[tuple[str, FloatArray | IntArray]] = [(IMAGE_INPUT, batch)]
        if landmarks is not None:
            inputs.append((LANDMARKS_INPUT, landmarks))
        outputs = (*model.config.output_names, *model.config.affect_output_names)
        return await self._timed_infer(model.name, inputs, outputs)

    async def _timed_infer(self, name: str, inputs: NamedTensors, outputs: tuple[str, ...]) -> Any:
        """One inference call of any model, timed into fer_triton_request_duration_seconds."""
        start, outcome = time.perf_counter(), "error"
        try:
            result = await self._call(functools.partial(self._send, name, inputs, outputs))
            outcome = "ok"
        finally:
            self._metrics.triton_seconds.labels(name, outcome).observe(time.perf_counter() - start)
        return result

    async def _send(
        self,
        name: str,
        inputs: NamedTensors,
        outputs: tuple[str, ...],
        client: Any,
    ) -> Any:
        module = self._module
        infer_inputs = []
        for input_name, values in inputs:
            # The contract's dtypes: FP32 crops and landmarks, INT64 token ids and masks.
            dtype = np.int64 if np.issubdtype(values.dtype, np.integer) else np.float32
            contiguous = np.ascontiguousarray(values, dtype=dtype)
            infer_input = module.InferInput(input_name, list(contiguous.shape), _TRITON_DTYPES[dtype])
            infer_input.set_data_from_numpy(contiguous)
            infer_inputs.append(infer_input)
        requested = [module.InferRequestedOutput(output) for output in outputs]
        return await client.infer(name, infer_inputs, outputs=requested)

    # -- error mapping ---------------------------------------------------------------------------
    async def _call(self, operation: Callable[[Any], Awaitable[Any]]) -> Any:
        """Run one Triton operation on the shared client under the deadline; failures become service
        errors, and every connection-level failure a 503 (never a 500)."""
        shared = self._connection()
        try:
            async with shared.use() as client:
                return await asyncio.wait_for(operation(client), timeout=self._timeout_s)
        except ServiceError:
            raise
        except TimeoutError as exc:
            raise InferenceTimeout(f"Triton did not answer within {self._timeout_s:g} s") from exc
        except asyncio.CancelledError as exc:
            if _cancelled_from_outside():
                raise  # the request itself is being cancelled (client gone, shutdown): let it go
            # grpc.aio cancels the calls of a channel that was closed under them: the connection is gone.
            lost = ConnectionAbortedError("the Triton call was cancelled by its client library")
            raise await self._translate(lost, shared) from exc
        except Exception as exc:
            raise await self._translate(exc, shared) from exc

    async def _translate(self, exc: Exception, shared: SharedClient) -> ServiceError:
        error = classify_triton_error(exc, self._retry_after_s)
        if isinstance(error, InferenceUnavailable):
            logger.warning("Triton at %s unavailable (%s); reconnecting on the next call", self._url, exc)
            await self._drop_connection(shared)
        return error


def _cancelled_from_outside() -> bool:
    task = asyncio.current_task()
    return task is not None and task.cancelling() > 0


def _client_module(protocol: str) -> Any:
    """tritonclient's aio module for the protocol (imported on first use: it pulls grpc or aiohttp)."""
    if protocol == "grpc":
        import tritonclient.grpc.aio as grpcclient

        return grpcclient
    import tritonclient.http.aio as httpclient

    return httpclient


def classify_triton_error(exc: Exception, retry_after_s: int) -> ServiceError:
    """Map a tritonclient / transport exception to the service error a client should see."""
    status = str(getattr(exc, "status", lambda: "")() or "")
    message = str(getattr(exc, "message", lambda: str(exc))() or exc)
    lowered = message.lower()
    # Triton's queue policy rejects with these messages (max_queue_size / default_timeout_microseconds).
    if "maximum queue size" in lowered or "request timeout expired" in lowered:
        return Overloaded("the inference queue is full; retry later", retry_after_s=1)
    if "DEADLINE_EXCEEDED" in status or "deadline" in lowered:
        return InferenceTimeout("Triton did not answer in time")
    if "unknown model" in lowered or "not found" in lowered or "NOT_FOUND" in status:
        return ModelNotFound("the requested model is not served")
    if _looks_like_connection_error(exc, status, lowered):
        return InferenceUnavailable("the inference server is unavailable", retry_after_s=retry_after_s)
    return InferenceFailed("the inference server failed to run the model")


def _looks_like_connection_error(exc: Exception, status: str, lowered: str) -> bool:
    if any(code in status for code in ("UNAVAILABLE", "CANCELLED", "ABORTED")):
        return True
    # Anything the transport libraries raise themselves (not wrapped by tritonclient into a server answer)
    # is about the connection: aiohttp's ClientError family, grpc.aio's "channel closed" UsageError, ...
    if isinstance(exc, ConnectionError | OSError) or type(exc).__module__.split(".")[0] in _TRANSPORTS:
        return True
    markers = ("connect", "unavailable", "socket closed", "connection", "server disconnected", "closed")
    return any(marker in lowered for marker in markers)


_TRANSPORTS = frozenset({"aiohttp", "grpc"})


def _latest_version(metadata: dict[str, Any]) -> str:
    versions = sorted(metadata.get("versions", []) or ["1"], key=lambda v: int(v) if v.isdigit() else 0)
    return str(versions[-1])


def parse_text_encoder(config: dict[str, Any], metadata: dict[str, Any]) -> ServedTextEncoder:
    """Build a ServedTextEncoder from Triton's JSON model config (its fer_text_encoder parameter)."""
    parameters = config.get("parameters", {})
    if TEXT_ENCODER_PARAMETER_KEY not in parameters:
        raise InferenceFailed(f"model {config.get('name')!r} has no {TEXT_ENCODER_PARAMETER_KEY} parameter")
    encoder = TextEncoderConfig.from_json(parameters[TEXT_ENCODER_PARAMETER_KEY]["string_value"])
    return ServedTextEncoder(config=encoder, version=_latest_version(metadata))


def parse_served_model(config: dict[str, Any], metadata: dict[str, Any]) -> ServedModel:
    """Build a ServedModel from Triton's JSON model config and metadata."""
    parameters = config.get("parameters", {})
    if PBTXT_PARAMETER_KEY not in parameters:
        raise InferenceFailed(f"model {config.get('name')!r} has no {PBTXT_PARAMETER_KEY} parameter")
    model_config = ModelConfig.from_json(parameters[PBTXT_PARAMETER_KEY]["string_value"])
    return ServedModel(
        config=model_config,
        version=_latest_version(metadata),
        max_batch_size=int(config.get("max_batch_size", 1)),
    )
