"""POSTER++ (POSTER V2), ported so that the authors' released checkpoints load strictly.

After Mao et al., "POSTER V2: A simpler and stronger facial expression recognition network"
(arXiv 2301.12149), code at github.com/Talented-Q/POSTER_V2 (MIT licence), class ``pyramid_trans_expr2``
in ``models/PosterV2_7cls.py`` and ``models/PosterV2_8cls.py``. The two files differ only in the size of
the classifier, so one builder serves both (``build_poster_v2(7)`` / ``build_poster_v2(8)``).

Data flow (what the authors' ``forward`` does, in their order):

1. The normalised 224 x 224 RGB batch is resized to 112 x 112 by nearest-neighbour sampling. The authors
   do it twice (once for the landmark net, once more inside IR-50); both see the same picture, so it is
   done once here.
2. Landmark stream: MobileFaceNet's three stages (64 ch at 28 x 28, 128 at 14 x 14, 512 at 7 x 7, the
   last reduced to 256 by ``last_face_conv``) are used *as queries*, unprojected, split into heads.
3. Image stream: the first three stages of IR-50 (64 ch at 56, 128 at 28, 256 at 14), each halved by a
   strided 3 x 3 conv (``conv1..3``) so that every map is exactly one attention window.
4. Per scale: LayerNorm (``window*``), window cross-attention with the landmark queries and image
   keys/values plus a Swin-style relative position bias (``attn*``), then the residual on the *normed*
   map and a layer-scaled MLP (``ffn*``).
5. The three scales become 49 tokens each (``embed_q``: two strided convs, ``embed_k``: one, ``embed_v``:
   a 1 x 1 conv), are concatenated behind a class token, and go through a 2-block ViT (``VIT``) whose class
   token is gated by an SE block and classified by a linear head.

The model returns the logits the authors' training and evaluation use (their forward returns one tensor).

Official modules that cannot change the logits are not built; their state-dict keys are listed by
``DROPPED_PREFIXES`` (see ``dropped_prefixes``) and must be removed from an official state dict before
strict loading (``official_state_dict`` does it).

Differences from the authors' code that do not change outputs:

- The authors' window attention turns shapes into Python numbers with ``.item()``, so a traced model is
  fixed to the batch size it was traced with; here shapes stay symbolic and ``torch.jit.script`` works at
  any batch size.
- Trivial layers (MLP, DropPath) are written here rather than imported from timm: no key names depend on
  timm (the authors define their own ``Mlp``/``Block`` in ``vit_model.py``; timm only supplies
  ``DropPath`` and ``trunc_normal_``, which hold no state), and the served model stays free of timm
  internals. DropPath is the identity in eval mode and is not reproduced (inference only).
"""

from collections.abc import Mapping
from typing import Final

import torch
import torch.nn.functional as F
from torch import nn

from fermodels.models.face_backbones import MobileFaceNet, ir50_input_layer, ir50_stage

# The authors resize every input to this side before both backbones.
BACKBONE_SIDE: Final = 112
# Embedding width of the fusion ViT and its fixed head count (the authors hard-code 8 heads).
EMBED_DIM: Final = 768
VIT_HEADS: Final = 8
VIT_DEPTH: Final = 2
# Per scale: channels, heads and window side of the window cross-attention.
SCALE_DIMS: Final = (64, 128, 256)
SCALE_HEADS: Final = (2, 4, 8)
SCALE_WINDOWS: Final = (28, 14, 7)
# Tokens entering the ViT: 3 scales x 7 x 7 plus the class token.
NUM_TOKENS: Final = 3 * 7 * 7 + 1
LAYER_SCALE_INIT: Final = 1e-5
NUM_CLASSES: Final = (7, 8)

