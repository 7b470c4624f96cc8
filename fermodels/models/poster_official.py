"""Architecture-exact port of the authors' POSTER (github.com/zczcwh/POSTER, MIT; arXiv 2204.04083).

Unlike ``fermodels.models.poster`` (our simplified re-design), this module rebuilds the authors' test-time
network module for module, with their state-dict key names, so their released checkpoints load with
``load_state_dict(strict=True)`` once the DataParallel ``module.`` prefix and the keys listed by
:func:`dropped_prefixes` are removed (see :func:`official_to_port`).

The network (``models/emotion_hyp.py::pyramid_trans_expr`` with ``type="large"``):

- ``x`` (B, 3, 224, 224) is resized by nearest neighbour to 112 x 112 (``F.interpolate(x, size=112)``;
  the authors do it twice, once before the landmark net and once inside IR-50's ``forward``; both give
  the same tensor, so it is computed once here);
- ``face_landback``: a frozen 68-point MobileFaceNet whose ``conv_6_sep`` map (B, 512, 7, 7) becomes 49
  landmark tokens of width 512;
- ``ir_back``: IR-50 with a stride-1 stem and only its first three stages (256 x 14 x 14), whose map is
  *reinterpreted* (a raw ``view``, not a transpose) as 49 tokens of width 1024, then ``ir_layer`` maps
  them to 512;
- ``pyramid_fuse``: the "HyVisionTransformer" (``models/hyp_crossvit.py``): mean tokens prepended to
  both streams, a position code on the image stream, three scales made by strided Conv1d over the
  embedding axis, 8 pyramid blocks of two-way cross-attention, a final LayerNorm, token 0 out;
- ``se_block`` (a sigmoid gate) and ``head`` (a linear layer).

Variants: ``rafdb`` (``hyp_crossvit.py``, 7 classes) and ``affectnet7`` / ``affectnet8``
(``hyp_crossvit_affect.py``, whose cross-attention block lacks the token-mixing ``conv``; the authors'
``test_affect.py`` builds it with 7 or 8 classes). Class orders are in :data:`CLASS_NAMES`.

Input contract (the authors' test transform): a face crop resized to 224 x 224 (PIL bilinear),
``ToTensor`` then ``Normalize`` with the ImageNet mean/std. The RAF-DB loader reads images with
``cv2.imread`` and never swaps channels, so the ``rafdb`` variant expects **BGR** planes normalised with
the RGB-ordered statistics; the AffectNet loaders swap to RGB, so ``affectnet7`` / ``affectnet8`` expect
RGB.

Inference only: dropout rates are zero and stochastic depth is the identity in eval mode, so neither is
built. TorchScript-safe and batch-size agnostic: token counts and widths are ``Final`` constants.
"""

from collections.abc import Mapping
from typing import Final

import torch
import torch.nn.functional as F
from torch import nn

from fermodels.models.face_backbones import MobileFaceNet, ir50_input_layer, ir50_stage

IMAGE_TOKENS: Final = 49  # 7 x 7 positions of both streams
EMBED_DIM: Final = 512
DEPTH: Final = 8  # type="large", the authors' default
NUM_HEADS: Final = 8
MLP_RATIO: Final = 2
NORM_EPS: Final = 1e-6  # the fusion transformer's partial(nn.LayerNorm, eps=1e-6)
LANDMARK_INPUT: Final = 112

RAFDB_CLASSES: Final = ("surprise", "fear", "disgust", "happiness", "sadness", "anger", "neutral")
AFFECTNET7_CLASSES: Final = ("neutral", "happiness", "sadness", "surprise", "fear", "disgust", "anger")
AFFECTNET8_CLASSES: Final = (*AFFECTNET7_CLASSES, "contempt")

CLASS_NAMES: Final[Mapping[str, tuple[str, ...]]] = {
    "rafdb": RAFDB_CLASSES,
    "affectnet7": AFFECTNET7_CLASSES,
    "affectnet8": AFFECTNET8_CLASSES,
}
VARIANTS: Final = tuple(CLASS_NAMES)

