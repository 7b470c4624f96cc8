"""HSEmotion / EmotiEffLib's expression nets (A. Savchenko, Apache-2.0): timm EfficientNets with one linear
classifier on the pooled features, served through the classifier contract.

The authors replace ``classifier`` by ``Identity``, take the pooled features as the embedding, and apply
the linear layer themselves; expression probabilities are the softmax of the first ``num_classes`` outputs.
The ``_mtl`` nets have two more outputs, valence then arousal (AffectNet's, trained with a CCC loss; raw,
no activation), which ``HSEmotionAffectNet`` returns as the third value of ``forward_serving``.
"""

from __future__ import annotations

from typing import Final

import torch
from torch import nn

# timm model name -> pooled feature width (the classifier's in_features), what tells B0 from B2.
HSEMOTION_BACKBONES: Final[dict[str, int]] = {"tf_efficientnet_b0": 1280, "tf_efficientnet_b2": 1408}


def create_backbone(variant: str, num_outputs: int) -> nn.Module:
    """timm's model with a ``num_outputs`` classifier (no weights downloaded: pretrained=False)."""
    import timm  # only the import path needs timm; the gateway never imports this module

    if variant not in HSEMOTION_BACKBONES:
        raise ValueError(f"unknown HSEmotion backbone {variant!r}; known: {sorted(HSEMOTION_BACKBONES)}")
    model: nn.Module = timm.create_model(variant, pretrained=False, num_classes=num_outputs, scriptable=True)
    return model


class HSEmotionNet(nn.Module):
    """``net``: the timm model (keys as in the authors' file, under ``net.``)."""

    def __init__(self, variant: str, num_outputs: int, num_classes: int) -> None:
        super().__init__()
        if not 0 < num_classes <= num_outputs:
            raise ValueError(f"num_classes {num_classes} must be in 1..{num_outputs}")
        self.net = create_backbone(variant, num_outputs)
        self.num_classes = num_classes
        self.embed_dim = HSEMOTION_BACKBONES[variant]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """All outputs of the authors' model (classes, then valence and arousal for ``_mtl``)."""
        out: torch.Tensor = self.net(x)
        return out

    def features_and_outputs(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        features = self.net.forward_head(self.net.forward_features(x), pre_logits=True)  # type: ignore[operator]
        return features, self.net.classifier(features)  # type: ignore[operator]

    def forward_serving(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        features, outputs = self.features_and_outputs(x)
        return outputs[:, : self.num_classes], features


class HSEmotionAffectNet(HSEmotionNet):
    """The ``_mtl`` nets: ``forward_serving`` also returns the outputs after the classes (valence,
    arousal)."""

    def forward_serving(  # type: ignore[override]
        self, x: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        features, outputs = self.features_and_outputs(x)
        return outputs[:, : self.num_classes], features, outputs[:, self.num_classes :]
