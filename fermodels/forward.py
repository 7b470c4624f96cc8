"""The training view of a model: its inputs and outputs as training and evaluation drive it.

Every model is driven through its serving contract (``fermodels.export``): ``forward_serving`` on the
normalised crop, plus the landmarks for a model whose ``config.num_landmarks`` says it takes them. Models
with a text side (``config.prompts``) are trained on both heads' logits, which their ``forward`` returns.
Training and evaluation both import this module; neither imports the other for it.
"""

from __future__ import annotations

import torch
from torch import nn

from fermodels.contract import ModelConfig

ModelOutputs = torch.Tensor | tuple[torch.Tensor, ...]


def resolve_device(device: str) -> torch.device:
    """``auto`` -> CUDA when available, else CPU; anything else as torch spells it (``cuda:1``)."""
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(device)


def model_inputs(config: ModelConfig, images: torch.Tensor) -> tuple[torch.Tensor, ...]:
    """The model's inputs for a batch of normalised crops: the crops, and for a landmark model the
    landmarks. The datasets carry none, so each face gets the aligned template's (where an aligned face's
    points sit nominally); the gateway sends each face's measured points."""
    if not config.num_landmarks:
        return (images,)
    template = torch.tensor(config.normalised_landmark_template(), dtype=images.dtype, device=images.device)
    return images, template.expand(images.shape[0], -1, -1)


def serving_outputs(model: nn.Module, config: ModelConfig, images: torch.Tensor) -> tuple[torch.Tensor, ...]:
    """``forward_serving``: (class logits, embedding [, text embedding]) before the export wrapper."""
    # nn.Module.__getattr__ is typed Tensor | Module, so mypy cannot see the method.
    outputs: tuple[torch.Tensor, ...] = model.forward_serving(*model_inputs(config, images))  # type: ignore[operator]
    return outputs


def model_outputs(model: nn.Module, config: ModelConfig, inputs: torch.Tensor) -> ModelOutputs:
    """The training view of a model on normalised RGB input (what the datasets yield): both heads'
    logits (class, text similarity) from ``forward`` for a model with prompts, else the class logits of
    ``forward_serving`` (normalised RGB whatever ``forward`` takes, e.g. mini-Xception's grey)."""
    if config.has_text_side:
        outputs: ModelOutputs = model(*model_inputs(config, inputs))
        return outputs
    return serving_outputs(model, config, inputs)[0]


def class_logits(outputs: ModelOutputs) -> torch.Tensor:
    """The classifier's logits: the output itself, or the first of a tuple (FER-former: class, text)."""
    return outputs if isinstance(outputs, torch.Tensor) else outputs[0]
