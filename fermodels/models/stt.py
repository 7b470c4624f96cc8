"""STT-style spatio-temporal transformer for clips of aligned faces.

After STT (Ma, Sun and Li, "Spatio-Temporal Transformer for Dynamic Facial Expression Recognition in the
Wild", arXiv 2205.04749): a CNN turns every frame into a feature sequence (one token per cell of its
h x w map), and each transformer block applies spatial self-attention within a frame and then temporal
self-attention across frames. The paper trains it with a "compact softmax cross entropy" loss
(``fermodels.losses.CompactSoftmaxLoss``).

Simplified for a 2-core CPU target:

- The backbone is FER-former's IR stem (``layers.ir_stem``, 16/32/64/128 channels, 112 -> 7) instead of
  ResNet-18, so a 112 x 112 frame gives 7 x 7 = 49 tokens; other input sizes are pooled to the same grid.
- Attention is factorised as in TimeSformer's "divided" attention: spatial attention over the 49 tokens
  of each frame, then temporal attention over the T tokens at each grid cell. Learned spatial and temporal
  position embeddings are added once, before the first block.
- The clip representation is the mean of all final tokens (no class token); the classifier is linear.
- Defaults: width 128, depth 2, 4 heads: 1.5 M parameters.

Clips may be shorter than ``max_frames`` (the temporal position embedding is sliced to T). Everything is
TorchScript-safe: ``Final`` constants, shape checks only, no data-dependent Python control flow.
"""

from typing import Final

import torch
import torch.nn.functional as F
from torch import nn

from fermodels.models.layers import Block, classifier_head, init_transformer_weights, ir_stem


class SpatioTemporalBlock(nn.Module):
    """Spatial attention within each frame, then temporal attention across frames at each grid cell."""

    def __init__(self, dim: int, num_heads: int, mlp_ratio: float, drop: float, attn_drop: float) -> None:
        super().__init__()
        self.spatial = Block(dim, num_heads, mlp_ratio, drop, attn_drop)
        self.temporal = Block(dim, num_heads, mlp_ratio, drop, attn_drop)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """[N, T, L, D] -> [N, T, L, D]."""
        batch, frames, length, dim = x.shape
        x = self.spatial(x.reshape(batch * frames, length, dim)).reshape(batch, frames, length, dim)
        # Cells become the batch: each of the N * L sequences is one grid cell followed through time.
        x = x.transpose(1, 2).reshape(batch * length, frames, dim)
        x = self.temporal(x).reshape(batch, length, frames, dim)
        return x.transpose(1, 2)


class STT(nn.Module):
    """Clip ``[N, T, 3, S, S]`` (normalised) -> class logits ``[N, C]``.

    ``forward_features`` gives the token grid ``[N, T, L, D]``; ``pool`` its mean ``[N, D]``,
    which is also what the classifier and ``CompactSoftmaxLoss`` see. ``forward_serving`` returns both
    for a video export (the wrapper adds softmax and L2 normalisation).
    """

    num_classes: Final[int]
    dim: Final[int]
    grid_size: Final[int]
    max_frames: Final[int]

    def __init__(
        self,
        num_classes: int = 7,
        stem_channels: tuple[int, ...] = (16, 32, 64, 128),
        grid_size: int = 7,
        max_frames: int = 16,
        dim: int = 128,
        depth: int = 2,
        num_heads: int = 4,
        mlp_ratio: float = 4.0,
        drop_rate: float = 0.0,
        attn_drop_rate: float = 0.0,
    ) -> None:
        super().__init__()
        if len(stem_channels) < 2 or grid_size <= 0 or max_frames <= 0:
            raise ValueError("need >= 2 stem widths and a positive grid_size and max_frames")
        self.num_classes = num_classes
        self.dim = dim
        self.grid_size = grid_size
        self.max_frames = max_frames
        self.stem = ir_stem(stem_channels)
        self.proj = nn.Linear(stem_channels[-1], dim)
        # Separate spatial [L] and temporal [T] codes (L + T vectors, not L * T): the same factorisation
        # as the attention, and it lets a shorter clip use the first T temporal codes.
        self.spatial_pos = nn.Parameter(torch.zeros(1, 1, grid_size * grid_size, dim))
        self.temporal_pos = nn.Parameter(torch.zeros(1, max_frames, 1, dim))
        self.blocks = nn.Sequential(
            *[SpatioTemporalBlock(dim, num_heads, mlp_ratio, drop_rate, attn_drop_rate) for _ in range(depth)]
        )
        self.norm, self.head_drop, self.head = classifier_head(dim, num_classes, drop_rate)
        init_transformer_weights(self, (self.spatial_pos, self.temporal_pos))

    def tokenize(self, x: torch.Tensor) -> torch.Tensor:
        """Clip [N, T, 3, S, S] -> per-frame tokens with position codes [N, T, L, D]."""
        batch, frames = x.shape[0], x.shape[1]
        if frames > self.max_frames:
            raise ValueError(f"clip has {frames} frames, more than max_frames={self.max_frames}")
        fmap = F.adaptive_avg_pool2d(self.stem(x.flatten(0, 1)), self.grid_size)
        tokens: torch.Tensor = self.proj(fmap.flatten(2).transpose(1, 2))
        tokens = tokens.reshape(batch, frames, self.grid_size * self.grid_size, self.dim)
        return tokens + self.spatial_pos + self.temporal_pos[:, :frames]

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        features: torch.Tensor = self.norm(self.blocks(self.tokenize(x)))
        return features

    def pool(self, features: torch.Tensor) -> torch.Tensor:
        """[N, T, L, D] -> [N, D]. Only the temporal position codes make this order-sensitive: attention
        is permutation-equivariant and the mean is symmetric."""
        return features.mean(dim=(1, 2))

    def forward_head(self, features: torch.Tensor) -> torch.Tensor:
        logits: torch.Tensor = self.head(self.head_drop(self.pool(features)))
        return logits

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.forward_head(self.forward_features(x))

    @torch.jit.export
    def forward_serving(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Serving view: (class logits [N, C], clip embedding [N, D]) from one pass."""
        embedding = self.pool(self.forward_features(x))
        logits: torch.Tensor = self.head(embedding)
        return logits, embedding
