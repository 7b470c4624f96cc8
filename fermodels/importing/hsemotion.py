"""``--format hsemotion``: HSEmotion / EmotiEffLib's AffectNet nets (HSE-asavchenko/hsemotion,
sb-ai-lab/EmotiEffLib; A. Savchenko; Apache-2.0).

Facts carried over from the authors' code (hsemotion/facial_emotions.py, emotiefflib/facial_analysis.py,
training_and_examples/affectnet/train_emotions-pytorch*.ipynb):

- the files are whole-model pickles (``torch.save(model)``) of timm ``tf_efficientnet_b0`` (1280 pooled
  features, 224 px) or ``tf_efficientnet_b2`` (1408, 260 px), saved under timm 0.4.5 and re-saved under 0.9;
  ``classifier`` is ``Linear`` or ``Sequential(Linear)`` (keys ``classifier.0.*``);
- class order: 7 classes Anger, Disgust, Fear, Happiness, Neutral, Sadness, Surprise; 8 classes Anger,
  Contempt, Disgust, Fear, Happiness, Neutral, Sadness, Surprise (``idx_to_class``, alphabetical folders);
- ``_mtl``: ``Linear(1280, 8 + 2)``: the 8 expression logits, then valence, then arousal (the training loss
  reads ``preds[:, :8]``, ``preds[:, 8]`` valence, ``preds[:, 9]`` arousal); probabilities are the softmax
  of the first 8 only;
- preprocessing: MTCNN's box ``astype(int)``, ``frame[y1:y2, x1:x2]``, no margin or alignment,
  ``transforms.Resize((S, S))`` on the PIL image (bilinear, antialiased), ``ToTensor``, ImageNet mean/std.
"""

from __future__ import annotations

from pathlib import Path
from typing import Final

from fermodels.contract import CANONICAL_LABELS, IMAGENET_MEAN, IMAGENET_STD
from fermodels.importing.base import Built, ImportFormat, ImportRequest, load_strict
from fermodels.importing.reader import (
    CheckpointImportError,
    StateDict,
    StateDictMismatchError,
    module_state_dict,
    read_checkpoint_file,
    tensor_mapping,
)
from fermodels.models.hsemotion import HSEMOTION_BACKBONES, HSEmotionAffectNet, HSEmotionNet

HSEMOTION_7_LABELS: Final = ("anger", "disgust", "fear", "happiness", "neutral", "sadness", "surprise")
HSEMOTION_8_LABELS: Final = (
    "anger",
    "contempt",
    "disgust",
    "fear",
    "happiness",
    "neutral",
    "sadness",
    "surprise",
)
DATASETS: Final = {"affectnet7": HSEMOTION_7_LABELS, "affectnet8": HSEMOTION_8_LABELS}
AFFECT: Final = ("valence", "arousal")
INPUT_SIZES: Final = {"tf_efficientnet_b0": 224, "tf_efficientnet_b2": 260}
PROVENANCE: Final = "HSEmotion (A. Savchenko), Apache-2.0"
PAPER: Final = (
    "Savchenko, Savchenko, Makarov, 'Classifying emotions and engagement in online learning based on a "
    "single facial expression recognition neural network', IEEE Trans. Affective Computing 2022"
)
# The authors' README table (EmotiEffLib README, AffectNet validation accuracy, %): file stem -> (8-class,
# 7-class); None where they report none.
REPORTED: Final[dict[str, tuple[float | None, float]]] = {
    "enet_b0_8_best_afew": (60.95, 64.63),
    "enet_b0_8_best_vgaf": (61.32, 64.57),
    "enet_b0_8_va_mtl": (61.93, 64.94),
    "enet_b0_7": (None, 65.74),
    "enet_b2_7": (None, 66.34),
    "enet_b2_8": (63.03, 66.29),
    "enet_b2_8_best": (63.125, 66.51),
}


def read_hsemotion(path: Path) -> StateDict:
    """The weights of a whole-model pickle (or of a saved state dict), ``classifier.0.*`` renamed to
    ``classifier.*``."""
    loaded = read_checkpoint_file(path)
    state = tensor_mapping(loaded)
    if state is None:
        state = module_state_dict(loaded)
    if any(key.startswith("classifier.0.") for key in state):
        state = {key.replace("classifier.0.", "classifier.", 1): value for key, value in state.items()}
    return state


