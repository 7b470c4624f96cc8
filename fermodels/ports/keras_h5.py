"""Read a Keras 2 HDF5 model (config graph + weight arrays) and convert layers to PyTorch, with h5py only.

Each ``*_state`` converter *pops* the arrays it uses from the layer's dict, so the caller can assert that
every Keras weight was consumed. Each ``check_*`` raises ``PortError`` when a Keras setting differs from
what the PyTorch module computes, so a port cannot silently diverge (wrong padding, epsilon, bias...).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import h5py
import numpy as np
import numpy.typing as npt
import torch
from torch import Tensor, nn

Arrays = dict[str, npt.NDArray[np.float32]]


class PortError(ValueError):
    """The Keras file does not match what the PyTorch module computes."""


@dataclass(frozen=True)
class KerasLayer:
    """One node of a Keras functional-model config."""

    name: str
    class_name: str
    config: dict[str, Any]
    inbound: tuple[str, ...]


@dataclass(frozen=True)
class KerasModel:
    """The parts of a Keras HDF5 file a port needs."""

    keras_version: str
    layers: dict[str, KerasLayer]
    weights: dict[str, Arrays]
    output: str


def read_keras_h5(path: Path) -> KerasModel:
    with h5py.File(path, "r") as h5:
        config = json.loads(h5.attrs["model_config"])
        if config["class_name"] != "Model":
            raise PortError(f"expected a functional Keras Model, got {config['class_name']}")
        layers = {layer["name"]: _parse_layer(layer) for layer in config["config"]["layers"]}
        (output,) = config["config"]["output_layers"]
        return KerasModel(_text(h5.attrs["keras_version"]), layers, _read_weights(h5), output[0])


def _parse_layer(layer: dict[str, Any]) -> KerasLayer:
    nodes = layer["inbound_nodes"]
    if len(nodes) > 1:
        raise PortError(f"layer {layer['name']} is shared; ports assume one call per layer")
    inbound = tuple(str(ref[0]) for ref in nodes[0]) if nodes else ()
    return KerasLayer(layer["name"], layer["class_name"], layer["config"], inbound)


def _read_weights(h5: h5py.File) -> dict[str, Arrays]:
    group = h5["model_weights"]
    weights: dict[str, Arrays] = {}
    for layer_name in map(_text, group.attrs["layer_names"]):
        layer_group = group[layer_name]
        names = [_text(name) for name in layer_group.attrs["weight_names"]]
        if names:
            weights[layer_name] = {_short_name(name): np.asarray(layer_group[name]) for name in names}
    return weights


def _text(value: bytes | str) -> str:
    return value.decode() if isinstance(value, bytes) else value


def _short_name(weight_name: str) -> str:
    # "separable_conv2d_1_1/depthwise_kernel:0" -> "depthwise_kernel"
    return weight_name.rsplit("/", 1)[-1].split(":", 1)[0]


def trace_back(layers: dict[str, KerasLayer], start: str, classes: tuple[str, ...]) -> list[KerasLayer]:
    """Follow single-input layers backwards from ``start``, checking their classes; ``start`` comes first."""
    chain: list[KerasLayer] = []
    name = start
    for expected in classes:
        layer = layers[name]
        if layer.class_name != expected or len(layer.inbound) != 1:
            raise PortError(f"{layer.name}: expected a single-input {expected}, got {layer.class_name}")
        chain.append(layer)
        name = layer.inbound[0]
    return chain


# --- checks: the Keras setting equals what the PyTorch module does ---------------------------------------


# The settings worth quoting in an error (the full config is mostly initialisers and regularisers).
_QUOTED = ("kernel_size", "strides", "padding", "pool_size", "use_bias", "epsilon", "activation")


def _require(condition: bool, layer: KerasLayer, what: str) -> None:
    if not condition:
        quoted = {key: layer.config[key] for key in _QUOTED if key in layer.config}
        raise PortError(f"{layer.name} ({layer.class_name}): {what}; Keras settings {quoted}")


def torch_padding(layer: KerasLayer) -> int:
    """The symmetric PyTorch padding equal to the layer's Keras padding, or PortError if none is."""
    kernel, stride = int(layer.config["kernel_size"][0]), int(layer.config["strides"][0])
    if layer.config["padding"] == "valid":
        return 0
    # TF 'same' pads (k - 1) in total at stride 1 (symmetric for odd k); a 1x1 kernel never pads.
    _require(kernel % 2 == 1 and (stride == 1 or kernel == 1), layer, "'same' padding is asymmetric here")
    return kernel // 2


