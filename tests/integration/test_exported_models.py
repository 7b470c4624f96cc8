"""Every model in model_repository/, served by the real local Triton, equals its eager PyTorch model."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import tritonclient.grpc as grpcclient

from devstack.stack import SERVED_MODELS
from fermodels import registry
from fermodels.export import sample_inputs, serving_wrapper
from service.launcher.triton_local import LocalTriton

pytestmark = pytest.mark.integration


@pytest.mark.parametrize("name", SERVED_MODELS)
def test_triton_output_equals_eager(triton: LocalTriton, name: str) -> None:
    model, config = registry.build(name)  # the same seed / ported weights `make models` exported
    eager = serving_wrapper(model, config)
    inputs = sample_inputs(config, 3)  # crops, and landmarks for a landmark model (POSTER's INPUT__1)
    with torch.no_grad():
        expected = [t.numpy() for t in eager(*inputs)]
    client = grpcclient.InferenceServerClient(triton.endpoints.grpc_url)
    requests = []
    for index, tensor in enumerate(inputs):
        request = grpcclient.InferInput(f"INPUT__{index}", list(tensor.shape), "FP32")
        request.set_data_from_numpy(tensor.numpy())
        requests.append(request)
    result = client.infer(name, requests)
    for index, want in enumerate(expected):
        got = result.as_numpy(f"OUTPUT__{index}")
        np.testing.assert_allclose(got, want, atol=1e-4, rtol=0, err_msg=f"{name} OUTPUT__{index}")
    assert np.allclose(expected[0].sum(axis=1), 1.0, atol=1e-5)  # probabilities
