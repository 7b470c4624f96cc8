"""Training objectives of the model families: STT's compact softmax and KE-FER's text-guided objective.

``CompactSoftmaxLoss`` — after STT (arXiv 2205.04749), whose "compact softmax cross entropy" adds an
intra-class compactness term to softmax cross-entropy. Implemented as CE plus a centre-loss pull
(Wen et al., ECCV 2016): ``CE + λ/2 · mean ||f_i − c_{y_i}||²`` with learnable class centres. Simplified:
the centres are ordinary parameters updated by the training optimiser (centre loss uses its own update
rate α), and no explicit inter-class push is added — CE already separates the classes.

KE-FER — after "Knowledge-Enhanced Facial Expression Recognition with Emotional-to-Neutral
Transformation" (arXiv 2409.08598):

- classification is ``scale · cos(image feature, class text embedding)`` trained with CE;
- ``EmotionalToNeutral``, a small MLP, maps the expression feature f to a "neutral" feature n, trained so
  that the image-space difference f − n matches the text-space difference t_y − t_neutral
  (``text_difference_alignment_loss``);
- ``self_contrast_loss`` pulls f toward its class text t_y and pushes it away from its own n.

Choices the paper summary leaves open (documented where they are made): all features are L2-normalised
before the differences are taken, so image and text vectors live on the same unit sphere the cosine
classifier uses; the alignment defaults to squared Euclidean distance between the two differences
(matching magnitude as well as direction, so n lands where the neutral text lies relative to f); the
self-contrast uses the neutral feature as its only negative (other classes' texts are already negatives in
the CE term); neutral-labelled samples are left out of the self-contrast (their neutral transformation
should be themselves, so pushing them from it contradicts the alignment). Loss weights default to 1.
"""

from __future__ import annotations

import math
from typing import Final, Literal, NamedTuple

import torch
import torch.nn.functional as F
from torch import nn

Reduction = Literal["mean", "none"]
AlignmentMetric = Literal["mse", "cosine"]

# CLIP's initial temperature (1 / 0.07) and its clamp at 100, as FER-former's text-similarity head uses.
_INIT_LOGIT_SCALE: Final = math.log(1.0 / 0.07)
_MAX_LOGIT_SCALE: Final = 100.0


def _reduce(per_sample: torch.Tensor, reduction: Reduction) -> torch.Tensor:
    return per_sample.mean() if reduction == "mean" else per_sample