def _check_conv_common(layer: KerasLayer) -> None:
    config = layer.config
    _require(config["data_format"] == "channels_last", layer, "only channels_last kernels are converted")
    _require(list(config["dilation_rate"]) == [1, 1], layer, "dilation is not supported")
    _require(config["activation"] == "linear", layer, "a fused activation is not supported")
    _require(len(set(config["kernel_size"])) == 1 and len(set(config["strides"])) == 1, layer, "non-square")


def check_conv(layer: KerasLayer, conv: nn.Conv2d) -> None:
    _check_conv_common(layer)
    config = layer.config
    _require(conv.kernel_size == tuple(config["kernel_size"]), layer, f"kernel != {conv.kernel_size}")
    _require(conv.stride == tuple(config["strides"]), layer, f"stride != {conv.stride}")
    _require(conv.padding == (torch_padding(layer),) * 2, layer, f"padding != {conv.padding}")
    _require((conv.bias is not None) == config["use_bias"], layer, "use_bias differs")


def check_separable(layer: KerasLayer, depthwise: nn.Conv2d, pointwise: nn.Conv2d) -> None:
    _check_conv_common(layer)
    _require(layer.config["depth_multiplier"] == 1, layer, "depth_multiplier != 1")
    _require(not layer.config["use_bias"] and pointwise.bias is None, layer, "use_bias differs")
    _require(depthwise.kernel_size == tuple(layer.config["kernel_size"]), layer, "kernel differs")
    _require(depthwise.stride == tuple(layer.config["strides"]), layer, "stride differs")
    _require(depthwise.padding == (torch_padding(layer),) * 2, layer, "padding differs")
    _require(depthwise.groups == depthwise.in_channels, layer, "depthwise conv is not grouped per channel")


def check_batchnorm(layer: KerasLayer, bn: nn.BatchNorm2d) -> None:
    config = layer.config
    _require(config["axis"] in (-1, 3), layer, "BatchNormalization must normalise the channel axis")
    _require(config["center"] and config["scale"], layer, "beta and gamma are both expected")
    _require(bn.eps == config["epsilon"], layer, f"epsilon != {bn.eps}")


def check_max_pool_same(layer: KerasLayer, kernel_size: int, stride: int) -> None:
    config = layer.config
    _require(config["padding"] == "same", layer, "the PyTorch pool implements TF 'same' padding")
    _require(list(config["pool_size"]) == [kernel_size] * 2, layer, f"pool_size != {kernel_size}")
    _require(list(config["strides"]) == [stride] * 2, layer, f"strides != {stride}")


def check_activation(layer: KerasLayer, activation: str) -> None:
    _require(layer.class_name == "Activation", layer, "expected an Activation layer")
    _require(layer.config["activation"] == activation, layer, f"activation != {activation}")


# --- converters: Keras arrays -> PyTorch state_dict entries ------------------------------------------


def _tensor(array: npt.NDArray[np.float32]) -> Tensor:
    return torch.from_numpy(np.ascontiguousarray(array, dtype=np.float32))


def conv_state(prefix: str, arrays: Arrays, bias: bool) -> dict[str, Tensor]:
    # Keras kernels are (kh, kw, in, out); PyTorch wants (out, in, kh, kw).
    state = {f"{prefix}.weight": _tensor(arrays.pop("kernel").transpose(3, 2, 0, 1))}
    if bias:
        state[f"{prefix}.bias"] = _tensor(arrays.pop("bias"))
    return state


def separable_state(prefix: str, arrays: Arrays) -> dict[str, Tensor]:
    # Depthwise (kh, kw, in, mult) -> (in * mult, 1, kh, kw): Keras orders output channels in-major,
    # which is PyTorch's grouped-conv order too. Pointwise is an ordinary 1x1 conv kernel.
    depthwise = arrays.pop("depthwise_kernel")
    kh, kw, chans, mult = depthwise.shape
    depthwise = depthwise.transpose(2, 3, 0, 1).reshape(chans * mult, 1, kh, kw)
    return {
        f"{prefix}.depthwise.weight": _tensor(depthwise),
        f"{prefix}.pointwise.weight": _tensor(arrays.pop("pointwise_kernel").transpose(3, 2, 0, 1)),
    }


def batchnorm_state(prefix: str, arrays: Arrays) -> dict[str, Tensor]:
    return {
        f"{prefix}.weight": _tensor(arrays.pop("gamma")),
        f"{prefix}.bias": _tensor(arrays.pop("beta")),
        f"{prefix}.running_mean": _tensor(arrays.pop("moving_mean")),
        f"{prefix}.running_var": _tensor(arrays.pop("moving_variance")),
    }