# Official state-dict prefixes (after any DataParallel ``module.``) that this port does not build:
# - ``ir_back.output_layer``: IR-50's face-embedding head (BN, 25088 -> 512 linear, BN); the authors'
#   IR-50 forward returns the three stage maps before it.
# - ``face_landback.output_layer``: MobileFaceNet's landmark-regression head (GDC); its output is
#   computed by the authors' forward and then thrown away (only the stage maps are returned).
# - ``VIT.patch_embed``, ``VIT.CON1``, ``VIT.IRLinear1``, ``VIT.IRLinear2``, ``VIT.eca_block``,
#   ``VIT.blocks.<i>.conv``: built by the authors' ViT constructor, never called by its forward.
_DROPPED_VIT_BLOCK_CONVS: Final = tuple(f"VIT.blocks.{i}.conv." for i in range(VIT_DEPTH))
DROPPED_PREFIXES: Final[tuple[str, ...]] = (
    "ir_back.output_layer.",
    "face_landback.output_layer.",
    "VIT.patch_embed.",
    "VIT.CON1.",
    "VIT.IRLinear1.",
    "VIT.IRLinear2.",
    "VIT.eca_block.",
    *_DROPPED_VIT_BLOCK_CONVS,
)


def dropped_prefixes(num_classes: int) -> tuple[str, ...]:
    """The official key prefixes this port omits (the same for both variants; the argument is checked)."""
    _check_num_classes(num_classes)
    return DROPPED_PREFIXES


