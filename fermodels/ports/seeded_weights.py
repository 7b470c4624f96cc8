"""Deterministic stand-in weights for checkpoints nobody can download here (the authors' POSTER, POSTER++,
HSEmotion, CLIP): each tensor is a pure function of its state-dict key and shape, so the authors' own code
(run once outside the project) and our ports can be fed the very same numbers without sharing a file.

The rule, so that anyone can reproduce the expected outputs committed beside the tests:

- a ``torch.Generator`` seeded with ``zlib.crc32(key)`` draws ``randn(shape)``;
- weights of two or more dimensions are scaled by ``1/sqrt(fan_in)`` (fan_in = numel / shape[0]), so
  activations keep their size through deep nets instead of overflowing;
- 1-D tensors: keys ending in ``running_var`` become ``0.5 + |x|`` (a variance must be positive),
  keys ending in ``weight`` (norm scales) ``1 + 0.1 x``, everything else (biases, means) ``0.1 x``;
- integer tensors (``num_batches_tracked``, index buffers) keep the value the module gave them, so
  buffers such as relative-position indices stay what the architecture defines.

Whole-model values with a name but no shape convention (e.g. a 0-D ``logit_scale``) are ``0.1 x``.
"""

from __future__ import annotations

import math
import zlib

import torch


def seeded_tensor(key: str, like: torch.Tensor) -> torch.Tensor:
    """The rule above for one state-dict entry (``like`` gives shape, dtype and integer values)."""
    if not like.is_floating_point():
        return like.clone()
    generator = torch.Generator().manual_seed(zlib.crc32(key.encode("utf-8")))
    values = torch.randn(tuple(like.shape), generator=generator, dtype=torch.float64)
    if like.dim() >= 2:
        fan_in = max(1, like.numel() // like.shape[0])
        values = values / math.sqrt(fan_in)
    elif key.endswith("running_var"):
        values = 0.5 + values.abs()
    elif key.endswith("weight") and like.dim() == 1:
        values = 1.0 + 0.1 * values
    else:
        values = 0.1 * values
    return values.to(like.dtype)


def seeded_state_dict(state_dict: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Every entry of a module's state dict replaced by its seeded value (same keys, shapes, dtypes)."""
    return {key: seeded_tensor(key, value) for key, value in state_dict.items()}
