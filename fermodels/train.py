"""Training: seeded, deterministic, resumable; writes ``last.pt`` each epoch, ``best.pt`` by validation UAR.

Loss: cross entropy on the class logits, plus ``text_loss_weight`` x cross entropy on the text-similarity
logits for models whose forward returns both (FER-former, as in its paper; prompt i is label i).
``objective`` picks the loss (``fermodels.losses``):

- ``ce``: the loss above.
- ``kefer``: KE-FER (arXiv 2409.08598) for models with a text side (FER-former): CE on the class logits
  plus ``KEFERObjective`` on ``forward_serving``'s image and text embeddings. Its cosine classification
  replaces the text-similarity CE and is weighted by ``text_loss_weight``; the alignment and self-contrast
  terms by ``alignment_weight`` / ``self_contrast_weight``. The neutral class is ``labels.index("neutral")``.
- ``compact``: STT's compact softmax, ``CompactSoftmaxLoss`` on the class logits and the model's embedding
  from ``forward_serving`` (FER-former: image embedding; STT: clip embedding), ``center_weight`` x centre
  pull; no text-similarity term.

The objective's own parameters (KE-FER's emotional-to-neutral MLP and logit scale, the class centres) are
trained by the same optimiser, in a second parameter group without weight decay (decay would pull the
centres to the origin and the logit scale to 1), and saved as ``objective_state`` in every checkpoint so a
resumed run continues them exactly. Evaluation and ``load_checkpoint`` use the class logits only.

AdamW, linear warm-up then cosine decay, stepped per batch; the schedule follows the ``epochs`` of the
current call, so resuming with the same options continues the original curve.

Determinism: each epoch re-seeds torch, numpy, ``random`` and the DataLoader's generator from
``(seed, epoch)``, and workers seed numpy / ``random`` from their torch seed. A run interrupted after
epoch k and resumed from ``last.pt`` therefore ends with the same weights as an uninterrupted run.
Which loss fits which model is read from the model contract (``forward_serving``'s outputs, the
config's ``prompts`` and ``embed_dim``), never from the architecture. Checkpoints: ``fermodels.checkpoint``.
"""

from __future__ import annotations

import logging
import math
import os
import random
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any, Final, Literal, get_args

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from torch.optim.lr_scheduler import LambdaLR
from torch.utils.data import DataLoader, WeightedRandomSampler
from tqdm import tqdm  # type: ignore[import-untyped]  # no stubs in the venv (types-tqdm not pinned)

from fermodels import registry
from fermodels.checkpoint import BEST_CHECKPOINT, LAST_CHECKPOINT, read_checkpoint, save_checkpoint
from fermodels.checkpoint import model_name as stored_model_name
from fermodels.contract import ModelConfig
from fermodels.data import DatasetSpec, FERDataset, build_dataset
from fermodels.evaluate import predict
from fermodels.forward import ModelOutputs, class_logits, model_outputs, resolve_device, serving_outputs
from fermodels.losses import CompactSoftmaxLoss, KEFERObjective
from fermodels.metrics import accuracy, uar

logger = logging.getLogger(__name__)

Objective = Literal["ce", "kefer", "compact"]
OBJECTIVES: Final[tuple[Objective, ...]] = get_args(Objective)


@dataclass(frozen=True)
class TrainOptions:
    """Hyper-parameters and run settings (stored in every checkpoint as ``options``)."""

    epochs: int = 30
    batch_size: int = 64
    lr: float = 3e-4
    weight_decay: float = 0.05
    warmup_epochs: int = 1
    seed: int = 0
    device: str = "auto"
    num_workers: int = 0
    balanced: bool = False  # sample classes equally often (RAF-DB, AffectNet are heavily imbalanced)
    augment: bool = True
    text_loss_weight: float = 1.0
    objective: Objective = "ce"  # see the module docstring
    center_weight: float = 0.01  # compact: weight of the centre pull
    alignment_weight: float = 1.0  # kefer: text-difference alignment
    self_contrast_weight: float = 1.0  # kefer: self-contrast
    val_split: str = "test"  # the literature validates RAF-DB / AffectNet / DFEW on their test split
    progress: bool = True


@dataclass(frozen=True)
class TrainResult:
    out_dir: Path
    epochs_run: int  # epochs trained by this call (0 when a resumed run was already complete)
    best_uar: float
    history: list[dict[str, float]]

    @property
    def last(self) -> Path:
        return self.out_dir / LAST_CHECKPOINT

    @property
    def best(self) -> Path:
        return self.out_dir / BEST_CHECKPOINT


