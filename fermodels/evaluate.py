"""Evaluation of a checkpoint on a dataset (metrics.json + confusion.png).

Every model is driven through the training view of its serving contract (``fermodels.forward``).
Checkpoints are read by ``fermodels.checkpoint``; ``fermodels.train`` validates with ``predict`` from here.
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
from fermodels.contract import ModelConfig, file_sha256
from fermodels.data import DatasetSpec, build_dataset
from fermodels.forward import class_logits, model_outputs, resolve_device
from fermodels.metrics import confusion_matrix, save_confusion_png, summarize

logger = logging.getLogger(__name__)

METRICS_FILENAME: Final = "metrics.json"
CONFUSION_FILENAME: Final = "confusion.png"


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
