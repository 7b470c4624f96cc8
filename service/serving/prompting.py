"""Prompts → embeddings: the fixed expression prompts from the baked-in asset, the caller's through Triton.

The expression prompts' embeddings are committed (``fermodels/assets/text_embeddings.json``), so a request
without ``prompts=`` costs no encoder call. A caller's prompt is tokenised here (the checkpoint's own
``tokenizer.json``), embedded by the ``text_encoder`` Triton model and kept in a bounded LRU cache.

A CLIP face model (``ModelConfig.is_clip``) names its own text tower (``config.text_encoder``, a Triton
model written beside it by ``python -m fermodels import``): its caller prompts are tokenised with that
encoder's tokenizer (``<FER_TEXT_TOKENIZER_DIR or FER_MODEL_REPOSITORY>/<encoder>/tokenizer.json``, checked
against the sha256 in the encoder's config), cleaned first as open_clip does when the config says so, and
scored by true cosine with the face's CLIP image embedding; its expression prompts were embedded at import
and come back from the face model itself (``OUTPUT__2``).
"""

from __future__ import annotations

import asyncio
import hashlib
import html
import logging
from collections import OrderedDict
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from fermodels.contract import (
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
from service.serving.similarity import PromptSet, TextScores, clip_text_scores, text_scores

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

    async def embed(self, prompts: Sequence[str], encoder_name: str = "") -> PromptSet:
        """``encoder_name``: the Triton text encoder to use (a CLIP model's own); "" the deployment's."""
        if not prompts:
            return PromptSet.empty()
        encoder = await self._served_encoder(encoder_name or self._settings.text_encoder_model)
        unique = list(dict.fromkeys(prompts))
        found = {prompt: vector for prompt in unique if (vector := self._get(encoder, prompt)) is not None}
        missing = [prompt for prompt in unique if prompt not in found]
        if missing:
            for prompt, vector in zip(missing, await self._encode(encoder, missing), strict=True):
                found[prompt] = vector
                self._store(encoder, prompt, vector)
        return PromptSet(tuple(prompts), np.stack([found[prompt] for prompt in prompts]), describe(encoder))

    async def _served_encoder(self, name: str) -> ServedTextEncoder:
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
    def default_encoder(self) -> str:
        return self._settings.text_encoder_model

    @property
    def cached(self) -> int:
        return len(self._cache)

    async def _encode(self, encoder: ServedTextEncoder, prompts: list[str]) -> FloatArray:
        tokenizer = await asyncio.to_thread(self._tokenizer, encoder)
        parts = []
        cleaned = [clean_prompt(prompt, encoder.config) for prompt in prompts]
        for part in batches(len(prompts), encoder.config.max_batch_size):
            encoded = tokenizer.encode_batch(cleaned[part])
            ids = np.array([item.ids for item in encoded], dtype=np.int64)
            mask = np.array([item.attention_mask for item in encoded], dtype=np.int64)
            parts.append(await self._inference.infer_text(encoder, ids, mask))
        return np.concatenate(parts)

    def _tokenizer(self, encoder: ServedTextEncoder) -> Any:
        expected = encoder.config.tokenizer_sha256
        key = f"{encoder.name}:{expected}"
        if key not in self._tokenizers:
            self._tokenizers[key] = load_tokenizer(self._tokenizer_path(encoder), expected, encoder.config)
        return self._tokenizers[key]

    def _tokenizer_path(self, encoder: ServedTextEncoder) -> Path:
        if encoder.name == self._settings.text_encoder_model:
            return self._settings.text_tokenizer or TOKENIZER_ASSET
        return tokenizer_path(self._settings, encoder)

    async def model_config(self, name: str) -> ModelConfig:
        return (await self._inference.served_model(name)).config


class TextScorer:
    """What a pipeline needs: the caller's prompts embedded, then every face scored against all prompts."""

    def __init__(self, encoder: PromptEncoder, classes: ClassPrompts) -> None:
        self.encoder, self.classes = encoder, classes

    async def caller(self, prompts: Sequence[str], model_name: str = "") -> PromptSet:
        """The caller's prompts embedded by the encoder whose space ``model_name``'s embedding lives in:
        a CLIP model's own text tower, else the deployment's text encoder (for ConSE)."""
        encoder = ""
        if prompts and model_name:
            config = await self.encoder.model_config(model_name)
            encoder = config.text_encoder if config.is_clip else ""
        return await self.encoder.embed(prompts, encoder)

    def score(self, config: ModelConfig, outputs: ImageOutputs, caller: PromptSet) -> TextScores:
        if config.is_clip:
            encoder = self.expression_encoder(config)
            return clip_text_scores(outputs.text_similarity, outputs.embeddings, encoder, caller)
        similarity = outputs.text_similarity if config.has_text_side else None  # the model's own scores
        return text_scores(outputs.probabilities, similarity, self.classes.of(config), caller)

    def expression_encoder(self, config: ModelConfig) -> str:
        if config.is_clip:  # embedded at import by the checkpoint's own text tower, served beside it
            return f"{config.text_encoder} (CLIP text tower, Triton)"
        return self.classes.of(config).encoder if config.task == "image" else ""

    def caller_encoder(self, config: ModelConfig) -> str:
        """The Triton text encoder that embeds this model's caller prompts."""
        return config.text_encoder if config.is_clip else self.encoder.default_encoder


def tokenizer_path(settings: Settings, encoder: ServedTextEncoder) -> Path:
    """Where a served encoder's tokenizer is read: ``<dir>/<encoder name>/<config.tokenizer>``."""
    root = settings.text_tokenizer_dir or settings.model_repository
    path = root / encoder.name / encoder.config.tokenizer
    if not path.is_file():
        logger.error("no tokenizer for text encoder %s at %s", encoder.name, path)
        raise InferenceFailed(
            f"the gateway has no tokenizer for the text encoder {encoder.name!r} (set FER_TEXT_TOKENIZER_DIR "
            "to the model repository the encoder was imported into)"
        )
    return path


def clean_prompt(prompt: str, config: TextEncoderConfig) -> str:
    """The text the tokenizer gets: unchanged, or (``clean == "openclip"``) open_clip's ``_clean_lower``:
    ftfy.fix_text, HTML entities unescaped twice, whitespace collapsed, lower case."""
    if config.clean != "openclip":
        return prompt
    import ftfy

    text = html.unescape(html.unescape(ftfy.fix_text(prompt))).strip()
    return " ".join(text.split()).strip().lower()


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
    tokenizer.enable_padding(pad_id=config.pad_id)
    return tokenizer


def describe(encoder: ServedTextEncoder) -> str:
    return f"{encoder.config.encoder} (Triton {encoder.name} v{encoder.version})"