@dataclass
class _Run:
    """The mutable state of one training run (what a checkpoint stores besides the options)."""

    model: nn.Module
    config: ModelConfig
    optimizer: torch.optim.Optimizer
    scheduler: LambdaLR
    device: torch.device
    objective: nn.Module | None = None  # the loss's own parameters (None for ``ce``)
    epoch: int = 0  # epochs completed
    best_uar: float = -1.0
    history: list[dict[str, float]] = field(default_factory=list)


def train(
    model_name: str,
    data: DatasetSpec,
    out_dir: Path,
    options: TrainOptions | None = None,
    *,
    val_data: DatasetSpec | None = None,
    resume: Path | None = None,
) -> TrainResult:
    """Train ``model_name`` on ``data``, validating on ``val_data`` (default: ``data`` at ``val_split``)."""
    options = options or TrainOptions()
    device = resolve_device(options.device)
    out_dir.mkdir(parents=True, exist_ok=True)
    with deterministic(options.seed, device):
        model, config = registry.build(model_name, seed=options.seed)
        objective = build_objective(model, config, options)
        train_set = build_dataset(data, config, augment=options.augment)
        val_set = build_dataset(val_data or replace(data, split=options.val_split), config)
        _check_task(train_set, config)
        steps_per_epoch = math.ceil(len(train_set) / options.batch_size)
        run = _new_run(model.to(device), config, options, device, steps_per_epoch, objective)
        if resume is not None:
            _restore(run, resume, model_name, options)
        start = run.epoch
        for epoch in range(run.epoch, options.epochs):
            _run_epoch(run, train_set, val_set, options, epoch)
            _save_checkpoints(run, out_dir, model_name, options, data)
    return TrainResult(out_dir, run.epoch - start, run.best_uar, run.history)


def training_loss(
    outputs: ModelOutputs, targets: torch.Tensor, text_loss_weight: float = 1.0
) -> torch.Tensor:
    """CE(class logits) [+ weight x CE(text-similarity logits) when the model returns a second output]."""
    loss = F.cross_entropy(class_logits(outputs), targets)
    if isinstance(outputs, tuple) and len(outputs) > 1 and text_loss_weight:
        loss = loss + text_loss_weight * F.cross_entropy(outputs[1], targets)
    return loss


def build_objective(
    model: nn.Module, config: ModelConfig, options: TrainOptions
) -> KEFERObjective | CompactSoftmaxLoss | None:
    """The loss module of ``options.objective`` (None for ``ce``); ValueError if the model cannot use it."""
    if options.objective == "ce":
        return None
    if options.objective == "kefer":
        if not config.has_text_side:
            raise ValueError(
                f"objective 'kefer' needs a model with a text side (prompts); {config.name!r} has none"
            )
        if "neutral" not in config.labels:  # one prompt per label: ModelConfig checks it
            raise ValueError(f"objective 'kefer' needs a 'neutral' label ({config.name})")
        return KEFERObjective(
            config.embed_dim,
            config.labels.index("neutral"),
            classification_weight=options.text_loss_weight,
            alignment_weight=options.alignment_weight,
            self_contrast_weight=options.self_contrast_weight,
        )
    if options.objective == "compact":
        return CompactSoftmaxLoss(config.num_classes, config.embed_dim, options.center_weight)
    raise ValueError(f"unknown objective {options.objective!r}; expected one of {OBJECTIVES}")


def warmup_cosine(total_steps: int, warmup_steps: int) -> Callable[[int], float]:
    """LR factor per step: linear warm-up to 1, then cosine to 0 at ``total_steps``.

    A closure rather than a callable object on purpose: LambdaLR saves objects' attributes in its state
    and restores them on resume, which would pin the old schedule when a resumed run changes ``epochs``.
    """

    def factor(step: int) -> float:
        if step < warmup_steps:
            return (step + 1) / warmup_steps
        progress = (step - warmup_steps) / max(1, total_steps - warmup_steps)
        return 0.5 * (1.0 + math.cos(math.pi * min(progress, 1.0)))

    return factor


