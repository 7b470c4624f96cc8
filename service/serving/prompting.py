"""Prompts → embeddings: the fixed expression prompts from the baked-in asset, the caller's through Triton.

The expression prompts' embeddings are committed (``fermodels/assets/text_embeddings.json``), so a request
without ``prompts=`` costs no encoder call. A caller's prompt is tokenised here (the checkpoint's own
``tokenizer.json``), embedded by the ``text_encoder`` Triton model and kept in a bounded LRU cache.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
from collections import OrderedDict
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from fermodels.config import (
    TEXT_EMBEDDINGS_ASSET,
    TOKENIZER_ASSET,
    MissingPromptError,
    ModelConfig,
    TextEncoderConfig,
    load_text_embeddings,
    prompts_for,
    tokenizer_bytes,
)
from service.arrays import FloatArray
from service.config import Settings
from service.exceptions import (
    InferenceFailed,
    InferenceUnavailable,
    InvalidPrompt,
    ModelNotFound,
    TooManyPrompts,
)
from service.inference.base import ImageOutputs, InferenceBackend, ServedTextEncoder
from service.metrics import Metrics
from service.serving.batching import batches
from service.serving.similarity import PromptSet, TextScores, text_scores

logger = logging.getLogger(__name__)


def validate_prompts(prompts: Sequence[str], settings: Settings) -> tuple[str, ...]:
    """The caller's prompts, trimmed; 422 when there are too many or one is empty or too long."""
    if len(prompts) > settings.text_max_prompts:
        raise TooManyPrompts(f"{len(prompts)} prompts given; at most {settings.text_max_prompts} are allowed")
    trimmed = tuple(prompt.strip() for prompt in prompts)
    for position, prompt in enumerate(trimmed):
        if not prompt:
            raise InvalidPrompt(f"prompts[{position}] is empty or only whitespace")
        if len(prompt) > settings.text_max_prompt_chars:
            raise InvalidPrompt(
                f"prompts[{position}] has {len(prompt)} characters; at most {settings.text_max_prompt_chars}"
            )
    return trimmed


class ClassPrompts:
    """Each model's expression prompts with their committed embeddings (read once per set of prompts)."""

    def __init__(self, asset: Path = TEXT_EMBEDDINGS_ASSET) -> None:
        self._asset = asset
        self._sets: dict[tuple[str, ...], PromptSet] = {}

    def of(self, config: ModelConfig) -> PromptSet:
        prompts = config.prompts or prompts_for(config.labels)
        if prompts not in self._sets:
            self._sets[prompts] = self._load(prompts)
        return self._sets[prompts]

    def _load(self, prompts: tuple[str, ...]) -> PromptSet:
        try:
            text = load_text_embeddings(prompts, self._asset)
        except MissingPromptError as exc:
            raise InferenceFailed(f"no committed text embedding for the model's prompts: {exc}") from exc
        return PromptSet(prompts, np.asarray(text.vectors, np.float32), text.encoder)


