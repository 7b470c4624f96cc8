"""What the pipeline needs from an inference server, as types; Triton implements it, tests fake it."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Protocol

import numpy as np

from fermodels.contract import ModelConfig, TextEncoderConfig
from service.arrays import FloatArray, IntArray


@dataclass(frozen=True)
class ServedModel:
    """A model as the server serves it: its config (from config.pbtxt) and the live version."""

    config: ModelConfig
    version: str
    max_batch_size: int

    @property
    def name(self) -> str:
        return self.config.name


@dataclass(frozen=True)
class ServedTextEncoder:
    """The text encoder as the server serves it: its config (from config.pbtxt) and the live version."""

    config: TextEncoderConfig
    version: str

    @property
    def name(self) -> str:
        return self.config.name


@dataclass(frozen=True)
class RepositoryEntry:
    """One row of Triton's model repository index (the API shows it as a ModelState)."""

    name: str
    version: str
    state: str

    @property
    def ready(self) -> bool:
        return self.state == "READY"


@dataclass(frozen=True)
class ImageOutputs:
    """Per-face outputs of an image model, rows aligned with the crops sent."""

    probabilities: FloatArray  # N x C, config.labels order
    embeddings: FloatArray  # N x D, L2-normalised
    text_similarity: FloatArray  # N x P, config.prompts order
    # N x A, config.affect_outputs order (valence, arousal); N x 0 for a model without them (the default).
    affect: FloatArray = field(default_factory=lambda: np.zeros((0, 0), dtype=np.float32))

    def __post_init__(self) -> None:
        if len(self.affect) != len(self.probabilities):  # built without affect: N x 0 rows, like the rest
            object.__setattr__(self, "affect", np.zeros((len(self.probabilities), 0), dtype=np.float32))

    def rows(self, start: int, stop: int) -> ImageOutputs:
        return ImageOutputs(
            self.probabilities[start:stop],
            self.embeddings[start:stop],
            self.text_similarity[start:stop],
            self.affect[start:stop],
        )

    @classmethod
    def concatenate(cls, parts: list[ImageOutputs]) -> ImageOutputs:
        # A part without rows (a window of a job in which no face was found) has no columns either.
        parts = [part for part in parts if len(part.probabilities)]
        if not parts:  # no face, so no call was made
            return cls(*(np.zeros((0, 0), dtype=np.float32) for _ in range(4)))
        return cls(
            probabilities=np.concatenate([p.probabilities for p in parts]),
            embeddings=np.concatenate([p.embeddings for p in parts]),
            text_similarity=np.concatenate([p.text_similarity for p in parts]),
            affect=np.concatenate([p.affect for p in parts]),
        )


@dataclass(frozen=True)
class ClipOutputs:
    """Per-clip outputs of a video model, rows aligned with the clips sent."""

    probabilities: FloatArray  # N x C, config.labels order
    embeddings: FloatArray  # N x D, L2-normalised

    @classmethod
    def concatenate(cls, parts: list[ClipOutputs]) -> ClipOutputs:
        if not parts:  # no track, so no call was made
            return cls(*(np.zeros((0, 0), dtype=np.float32) for _ in range(2)))
        return cls(
            probabilities=np.concatenate([p.probabilities for p in parts]),
            embeddings=np.concatenate([p.embeddings for p in parts]),
        )


class InferenceBackend(Protocol):
    """The inference server as the gateway sees it. Errors are ``service.exceptions.ServiceError``s."""

    async def server_ready(self) -> bool: ...

    async def model_statuses(self) -> list[RepositoryEntry]: ...

    async def served_model(self, name: str) -> ServedModel: ...

    async def infer_image(
        self, model: ServedModel, crops: FloatArray, landmarks: FloatArray | None = None
    ) -> ImageOutputs:
        """``landmarks`` (N x K x 2, [0, 1] crop coordinates): only for a model with ``num_landmarks``."""
        ...

    async def infer_clip(self, model: ServedModel, clips: FloatArray) -> ClipOutputs: ...

    async def served_text_encoder(self, name: str) -> ServedTextEncoder: ...

    async def infer_text(self, encoder: ServedTextEncoder, ids: IntArray, mask: IntArray) -> FloatArray:
        """Unit-norm embeddings ``[N, dim]`` of N tokenised prompts (``N <= config.max_batch_size``)."""
        ...

    async def close(self) -> None: ...
