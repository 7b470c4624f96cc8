"""Python-backend stand-in for Triton's libtorch backend.

The tritonserver bundled in the ``nvidia-pytriton`` wheel has only the python backend. When Triton cannot
find ``libtriton_pytorch.so`` it runs ``<backend-dir>/pytorch/model.py`` through the python backend instead,
so ``service.launcher.triton_local.prepare_home`` copies this file there and an unchanged
``platform: "pytorch_libtorch"`` model (``<version>/model.pt``, ``INPUT__N`` / ``OUTPUT__N``) is served
locally exactly as the real libtorch backend serves it in the NGC image.

Mirrors the libtorch backend where it matters: inputs are passed positionally in ``INPUT__N`` order, a
tensor or a tuple of tensors maps to ``OUTPUT__0..``, output dtypes must match the config, and the
``INTRA_OP_THREAD_COUNT`` / ``INTER_OP_THREAD_COUNT`` parameters set torch's thread pools.

Runs inside Triton's stub process (``triton_python_backend_utils`` exists only there), hence excluded from
mypy; keep it typed anyway.
"""

from __future__ import annotations

import json
import os
import re
from collections.abc import Sequence
from itertools import accumulate
from pathlib import Path
from typing import Any

import numpy as np
import torch
import triton_python_backend_utils as pb_utils

_TENSOR_INDEX = re.compile(r"__(\d+)$")


def _by_index(entries: Sequence[dict[str, Any]]) -> list[str]:
    """Names sorted by their ``__N`` suffix: the libtorch backend's positional order, not config order."""
    names = [entry["name"] for entry in entries]
    for name in names:
        if not _TENSOR_INDEX.search(name):
            raise ValueError(f"tensor name {name!r} does not follow the INPUT__N / OUTPUT__N convention")
    return sorted(names, key=lambda name: int(_TENSOR_INDEX.search(name).group(1)))  # type: ignore[union-attr]


def _index(name: str) -> int:
    return int(_TENSOR_INDEX.search(name).group(1))  # type: ignore[union-attr]


def _parameter(config: dict[str, Any], key: str) -> str | None:
    """A ``parameters { key: ... value { string_value: ... } }`` entry, or None when absent/empty."""
    value = config.get("parameters", {}).get(key, {}).get("string_value", "")
    return value or None


def _set_threads(config: dict[str, Any]) -> None:
    """Honour the libtorch backend's own thread parameters so one config.pbtxt means the same everywhere."""
    intra = _parameter(config, "INTRA_OP_THREAD_COUNT")
    # Without the parameter, torch inside the stub sizes its pool from the host's CPUs, not the ones this
    # process may use: on a 2-core sandbox its threads then fought over two cores and an STT clip ran many
    # times slower. Use the affinity.
    threads = int(intra) if intra is not None and int(intra) > 0 else len(os.sched_getaffinity(0))
    torch.set_num_threads(threads)
    inter = _parameter(config, "INTER_OP_THREAD_COUNT")
    if inter is not None and int(inter) > 0:
        try:
            torch.set_num_interop_threads(int(inter))
        except RuntimeError:
            # Torch allows this only before the first inter-op work; the stub is fresh, but never crash on it.
            pb_utils.Logger.log_warn("INTER_OP_THREAD_COUNT ignored: torch's inter-op pool already started")


def _device(args: dict[str, str]) -> torch.device:
    """GPU instances run on their assigned device when CUDA exists; everything else on CPU."""
    if args.get("model_instance_kind") == "GPU" and torch.cuda.is_available():
        return torch.device("cuda", int(args.get("model_instance_device_id", "0")))
    return torch.device("cpu")


def _as_tensors(result: Any) -> list[torch.Tensor]:
    """The forward result as a list: a tensor, or a tuple/list of tensors (OUTPUT__0, OUTPUT__1, ...)."""
    if isinstance(result, torch.Tensor):
        return [result]
    if isinstance(result, (tuple, list)) and all(isinstance(item, torch.Tensor) for item in result):
        return list(result)
    raise TypeError(f"model returned {type(result).__name__}; expected a tensor or a tuple of tensors")


def _same_inner_shapes(per_request: list[list[np.ndarray]]) -> bool:
    """Requests can share one forward only when every input agrees on all dims after the batch dim."""
    inner = [[array.shape[1:] for array in arrays] for arrays in per_request]
    return all(shapes == inner[0] for shapes in inner)


