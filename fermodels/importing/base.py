"""The seam every checkpoint family plugs into: one ``ImportFormat`` table entry per ``--format``.

An entry is four things:

- ``read(path) -> StateDict``: the file's weights as a flat state dict, through
  ``reader.read_checkpoint_file`` (the one restricted unpickler; pass ``allow_inert`` for pickled
  training helpers) and its helpers ``module_state_dict`` (whole-model pickles) / ``tensor_mapping``
  (saved state dicts);
- ``build(state_dict, request) -> Built``: the architecture sized from the weights, loaded with
  ``load_strict``, and the ModelConfig fields that depend on the file (labels, input size, ...);
- ``defaults``: ModelConfig fields shared by the whole family (mean/std, crop_mode, channel_order, ...);
- ``provenance``: who made the weights and under which licence (it goes into ``ModelConfig.weights``).

``fermodels.importing.import_checkpoint`` composes them: read, build, ``ModelConfig(**defaults,
**built.config, name=..., trained=True, weights=<file name, sha256, provenance>)``, then export.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn

from fermodels.contract import TextEncoderConfig
from fermodels.importing.reader import StateDict, StateDictMismatchError

_LISTED = 6  # keys named in a mismatch message before "and N more"


@dataclass(frozen=True)
class ImportRequest:
    """What the caller asked for, beside the file: the served name and optional overrides."""

    checkpoint: Path
    name: str
    dataset: str | None = None  # a format's own dataset names (hsemotion: affectnet7 / affectnet8)
    labels: tuple[str, ...] | None = None  # the output order in canonical words, overriding the format's
    arch: str | None = None  # the architecture by name, for formats whose files do not say it (openclip)


@dataclass(frozen=True)
class BuiltTextEncoder:
    """A second served model beside the face model: a checkpoint's own text tower (CLIP).

    ``module``: eager, ``(ids, mask) -> unit embeddings``; ``scripted``: its TorchScript (scripted or traced);
    ``config``: its TextEncoderConfig (name, sha256s and weights are filled in by ``import_checkpoint``);
    ``tokenizer``: the tokenizers-library ``tokenizer.json`` written beside it; ``sample``: ids and mask
    the reloaded TorchScript is verified on."""

    module: nn.Module
    scripted: torch.jit.ScriptModule
    config: TextEncoderConfig
    tokenizer: bytes
    sample: tuple[torch.Tensor, torch.Tensor]


@dataclass(frozen=True)
class Built:
    """A format's model (eval mode, weights loaded) and its file-dependent ModelConfig fields."""

    model: nn.Module
    config: dict[str, Any]
    # Official keys of modules the authors' forward never calls, removed by name before strict loading.
    dropped: tuple[str, ...] = ()
    # The checkpoint's text tower, served as the Triton model ``<name>_text`` (CLIP formats only).
    text_encoder: BuiltTextEncoder | None = None


@dataclass(frozen=True)
class ImportFormat:
    name: str
    read: Callable[[Path], StateDict]
    build: Callable[[StateDict, ImportRequest], Built]
    defaults: Mapping[str, Any] = field(default_factory=dict)
    provenance: str = ""
    description: str = ""


def load_strict(module: nn.Module, state_dict: StateDict, what: str) -> None:
    """``module.load_state_dict(state_dict, strict=True)``, failing with one line naming the keys."""
    expected = module.state_dict()
    missing = sorted(set(expected) - set(state_dict))
    unexpected = sorted(set(state_dict) - set(expected))
    shapes = sorted(
        f"{key} {tuple(state_dict[key].shape)} vs {tuple(value.shape)}"
        for key, value in expected.items()
        if key in state_dict and tuple(state_dict[key].shape) != tuple(value.shape)
    )
    problems = [
        f"{label}: {_listed(keys)}"
        for label, keys in (("missing keys", missing), ("unexpected keys", unexpected), ("shapes", shapes))
        if keys
    ]
    if problems:
        raise StateDictMismatchError(f"the weights do not fit {what}: " + "; ".join(problems))
    with torch.no_grad():
        module.load_state_dict(state_dict, strict=True)


def _listed(keys: list[str]) -> str:
    more = f" and {len(keys) - _LISTED} more" if len(keys) > _LISTED else ""
    return ", ".join(keys[:_LISTED]) + more