def _masked_mean(per_sample: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Mean over the selected samples; 0 (not NaN) when a batch selects none."""
    weights = mask.to(per_sample.dtype)
    return (per_sample * weights).sum() / weights.sum().clamp(min=1.0)


# ----------------------------------------------------------------------------- STT


class CompactSoftmaxLoss(nn.Module):
    """Softmax cross-entropy plus a pull of each feature toward its learnable class centre."""

    def __init__(self, num_classes: int, feature_dim: int, center_weight: float = 0.01) -> None:
        super().__init__()
        # λ = 0.01: for LayerNorm-scaled features (|f|² ≈ D = 128) the centre term starts near CE's scale.
        self.center_weight = center_weight
        self.centers = nn.Parameter(torch.randn(num_classes, feature_dim))

    def center_term(self, features: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        """½ · mean squared distance of each feature to its class centre (unweighted)."""
        return 0.5 * (features - self.centers[labels]).pow(2).sum(dim=-1).mean()

    def forward(self, logits: torch.Tensor, features: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        """``logits`` [N, C] and ``features`` [N, D] of the same samples (STT: its clip embedding)."""
        return F.cross_entropy(logits, labels) + self.center_weight * self.center_term(features, labels)


# ----------------------------------------------------------------------------- KE-FER


class EmotionalToNeutral(nn.Module):
    """KE-FER's transformation: an expression feature [N, D] -> its "neutral" feature [N, D]."""

    def __init__(self, dim: int, hidden_dim: int | None = None) -> None:
        super().__init__()
        hidden = hidden_dim or dim
        self.mlp = nn.Sequential(nn.Linear(dim, hidden), nn.GELU(), nn.Linear(hidden, dim))

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        neutral: torch.Tensor = self.mlp(features)
        return neutral


def text_difference_alignment_loss(
    image_feat: torch.Tensor,
    neutral_feat: torch.Tensor,
    text_class: torch.Tensor,
    text_neutral: torch.Tensor,
    metric: AlignmentMetric = "mse",
    reduction: Reduction = "mean",
) -> torch.Tensor:
    """Distance between (image − neutral) [N, D] and (class text − neutral text) [N, D] (or [D]).

    ``mse``: squared Euclidean distance between the differences; ``cosine``: 1 − their cosine (direction
    only, undefined when the text difference is 0, i.e. for the neutral class). Inputs are used as given:
    normalise them first if they should live on the unit sphere (``KEFERObjective`` does).
    """
    image_diff = image_feat - neutral_feat
    text_diff = text_class - text_neutral
    if metric == "cosine":
        per_sample = 1.0 - F.cosine_similarity(image_diff, text_diff.expand_as(image_diff), dim=-1)
    else:
        per_sample = (image_diff - text_diff).pow(2).sum(dim=-1)
    return _reduce(per_sample, reduction)


def self_contrast_loss(
    image_feat: torch.Tensor,
    neutral_feat: torch.Tensor,
    text_embeddings: torch.Tensor,
    labels: torch.Tensor,
    temperature: float = 0.1,
    reduction: Reduction = "mean",
) -> torch.Tensor:
    """−log softmax of cos(f, t_y)/τ against cos(f, n)/τ: the class text is the positive, the sample's own
    neutral transformation the one negative. ``text_embeddings`` is [C, D]; cosines, so any scale works."""
    image = F.normalize(image_feat, dim=-1)
    positive = (image * F.normalize(text_embeddings, dim=-1)[labels]).sum(dim=-1)
    negative = (image * F.normalize(neutral_feat, dim=-1)).sum(dim=-1)
    # −log(e^p / (e^p + e^n)) = softplus(n − p), without overflow for small temperatures.
    per_sample = F.softplus((negative - positive) / temperature)
    return _reduce(per_sample, reduction)


class KEFERLoss(NamedTuple):
    """The weighted total to back-propagate, its unweighted parts (for logging) and the logits."""

    total: torch.Tensor
    classification: torch.Tensor
    alignment: torch.Tensor
    self_contrast: torch.Tensor
    logits: torch.Tensor


class KEFERObjective(nn.Module):
    """KE-FER's objective for any model with an image embedding [N, D] and text embeddings [C, D].

    Holds the learnable parts of the objective (the emotional-to-neutral MLP and the logit scale), so put
    its parameters in the optimiser too. With FER-former: ``_, image, text = model.forward_serving(x)``,
    then ``objective(image, text, labels)``.
    """

    def __init__(
        self,
        dim: int,
        neutral_index: int,
        hidden_dim: int | None = None,
        classification_weight: float = 1.0,
        alignment_weight: float = 1.0,
        self_contrast_weight: float = 1.0,
        temperature: float = 0.1,
        alignment_metric: AlignmentMetric = "mse",
    ) -> None:
        super().__init__()
        self.neutral_index = neutral_index
        self.weights = (classification_weight, alignment_weight, self_contrast_weight)
        self.temperature = temperature
        self.alignment_metric: AlignmentMetric = alignment_metric
        self.to_neutral = EmotionalToNeutral(dim, hidden_dim)
        self.logit_scale = nn.Parameter(torch.tensor(_INIT_LOGIT_SCALE))

    def logits(self, image: torch.Tensor, text: torch.Tensor) -> torch.Tensor:
        """scale · cos(image [N, D], text [C, D]) -> [N, C]."""
        scale = self.logit_scale.exp().clamp(max=_MAX_LOGIT_SCALE)
        return scale * F.normalize(image, dim=-1) @ F.normalize(text, dim=-1).t()

    def forward(
        self, image_embedding: torch.Tensor, text_embeddings: torch.Tensor, labels: torch.Tensor
    ) -> KEFERLoss:
        image = F.normalize(image_embedding, dim=-1)
        text = F.normalize(text_embeddings, dim=-1)
        neutral = F.normalize(self.to_neutral(image), dim=-1)
        logits = self.logits(image, text)
        classification = F.cross_entropy(logits, labels)
        expressive = labels != self.neutral_index
        alignment = self._alignment(image, neutral, text, labels, expressive)
        contrast = self_contrast_loss(image, neutral, text, labels, self.temperature, reduction="none")
        self_contrast = _masked_mean(contrast, expressive)
        w_class, w_align, w_contrast = self.weights
        total = w_class * classification + w_align * alignment + w_contrast * self_contrast
        return KEFERLoss(total, classification, alignment, self_contrast, logits)

    def _alignment(
        self,
        image: torch.Tensor,
        neutral: torch.Tensor,
        text: torch.Tensor,
        labels: torch.Tensor,
        expressive: torch.Tensor,
    ) -> torch.Tensor:
        per_sample = text_difference_alignment_loss(
            image, neutral, text[labels], text[self.neutral_index], self.alignment_metric, reduction="none"
        )
        # MSE gives neutral faces a real target (n = f, an identity); cosine has none (zero difference).
        mask = expressive if self.alignment_metric == "cosine" else torch.ones_like(expressive)
        return _masked_mean(per_sample, mask)