def _error_responses(count: int, exc: BaseException) -> list[Any]:
    """One error response per request: a failed batch must not take the stub (and the model) down."""
    message = f"{type(exc).__name__}: {exc}"
    pb_utils.Logger.log_error(f"pytorch runner: batch of {count} request(s) failed: {message}")
    error = pb_utils.TritonError(message)
    return [pb_utils.InferenceResponse(output_tensors=[], error=error) for _ in range(count)]


class TritonPythonModel:
    """Loads ``<model>/<version>/model.pt`` once and runs each dynamic batch as one forward call."""

    def initialize(self, args: dict[str, str]) -> None:
        config = json.loads(args["model_config"])
        _set_threads(config)
        self._device = _device(args)
        self._batched = int(config.get("max_batch_size", 0)) > 0
        self._inputs = _by_index(config.get("input", []))
        self._outputs = _by_index(config.get("output", []))
        self._dtypes = {
            out["name"]: np.dtype(pb_utils.triton_string_to_numpy(out["data_type"]))
            for out in config.get("output", [])
        }
        path = Path(args["model_repository"]) / args["model_version"] / "model.pt"
        self._model = torch.jit.load(str(path), map_location=self._device).eval()
        # The libtorch backend's switch for TorchScript's profiling optimiser, honoured the same way here.
        self._optimized = _parameter(config, "DISABLE_OPTIMIZED_EXECUTION") != "true"

    def execute(self, requests: list[Any]) -> list[Any]:
        try:
            per_request = [self._read_inputs(request) for request in requests]
        except Exception as exc:  # a malformed request fails its whole batch, never the stub
            return _error_responses(len(requests), exc)
        if self._batched and _same_inner_shapes(per_request):
            return self._run_group(per_request)
        # Unbatched models (or differing inner shapes) cannot share a forward call: run one by one.
        return [response for arrays in per_request for response in self._run_group([arrays])]

    def finalize(self) -> None:
        self._model = None

    def _read_inputs(self, request: Any) -> list[np.ndarray]:
        arrays = []
        for name in self._inputs:
            tensor = pb_utils.get_input_tensor_by_name(request, name)
            if tensor is None:
                raise ValueError(f"request is missing input {name}")
            arrays.append(tensor.as_numpy())
        return arrays

    def _run_group(self, per_request: list[list[np.ndarray]]) -> list[Any]:
        """One forward over the concatenated requests, split back per request; errors answer every one."""
        try:
            sizes = [arrays[0].shape[0] if self._batched else 1 for arrays in per_request]
            outputs = self._forward(per_request)
            spans = zip(_starts(sizes), sizes, strict=True)
            return [self._response(outputs, start, size) for start, size in spans]
        except Exception as exc:
            return _error_responses(len(per_request), exc)

    def _forward(self, per_request: list[list[np.ndarray]]) -> list[np.ndarray]:
        # np.concatenate copies into a fresh writable array (Triton's buffers are read-only views).
        columns = zip(*per_request, strict=True)
        joined = [np.concatenate(column) if self._batched else np.array(column[0]) for column in columns]
        with torch.inference_mode(), torch.jit.optimized_execution(self._optimized):
            tensors = [torch.from_numpy(array).to(self._device) for array in joined]
            results = _as_tensors(self._model(*tensors))
        # OUTPUT__N is the forward result's element N, as in the libtorch backend: a config may skip one
        # (an affect model lists OUTPUT__0, 1, 3 and returns an unlisted empty tensor at position 2).
        positions = [_index(name) for name in self._outputs]
        if len(results) <= max(positions, default=-1):
            raise ValueError(f"model returned {len(results)} output(s); config declares {self._outputs}")
        return [results[position].detach().cpu().numpy() for position in positions]

    def _response(self, outputs: list[np.ndarray], start: int, size: int) -> Any:
        tensors = []
        for name, array in zip(self._outputs, outputs, strict=True):
            if array.dtype != self._dtypes[name]:
                # The real libtorch backend rejects this too; casting here would hide a broken export.
                raise TypeError(f"{name} is {array.dtype}; config declares {self._dtypes[name]}")
            part = array[start : start + size] if self._batched else array
            tensors.append(pb_utils.Tensor(name, np.ascontiguousarray(part)))
        return pb_utils.InferenceResponse(output_tensors=tensors)


def _starts(sizes: list[int]) -> list[int]:
    """Offsets of each request's rows inside the concatenated batch."""
    return list(accumulate(sizes[:-1], initial=0))