def official_state_dict(state_dict: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """An official ``state_dict`` as this port loads it: DataParallel's ``module.`` stripped (the authors
    train under ``nn.DataParallel``) and the keys of unbuilt modules removed."""
    stripped = {key.removeprefix("module."): value for key, value in state_dict.items()}
    return {key: value for key, value in stripped.items() if not key.startswith(DROPPED_PREFIXES)}


def _check_num_classes(num_classes: int) -> None:
    if num_classes not in NUM_CLASSES:
        raise ValueError(f"POSTER++ was released for {NUM_CLASSES} classes, not {num_classes}")


# --- IR-50 (image stream), three stages as ``body1/2/3`` ---------------------------------------------


class IR50Stages(nn.Module):
    """The first three stages of IR-50 (3, 4 and 14 units); the authors cut the fourth stage and head."""

    def __init__(self) -> None:
        super().__init__()
        self.input_layer = ir50_input_layer()
        self.body1 = nn.Sequential(*ir50_stage(64, 64, 3))
        self.body2 = nn.Sequential(*ir50_stage(64, 128, 4))
        self.body3 = nn.Sequential(*ir50_stage(128, 256, 14))

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        x1 = self.body1(self.input_layer(x))
        x2 = self.body2(x1)
        x3 = self.body3(x2)
        return x1, x2, x3


# --- Window cross-attention ---------------------------------------------------------------------------


class Mlp(nn.Module):
    """Linear -> GELU -> Linear (keys ``fc1``/``fc2``; the authors' dropout rate is 0)."""

    def __init__(self, dim: int, hidden: int) -> None:
        super().__init__()
        self.fc1 = nn.Linear(dim, hidden)
        self.act = nn.GELU()
        self.fc2 = nn.Linear(hidden, dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out: torch.Tensor = self.fc2(self.act(self.fc1(x)))
        return out


def relative_position_index(window: int) -> torch.Tensor:
    """Swin's index into the ``(2w-1)^2`` bias table for every (query, key) pair of a ``w x w`` window.

    The authors store it in the state dict (a persistent buffer), so it is rebuilt identically here.
    """
    coords = torch.stack(torch.meshgrid(torch.arange(window), torch.arange(window), indexing="ij"))
    flat = coords.flatten(1)
    relative = (flat[:, :, None] - flat[:, None, :]).permute(1, 2, 0) + (window - 1)
    return relative[:, :, 0] * (2 * window - 1) + relative[:, :, 1]


def window_partition(x: torch.Tensor, window: int) -> torch.Tensor:
    """``[B, H, W, C]`` -> ``[B * nH * nW, window * window, C]``, windows of one image consecutive."""
    b, h, w, c = x.shape
    x = x.reshape(b, h // window, window, w // window, window, c)
    return x.permute(0, 1, 3, 2, 4, 5).reshape(-1, window * window, c)


def window_reverse(windows: torch.Tensor, window: int, b: int, h: int, w: int) -> torch.Tensor:
    """Inverse of ``window_partition`` for a ``[B, H, W, C]`` map."""
    c = windows.shape[-1]
    x = windows.reshape(b, h // window, w // window, window, window, c)
    return x.permute(0, 1, 3, 2, 4, 5).reshape(b, h, w, c)


class WindowNorm(nn.Module):
    """LayerNorm of a channels-first map, returned channels-last (the residual for ``FeedForward``) and
    split into attention windows; the authors' ``window`` module (key ``norm``)."""

    window: Final[int]

    def __init__(self, dim: int, window: int) -> None:
        super().__init__()
        self.window = window
        self.norm = nn.LayerNorm(dim)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        normed = self.norm(x.permute(0, 2, 3, 1))
        return window_partition(normed, self.window), normed


class WindowAttentionGlobal(nn.Module):
    """Window attention whose queries come from outside (GC ViT's global query): keys and values from the
    image window, queries from the landmark map of the same size, shared by all windows of an image.

    The queries are the landmark features themselves, split into heads, with no projection; only ``qkv``
    (which, despite its name, yields keys and values) and ``proj`` are learned, plus the position bias.
    """

    num_heads: Final[int]
    head_dim: Final[int]
    window: Final[int]
    scale: Final[float]
    relative_position_index: torch.Tensor

    def __init__(self, dim: int, num_heads: int, window: int) -> None:
        super().__init__()
        self.num_heads = num_heads
        self.head_dim = dim // num_heads
        self.window = window
        self.scale = self.head_dim**-0.5
        self.relative_position_bias_table = nn.Parameter(torch.zeros((2 * window - 1) ** 2, num_heads))
        nn.init.trunc_normal_(self.relative_position_bias_table, std=0.02)
        self.register_buffer("relative_position_index", relative_position_index(window))
        self.qkv = nn.Linear(dim, dim * 2)
        self.proj = nn.Linear(dim, dim)

    def forward(self, x: torch.Tensor, queries: torch.Tensor) -> torch.Tensor:
        """``x``: image windows ``[B * nW, N, C]``; ``queries``: landmark map ``[B, H, W, C]`` with
        ``H * W == N``. Returns ``[B * nW, N, C]``."""
        windows, n, c = x.shape
        b = queries.shape[0]
        kv = self.qkv(x).reshape(windows, n, 2, self.num_heads, self.head_dim).permute(2, 0, 3, 1, 4)
        k, v = kv[0], kv[1]
        q = queries.reshape(b, 1, n, self.num_heads, self.head_dim).permute(0, 1, 3, 2, 4)
        q = q.expand(b, windows // b, self.num_heads, n, self.head_dim).reshape(
            windows, self.num_heads, n, self.head_dim
        )
        attn = (q * self.scale) @ k.transpose(-2, -1)
        area = self.window * self.window
        bias = self.relative_position_bias_table[self.relative_position_index.view(-1)]
        attn = attn + bias.view(area, area, -1).permute(2, 0, 1).unsqueeze(0)
        out = (attn.softmax(dim=-1) @ v).transpose(1, 2).reshape(windows, n, c)
        projected: torch.Tensor = self.proj(out)
        return projected


class FeedForward(nn.Module):
    """Windows back to a map, layer-scaled residual onto the normed map, then a layer-scaled MLP."""

    window: Final[int]

    def __init__(self, dim: int, window: int) -> None:
        super().__init__()
        self.window = window
        self.gamma1 = nn.Parameter(LAYER_SCALE_INIT * torch.ones(dim))
        self.gamma2 = nn.Parameter(LAYER_SCALE_INIT * torch.ones(dim))
        self.mlp = Mlp(dim, dim * 4)
        self.norm = nn.LayerNorm(dim)

    def forward(self, windows: torch.Tensor, shortcut: torch.Tensor) -> torch.Tensor:
        b, h, w, _ = shortcut.shape
        x = shortcut + self.gamma1 * window_reverse(windows, self.window, b, h, w)
        mlp: torch.Tensor = self.mlp(self.norm(x))
        return x + self.gamma2 * mlp


# --- Fusion ViT ---------------------------------------------------------------------------------------


class ViTAttention(nn.Module):
    """Multi-head self-attention with a fused ``qkv`` projection (biased) and output ``proj``."""

    num_heads: Final[int]
    scale: Final[float]

    def __init__(self, dim: int, num_heads: int) -> None:
        super().__init__()
        self.num_heads = num_heads
        self.scale = (dim // num_heads) ** -0.5
        self.qkv = nn.Linear(dim, dim * 3)
        self.proj = nn.Linear(dim, dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, n, c = x.shape
        qkv = self.qkv(x).reshape(b, n, 3, self.num_heads, c // self.num_heads).permute(2, 0, 3, 1, 4)
        q, k, v = qkv[0], qkv[1], qkv[2]
        attn = ((q @ k.transpose(-2, -1)) * self.scale).softmax(dim=-1)
        out: torch.Tensor = self.proj((attn @ v).transpose(1, 2).reshape(b, n, c))
        return out


class ViTBlock(nn.Module):
    """Pre-norm transformer block (LayerNorm eps 1e-6, MLP ratio 4)."""

    def __init__(self, dim: int, num_heads: int) -> None:
        super().__init__()
        self.norm1 = nn.LayerNorm(dim, eps=1e-6)
        self.attn = ViTAttention(dim, num_heads)
        self.norm2 = nn.LayerNorm(dim, eps=1e-6)
        self.mlp = Mlp(dim, dim * 4)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        attended: torch.Tensor = self.attn(self.norm1(x))
        x = x + attended
        mlp: torch.Tensor = self.mlp(self.norm2(x))
        return x + mlp


class SEBlock(nn.Module):
    """Feature gating: ``x * sigmoid(linear2(relu(linear1(x))))`` on the class token."""

    def __init__(self, dim: int) -> None:
        super().__init__()
        self.linear1 = nn.Linear(dim, dim)
        self.linear2 = nn.Linear(dim, dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * torch.sigmoid(self.linear2(torch.relu(self.linear1(x))))


class ClassificationHead(nn.Module):
    """One linear layer; a module of its own only because the official key is ``head.linear``."""

    def __init__(self, dim: int, num_classes: int) -> None:
        super().__init__()
        self.linear = nn.Linear(dim, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out: torch.Tensor = self.linear(x)
        return out


class FusionViT(nn.Module):
    """Class token + learned positions over the 147 fused tokens, 2 blocks, final norm, SE gate, head."""

    def __init__(self, num_classes: int) -> None:
        super().__init__()
        self.cls_token = nn.Parameter(torch.zeros(1, 1, EMBED_DIM))
        self.pos_embed = nn.Parameter(torch.zeros(1, NUM_TOKENS, EMBED_DIM))
        nn.init.trunc_normal_(self.cls_token, std=0.02)
        nn.init.trunc_normal_(self.pos_embed, std=0.02)
        self.blocks = nn.Sequential(*[ViTBlock(EMBED_DIM, VIT_HEADS) for _ in range(VIT_DEPTH)])
        self.norm = nn.LayerNorm(EMBED_DIM, eps=1e-6)
        self.se_block = SEBlock(EMBED_DIM)
        self.head = ClassificationHead(EMBED_DIM, num_classes)

    def features(self, tokens: torch.Tensor) -> torch.Tensor:
        """The gated class token the head reads: the face's embedding."""
        cls_token = self.cls_token.expand(tokens.shape[0], -1, -1)
        x = torch.cat((cls_token, tokens), dim=1) + self.pos_embed
        x = self.norm(self.blocks(x))
        gated: torch.Tensor = self.se_block(x[:, 0])
        return gated

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        logits: torch.Tensor = self.head(self.features(tokens))
        return logits


class PatchEmbed(nn.Module):
    """A 1 x 1 conv to the ViT width, flattened to tokens (official key ``embed_v.proj``)."""

    def __init__(self, in_chs: int, dim: int) -> None:
        super().__init__()
        self.proj = nn.Conv2d(in_chs, dim, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out: torch.Tensor = self.proj(x)
        return out.flatten(2).transpose(1, 2)


# --- The model ----------------------------------------------------------------------------------------


class PosterV2(nn.Module):
    """POSTER++ ``pyramid_trans_expr2``: normalised RGB ``[B, 3, H, W]`` (224 x 224 in the authors'
    pipeline) -> logits ``[B, num_classes]``. Attribute names are the official key prefixes."""

    backbone_side: Final[int]

    def __init__(self, num_classes: int = 7) -> None:
        super().__init__()
        _check_num_classes(num_classes)
        self.num_classes = num_classes
        self.backbone_side = BACKBONE_SIDE
        self.face_landback = MobileFaceNet()
        self.ir_back = IR50Stages()
        self.VIT = FusionViT(num_classes)
        d1, d2, d3 = SCALE_DIMS
        h1, h2, h3 = SCALE_HEADS
        w1, w2, w3 = SCALE_WINDOWS
        self.last_face_conv = nn.Conv2d(512, d3, 3, padding=1)
        self.conv1 = nn.Conv2d(d1, d1, 3, 2, 1)
        self.conv2 = nn.Conv2d(d2, d2, 3, 2, 1)
        self.conv3 = nn.Conv2d(d3, d3, 3, 2, 1)
        self.window1, self.window2, self.window3 = WindowNorm(d1, w1), WindowNorm(d2, w2), WindowNorm(d3, w3)
        self.attn1 = WindowAttentionGlobal(d1, h1, w1)
        self.attn2 = WindowAttentionGlobal(d2, h2, w2)
        self.attn3 = WindowAttentionGlobal(d3, h3, w3)
        self.ffn1, self.ffn2, self.ffn3 = FeedForward(d1, w1), FeedForward(d2, w2), FeedForward(d3, w3)
        self.embed_q = nn.Sequential(
            nn.Conv2d(d1, EMBED_DIM, 3, 2, 1), nn.Conv2d(EMBED_DIM, EMBED_DIM, 3, 2, 1)
        )
        self.embed_k = nn.Sequential(nn.Conv2d(d2, EMBED_DIM, 3, 2, 1))
        self.embed_v = PatchEmbed(d3, EMBED_DIM)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """The authors' logits for a normalised 224 x 224 batch."""
        logits: torch.Tensor = self.VIT(self.fused_tokens(x))
        return logits

    def forward_serving(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Logits and the embedding they are read from (the serving contract's OUTPUT__0/1 before softmax
        and normalisation)."""
        features = self.VIT.features(self.fused_tokens(x))
        logits: torch.Tensor = self.VIT.head(features)
        return logits, features

    def fused_tokens(self, x: torch.Tensor) -> torch.Tensor:
        """The 147 tokens of the three scales, each image scale attended by its landmark queries."""
        small = F.interpolate(x, size=[self.backbone_side, self.backbone_side], mode="nearest")
        face1, face2, face3 = self.face_landback(small)
        face3 = self.last_face_conv(face3)
        ir1, ir2, ir3 = self.ir_back(small)
        # Per scale: image windows attended by landmark queries (channels-last), back to channels-first.
        windows1, shortcut1 = self.window1(self.conv1(ir1))
        windows2, shortcut2 = self.window2(self.conv2(ir2))
        windows3, shortcut3 = self.window3(self.conv3(ir3))
        o1 = self.ffn1(self.attn1(windows1, face1.permute(0, 2, 3, 1)), shortcut1).permute(0, 3, 1, 2)
        o2 = self.ffn2(self.attn2(windows2, face2.permute(0, 2, 3, 1)), shortcut2).permute(0, 3, 1, 2)
        o3 = self.ffn3(self.attn3(windows3, face3.permute(0, 2, 3, 1)), shortcut3).permute(0, 3, 1, 2)
        tokens = torch.cat(
            [
                self.embed_q(o1).flatten(2).transpose(1, 2),
                self.embed_k(o2).flatten(2).transpose(1, 2),
                self.embed_v(o3),
            ],
            dim=1,
        )
        return tokens


def build_poster_v2(num_classes: int) -> PosterV2:
    """POSTER++ for 7 (RAF-DB, AffectNet-7, CAER-S checkpoints) or 8 classes (AffectNet-8), in eval mode."""
    return PosterV2(num_classes).eval()
