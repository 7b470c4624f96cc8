"""CLIP's two towers as served models, around the libraries' own modules (nothing of CLIP is rewritten).

- ``ClipZeroShot``: the image tower as a face model. ``forward_serving(x)`` (x already normalised with CLIP's
  mean/std by the export wrapper) resizes to the tower's input size (bicubic; a no-op for crops cut at that
  size), runs the tower and returns CLIP's zero-shot logits ``logit_scale.exp() * cos(image, prompt)`` over
  the expression prompts, the image embedding, and the prompts' embeddings. The prompt embeddings are made
  once at import time by the checkpoint's own text tower and kept as a constant buffer, so the served face
  model never runs text.
- ``OpenClipTextEncoder`` / ``HfClipTextEncoder``: token ids + attention mask ``[N, L]`` (L <= context) ->
  unit text embeddings ``[N, D]``; the ids are padded to the context length inside (OpenCLIP's positional
  embedding and causal mask are fixed at that length; with a causal mask, padding after the end-of-text
  token changes nothing).

OpenCLIP's modules script as they are; transformers' are traced (they do not script), at the context length
and at a fixed image size, so only the batch dimension varies.
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from torch import nn


class ClipZeroShot(nn.Module):
    """The serving model of a CLIP image tower: zero-shot expression logits over constant prompt vectors."""

    def __init__(self, tower: nn.Module, prompts: torch.Tensor, logit_scale: float, image_size: int) -> None:
        super().__init__()
        self.tower = tower
        self.register_buffer("prompts", F.normalize(prompts.detach().float(), dim=-1))
        self.logit_scale = float(logit_scale)  # exp() of the checkpoint's learnt log scale
        self.image_size = int(image_size)
        self.embed_dim = int(prompts.shape[1])

    def forward_serving(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        if x.shape[-1] != self.image_size or x.shape[-2] != self.image_size:
            size = [self.image_size, self.image_size]
            x = F.interpolate(x, size=size, mode="bicubic", align_corners=False, antialias=True)
        image = self.tower(x)
        prompts: torch.Tensor = self.prompts  # type: ignore[assignment]
        logits = self.logit_scale * (F.normalize(image, dim=-1) @ prompts.t())
        return logits, image, prompts


class OpenClipImageTower(nn.Module):
    """``open_clip.CLIP.encode_image`` (unnormalised) on its ``visual`` module."""

    def __init__(self, clip: Any) -> None:
        super().__init__()
        self.visual = clip.visual

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out: torch.Tensor = self.visual(x)
        return out


class PaddedTextEncoder(nn.Module):
    """The served text encoder: ids and mask ``[N, L]`` (L <= context) padded to the context length, then
    ``features`` (ids, mask at the context length -> unit embeddings ``[N, D]``)."""

    def __init__(self, features: nn.Module, context_length: int, pad_id: int) -> None:
        super().__init__()
        self.features = features
        self.context_length = int(context_length)
        self.pad_id = float(pad_id)  # F.pad takes a float fill value; token ids are exact in float64

    def forward(self, ids: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        width = self.context_length - ids.shape[1]
        ids = F.pad(ids, [0, width], value=self.pad_id)
        mask = F.pad(mask, [0, width], value=0.0)
        out: torch.Tensor = self.features(ids, mask)
        return out


class OpenClipTextFeatures(nn.Module):
    """``open_clip.CLIP.encode_text(ids, normalize=True)`` (causal: the mask is not needed). Holds the CLIP
    module with its image tower replaced by ``nn.Identity``, so the text file carries no image weights."""

    def __init__(self, clip: Any) -> None:
        super().__init__()
        clip.visual = nn.Identity()
        self.clip = clip

    def forward(self, ids: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        out: torch.Tensor = self.clip.encode_text(ids, normalize=True)
        return out


class HfClipImageTower(nn.Module):
    """``transformers.CLIPModel.get_image_features(...).pooler_output``: the vision model's pooled output
    through ``visual_projection``."""

    def __init__(self, clip: Any) -> None:
        super().__init__()
        self.vision_model = clip.vision_model
        self.visual_projection = clip.visual_projection

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        pooled = self.vision_model(pixel_values=x).pooler_output
        out: torch.Tensor = self.visual_projection(pooled)
        return out


class HfClipTextFeatures(nn.Module):
    """``transformers.CLIPModel.get_text_features(ids, mask).pooler_output``, L2-normalised."""

    def __init__(self, clip: Any) -> None:
        super().__init__()
        self.text_model = clip.text_model
        self.text_projection = clip.text_projection

    def forward(self, ids: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        pooled = self.text_model(input_ids=ids, attention_mask=mask).pooler_output
        return F.normalize(self.text_projection(pooled), dim=-1)