# Official entries this port does not build, each because it cannot change the logits:
# IR-50's embedding head is commented out of Backbone.forward; MobileFaceNet's GDC landmark regressor
# runs but pyramid_trans_expr discards its 136 coordinates (only conv_6_sep's map is used); and the
# fusion transformer's cls_token is a parameter its forward never reads (it prepends mean tokens).
UNUSED_PREFIXES: Final[tuple[str, ...]] = (
    "ir_back.output_layer",
    "face_landback.output_layer",
    "pyramid_fuse.cls_token",
)


def dropped_prefixes(variant: str) -> tuple[str, ...]:
    """The official key prefixes an importer removes for ``variant`` (the same for all three)."""
    _check_variant(variant)
    return UNUSED_PREFIXES


def is_dropped(key: str, variant: str) -> bool:
    """Whether an official key (without ``module.``) is one of the entries the port does not build."""
    return any(key == prefix or key.startswith(prefix + ".") for prefix in dropped_prefixes(variant))


def official_to_port(
    state_dict: Mapping[str, torch.Tensor], variant: str
) -> tuple[dict[str, torch.Tensor], list[str]]:
    """An official state dict (DataParallel ``module.`` prefixes allowed) split into what the port loads
    strictly and the keys it drops, so the importer can print the latter instead of losing them silently
    (the authors' own ``load_pretrained_weights`` discards mismatches without a word)."""
    kept: dict[str, torch.Tensor] = {}
    dropped: list[str] = []
    for key, value in state_dict.items():
        name = key.removeprefix("module.")
        if is_dropped(name, variant):
            dropped.append(name)
        else:
            kept[name] = value
    return kept, dropped


def _check_variant(variant: str) -> None:
    if variant not in CLASS_NAMES:
        raise ValueError(f"unknown POSTER variant {variant!r}; expected one of {VARIANTS}")


# --- IR-50 (models/ir50.py), three stages in one ``body`` ------------------------------------------------


class IR50Trunk(nn.Module):
    """IR-50 from a 112 x 112 input to 49 tokens of width 1024 (the authors' ``view(-1, 49, 1024)``)."""

    tokens: Final[int]

    def __init__(self) -> None:
        super().__init__()
        self.tokens = IMAGE_TOKENS
        self.input_layer = ir50_input_layer()
        # IR-50's first three stages (3, 4 and 14 units; the 512-wide fourth is commented out), one body.
        stages = ((64, 64, 3), (64, 128, 4), (128, 256, 14))
        self.body = nn.Sequential(*(unit for stage in stages for unit in ir50_stage(*stage)))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.body(self.input_layer(x))  # (B, 256, 14, 14)
        # A raw reshape of the contiguous NCHW map: each token is 4 channels' 14 x 14 planes, not a pixel.
        return x.reshape(x.shape[0], self.tokens, -1)


# --- Fusion transformer (models/hyp_crossvit.py) ---------------------------------------------------------