@contextmanager
def deterministic(seed: int, device: torch.device) -> Iterator[None]:
    """Seeded RNGs and deterministic kernels inside; the caller's RNG states and flags come back on exit."""
    if device.type == "cuda":
        # cuBLAS only has deterministic GEMMs with a fixed workspace; must be set before its first use.
        os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
    flags = (
        torch.are_deterministic_algorithms_enabled(),
        torch.is_deterministic_algorithms_warn_only_enabled(),
    )
    benchmark, python_state, numpy_state = (
        torch.backends.cudnn.benchmark,
        random.getstate(),
        np.random.get_state(),
    )
    devices = [device.index or 0] if device.type == "cuda" else []
    try:
        with torch.random.fork_rng(devices=devices):
            # warn_only: a kernel without a deterministic implementation should warn, not stop a long run.
            torch.use_deterministic_algorithms(True, warn_only=True)
            torch.backends.cudnn.benchmark = False
            _seed_all(seed)
            yield
    finally:
        torch.use_deterministic_algorithms(flags[0], warn_only=flags[1])
        torch.backends.cudnn.benchmark = benchmark
        random.setstate(python_state)
        np.random.set_state(numpy_state)


# ----------------------------------------------------------------------------- one run


def _new_run(
    model: nn.Module,
    config: ModelConfig,
    options: TrainOptions,
    device: torch.device,
    steps_per_epoch: int,
    objective: nn.Module | None = None,
) -> _Run:
    if objective is None:
        optimizer = torch.optim.AdamW(model.parameters(), lr=options.lr, weight_decay=options.weight_decay)
    else:
        objective.to(device)
        groups: list[dict[str, Any]] = [
            {"params": list(model.parameters())},
            {"params": list(objective.parameters()), "weight_decay": 0.0},
        ]
        optimizer = torch.optim.AdamW(groups, lr=options.lr, weight_decay=options.weight_decay)
    schedule = warmup_cosine(options.epochs * steps_per_epoch, options.warmup_epochs * steps_per_epoch)
    return _Run(model, config, optimizer, LambdaLR(optimizer, schedule), device, objective)


def _batch_loss(
    run: _Run, inputs: torch.Tensor, targets: torch.Tensor, options: TrainOptions
) -> torch.Tensor:
    objective, model, config = run.objective, run.model, run.config
    if objective is None:
        return training_loss(model_outputs(model, config, inputs), targets, options.text_loss_weight)
    # forward_serving: (class logits, embedding [N, embed_dim], text embedding [P, embed_dim] if prompts)
    logits, embedding, *text = serving_outputs(model, config, inputs)
    if isinstance(objective, KEFERObjective):
        kefer: torch.Tensor = objective(embedding, text[0], targets).total
        return F.cross_entropy(logits, targets) + kefer
    compact: torch.Tensor = objective(logits, embedding, targets)
    return compact


def _check_task(dataset: FERDataset[Any], config: ModelConfig) -> None:
    if dataset.video != (config.task == "video"):
        kind = "clips [T, 3, S, S]" if dataset.video else "single images"
        raise ValueError(f"the dataset yields {kind}, but {config.name} is a {config.task} model")


def _run_epoch(
    run: _Run, train_set: FERDataset[Any], val_set: FERDataset[Any], options: TrainOptions, epoch: int
) -> None:
    _seed_all(_epoch_seed(options.seed, epoch))
    lr = float(run.scheduler.get_last_lr()[0])  # the rate at the epoch's first step
    train_loss = _train_epoch(run, _train_loader(train_set, options, epoch, run.device), options, epoch)
    val = predict(run.model, run.config, _loader(val_set, options, run.device), run.device, options.progress)
    matrix = val.confusion(run.config.num_classes)
    record = {
        "epoch": epoch + 1,
        "train_loss": train_loss,
        "val_loss": val.loss,
        "val_war": accuracy(matrix),
        "val_uar": uar(matrix),
        "lr": lr,
    }
    run.epoch = epoch + 1
    run.history.append(record)
    logger.info(
        "epoch %d: train loss %.4f, val UAR %.4f, WAR %.4f",
        epoch + 1,
        train_loss,
        record["val_uar"],
        record["val_war"],
    )


def _train_epoch(run: _Run, loader: DataLoader[Any], options: TrainOptions, epoch: int) -> float:
    run.model.train()
    if run.objective is not None:
        run.objective.train()
    total, count = 0.0, 0
    bar = tqdm(loader, desc=f"epoch {epoch + 1}/{options.epochs}", disable=not options.progress, leave=False)
    for inputs, targets in bar:
        targets = targets.to(run.device)
        loss = _batch_loss(run, inputs.to(run.device), targets, options)
        run.optimizer.zero_grad(set_to_none=True)
        torch.autograd.backward(loss)  # Tensor.backward is unannotated; mypy --strict rejects it
        run.optimizer.step()
        run.scheduler.step()
        value = loss.detach().item()
        total += value * len(targets)
        count += len(targets)
        bar.set_postfix(loss=f"{value:.4f}")
    return total / max(count, 1)


