"""Checkpoints back into models, and evaluation of a checkpoint on a dataset (metrics.json + confusion.png).

A checkpoint is the plain dict ``fermodels.train`` saves (``state_dict``, ``config`` as ModelConfig JSON,
``model``, ``variant``, ``epoch``, ``metrics``, ``seed``, ...). It is read with ``weights_only=True``
(no pickled code runs) and turned back into a model by building the architecture from the registry and
loading the weights, so a checkpoint can only ever hold weights for a model the registry knows.
This module owns reading checkpoints and running inference; ``fermodels.train`` imports it, not the reverse.
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, Final, Literal

import numpy as np
import numpy.typing as npt
import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.data import DataLoader
from tqdm import tqdm  # type: ignore[import-untyped]  # no stubs in the venv (types-tqdm not pinned)

from fermodels import registry
from fermodels.config import ModelConfig
from fermodels.data import DatasetSpec, build_dataset
from fermodels.metrics import confusion_matrix, save_confusion_png, summarize
from fermodels.models.fer_former import FERFormer
from fermodels.text import load_text_embeddings

logger = logging.getLogger(__name__)

METRICS_FILENAME: Final = "metrics.json"
CONFUSION_FILENAME: Final = "confusion.png"
# The "tiny" FER-former: small enough that tests and the CLI smoke test train in about a second on CPU.
TINY_INPUT_SIZE: Final = 32
Variant = Literal["", "tiny"]
# mini-Xception's forward takes 1-channel grey (its Keras input); its forward_serving converts from RGB.
SERVING_VIEW_ARCHITECTURES: Final = frozenset({"mini_xception"})
ModelOutputs = torch.Tensor | tuple[torch.Tensor, ...]


def resolve_device(device: str) -> torch.device:
    """``auto`` -> CUDA when available, else CPU; anything else as torch spells it (``cuda:1``)."""
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(device)


def build_model(name: str, *, seed: int = 0, variant: Variant = "") -> tuple[nn.Module, ModelConfig]:
    """``registry.build(name)``; ``variant="tiny"`` shrinks a FER-former (same heads, prompts and labels)."""
    model, config = registry.build(name, seed=seed)
    if not variant:
        return model, config
    if variant != "tiny" or not isinstance(model, FERFormer):
        raise ValueError(f"model {name!r} has no variant {variant!r}")
    text = torch.tensor(load_text_embeddings(config.prompts).vectors)
    tiny = registry.seeded(
        seed,
        lambda: FERFormer(
            text, config.num_classes, stem_channels=(8, 16), grid_size=4, patch_sizes=(2, 4), dim=32, depth=1
        ),
    )
    weights = f"tiny variant, random initialisation, seed {seed} (untrained)"
    return tiny.eval(), replace(config, input_size=TINY_INPUT_SIZE, embed_dim=tiny.embed_dim, weights=weights)


@dataclass(frozen=True)
class Checkpoint:
    model: nn.Module
    config: ModelConfig
    payload: dict[str, Any]


def load_checkpoint(path: Path, device: torch.device | str = "cpu") -> Checkpoint:
    """Rebuild the model named in the checkpoint via the registry and load its weights (eval mode)."""
    payload: dict[str, Any] = torch.load(path, map_location=device, weights_only=True)
    model, _ = build_model(payload["model"], seed=payload["seed"], variant=payload["variant"])
    model.load_state_dict(payload["state_dict"])
    return Checkpoint(model.to(device).eval(), ModelConfig.from_json(payload["config"]), payload)


def model_outputs(model: nn.Module, config: ModelConfig, inputs: torch.Tensor) -> ModelOutputs:
    """The training view of a model on normalised RGB input (what the datasets yield).

    ``forward`` for most models; architectures whose ``forward`` takes something else are driven through
    ``forward_serving``, whose first output is the class logits on normalised RGB.
    """
    if config.architecture in SERVING_VIEW_ARCHITECTURES:
        # nn.Module.__getattr__ is typed Tensor | Module, so mypy cannot see the method.
        logits: torch.Tensor = model.forward_serving(inputs)[0]  # type: ignore[operator]
        return logits
    outputs: ModelOutputs = model(inputs)
    return outputs


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
        "checkpoint": str(checkpoint),
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
