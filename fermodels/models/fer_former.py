"""FER-former-style hybrid CNN + transformer with a class token and a text ("CLIP") token.

After FER-former (arXiv 2303.12997): a CNN face stem gives a C x 14 x 14 map, which is pooled to a 12 x 12
grid and cut into multi-granularity tokens with the paper's patch sizes 2, 4, 6 and 12
(36 + 9 + 4 + 1 = 50 tokens). We keep the paper's sizes rather than 2/4/7/14 on the raw map: 50 tokens
instead of 70 makes attention cheaper on the 2-core CPU target, and the released code does the same pooling.
Two learned tokens are prepended: the class token feeds the classifier, the text token is projected into a
shared space and compared by cosine with the (projected) text embeddings of one prompt per class.

Scaled down for CPU serving: a 5-block IR stem (32/64/128 channels instead of IR-50's 256) and a
4-layer, 192-wide encoder, ~2.7 M parameters in all (the paper: IR-50 + depth 16).

The text embeddings are a constant buffer ``[P, T]`` (from ``fermodels.text``); only their T -> D
projection is learned. Everything here is TorchScript-safe: ``Final`` constants, no data-dependent Python
control flow in ``forward``.
"""

import math
from typing import Final

import torch
import torch.nn.functional as F
from torch import nn

from fermodels.models.layers import INIT_STD, init_transformer_weights, ir_stem, transformer_blocks

# CLIP's initial temperature: logits = exp(logit_scale) * cos, starting at 1 / 0.07.
_INIT_LOGIT_SCALE: Final = math.log(1.0 / 0.07)
# CLIP clamps the learned scale at 100 so the contrastive loss cannot blow up.
_MAX_LOGIT_SCALE: Final = 100.0


class GranularityTokens(nn.Module):
    """One granularity: average-pool ``patch_size`` x ``patch_size`` cells, embed, add a position code."""

    patch_size: Final[int]

    def __init__(self, in_chs: int, dim: int, grid_size: int, patch_size: int) -> None:
        super().__init__()
        self.patch_size = patch_size
        num_tokens = (grid_size // patch_size) ** 2
        # Pooling + a 1x1 projection instead of a k x k patch conv: a 12x12 conv on 128 channels would
        # alone cost more parameters than the whole model.
        self.proj = nn.Linear(in_chs, dim)
        self.pos_embed = nn.Parameter(torch.zeros(1, num_tokens, dim))
        nn.init.trunc_normal_(self.pos_embed, std=INIT_STD)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = F.avg_pool2d(x, self.patch_size)
        tokens: torch.Tensor = self.proj(x.flatten(2).transpose(1, 2))
        return tokens + self.pos_embed


class FERFormer(nn.Module):
    """Image -> (class logits [N, C], text-similarity logits [N, P]).

    ``text_embeddings`` is the ``[P, T]`` matrix of prompt embeddings from a real text encoder
    (``fermodels.text.load_text_embeddings``); it is stored as a buffer, so checkpoints and TorchScript
    exports carry it. ``forward_serving`` exposes the unscaled pieces the serving wrapper needs.
    """

    num_classes: Final[int]
    num_prompts: Final[int]
    dim: Final[int]
    embed_dim: Final[int]
    grid_size: Final[int]
    max_logit_scale: Final[float] = _MAX_LOGIT_SCALE

    def __init__(
        self,
        text_embeddings: torch.Tensor,
        num_classes: int = 7,
        stem_channels: tuple[int, ...] = (32, 64, 128),
        grid_size: int = 12,
        patch_sizes: tuple[int, ...] = (2, 4, 6, 12),
        dim: int = 192,
        depth: int = 4,
        num_heads: int = 4,
        mlp_ratio: float = 4.0,
        embed_dim: int | None = None,
        drop_rate: float = 0.0,
        attn_drop_rate: float = 0.0,
    ) -> None:
        super().__init__()
        _check_args(text_embeddings, grid_size, patch_sizes)
        self.num_classes = num_classes
        self.num_prompts = text_embeddings.shape[0]
        self.dim = dim
        self.embed_dim = embed_dim or dim
        self.grid_size = grid_size
        self.stem = ir_stem(stem_channels)
        self.tokenizers = nn.ModuleList(
            GranularityTokens(stem_channels[-1], dim, grid_size, p) for p in patch_sizes
        )
        self.cls_token = nn.Parameter(torch.zeros(1, 1, dim))
        self.text_token = nn.Parameter(torch.zeros(1, 1, dim))
        self.blocks = transformer_blocks(depth, dim, num_heads, mlp_ratio, drop_rate, attn_drop_rate)
        self.norm = nn.LayerNorm(dim, eps=1e-6)
        self.head = nn.Linear(dim, num_classes)
        self.image_proj = nn.Linear(dim, self.embed_dim)
        self.text_proj = nn.Linear(text_embeddings.shape[1], self.embed_dim)
        self.logit_scale = nn.Parameter(torch.tensor(_INIT_LOGIT_SCALE))
        self.register_buffer("text_embeddings", text_embeddings.detach().clone().float())
        init_transformer_weights(self, (self.cls_token, self.text_token))

    def tokenize(self, x: torch.Tensor) -> torch.Tensor:
        """Normalised image -> [N, 2 + L, D]: class token, text token, multi-granularity tokens."""
        fmap = F.adaptive_avg_pool2d(self.stem(x), self.grid_size)
        tokens = [self.cls_token.expand(x.shape[0], -1, -1), self.text_token.expand(x.shape[0], -1, -1)]
        for tokenizer in self.tokenizers:
            tokens.append(tokenizer(fmap))
        return torch.cat(tokens, dim=1)

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        features: torch.Tensor = self.norm(self.blocks(self.tokenize(x)))
        return features

    def image_embedding(self, features: torch.Tensor) -> torch.Tensor:
        """The text token's output projected into the shared space (not normalised)."""
        embedding: torch.Tensor = self.image_proj(features[:, 1])
        return embedding

    def text_embedding(self) -> torch.Tensor:
        """The prompts' embeddings projected into the shared space, [P, E] (not normalised)."""
        embedding: torch.Tensor = self.text_proj(self.text_embeddings)
        return embedding

    def forward_head(self, features: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        logits: torch.Tensor = self.head(features[:, 0])
        image = F.normalize(self.image_embedding(features), dim=-1)
        text = F.normalize(self.text_embedding(), dim=-1)
        scale = self.logit_scale.exp().clamp(max=self.max_logit_scale)
        return logits, scale * image @ text.t()

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Training view: both heads' logits (loss = CE(class) + CE(text similarity), as in the paper)."""
        return self.forward_head(self.forward_features(x))

    @torch.jit.export
    def forward_serving(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Serving view: (class logits [N, C], image embedding [N, E], text embedding [P, E])."""
        features = self.forward_features(x)
        return self.head(features[:, 0]), self.image_embedding(features), self.text_embedding()


def _check_args(text_embeddings: torch.Tensor, grid_size: int, patch_sizes: tuple[int, ...]) -> None:
    if text_embeddings.dim() != 2 or text_embeddings.shape[0] == 0:
        raise ValueError(f"text_embeddings must be [P, T] with P >= 1, got {tuple(text_embeddings.shape)}")
    bad = [p for p in patch_sizes if p <= 0 or grid_size % p]
    if bad or not patch_sizes:
        raise ValueError(f"patch sizes {bad or patch_sizes} do not tile the {grid_size}x{grid_size} grid")