class Mlp(nn.Module):
    """fc1 - GELU - fc2 (timm's Mlp without its zero-rate dropouts)."""

    def __init__(self, dim: int, hidden: int) -> None:
        super().__init__()
        self.fc1 = nn.Linear(dim, hidden)
        self.act = nn.GELU()
        self.fc2 = nn.Linear(hidden, dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out: torch.Tensor = self.fc2(self.act(self.fc1(x)))
        return out


class CrossAttention(nn.Module):
    """The authors' ``Attention_img`` / ``Attention_lm``: keys and values are projected from one
    stream, the *other* stream's normalised tokens serve as queries with no projection, and the result
    has the key stream's token count (both streams hold 50 tokens, so shapes agree)."""

    num_heads: Final[int]
    scale: Final[float]
    split: Final[int]
    kv_from_image: Final[bool]

    def __init__(self, dim: int, num_heads: int, split: int, kv_from_image: bool) -> None:
        super().__init__()
        self.num_heads = num_heads
        self.scale = (dim // num_heads) ** -0.5
        self.split = split
        self.kv_from_image = kv_from_image
        self.kv = nn.Linear(dim, dim * 2, bias=True)
        self.proj = nn.Linear(dim, dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        image, landmarks = x[:, : self.split], x[:, self.split :]
        source, queries = (image, landmarks) if self.kv_from_image else (landmarks, image)
        batch, tokens, channels = source.shape
        head_dim = channels // self.num_heads
        kv = self.kv(source).reshape(batch, tokens, 2, self.num_heads, head_dim).permute(2, 0, 3, 1, 4)
        k, v = kv[0], kv[1]
        q = queries.reshape(batch, -1, self.num_heads, head_dim).permute(0, 2, 1, 3)
        attn = ((q @ k.transpose(-2, -1)) * self.scale).softmax(dim=-1)
        out = (attn @ v).transpose(1, 2).reshape(batch, tokens, channels)
        projected: torch.Tensor = self.proj(out)
        return projected


class CrossBlock(nn.Module):
    """The authors' ``Block``: each stream adds cross-attention over the *whole* normalised sequence
    and its own MLP; the RAF-DB model then mixes all 100 tokens with a 1x1 Conv1d (the AffectNet
    model has no such ``conv``)."""

    split: Final[int]

    def __init__(self, dim: int, tokens: int, mix_tokens: bool) -> None:
        super().__init__()
        self.split = tokens + 1
        hidden = dim * MLP_RATIO
        self.norm1 = nn.LayerNorm(dim, eps=NORM_EPS)
        self.attn_img = CrossAttention(dim, NUM_HEADS, self.split, kv_from_image=True)
        self.attn_lm = CrossAttention(dim, NUM_HEADS, self.split, kv_from_image=False)
        self.norm2 = nn.LayerNorm(dim, eps=NORM_EPS)
        self.mlp1 = Mlp(dim, hidden)
        self.mlp2 = Mlp(dim, hidden)
        self.norm3 = nn.LayerNorm(dim, eps=NORM_EPS)
        self.norm4 = nn.LayerNorm(dim, eps=NORM_EPS)
        channels = 2 * (tokens + 1)
        self.conv: nn.Module = nn.Conv1d(channels, channels, 1) if mix_tokens else nn.Identity()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        image = x[:, : self.split] + self.attn_img(self.norm1(x))
        image = image + self.mlp1(self.norm2(image))
        landmarks = x[:, self.split :] + self.attn_lm(self.norm3(x))
        landmarks = landmarks + self.mlp2(self.norm4(landmarks))
        mixed: torch.Tensor = self.conv(torch.cat((image, landmarks), dim=1))
        return mixed


class PyramidBlock(nn.Module):
    """One block per scale (widths 512, 256, 128), then the coarser scales are upsampled along the
    embedding axis and added into the finer ones (small into medium, medium into large)."""

    def __init__(self, tokens: int, mix_tokens: bool) -> None:
        super().__init__()
        self.block_l = CrossBlock(EMBED_DIM, tokens, mix_tokens)
        self.block_m = CrossBlock(EMBED_DIM // 2, tokens, mix_tokens)
        self.block_s = CrossBlock(EMBED_DIM // 4, tokens, mix_tokens)
        channels = 2 * (tokens + 1)
        self.upsample_m = nn.ConvTranspose1d(channels, channels, kernel_size=2, stride=2)
        self.upsample_s = nn.ConvTranspose1d(channels, channels, kernel_size=2, stride=2)

    def forward(
        self, large: torch.Tensor, medium: torch.Tensor, small: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        large = self.block_l(large)
        medium = self.block_m(medium)
        small = self.block_s(small)
        medium = self.upsample_s(small) + medium
        large = large + self.upsample_m(medium)
        return large, medium, small


class PyramidFuse(nn.Module):
    """The authors' ``HyVisionTransformer`` at test time: returns the image-stream mean token after the
    last pyramid block and the final LayerNorm."""

    def __init__(self, tokens: int, mix_tokens: bool) -> None:
        super().__init__()
        channels = 2 * (tokens + 1)
        self.pos_embed = nn.Parameter(torch.zeros(1, tokens + 1, EMBED_DIM))
        self.downsample_m = nn.Conv1d(channels, channels, kernel_size=2, stride=2)
        self.downsample_s = nn.Conv1d(channels, channels, kernel_size=4, stride=4)
        self.blocks = nn.ModuleList(PyramidBlock(tokens, mix_tokens) for _ in range(DEPTH))
        self.norm = nn.LayerNorm(EMBED_DIM, eps=NORM_EPS)

    def forward(self, image: torch.Tensor, landmarks: torch.Tensor) -> torch.Tensor:
        image = torch.cat((image.mean(dim=1, keepdim=True), image), dim=1) + self.pos_embed
        landmarks = torch.cat((landmarks.mean(dim=1, keepdim=True), landmarks), dim=1)
        large = torch.cat((image, landmarks), dim=1)
        medium = self.downsample_m(large)
        small = self.downsample_s(large)
        for block in self.blocks:
            large, medium, small = block(large, medium, small)
        normed: torch.Tensor = self.norm(large)[:, 0]
        return normed


# --- Head (models/emotion_hyp.py) ----------------------------------------------------------------------


class SEBlock(nn.Module):
    """Feature gate: x * sigmoid(linear2(relu(linear1(x))))."""

    def __init__(self, dim: int) -> None:
        super().__init__()
        self.linear1 = nn.Linear(dim, dim)
        self.linear2 = nn.Linear(dim, dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * torch.sigmoid(self.linear2(torch.relu(self.linear1(x))))


class ClassificationHead(nn.Module):
    """A single linear layer, kept in a module so the key is ``head.linear.*`` as in the checkpoints."""

    def __init__(self, dim: int, num_classes: int) -> None:
        super().__init__()
        self.linear = nn.Linear(dim, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        logits: torch.Tensor = self.linear(x)
        return logits


class PosterOfficial(nn.Module):
    """``pyramid_trans_expr`` at test time: normalised (B, 3, 224, 224) in, (B, classes) logits out (the
    authors also return the gated feature; the service only needs the logits)."""

    tokens: Final[int]
    landmark_input: Final[int]

    def __init__(self, num_classes: int, mix_tokens: bool) -> None:
        super().__init__()
        self.tokens = IMAGE_TOKENS
        self.landmark_input = LANDMARK_INPUT
        self.face_landback = MobileFaceNet()
        self.face_landback.requires_grad_(False)  # frozen in the authors' training too
        self.ir_back = IR50Trunk()
        self.ir_layer = nn.Linear(1024, EMBED_DIM)
        self.pyramid_fuse = PyramidFuse(IMAGE_TOKENS, mix_tokens)
        self.se_block = SEBlock(EMBED_DIM)
        self.head = ClassificationHead(EMBED_DIM, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        logits: torch.Tensor = self.head(self.features(x))
        return logits

    def forward_serving(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Logits and the gated feature they are read from (the authors' second output)."""
        features = self.features(x)
        logits: torch.Tensor = self.head(features)
        return logits, features

    def features(self, x: torch.Tensor) -> torch.Tensor:
        # F.interpolate's default mode is nearest: for 224 -> 112 it keeps the even rows and columns.
        half = F.interpolate(x, size=self.landmark_input)
        landmarks = self.face_landback(half)[2]  # conv_6_sep's (B, 512, 7, 7) map
        landmarks = landmarks.reshape(landmarks.shape[0], -1, self.tokens).transpose(1, 2)
        image = self.ir_layer(self.ir_back(half))
        gated: torch.Tensor = self.se_block(self.pyramid_fuse(image, landmarks))
        return gated


def build_poster(variant: str) -> PosterOfficial:
    """The port for ``rafdb``, ``affectnet7`` or ``affectnet8``, with untrained weights."""
    _check_variant(variant)
    return PosterOfficial(num_classes=len(CLASS_NAMES[variant]), mix_tokens=variant == "rafdb")
