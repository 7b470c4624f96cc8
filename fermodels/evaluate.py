"""Evaluation of a checkpoint on a dataset (metrics.json + confusion.png), and the training view of a model.

Every model is driven through its serving contract (``fermodels.export``): ``forward_serving`` on the
normalised crop, plus the landmarks for a model whose ``config.num_landmarks`` says it takes them. Models
with a text side (``config.prompts``) are trained on both heads' logits, which their ``forward`` returns.
Checkpoints are read by ``fermodels.checkpoint``; ``fermodels.train`` imports this module, not the reverse.
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final

import numpy as np
import numpy.typing as npt
import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.data import DataLoader
from tqdm import tqdm  # type: ignore[import-untyped]  # no stubs in the venv (types-tqdm not pinned)

from fermodels.checkpoint import load_checkpoint
from fermodels.config import ModelConfig, file_sha256
from fermodels.data import DatasetSpec, build_dataset
from fermodels.metrics import confusion_matrix, save_confusion_png, summarize

logger = logging.getLogger(__name__)

METRICS_FILENAME: Final = "metrics.json"
CONFUSION_FILENAME: Final = "confusion.png"
ModelOutputs = torch.Tensor | tuple[torch.Tensor, ...]


def resolve_device(device: str) -> torch.device:
    """``auto`` -> CUDA when available, else CPU; anything else as torch spells it (``cuda:1``)."""
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(device)


def model_inputs(config: ModelConfig, images: torch.Tensor) -> tuple[torch.Tensor, ...]:
    """The model's inputs for a batch of normalised crops: the crops, and for a landmark model the
    landmarks. The datasets carry none, so each face gets the aligned template's (where an aligned face's
    points sit nominally); the gateway sends each face's measured points."""
    if not config.num_landmarks:
        return (images,)
    template = torch.tensor(config.normalised_landmark_template(), dtype=images.dtype, device=images.device)
    return images, template.expand(images.shape[0], -1, -1)


def serving_outputs(model: nn.Module, config: ModelConfig, images: torch.Tensor) -> tuple[torch.Tensor, ...]:
    """``forward_serving``: (class logits, embedding [, text embedding]) before the export wrapper."""
    # nn.Module.__getattr__ is typed Tensor | Module, so mypy cannot see the method.
    outputs: tuple[torch.Tensor, ...] = model.forward_serving(*model_inputs(config, images))  # type: ignore[operator]
    return outputs


def model_outputs(model: nn.Module, config: ModelConfig, inputs: torch.Tensor) -> ModelOutputs:
    """The training view of a model on normalised RGB input (what the datasets yield): both heads'
    logits (class, text similarity) from ``forward`` for a model with prompts, else the class logits of
    ``forward_serving`` (normalised RGB whatever ``forward`` takes, e.g. mini-Xception's grey)."""
    if config.has_text_side:
        outputs: ModelOutputs = model(*model_inputs(config, inputs))
        return outputs
    return serving_outputs(model, config, inputs)[0]


def class_logits(outputs: ModelOutputs) -> torch.Tensor:
    """The classifier's logits: the output itself, or the first of a tuple (FER-former: class, text)."""
    return outputs if isinstance(outputs, torch.Tensor) else outputs[0]


@dataclass(frozen=True)
class Predictions:
    targets: npt.NDArray[np.int64]
    predictions: npt.NDArray[np.int64]
    loss: float  # mean cross entropy of the class logits

    def confusion(self, num_classes: int) -> npt.NDArray[np.int64]:
        return confusion_matrix(self.targets, self.predictions, num_classes)


@torch.no_grad()
def predict(
    model: nn.Module,
    config: ModelConfig,
    loader: DataLoader[Any],
    device: torch.device,
    progress: bool = True,
) -> Predictions:
    """Arg-max predictions and the class-logit loss over a loader (model put in eval mode)."""
    model.eval()
    targets, predictions, total = [], [], 0.0
    for inputs, batch_targets in tqdm(loader, desc="evaluate", disable=not progress, leave=False):
        logits = class_logits(model_outputs(model, config, inputs.to(device)))
        total += float(F.cross_entropy(logits, batch_targets.to(device), reduction="sum"))
        targets.append(batch_targets.numpy())
        predictions.append(logits.argmax(dim=1).cpu().numpy())
    true = np.concatenate(targets).astype(np.int64)
    return Predictions(true, np.concatenate(predictions).astype(np.int64), total / max(len(true), 1))


def evaluate(
    checkpoint: Path,
    data: DatasetSpec,
    out_dir: Path | None = None,
    *,
    batch_size: int = 64,
    device: str = "auto",
    num_workers: int = 0,
    progress: bool = True,
) -> dict[str, Any]:
    """Metrics of ``checkpoint`` on ``data``, also written to ``<out_dir>/metrics.json`` and
    ``confusion.png`` (``out_dir`` defaults to the checkpoint's folder)."""
    torch_device = resolve_device(device)
    loaded = load_checkpoint(checkpoint, torch_device)
    dataset = build_dataset(data, loaded.config)
    loader: DataLoader[Any] = DataLoader(dataset, batch_size=batch_size, num_workers=num_workers)
    result = predict(loaded.model, loaded.config, loader, torch_device, progress)
    matrix = result.confusion(loaded.config.num_classes)
    metrics = summarize(matrix, loaded.config.labels) | {
        "loss": result.loss,
        "data": data.describe(),
        "checkpoint": str(checkpoint),
        "checkpoint_sha256": file_sha256(checkpoint),
        "epoch": loaded.payload["epoch"],
        "dataset": data.as_dict(),
        "dropped_samples": dataset.dropped,
    }
    write_report(metrics, matrix, loaded.config.labels, out_dir or checkpoint.parent)
    return metrics


def write_report(
    metrics: dict[str, Any], matrix: npt.NDArray[np.int64], labels: tuple[str, ...], out_dir: Path
) -> None:
    out_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / METRICS_FILENAME).write_text(json.dumps(metrics, indent=2) + "\n")
    save_confusion_png(matrix, labels, out_dir / CONFUSION_FILENAME)
    logger.info(
        "WAR %.4f UAR %.4f on %d samples -> %s",
        metrics["war"],
        metrics["uar"],
        metrics["num_samples"],
        out_dir,
    )
