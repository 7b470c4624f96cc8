"""POSTER-style two-stream model: image pyramid x facial landmarks, fused by two-way cross-attention.

After POSTER (Zheng, Pramana and Zhang, "POSTER: A Pyramid Cross-Fusion Transformer Network for Facial
Expression Recognition", arXiv 2204.04083): an image stream and a landmark stream are fused at several
pyramid scales by cross-attention in both directions (landmark queries attend to image keys/values, image
queries attend to landmark keys/values), and the fused tokens of all scales go through a transformer and a
linear head.

Simplified for a 2-core CPU target and for what the gateway can supply:

- Image stream: FER-former's IR stem (``layers.ir_stem``, 16/32 channels, 112 -> 28) then one pyramid
  level (``layers.ir_stage``) per scale (64 channels at 14 x 14, 128 at 7 x 7) instead of IR-50; each
  level's map is pooled to a fixed grid, so other input sizes work, and projected to tokens with a
  learned position code.
- Landmark stream: the paper uses a pretrained landmark CNN (MobileFaceNet) on the image. We embed the
  landmark *coordinates* instead (the 5 MTCNN points, or 68 when available, in [0, 1] crop coordinates):
  an MLP on each point's Fourier features (sin/cos at 1..32 cycles per crop) plus a learned per-landmark
  identity code, then one self-attention block per scale so
  deeper scales see landmark context, as the landmark CNN's deeper stages do. Coordinates are exact, cost
  nothing to compute and need no second backbone; a heatmap encoder would mostly re-learn them.
  Caveat: after 5-point similarity alignment the 5 points sit near the template, so only their residuals
  (e.g. mouth corners spreading) carry expression; 68 points carry far more.
- Fusion: one pre-norm cross-attention per direction per scale, both computed from the pre-fusion tokens
  (POSTER's two parallel branches); the streams themselves continue unfused to the next scale, as
  POSTER's backbones do.
- Head: a class token, a learned per-scale code, 2 pre-norm blocks (width 128, 4 heads) and a linear layer.
  1.8 M parameters.

TorchScript-safe: ``Final`` constants, shape checks only, no data-dependent Python control flow.
"""

import math
from typing import Final

import torch
import torch.nn.functional as F
from torch import nn

from fermodels.models.layers import (
    Block,
    CrossAttention,
    classifier_head,
    init_transformer_weights,
    ir_stage,
    ir_stem,
    transformer_blocks,
)


