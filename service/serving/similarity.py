"""Text similarity for every image model: cosine where the model has a text side, ConSE where it has not.

ConSE (Norouzi et al., "Zero-Shot Learning by Convex Combination of Semantic Embeddings", ICLR 2014) puts
an image into a text embedding space without training anything: its embedding is the probability-weighted
mean of its classes' text embeddings, ``e = normalise(sum_c p(c | x) t_c)``, compared with any text by
cosine. The paper keeps the top T classes; here T = all classes (a convex combination of all of them),
so the score moves smoothly with the whole distribution. Pure numpy: no API schemas, no I/O.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import numpy as np

from service.arrays import FloatArray

# "clip": a CLIP image tower's own embedding against prompts embedded by its own text tower.
Method = Literal["cosine", "conse", "clip"]


def conse_embeddings(probabilities: FloatArray, class_text: FloatArray) -> FloatArray:
    """``[N, C]`` class probabilities and ``[C, D]`` unit-norm class-prompt embeddings → ``[N, D]``."""
    mixed = (probabilities.astype(np.float64) @ class_text.astype(np.float64)).astype(np.float32)
    norms = np.linalg.norm(mixed, axis=1, keepdims=True)
    unit: FloatArray = (mixed / np.maximum(norms, 1e-12)).astype(np.float32)
    return unit


def cosine(unit_a: FloatArray, unit_b: FloatArray) -> FloatArray:
    """Cosine of every row of ``unit_a`` with every row of ``unit_b`` (both unit norm), in [-1, 1]."""
    scores: FloatArray = np.clip(unit_a @ unit_b.T, -1.0, 1.0).astype(np.float32)
    return scores


@dataclass(frozen=True)
class PromptSet:
    """Prompts, their unit-norm embeddings ``[P, D]`` and the encoder that made them."""

    prompts: tuple[str, ...]
    vectors: FloatArray
    encoder: str

    @classmethod
    def empty(cls, dim: int = 0) -> PromptSet:
        return cls((), np.zeros((0, dim), np.float32), "")


@dataclass(frozen=True)
class TextScores:
    """Per-face scores against the fixed expression prompts (config.labels order) and the caller's."""

    expression: FloatArray  # N x C
    expression_method: Method
    expression_encoder: str
    caller: FloatArray  # N x P, caller prompt order
    caller_prompts: tuple[str, ...]
    caller_encoder: str
    caller_method: Method = "conse"

    def rows(self, start: int, stop: int) -> TextScores:
        return TextScores(
            self.expression[start:stop],
            self.expression_method,
            self.expression_encoder,
            self.caller[start:stop],
            self.caller_prompts,
            self.caller_encoder,
            self.caller_method,
        )


def text_scores(
    probabilities: FloatArray,
    model_similarity: FloatArray | None,
    classes: PromptSet,
    caller: PromptSet,
) -> TextScores:
    """Scores of N faces. ``model_similarity``: the model's own cosine to its class prompts (its text side),
    or None for a classifier, whose expression scores are then ConSE's too. Caller prompts are always scored
    by ConSE: a text-side model's image embedding lives in its own projected space, which only its class
    prompts (projected inside the model) reach."""
    conse = conse_embeddings(probabilities, classes.vectors) if len(probabilities) else None
    method: Method
    if model_similarity is not None:
        expression, method = model_similarity, "cosine"
    else:
        expression = cosine(conse, classes.vectors) if conse is not None else _none(len(classes.prompts))
        method = "conse"
    caller_scores = (
        cosine(conse, caller.vectors)
        if conse is not None and caller.prompts
        else np.zeros((len(probabilities), len(caller.prompts)), np.float32)
    )
    return TextScores(expression, method, classes.encoder, caller_scores, caller.prompts, caller.encoder)


def clip_text_scores(
    model_similarity: FloatArray, embeddings: FloatArray, encoder: str, caller: PromptSet
) -> TextScores:
    """A CLIP face model's scores: its own cosines with the expression prompts (its text tower embedded them
    at import) and the true cosine of its unit image embedding with each caller prompt, embedded by the same
    CLIP's text tower (``caller``)."""
    caller_scores = (
        cosine(embeddings, caller.vectors)
        if len(embeddings) and caller.prompts
        else np.zeros((len(embeddings), len(caller.prompts)), np.float32)
    )
    return TextScores(
        model_similarity, "clip", encoder, caller_scores, caller.prompts, caller.encoder, "clip"
    )


def _none(count: int) -> FloatArray:
    return np.zeros((0, count), np.float32)