def _train_loader(
    dataset: FERDataset[Any], options: TrainOptions, epoch: int, device: torch.device
) -> DataLoader[Any]:
    generator = torch.Generator().manual_seed(_epoch_seed(options.seed, epoch))
    sampler = _balanced_sampler(dataset, generator) if options.balanced else None
    return _loader(dataset, options, device, generator=generator, sampler=sampler, shuffle=sampler is None)


def _loader(
    dataset: FERDataset[Any], options: TrainOptions, device: torch.device, **kwargs: Any
) -> DataLoader[Any]:
    return DataLoader(
        dataset,
        batch_size=options.batch_size,
        num_workers=options.num_workers,
        worker_init_fn=_seed_worker,
        pin_memory=device.type == "cuda",
        **kwargs,
    )


def _balanced_sampler(dataset: FERDataset[Any], generator: torch.Generator) -> WeightedRandomSampler:
    """Every class drawn equally often in expectation: each sample weighs 1 / (its class's count)."""
    counts = dataset.class_counts()
    weights = [1.0 / counts[target] for target in dataset.targets]
    return WeightedRandomSampler(weights, num_samples=len(dataset), replacement=True, generator=generator)


# ----------------------------------------------------------------------------- checkpoints


def _save_checkpoints(
    run: _Run, out_dir: Path, model_name: str, options: TrainOptions, data: DatasetSpec
) -> None:
    improved = run.history[-1]["val_uar"] > run.best_uar
    if improved:
        run.best_uar = run.history[-1]["val_uar"]
    payload = _payload(run, model_name, options, data)
    save_checkpoint(payload, out_dir / LAST_CHECKPOINT)
    if improved:
        save_checkpoint(payload, out_dir / BEST_CHECKPOINT)


def _payload(run: _Run, model_name: str, options: TrainOptions, data: DatasetSpec) -> dict[str, Any]:
    record = run.history[-1]
    config = replace(
        run.config,
        trained=True,
        weights=f"{model_name} trained on {data.name} {data.split}, {run.epoch} epochs, seed {options.seed}",
        accuracy=f"validation ({options.val_split}) UAR {record['val_uar']:.4f}, WAR {record['val_war']:.4f}",
        dataset=data.describe(),
    )
    return {
        "model": model_name,
        "config": config.to_json(),
        "state_dict": run.model.state_dict(),
        "optimizer": run.optimizer.state_dict(),
        "scheduler": run.scheduler.state_dict(),
        "objective_state": run.objective.state_dict() if run.objective is not None else {},
        "epoch": run.epoch,
        "metrics": record,
        "best_uar": run.best_uar,
        "history": run.history,
        "seed": options.seed,
        "options": asdict(options),
        "dataset": data.as_dict(),
    }


def _restore(run: _Run, path: Path, name: str, options: TrainOptions) -> None:
    payload = read_checkpoint(path, run.device)
    if stored_model_name(payload) != name:
        raise ValueError(f"{path} holds {stored_model_name(payload)!r}, not {name!r}")
    stored = payload.get("options", {}).get("objective", "ce")
    if stored != options.objective:
        raise ValueError(f"{path} was trained with objective {stored!r}, not {options.objective!r}")
    run.model.load_state_dict(payload["state_dict"])
    if run.objective is not None:
        run.objective.load_state_dict(payload["objective_state"])
    run.optimizer.load_state_dict(payload["optimizer"])
    run.scheduler.load_state_dict(payload["scheduler"])
    run.epoch, run.best_uar, run.history = payload["epoch"], payload["best_uar"], list(payload["history"])
    logger.info("resumed %s at epoch %d (best UAR %.4f)", path, run.epoch, run.best_uar)


# ----------------------------------------------------------------------------- seeds


def _epoch_seed(seed: int, epoch: int) -> int:
    # SeedSequence mixes (seed, epoch) so neighbouring seeds do not give overlapping epoch streams.
    return int(np.random.SeedSequence([seed, epoch]).generate_state(1)[0])


def _seed_all(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def _seed_worker(worker_id: int) -> None:
    # The DataLoader seeds each worker's torch RNG from its generator; numpy and random need the same.
    seed = torch.initial_seed() % 2**32
    np.random.seed(seed)
    random.seed(seed)