class CrossFusion(nn.Module):
    """Two-way cross-attention at one scale: landmarks <- image and image <- landmarks (pre-norm)."""

    def __init__(self, dim: int, num_heads: int, attn_drop: float) -> None:
        super().__init__()
        self.norm_image = nn.LayerNorm(dim, eps=1e-6)
        self.norm_landmarks = nn.LayerNorm(dim, eps=1e-6)
        self.landmarks_from_image = CrossAttention(dim, num_heads, attn_drop)
        self.image_from_landmarks = CrossAttention(dim, num_heads, attn_drop)

    def forward(self, image: torch.Tensor, landmarks: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        image_n, landmarks_n = self.norm_image(image), self.norm_landmarks(landmarks)
        fused_landmarks = landmarks + self.landmarks_from_image(landmarks_n, image_n)
        fused_image = image + self.image_from_landmarks(image_n, landmarks_n)
        return fused_image, fused_landmarks


class LandmarkEmbed(nn.Module):
    """Landmarks [N, K, 2] in [0, 1] -> tokens [N, K, D]: an MLP on Fourier features of each point plus
    a learned identity code per landmark index."""

    frequencies: torch.Tensor

    def __init__(self, num_landmarks: int, dim: int, num_frequencies: int = 6) -> None:
        super().__init__()
        # Sines and cosines at 1, 2, 4, ... cycles per crop (NeRF's positional encoding): a mouth corner
        # moving 3 px of 112 changes the top frequencies by ~half a radian, which raw (x, y) through one
        # small linear layer would barely register.
        frequencies = math.pi * 2.0 ** torch.arange(num_frequencies, dtype=torch.float32)
        self.register_buffer("frequencies", frequencies, persistent=False)
        self.mlp = nn.Sequential(nn.Linear(2 + 4 * num_frequencies, dim), nn.GELU(), nn.Linear(dim, dim))
        # The MLP sees only (x, y); without an identity code a left eye and a right mouth corner at the
        # same place would be the same token.
        self.identity = nn.Parameter(torch.zeros(1, num_landmarks, dim))

    def forward(self, landmarks: torch.Tensor) -> torch.Tensor:
        # Centred to [-1, 1] so the face centre is 0 for the raw coordinates the MLP also sees.
        centred = landmarks * 2.0 - 1.0
        angles = (centred.unsqueeze(-1) * self.frequencies).flatten(2)
        tokens: torch.Tensor = self.mlp(torch.cat([centred, angles.sin(), angles.cos()], dim=-1))
        return tokens + self.identity


class PyramidLevel(nn.Module):
    """One scale: the next CNN stage, its tokens, the landmark stream's next block, and their fusion."""

    grid_size: Final[int]

    def __init__(
        self,
        in_chs: int,
        out_chs: int,
        grid_size: int,
        dim: int,
        num_heads: int,
        block_args: tuple[float, ...],
    ) -> None:
        super().__init__()
        mlp_ratio, drop, attn_drop = block_args
        self.grid_size = grid_size
        self.stage = ir_stage(in_chs, out_chs)
        self.proj = nn.Linear(out_chs, dim)
        self.pos_embed = nn.Parameter(torch.zeros(1, grid_size * grid_size, dim))
        self.landmark_block = Block(dim, num_heads, mlp_ratio, drop, attn_drop)
        self.fusion = CrossFusion(dim, num_heads, attn_drop)
        # Tells the final transformer which scale a token came from (both streams share the code).
        self.level_embed = nn.Parameter(torch.zeros(1, 1, dim))

    def forward(
        self, fmap: torch.Tensor, landmarks: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """-> (next feature map, next landmark tokens, this scale's fused tokens [N, g*g + K, D])."""
        fmap = self.stage(fmap)
        pooled = F.adaptive_avg_pool2d(fmap, self.grid_size).flatten(2).transpose(1, 2)
        image_tokens = self.proj(pooled) + self.pos_embed
        landmarks = self.landmark_block(landmarks)
        fused_image, fused_landmarks = self.fusion(image_tokens, landmarks)
        return fmap, landmarks, torch.cat([fused_image, fused_landmarks], dim=1) + self.level_embed


class POSTER(nn.Module):
    """(image [N, 3, S, S] normalised, landmarks [N, K, 2] in [0, 1]) -> class logits [N, C]."""

    num_classes: Final[int]
    num_landmarks: Final[int]
    dim: Final[int]

    def __init__(
        self,
        num_classes: int = 7,
        num_landmarks: int = 5,
        stem_channels: tuple[int, ...] = (16, 32),
        pyramid_channels: tuple[int, ...] = (64, 128),
        grid_sizes: tuple[int, ...] = (14, 7),
        dim: int = 128,
        depth: int = 2,
        num_heads: int = 4,
        mlp_ratio: float = 4.0,
        drop_rate: float = 0.0,
        attn_drop_rate: float = 0.0,
    ) -> None:
        super().__init__()
        _check_args(num_landmarks, stem_channels, pyramid_channels, grid_sizes)
        self.num_classes = num_classes
        self.num_landmarks = num_landmarks
        self.dim = dim
        self.stem = ir_stem(stem_channels)
        self.landmark_embed = LandmarkEmbed(num_landmarks, dim)
        widths = (stem_channels[-1], *pyramid_channels)
        block_args = (mlp_ratio, drop_rate, attn_drop_rate)
        self.levels = nn.ModuleList(
            PyramidLevel(widths[i], widths[i + 1], grid_sizes[i], dim, num_heads, block_args)
            for i in range(len(pyramid_channels))
        )
        self.cls_token = nn.Parameter(torch.zeros(1, 1, dim))
        self.blocks = transformer_blocks(depth, dim, num_heads, mlp_ratio, drop_rate, attn_drop_rate)
        self.norm, self.head_drop, self.head = classifier_head(dim, num_classes, drop_rate)
        # Learned tokens and codes, in registration order: cls_token comes after the levels' codes.
        codes = ("cls_token", "pos_embed", "level_embed", "identity")
        init_transformer_weights(self, (p for n, p in self.named_parameters() if n.endswith(codes)))

    def forward_features(self, image: torch.Tensor, landmarks: torch.Tensor) -> torch.Tensor:
        """-> [N, 1 + sum(g*g + K), D]: the class token, then each scale's fused image and landmark tokens."""
        if landmarks.dim() != 3 or landmarks.shape[1] != self.num_landmarks or landmarks.shape[2] != 2:
            raise ValueError(f"landmarks must be [N, {self.num_landmarks}, 2], got {landmarks.shape}")
        fmap = self.stem(image)
        points = self.landmark_embed(landmarks)
        tokens = [self.cls_token.expand(image.shape[0], -1, -1)]
        for level in self.levels:
            fmap, points, fused = level(fmap, points)
            tokens.append(fused)
        features: torch.Tensor = self.norm(self.blocks(torch.cat(tokens, dim=1)))
        return features

    def forward_head(self, features: torch.Tensor) -> torch.Tensor:
        logits: torch.Tensor = self.head(self.head_drop(features[:, 0]))
        return logits

    def forward(self, image: torch.Tensor, landmarks: torch.Tensor) -> torch.Tensor:
        return self.forward_head(self.forward_features(image, landmarks))

    @torch.jit.export
    def forward_serving(
        self, image: torch.Tensor, landmarks: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Serving view: (class logits [N, C], the class token's features [N, D]) from one pass."""
        features = self.forward_features(image, landmarks)
        return self.forward_head(features), features[:, 0]


def _check_args(
    num_landmarks: int,
    stem_channels: tuple[int, ...],
    pyramid_channels: tuple[int, ...],
    grid_sizes: tuple[int, ...],
) -> None:
    if num_landmarks <= 0 or len(stem_channels) < 2:
        raise ValueError("need num_landmarks >= 1 and at least two stem widths")
    if len(pyramid_channels) < 2 or len(grid_sizes) != len(pyramid_channels):
        raise ValueError("need >= 2 pyramid scales and one grid size per scale")