def _classifier_shape(state: StateDict) -> tuple[int, int]:
    weight = state.get("classifier.weight")
    if weight is None or weight.dim() != 2:
        raise StateDictMismatchError(
            "no classifier.weight (or classifier.0.weight) 2-D tensor: not an HSEmotion EfficientNet"
        )
    return int(weight.shape[0]), int(weight.shape[1])


def _labels(outputs: int, request: ImportRequest) -> tuple[tuple[str, ...], bool]:
    """The class labels and whether valence/arousal follow them, from the classifier's size."""
    if outputs not in (7, 8, 10):
        raise StateDictMismatchError(
            f"the classifier has {outputs} outputs; HSEmotion nets have 7, 8 or 10 (8 + valence, arousal)"
        )
    mtl = outputs == 10
    classes = 8 if mtl else outputs
    labels: tuple[str, ...] = HSEMOTION_8_LABELS if classes == 8 else HSEMOTION_7_LABELS
    if request.dataset is not None:
        if request.dataset not in DATASETS:
            raise CheckpointImportError(f"unknown --dataset {request.dataset!r}; known: {sorted(DATASETS)}")
        if len(DATASETS[request.dataset]) != classes:
            raise StateDictMismatchError(
                f"--dataset {request.dataset} but the checkpoint has {classes} classes"
            )
        labels = DATASETS[request.dataset]
    if request.labels is not None:
        if len(request.labels) != classes:
            raise StateDictMismatchError(
                f"--labels names {len(request.labels)} classes, the checkpoint has {classes}"
            )
        unknown = [label for label in request.labels if label not in CANONICAL_LABELS]
        if unknown:
            raise CheckpointImportError(
                f"--labels {unknown} are not in the canonical vocabulary {CANONICAL_LABELS}"
            )
        labels = request.labels
    return labels, mtl


def _accuracy(stem: str, variant: str, classes: int) -> str:
    reported = REPORTED.get(stem)
    if reported is None:
        return (
            f"as reported by the authors for their {variant} {classes}-class AffectNet nets: see the "
            f"EmotiEffLib README ({PAPER}); this file's name {stem!r} is not one of theirs, so no figure is "
            "claimed for it"
        )
    eight, seven = reported
    figures = f"AffectNet-7 {seven} %" if eight is None else f"AffectNet-8 {eight} %, AffectNet-7 {seven} %"
    return (
        f"as reported by the authors: {figures} validation accuracy for {stem}.pt "
        f"(EmotiEffLib README; {PAPER}); not re-measured here"
    )


def build_hsemotion(state: StateDict, request: ImportRequest) -> Built:
    outputs, width = _classifier_shape(state)
    variants = [name for name, features in HSEMOTION_BACKBONES.items() if features == width]
    if not variants:
        raise StateDictMismatchError(
            f"classifier input width {width} matches no HSEmotion backbone ({HSEMOTION_BACKBONES})"
        )
    variant = variants[0]
    labels, mtl = _labels(outputs, request)
    net_class = HSEmotionAffectNet if mtl else HSEmotionNet
    model = net_class(variant, outputs, len(labels))
    load_strict(model.net, state, f"timm {variant} with {outputs} outputs")
    config = {
        "architecture": f"hsemotion_{variant}" + ("_mtl" if mtl else ""),
        "input_size": INPUT_SIZES[variant],
        "labels": labels,
        "embed_dim": model.embed_dim,
        "dataset": f"AffectNet ({len(labels)} classes" + (", valence/arousal)" if mtl else ")"),
        "affect_outputs": AFFECT if mtl else (),
        "accuracy": _accuracy(request.checkpoint.stem, variant, len(labels)),
    }
    return Built(model.eval(), config)


HSEMOTION: Final = ImportFormat(
    name="hsemotion",
    read=read_hsemotion,
    build=build_hsemotion,
    defaults={
        "mean": IMAGENET_MEAN,
        "std": IMAGENET_STD,
        "crop_mode": "box",
        "channel_order": "rgb",
        "license": "Apache-2.0",
        "max_batch_size": 16,
    },
    provenance=PROVENANCE,
    description="HSEmotion / EmotiEffLib timm EfficientNet-B0/B2 (7, 8 classes, _mtl + valence/arousal)",
)
