"""The checkpoint format, in one place: written by train, read by resume, evaluate and export.

A checkpoint is a plain dict saved with ``torch.save`` and read with ``weights_only=True`` (no pickled code
runs). It names its model by registry name only, so it can only ever hold weights for a model the registry
builds; ``load_checkpoint`` rebuilds that architecture and loads the weights. Keys:

- ``format`` (``CHECKPOINT_FORMAT``), ``model`` (registry name), ``seed``, ``epoch`` (epochs completed)
- ``config``: the ModelConfig JSON, ``trained`` true, ``weights`` / ``accuracy`` saying how and on what
- ``state_dict``, and for resuming: ``optimizer``, ``scheduler``, ``objective_state`` (the loss's own
  parameters, ``{}`` for plain CE)
- ``metrics`` (this epoch's validation record), ``best_uar``, ``history``, ``options``, ``dataset``

Format 1 (before tiny models were registry entries) stored ``variant: "tiny"`` beside the base name; it
is read as the ``<name>_tiny`` entry.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final

import torch
from torch import nn

from fermodels import registry
from fermodels.contract import ModelConfig

LAST_CHECKPOINT: Final = "last.pt"
BEST_CHECKPOINT: Final = "best.pt"
CHECKPOINT_FORMAT: Final = 2
REQUIRED_KEYS: Final = frozenset({"format", "model", "seed", "epoch", "config", "state_dict"})


class CheckpointError(ValueError):
    """The file is not a checkpoint this code can read."""


@dataclass(frozen=True)
class Checkpoint:
    model: nn.Module
    config: ModelConfig
    payload: dict[str, Any]

    @property
    def name(self) -> str:
        """The registry name of the architecture."""
        return model_name(self.payload)


def save_checkpoint(payload: dict[str, Any], path: Path) -> None:
    """Write then rename: a run killed mid-save must not leave a truncated last.pt to resume from."""
    partial = path.with_suffix(".pt.partial")
    torch.save({**payload, "format": CHECKPOINT_FORMAT}, partial)
    os.replace(partial, path)


def read_checkpoint(path: Path, device: torch.device | str = "cpu") -> dict[str, Any]:
    """The raw dict, checked for the keys every reader needs."""
    payload: dict[str, Any] = torch.load(path, map_location=device, weights_only=True)
    missing = REQUIRED_KEYS - payload.keys() if isinstance(payload, dict) else REQUIRED_KEYS
    if missing:
        raise CheckpointError(f"{path} is not a fermodels checkpoint (missing {', '.join(sorted(missing))})")
    if payload["format"] > CHECKPOINT_FORMAT:
        raise CheckpointError(
            f"{path} has checkpoint format {payload['format']}; this code reads <= {CHECKPOINT_FORMAT}"
        )
    return payload


def model_name(payload: dict[str, Any]) -> str:
    name: str = payload["model"]
    return f"{name}_tiny" if payload.get("variant") == "tiny" else name


def load_checkpoint(path: Path, device: torch.device | str = "cpu") -> Checkpoint:
    """Rebuild the model named in the checkpoint via the registry and load its weights (eval mode)."""
    payload = read_checkpoint(path, device)
    model, _ = registry.build(model_name(payload), seed=payload["seed"])
    model.load_state_dict(payload["state_dict"])
    return Checkpoint(model.to(device).eval(), ModelConfig.from_json(payload["config"]), payload)
