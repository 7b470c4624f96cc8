"""Building blocks shared by the transformer models (FER-former, STT, POSTER), in the style of timm.

- ``IRBlock``, ``ir_stage`` and ``ir_stem``: the scaled-down IR-50 (ArcFace) face CNN that every model
  starts from.
- ``Attention`` (self-attention) and ``CrossAttention`` (queries from one sequence, keys/values from
  another), which share their head layout, scaled-dot-product attention and head merge through
  ``AttentionBase``; ``Block`` is the pre-norm transformer block around ``Attention``.
- ``classifier_head`` and ``init_transformer_weights``: the final norm / dropout / linear classifier
  and timm's ViT initialisation.

Module attribute names are what the models' ``state_dict`` keys are made of (``attn.qkv``, ``mlp.0``,
``stem.3.residual.1`` ...): keep them. Everything is TorchScript-safe: ``Final`` constants, no
data-dependent Python control flow in ``forward``.
"""

import itertools
from collections.abc import Iterable
from typing import Final

import torch
import torch.nn.functional as F
from torch import nn

# timm's ViT initialisation: truncated normal with this standard deviation, zero biases.
INIT_STD: Final = 0.02


class IRBlock(nn.Module):
    """ArcFace's improved-residual block (BN-conv-BN-PReLU-conv-BN + shortcut), as in IR-50."""

    def __init__(self, in_chs: int, out_chs: int, stride: int = 1) -> None:
        super().__init__()
        self.residual = nn.Sequential(
            nn.BatchNorm2d(in_chs),
            nn.Conv2d(in_chs, out_chs, 3, 1, 1, bias=False),
            nn.BatchNorm2d(out_chs),
            nn.PReLU(out_chs),
            nn.Conv2d(out_chs, out_chs, 3, stride, 1, bias=False),
            nn.BatchNorm2d(out_chs),
        )
        self.shortcut = _shortcut(in_chs, out_chs, stride)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        residual: torch.Tensor = self.residual(x)
        shortcut: torch.Tensor = self.shortcut(x)
        return residual + shortcut


def _shortcut(in_chs: int, out_chs: int, stride: int) -> nn.Module:
    if in_chs == out_chs and stride == 1:
        return nn.Identity()
    return nn.Sequential(nn.Conv2d(in_chs, out_chs, 1, stride, bias=False), nn.BatchNorm2d(out_chs))


def ir_stage(in_chs: int, out_chs: int) -> nn.Sequential:
    """One IR stage: a strided block (halves the map, ``in_chs -> out_chs``) and a plain one."""
    return nn.Sequential(IRBlock(in_chs, out_chs, stride=2), IRBlock(out_chs, out_chs))


def ir_stem(channels: tuple[int, ...]) -> nn.Sequential:
    """112 -> 56 (conv), then one ``ir_stage`` per extra width: 56 -> 28 -> 14 -> ...

    The stages' blocks are flattened into the one ``Sequential`` (``stem.3``, ``stem.4``, ...).
    """
    if len(channels) < 2:
        raise ValueError("stem_channels needs at least two widths")
    layers: list[nn.Module] = [
        nn.Conv2d(3, channels[0], 3, 2, 1, bias=False),
        nn.BatchNorm2d(channels[0]),
        nn.PReLU(channels[0]),
    ]
    for in_chs, out_chs in itertools.pairwise(channels):
        layers.extend(ir_stage(in_chs, out_chs))
    return nn.Sequential(*layers)