class PromptEncoder:
    """Caller prompts → unit-norm embeddings through the served text encoder, with an LRU cache."""

    def __init__(self, settings: Settings, inference: InferenceBackend, metrics: Metrics) -> None:
        self._settings, self._inference, self._metrics = settings, inference, metrics
        self._cache: OrderedDict[tuple[str, str, str], FloatArray] = OrderedDict()
        self._tokenizers: dict[str, Any] = {}

    async def embed(self, prompts: Sequence[str]) -> PromptSet:
        if not prompts:
            return PromptSet.empty()
        encoder = await self._served_encoder()
        unique = list(dict.fromkeys(prompts))
        found = {prompt: vector for prompt in unique if (vector := self._get(encoder, prompt)) is not None}
        missing = [prompt for prompt in unique if prompt not in found]
        if missing:
            for prompt, vector in zip(missing, await self._encode(encoder, missing), strict=True):
                found[prompt] = vector
                self._store(encoder, prompt, vector)
        return PromptSet(tuple(prompts), np.stack([found[prompt] for prompt in prompts]), describe(encoder))

    async def _served_encoder(self) -> ServedTextEncoder:
        name = self._settings.text_encoder_model
        try:
            return await self._inference.served_text_encoder(name)
        except ModelNotFound as exc:
            # The request is fine; the deployment lacks the encoder (`make models` / export-text builds it).
            raise InferenceUnavailable(
                f"caller prompts need the text encoder {name!r}, which the inference server does not serve",
                retry_after_s=self._settings.triton_retry_after_s,
            ) from exc

    def _get(self, encoder: ServedTextEncoder, prompt: str) -> FloatArray | None:
        key = (encoder.name, encoder.version, prompt)
        vector = self._cache.get(key)
        self._metrics.prompt_cache.labels("miss" if vector is None else "hit").inc()
        if vector is not None:
            self._cache.move_to_end(key)
        return vector

    def _store(self, encoder: ServedTextEncoder, prompt: str, vector: FloatArray) -> None:
        if self._settings.text_cache_size == 0:
            return
        self._cache[(encoder.name, encoder.version, prompt)] = vector
        while len(self._cache) > self._settings.text_cache_size:
            self._cache.popitem(last=False)  # least recently used first

    @property
    def cached(self) -> int:
        return len(self._cache)

    async def _encode(self, encoder: ServedTextEncoder, prompts: list[str]) -> FloatArray:
        tokenizer = await asyncio.to_thread(self._tokenizer, encoder)
        parts = []
        for part in batches(len(prompts), encoder.config.max_batch_size):
            encoded = tokenizer.encode_batch(prompts[part])
            ids = np.array([item.ids for item in encoded], dtype=np.int64)
            mask = np.array([item.attention_mask for item in encoded], dtype=np.int64)
            parts.append(await self._inference.infer_text(encoder, ids, mask))
        return np.concatenate(parts)

    def _tokenizer(self, encoder: ServedTextEncoder) -> Any:
        expected = encoder.config.tokenizer_sha256
        if expected not in self._tokenizers:
            self._tokenizers[expected] = load_tokenizer(self._tokenizer_path(), expected, encoder.config)
        return self._tokenizers[expected]

    def _tokenizer_path(self) -> Path:
        return self._settings.text_tokenizer or TOKENIZER_ASSET


class TextScorer:
    """What a pipeline needs: the caller's prompts embedded, then every face scored against all prompts."""

    def __init__(self, encoder: PromptEncoder, classes: ClassPrompts) -> None:
        self.encoder, self.classes = encoder, classes

    async def caller(self, prompts: Sequence[str]) -> PromptSet:
        return await self.encoder.embed(prompts)

    def score(self, config: ModelConfig, outputs: ImageOutputs, caller: PromptSet) -> TextScores:
        similarity = outputs.text_similarity if config.has_text_side else None  # the model's own scores
        return text_scores(outputs.probabilities, similarity, self.classes.of(config), caller)

    def expression_encoder(self, config: ModelConfig) -> str:
        return self.classes.of(config).encoder if config.task == "image" else ""


def load_tokenizer(path: Path, expected_sha256: str, config: TextEncoderConfig) -> Any:
    """The tokenizers-library tokenizer in ``path`` (``.gz``: gzipped), padded to the longest prompt and
    truncated as the checkpoint is; refuses a file other than the one the served encoder was exported with."""
    from tokenizers import Tokenizer

    data = tokenizer_bytes(path)
    if expected_sha256 and hashlib.sha256(data).hexdigest() != expected_sha256:
        logger.error(
            "tokenizer %s does not match the served text encoder's (sha256 %s)", path, expected_sha256
        )
        raise InferenceFailed("the gateway's tokenizer does not match the served text encoder")
    tokenizer = Tokenizer.from_str(data.decode("utf-8"))
    tokenizer.enable_truncation(config.max_tokens)
    tokenizer.enable_padding(pad_id=0)
    return tokenizer


def describe(encoder: ServedTextEncoder) -> str:
    return f"{encoder.config.encoder} (Triton {encoder.name} v{encoder.version})"
