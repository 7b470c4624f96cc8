"""``--format poster``: POSTER (Zheng, Wang, Wang, "POSTER: A Pyramid Cross-Fusion Transformer Network for
Facial Expression Recognition", arXiv 2204.04083; code zczcwh/POSTER, MIT).

Facts carried over from the authors' code (train.py, train_affect.py, test.py, data_preprocessing/):

- their training scripts save ``{'iter', 'model_state_dict', 'optimizer_state_dict'}`` from an
  ``nn.DataParallel`` model (keys start with ``module.``); a bare state dict is accepted too;
- RAF-DB checkpoints use ``models/hyp_crossvit.py`` (each fusion block mixes its tokens with a 1x1
  ``conv``); AffectNet's use ``hyp_crossvit_affect.py`` (no ``conv``): the key set tells them apart, and the
  head's size tells AffectNet-7 from -8;
- RAF-DB's loader reads images with OpenCV and never converts BGR to RGB, so that checkpoint was trained
  on BGR (the swap is inside the served TorchScript); AffectNet's loaders convert to RGB;
- test transform: ``Resize((224, 224))``, ``ToTensor``, ImageNet mean/std by channel position.
"""

from __future__ import annotations

from pathlib import Path
from typing import Final

import torch

from fermodels.contract import IMAGENET_MEAN, IMAGENET_STD
from fermodels.importing.base import Built, ImportFormat, ImportRequest, load_strict
from fermodels.importing.reader import (
    CheckpointImportError,
    StateDict,
    StateDictMismatchError,
    training_state_dict,
)
from fermodels.models.poster_official import CLASS_NAMES, build_poster, official_to_port

HEAD_KEY: Final = "head.linear.weight"
RAFDB_ONLY_KEY: Final = "pyramid_fuse.blocks.0.block_l.conv.weight"  # the token-mixing conv
REPORTED: Final = {
    "rafdb": "RAF-DB 92.05 %",
    "affectnet7": "AffectNet-7 67.31 %",
    "affectnet8": "AffectNet-8 63.34 %",
}
PAPER: Final = "Zheng et al., POSTER, arXiv 2204.04083"


def read_poster(path: Path) -> StateDict:
    """The ``model_state_dict`` of a training checkpoint, or a bare state dict."""
    return training_state_dict(path, "model_state_dict", "a POSTER checkpoint")


def _head(state: StateDict) -> torch.Tensor:
    head = state.get(HEAD_KEY)
    if head is None or head.dim() != 2:
        raise StateDictMismatchError(f"no {HEAD_KEY}: not a POSTER checkpoint")
    return head


def _variant(state: StateDict, request: ImportRequest) -> str:
    head = _head(state)
    rafdb_layout = RAFDB_ONLY_KEY in state
    found = "rafdb" if rafdb_layout else f"affectnet{int(head.shape[0])}"
    if found not in CLASS_NAMES:
        raise StateDictMismatchError(f"a head of {int(head.shape[0])} classes without RAF-DB's layout")
    if request.dataset is not None and request.dataset != found:
        raise StateDictMismatchError(
            f"--dataset {request.dataset} but the weights are POSTER's {found} layout"
        )
    return found


def build_poster_import(state: StateDict, request: ImportRequest) -> Built:
    variant = _variant(state, request)
    labels = request.labels or CLASS_NAMES[variant]
    if len(labels) != len(CLASS_NAMES[variant]):
        raise CheckpointImportError(
            f"--labels names {len(labels)} classes, {variant} has {len(CLASS_NAMES[variant])}"
        )
    kept, dropped = official_to_port(state, variant)
    model = build_poster(variant)
    load_strict(model, kept, f"POSTER ({variant})")
    config = {
        "architecture": f"poster_{variant}",
        "labels": labels,
        "embed_dim": int(_head(state).shape[1]),
        "dataset": variant,
        "accuracy": f"as reported by the authors: {REPORTED[variant]} ({PAPER}); not re-measured here",
        **_geometry(variant),
    }
    return Built(model.eval(), config, tuple(sorted(dropped)))


def _geometry(variant: str) -> dict[str, object]:
    """RAF-DB: its 100-px aligned faces, in BGR; AffectNet: the face box, in RGB."""
    if variant == "rafdb":
        return {"crop_mode": "aligned", "crop_source_size": 100, "channel_order": "bgr"}
    return {"crop_mode": "box", "channel_order": "rgb"}


POSTER: Final = ImportFormat(
    name="poster",
    read=read_poster,
    build=build_poster_import,
    defaults={
        "input_size": 224,
        "mean": IMAGENET_MEAN,
        "std": IMAGENET_STD,
        "license": "MIT",
        "max_batch_size": 16,
    },
    provenance="POSTER (Zheng et al., zczcwh/POSTER), MIT",
    description="POSTER (RAF-DB 7 classes in BGR; AffectNet 7 or 8 classes)",
)
