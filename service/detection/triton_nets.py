"""MTCNN's nets on Triton (``FER_DETECTOR_BACKEND=triton``): the cascade's logic stays in the gateway.

The three stages are the models ``fermodels export-detector`` writes (``mtcnn_pnet`` / ``_rnet`` / ``_onet``).
Calls are synchronous: they are made from the detection thread (service/detection/batched.py), which
already merges concurrent requests' candidates into one call per stage. Errors become the same
``ServiceError``s as the FER models' (503 + Retry-After when Triton is away, 504 on a timeout).
"""

from __future__ import annotations

import logging
from typing import Any

import numpy as np
import torch
from torch import Tensor

from fermodels.contract import DETECTOR_STAGE_NAMES, DETECTOR_STAGES
from service.detection.mtcnn import CascadeNets, Net
from service.inference.triton import classify_triton_error

logger = logging.getLogger(__name__)

# Each stage's tensors and batch limit, from the contract export writes them with.
STAGES = {stage.name: stage for stage in DETECTOR_STAGES}


class TritonStage:
    """One net as a callable: N x 3 x H x W tensor in, its output tensors back (split to max_batch_size)."""

    def __init__(self, client: Any, module: Any, name: str, timeout_s: float, retry_after_s: int) -> None:
        self._client, self._module, self._name = client, module, name
        self._stage = STAGES[name]
        self._timeout_s, self._retry_after_s = timeout_s, retry_after_s

    def __call__(self, batch: Tensor) -> tuple[Tensor, ...]:
        parts = [self._infer(part) for part in torch.split(batch, self._stage.max_batch_size)]
        return tuple(torch.cat([part[i] for part in parts]) for i in range(len(self._stage.output_names)))

    def _infer(self, batch: Tensor) -> list[Tensor]:
        pixels = np.ascontiguousarray(batch.detach().cpu().numpy(), dtype=np.float32)
        request = self._module.InferInput(self._stage.input_name, list(pixels.shape), "FP32")
        request.set_data_from_numpy(pixels)
        wanted = [self._module.InferRequestedOutput(name) for name in self._stage.output_names]
        try:
            result = self._client.infer(self._name, [request], outputs=wanted, client_timeout=self._timeout_s)
        except Exception as exc:  # tritonclient and transport errors alike: one table decides
            raise classify_triton_error(exc, self._retry_after_s) from exc
        return [torch.from_numpy(np.array(result.as_numpy(name))) for name in self._stage.output_names]


def triton_nets(url: str, *, protocol: str, timeout_s: float, retry_after_s: int) -> CascadeNets:
    module = _sync_module(protocol)
    client = module.InferenceServerClient(url)
    pnet, rnet, onet = (
        TritonStage(client, module, name, timeout_s, retry_after_s) for name in DETECTOR_STAGE_NAMES
    )
    logger.info("MTCNN nets on Triton %s (%s)", url, ", ".join(DETECTOR_STAGE_NAMES))
    nets: tuple[Net, Net, Net] = (pnet, rnet, onet)
    return CascadeNets(*nets, close=client.close)


def _sync_module(protocol: str) -> Any:
    if protocol == "grpc":
        import tritonclient.grpc as grpcclient

        return grpcclient
    import tritonclient.http as httpclient

    return httpclient
