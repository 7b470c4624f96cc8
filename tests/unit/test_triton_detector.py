"""MTCNN's nets as Triton models: the exported configs, and the client side's batching and errors."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest
import torch

from fermodels.contract import DETECTOR_STAGES
from fermodels.detector_export import render_stage_config
from service.detection.triton_nets import TritonStage
from service.exceptions import InferenceUnavailable


def test_configs_declare_what_the_gateway_sends_and_reads() -> None:
    for stage in DETECTOR_STAGES:
        text = render_stage_config(stage)
        assert f'name: "{stage.name}"' in text and f"max_batch_size: {stage.max_batch_size}" in text
        assert f'name: "{stage.input_name}"' in text
        assert text.count('name: "OUTPUT__') == len(stage.output_dims)
        assert all(f'name: "{name}"' in text for name in stage.output_names)
        assert ("dynamic_batching" in text) == (stage.name != "mtcnn_pnet")  # P-Net levels differ in size
        assert 'key: "fer_detector"' in text and "facenet-pytorch 2.6.0" in text


class FakeModule:
    class InferInput:
        def __init__(self, name: str, shape: list[int], dtype: str) -> None:
            assert name == "INPUT__0"  # what the exported configs declare (checked above)
            self.shape = shape

        def set_data_from_numpy(self, array: np.ndarray) -> None:
            self.array = array

    class InferRequestedOutput:
        def __init__(self, name: str) -> None:
            self.name = name


class FakeResult:
    def __init__(self, rows: int, outputs: int) -> None:
        self._outputs = {f"OUTPUT__{i}": np.full((rows, 2), float(i), np.float32) for i in range(outputs)}

    def as_numpy(self, name: str) -> np.ndarray:
        return self._outputs[name]


class FakeClient:
    def __init__(self, fail: Exception | None = None) -> None:
        self.batches: list[int] = []
        self.fail = fail

    def infer(self, name: str, inputs: list[Any], outputs: list[Any], client_timeout: float) -> FakeResult:
        if self.fail is not None:
            raise self.fail
        rows = inputs[0].shape[0]
        self.batches.append(rows)
        return FakeResult(rows, len(outputs))


def test_a_stage_splits_candidates_to_its_max_batch_size_and_joins_the_outputs() -> None:
    client = FakeClient()
    stage = TritonStage(client, FakeModule, "mtcnn_onet", timeout_s=1, retry_after_s=1)
    regression, _, probabilities = stage(torch.zeros(1200, 3, 48, 48))
    assert client.batches == [512, 512, 176]
    assert regression.shape == (1200, 2) and float(probabilities[0, 0]) == 2.0


def test_an_unreachable_triton_is_a_503_with_retry_after() -> None:
    stage = TritonStage(
        FakeClient(ConnectionRefusedError("connection refused")), FakeModule, "mtcnn_rnet", 1, retry_after_s=7
    )
    with pytest.raises(InferenceUnavailable) as raised:
        stage(torch.zeros(3, 3, 24, 24))
    assert raised.value.retry_after_s == 7