class AttentionBase(nn.Module):
    """Multi-head attention without its projections: subclasses own the input projections and ``proj``
    (so their ``state_dict`` keys are theirs), and use ``split_heads`` and ``attend`` for the rest."""

    num_heads: Final[int]
    head_dim: Final[int]
    attn_drop: Final[float]

    def __init__(self, dim: int, num_heads: int, attn_drop: float = 0.0) -> None:
        super().__init__()
        if dim % num_heads:
            raise ValueError(f"dim {dim} is not divisible by num_heads {num_heads}")
        self.num_heads = num_heads
        self.head_dim = dim // num_heads
        self.attn_drop = attn_drop

    def split_heads(self, x: torch.Tensor, parts: int) -> torch.Tensor:
        """[N, L, parts * D] -> [parts, N, H, L, D / H]: e.g. 3 for fused q/k/v, 2 for k/v, 1 for q."""
        batch, length = x.shape[0], x.shape[1]
        return x.reshape(batch, length, parts, self.num_heads, self.head_dim).permute(2, 0, 3, 1, 4)

    def attend(self, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
        """Heads [N, H, Lq, D / H] (keys/values [N, H, Lk, D / H]) -> merged heads [N, Lq, D]."""
        dropout_p = self.attn_drop if self.training else 0.0
        x = F.scaled_dot_product_attention(q, k, v, dropout_p=dropout_p)
        return x.transpose(1, 2).flatten(2)


class Attention(AttentionBase):
    """Multi-head self-attention with a fused q/k/v projection."""

    def __init__(self, dim: int, num_heads: int, attn_drop: float = 0.0) -> None:
        super().__init__(dim, num_heads, attn_drop)
        self.qkv = nn.Linear(dim, dim * 3)
        self.proj = nn.Linear(dim, dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        q, k, v = self.split_heads(self.qkv(x), 3).unbind(0)
        out: torch.Tensor = self.proj(self.attend(q, k, v))
        return out


class CrossAttention(AttentionBase):
    """Multi-head attention whose queries come from ``x`` and keys/values from ``context``."""

    def __init__(self, dim: int, num_heads: int, attn_drop: float = 0.0) -> None:
        super().__init__(dim, num_heads, attn_drop)
        self.q = nn.Linear(dim, dim)
        self.kv = nn.Linear(dim, dim * 2)
        self.proj = nn.Linear(dim, dim)

    def forward(self, x: torch.Tensor, context: torch.Tensor) -> torch.Tensor:
        q = self.split_heads(self.q(x), 1)[0]
        k, v = self.split_heads(self.kv(context), 2).unbind(0)
        out: torch.Tensor = self.proj(self.attend(q, k, v))
        return out


class Block(nn.Module):
    """Pre-norm transformer block (timm's ViT block without layer scale / drop path)."""

    def __init__(self, dim: int, num_heads: int, mlp_ratio: float, drop: float, attn_drop: float) -> None:
        super().__init__()
        hidden = int(dim * mlp_ratio)
        self.norm1 = nn.LayerNorm(dim, eps=1e-6)
        self.attn = Attention(dim, num_heads, attn_drop)
        self.norm2 = nn.LayerNorm(dim, eps=1e-6)
        self.mlp = nn.Sequential(
            nn.Linear(dim, hidden), nn.GELU(), nn.Dropout(drop), nn.Linear(hidden, dim), nn.Dropout(drop)
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x + self.attn(self.norm1(x))
        mlp: torch.Tensor = self.mlp(self.norm2(x))
        return x + mlp


def transformer_blocks(
    depth: int, dim: int, num_heads: int, mlp_ratio: float, drop: float, attn_drop: float
) -> nn.Sequential:
    """``depth`` ``Block``s in sequence."""
    return nn.Sequential(*[Block(dim, num_heads, mlp_ratio, drop, attn_drop) for _ in range(depth)])


def classifier_head(dim: int, num_classes: int, drop: float) -> tuple[nn.LayerNorm, nn.Dropout, nn.Linear]:
    """The final token norm, the dropout before the classifier, and the linear classifier."""
    return nn.LayerNorm(dim, eps=1e-6), nn.Dropout(drop), nn.Linear(dim, num_classes)


def init_transformer_weights(module: nn.Module, extra_params: Iterable[nn.Parameter] = ()) -> None:
    """timm's ViT initialisation, in a fixed order so that a seed fixes the weights.

    First ``extra_params`` (learned tokens, position codes) in the order given, then every ``nn.Linear``
    of ``module`` in ``module.modules()`` order: truncated normal (std ``INIT_STD``) weights, zero biases.
    Convolutions and norms keep PyTorch's defaults.
    """
    for param in extra_params:
        nn.init.trunc_normal_(param, std=INIT_STD)
    for layer in module.modules():
        if isinstance(layer, nn.Linear):
            nn.init.trunc_normal_(layer.weight, std=INIT_STD)
            if layer.bias is not None:
                nn.init.zeros_(layer.bias)
