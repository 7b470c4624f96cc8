"""``--format poster_v2``: POSTER++ (Mao et al., "POSTER V2: A simpler and stronger facial expression
recognition network", arXiv 2301.12149; code Talented-Q/POSTER_V2, MIT).

Facts carried over from the authors' code (main.py, main_8.py, models/PosterV2_7cls.py, PosterV2_8cls.py):

- the training script saves ``{'epoch', 'state_dict', 'best_acc', 'optimizer', 'recorder1', 'recorder'}``
  with ``torch.save``; ``state_dict`` comes from ``nn.DataParallel`` (keys start with ``module.``) and the
  recorders are pickled ``__main__.RecorderMeter`` / ``RecorderMeter1`` objects holding numpy arrays, read
  here as inert records and ignored; a bare state dict is accepted too;
- 7 classes (RAF-DB, AffectNet-7) or 8 (AffectNet-8), told apart by the head's size;
- the class order is ``ImageFolder``'s, the sorted names of the authors' class folders, which neither their
  README nor their code names: ``--labels`` is required;
- test transform: ``Resize((224, 224))``, ``ToTensor``, ImageNet mean/std, RGB; the model resizes to 112
  (nearest) inside, which the port keeps inside the TorchScript.
"""

from __future__ import annotations

from pathlib import Path
from typing import Final

from fermodels.contract import IMAGENET_MEAN, IMAGENET_STD
from fermodels.importing.base import Built, ImportFormat, ImportRequest, load_strict
from fermodels.importing.reader import (
    CheckpointImportError,
    StateDict,
    StateDictMismatchError,
    training_state_dict,
)
from fermodels.models.poster_v2 import DROPPED_PREFIXES, NUM_CLASSES, build_poster_v2, official_state_dict

HEAD_KEY: Final = "VIT.head.linear.weight"
# The training script's own classes, pickled with the checkpoint (their numpy arrays too).
RECORDERS: Final = frozenset({"__main__.RecorderMeter", "__main__.RecorderMeter1", "numpy."})
REPORTED: Final = {
    "rafdb": "RAF-DB 92.21 %",
    "affectnet7": "AffectNet-7 67.49 %",
    "affectnet8": "AffectNet-8 63.77 %",
}
PAPER: Final = "Mao et al., POSTER V2, arXiv 2301.12149"


def read_poster_v2(path: Path) -> StateDict:
    """The ``state_dict`` of a training checkpoint (its recorder objects read inert), or a bare one."""
    return training_state_dict(path, "state_dict", "a POSTER++ checkpoint", allow_inert=RECORDERS)


def build_poster_v2_import(state: StateDict, request: ImportRequest) -> Built:
    head = state.get(HEAD_KEY)
    if head is None or head.dim() != 2 or int(head.shape[0]) not in NUM_CLASSES:
        raise StateDictMismatchError(f"no {HEAD_KEY} of 7 or 8 rows: not a POSTER++ checkpoint")
    classes = int(head.shape[0])
    labels = _labels(request, classes)
    dataset = request.dataset or ("rafdb" if classes == 7 else "affectnet8")
    if dataset not in REPORTED:
        raise CheckpointImportError(f"unknown --dataset {dataset!r}; known: {sorted(REPORTED)}")
    model = build_poster_v2(classes)
    dropped = tuple(sorted(key for key in state if key.startswith(DROPPED_PREFIXES)))
    load_strict(model, official_state_dict(state), f"POSTER++ with {classes} classes")
    config = {
        "architecture": f"poster_v2_{classes}cls",
        "labels": labels,
        "embed_dim": int(head.shape[1]),
        "dataset": dataset,
        "accuracy": f"as reported by the authors for their {dataset} checkpoint: {REPORTED[dataset]} "
        f"({PAPER}); not re-measured here",
        **_geometry(dataset),
    }
    return Built(model.eval(), config, dropped)


def _labels(request: ImportRequest, classes: int) -> tuple[str, ...]:
    if request.labels is None:
        raise CheckpointImportError(
            "--labels is required for poster_v2: the authors' class order is their class folders' sorted "
            "names, which the checkpoint does not record"
        )
    if len(request.labels) != classes:
        raise StateDictMismatchError(f"--labels names {len(request.labels)} classes, the head has {classes}")
    return request.labels


def _geometry(dataset: str) -> dict[str, object]:
    """RAF-DB checkpoints saw RAF-DB's 100-px aligned faces upsampled to 224; AffectNet ones the face box."""
    if dataset == "rafdb":
        return {"crop_mode": "aligned", "crop_source_size": 100}
    return {"crop_mode": "box"}


POSTER_V2: Final = ImportFormat(
    name="poster_v2",
    read=read_poster_v2,
    build=build_poster_v2_import,
    defaults={
        "input_size": 224,
        "mean": IMAGENET_MEAN,
        "std": IMAGENET_STD,
        "channel_order": "rgb",
        "license": "MIT",
        "max_batch_size": 16,
    },
    provenance="POSTER++ (Mao et al., Talented-Q/POSTER_V2), MIT",
    description="POSTER++ (7 or 8 classes; --labels required, the authors' folder order)",
)
