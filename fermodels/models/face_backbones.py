"""The face backbones POSTER and POSTER++ share, with the official key names: MobileFaceNet up to
``conv_6_sep`` (the frozen landmark stream; its GDC landmark regressor is not built because both papers
discard its output) and IR-50's residual unit (``bottleneck_IR``). Each port arranges the IR-50 units
itself, since the two official checkpoints name its stages differently (``body.<i>`` against
``body1/2/3``)."""

from __future__ import annotations

import torch
from torch import nn


class ConvBlock(nn.Module):
    """Conv (no bias) -> BN -> PReLU; MobileFaceNet's ``Conv_block``."""

    def __init__(
        self, in_chs: int, out_chs: int, kernel: int = 1, stride: int = 1, padding: int = 0, groups: int = 1
    ) -> None:
        super().__init__()
        self.conv = nn.Conv2d(in_chs, out_chs, kernel, stride, padding, groups=groups, bias=False)
        self.bn = nn.BatchNorm2d(out_chs)
        self.prelu = nn.PReLU(out_chs)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out: torch.Tensor = self.prelu(self.bn(self.conv(x)))
        return out


class LinearBlock(nn.Module):
    """1 x 1 conv (no bias) -> BN, no activation; MobileFaceNet's ``Linear_block`` (the projection)."""

    def __init__(self, in_chs: int, out_chs: int) -> None:
        super().__init__()
        self.conv = nn.Conv2d(in_chs, out_chs, 1, bias=False)
        self.bn = nn.BatchNorm2d(out_chs)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out: torch.Tensor = self.bn(self.conv(x))
        return out


class DepthWise(nn.Module):
    """Inverted bottleneck: expand (1 x 1) -> depthwise 3 x 3 -> project, optional identity residual."""

    def __init__(self, in_chs: int, out_chs: int, hidden: int, stride: int, residual: bool) -> None:
        super().__init__()
        self.conv = ConvBlock(in_chs, hidden)
        self.conv_dw = ConvBlock(hidden, hidden, kernel=3, stride=stride, padding=1, groups=hidden)
        self.project = LinearBlock(hidden, out_chs)
        self.residual = residual

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out: torch.Tensor = self.project(self.conv_dw(self.conv(x)))
        return x + out if self.residual else out


class Residual(nn.Module):
    """``num_blocks`` residual inverted bottlenecks at constant width (key prefix ``model.<i>``)."""

    def __init__(self, chs: int, num_blocks: int, hidden: int) -> None:
        super().__init__()
        self.model = nn.Sequential(*[DepthWise(chs, chs, hidden, 1, True) for _ in range(num_blocks)])

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out: torch.Tensor = self.model(x)
        return out


class MobileFaceNet(nn.Module):
    """MobileFaceNet (112 x 112 input) up to ``conv_6_sep``: its 64-channel 28 x 28, 128-channel 14 x 14
    and 512-channel 7 x 7 maps (POSTER++ queries with all three, POSTER with the last)."""

    def __init__(self) -> None:
        super().__init__()
        self.conv1 = ConvBlock(3, 64, kernel=3, stride=2, padding=1)
        self.conv2_dw = ConvBlock(64, 64, kernel=3, stride=1, padding=1, groups=64)
        self.conv_23 = DepthWise(64, 64, 128, 2, False)
        self.conv_3 = Residual(64, 4, 128)
        self.conv_34 = DepthWise(64, 128, 256, 2, False)
        self.conv_4 = Residual(128, 6, 256)
        self.conv_45 = DepthWise(128, 128, 512, 2, False)
        self.conv_5 = Residual(128, 2, 256)
        self.conv_6_sep = ConvBlock(128, 512)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        out3 = self.conv_3(self.conv_23(self.conv2_dw(self.conv1(x))))
        out4 = self.conv_4(self.conv_34(out3))
        out6 = self.conv_6_sep(self.conv_5(self.conv_45(out4)))
        return out3, out4, out6


class BottleneckIR(nn.Module):
    """ArcFace's ``bottleneck_IR``: BN -> conv3x3 -> PReLU -> conv3x3(stride) -> BN, plus a shortcut that
    subsamples by a 1 x 1 max pool when the width is kept, else by a strided 1 x 1 conv + BN (official keys
    ``res_layer.*`` and ``shortcut_layer.*``)."""

    def __init__(self, in_chs: int, out_chs: int, stride: int) -> None:
        super().__init__()
        self.shortcut_layer: nn.Module
        if in_chs == out_chs:
            self.shortcut_layer = nn.MaxPool2d(1, stride)
        else:
            self.shortcut_layer = nn.Sequential(
                nn.Conv2d(in_chs, out_chs, 1, stride, bias=False), nn.BatchNorm2d(out_chs)
            )
        self.res_layer = nn.Sequential(
            nn.BatchNorm2d(in_chs),
            nn.Conv2d(in_chs, out_chs, 3, 1, 1, bias=False),
            nn.PReLU(out_chs),
            nn.Conv2d(out_chs, out_chs, 3, stride, 1, bias=False),
            nn.BatchNorm2d(out_chs),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out: torch.Tensor = self.res_layer(x) + self.shortcut_layer(x)
        return out


def ir50_stage(in_chs: int, out_chs: int, num_units: int) -> list[BottleneckIR]:
    """One IR-50 stage: a stride-2 unit that sets the width, then ``num_units - 1`` stride-1 units."""
    return [
        BottleneckIR(in_chs, out_chs, 2),
        *(BottleneckIR(out_chs, out_chs, 1) for _ in range(num_units - 1)),
    ]


def ir50_input_layer() -> nn.Sequential:
    """IR-50's stem at stride 1, as both POSTER papers cut it: conv3x3 -> BN -> PReLU, key ``input_layer``."""
    return nn.Sequential(nn.Conv2d(3, 64, 3, 1, 1, bias=False), nn.BatchNorm2d(64), nn.PReLU(64))
