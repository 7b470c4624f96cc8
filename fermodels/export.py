"""Export an image model into Triton's repository: ``<repo>/<name>/{config.pbtxt,labels.txt,<v>/model.pt}``.

The serving contract (the gateway and the python-backend runner are written against it):
``INPUT__0`` FP32 [N, 3, S, S] RGB in [0, 1] -> ``OUTPUT__0`` FP32 [N, C] softmax probabilities in
``config.labels`` order, ``OUTPUT__1`` FP32 [N, D] unit-norm image embedding, ``OUTPUT__2`` FP32 [N, P]
raw cosine between that embedding and each prompt's embedding (``config.prompts`` order, in [-1, 1]).
A model whose config has ``num_landmarks`` K takes a second input, ``INPUT__1`` FP32 [N, K, 2]: the face's
landmarks in [0, 1] crop coordinates (POSTER). A model whose config has ``affect_outputs`` A also returns
``OUTPUT__3`` FP32 [N, A] (raw valence / arousal; position 2 is then an unlisted empty [N, 0] tensor).
The input is RGB whatever the weights take: ``channel_order="bgr"`` is swapped inside the TorchScript.

A model is servable if it has ``forward_serving(x) -> (class logits [N, C], image embedding [N, D],
text embedding [P, D])`` on a normalised input (see ``FERFormer.forward_serving``); the wrapper here adds
normalisation, softmax, L2 normalisation and the cosine so every model family gets them identically.
``export_checkpoint`` exports trained weights (a ``fermodels.checkpoint``) with the metrics ``evaluate``
measured for that very file; ``export_model`` exports any model object. Export is TorchScript only
(what Triton's libtorch backend serves); it is kept in this module so a ``torch.export`` path can be
added beside it.
"""

from __future__ import annotations

import json
import os
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import replace
from pathlib import Path
from typing import Any, Final

import torch
import torch.nn.functional as F
from torch import nn

from fermodels.checkpoint import load_checkpoint
from fermodels.contract import (
    EvaluationMetrics,
    ModelConfig,
    file_sha256,
)
from fermodels.repository import (
    CONFIG_FILENAME,
    LABELS_FILENAME,
    MODEL_FILENAME,
    README_FILENAME,
    input_dims,
    landmark_dims,
    render_config_pbtxt,
    render_labels,
    render_model_readme,
)

VERIFY_ATOL: Final = 1e-5

METRICS_FILENAME: Final = "metrics.json"  # what `python -m fermodels evaluate` writes next to a checkpoint

Outputs = tuple[torch.Tensor, ...]
Inputs = tuple[torch.Tensor, ...]


class ExportVerificationError(RuntimeError):
    """The reloaded TorchScript file does not reproduce the eager model."""


class MetricsError(ValueError):
    """No evaluation of the checkpoint to export, or one of another file."""


class _Normalising(nn.Module):
    """Holds the served model, the config's mean/std and channel order, applied inside the TorchScript."""

    def __init__(self, model: nn.Module, config: ModelConfig) -> None:
        super().__init__()
        if not hasattr(model, "forward_serving"):
            raise TypeError(f"{type(model).__name__} has no forward_serving(x); it cannot be served")
        self.model = model
        self.register_buffer("mean", channel_stats(config.mean, config))
        self.register_buffer("std", channel_stats(config.std, config))
        # RGB in, the weights' order out (mean/std are in the weights' order); a flip of 3 channels.
        self.bgr = config.channel_order == "bgr"
        self.channel_dim = 2 if config.task == "video" else 1

    def normalise(self, x: torch.Tensor) -> torch.Tensor:
        if self.bgr:
            x = x.flip(self.channel_dim)
        # Buffers read as Tensor | Module to mypy; class-level annotations would trip TorchScript here.
        return (x - self.mean) / self.std  # type: ignore[operator]


class ServingWrapper(_Normalising):
    """The serving contract for a model with a text side: probabilities, embedding, text similarity."""

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        # nn.Module.__getattr__ is typed Tensor | Module, so mypy cannot see the method TorchScript compiles.
        logits, image, text = self.model.forward_serving(self.normalise(x))  # type: ignore[operator]
        image = F.normalize(image, dim=-1)
        text = F.normalize(text, dim=-1)
        # Rounding can put the cosine of unit vectors a hair outside [-1, 1], which the contract forbids.
        return logits.softmax(dim=-1), image, (image @ text.t()).clamp(-1.0, 1.0)


class ClassifierServingWrapper(_Normalising):
    """The serving contract for a model without a text side: ``OUTPUT__0`` probabilities and
    ``OUTPUT__1`` unit-norm embedding only (no ``OUTPUT__2``; its config has no prompts)."""

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        logits, image = self.model.forward_serving(self.normalise(x))  # type: ignore[operator]
        return logits.softmax(dim=-1), F.normalize(image, dim=-1)


class LandmarkServingWrapper(_Normalising):
    """The classifier contract for a model that also takes the face's landmarks (``INPUT__1``)."""

    def forward(self, x: torch.Tensor, landmarks: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        logits, image = self.model.forward_serving(self.normalise(x), landmarks)  # type: ignore[operator]
        return logits.softmax(dim=-1), F.normalize(image, dim=-1)


class AffectServingWrapper(_Normalising):
    """The classifier contract plus continuous affect: ``forward_serving(x) -> (logits, embedding, affect)``.
    Returns ``OUTPUT__0..3`` by position; position 2 (a text side's cosines) is an empty [N, 0] tensor."""

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
        logits, image, affect = self.model.forward_serving(self.normalise(x))  # type: ignore[operator]
        no_text = torch.zeros(x.shape[0], 0, dtype=logits.dtype, device=logits.device)
        return logits.softmax(dim=-1), F.normalize(image, dim=-1), no_text, affect


def channel_stats(values: tuple[float, float, float], config: ModelConfig) -> torch.Tensor:
    """mean/std shaped to broadcast over the channel axis of a batch of images or of clips."""
    shape = (1, 1, 3, 1, 1) if config.task == "video" else (1, 3, 1, 1)
    return torch.tensor(values, dtype=torch.float32).view(shape)


def serving_wrapper(model: nn.Module, config: ModelConfig) -> nn.Module:
    """The contract's wrapper for this model: with text similarity when the config has prompts, with a
    landmark input when it has ``num_landmarks``."""
    if config.has_text_side and config.num_landmarks:
        raise ValueError("no serving contract has both prompts and landmarks")
    wrapper: type[_Normalising] = ClassifierServingWrapper
    if config.has_text_side:
        wrapper = ServingWrapper
    elif config.num_landmarks:
        wrapper = LandmarkServingWrapper
    elif config.affect_outputs:
        wrapper = AffectServingWrapper
    return wrapper(model, config).eval()


def sample_inputs(config: ModelConfig, batch: int, seed: int = 0) -> Inputs:
    """Random inputs of the serving contract: crops in [0, 1], and landmarks near the template."""
    generator = torch.Generator().manual_seed(seed)
    crops = torch.rand(batch, *input_dims(config), generator=generator)
    if not config.num_landmarks:
        return (crops,)
    template = torch.tensor(config.normalised_landmark_template())
    jitter = 0.02 * torch.randn(batch, *landmark_dims(config), generator=generator)
    return crops, template + jitter


# ----------------------------------------------------------------------------- export a checkpoint


def export_checkpoint(
    checkpoint: Path, repository: Path, version: int = 1, *, metrics: Path | None = None, **options: Any
) -> Path:
    """Export a checkpoint's weights with ``trained: true``, its training data and the metrics ``evaluate``
    measured on it (``metrics``, default: metrics.json next to the checkpoint). ``options``: export_model's.

    Raises MetricsError when there is no such file or it evaluated another checkpoint file.
    """
    measured = read_metrics(checkpoint, metrics or checkpoint.parent / METRICS_FILENAME)
    loaded = load_checkpoint(checkpoint)
    config = replace(
        loaded.config,
        metrics=measured,
        accuracy=f"{measured.data}: WAR {measured.war:.4f}, UAR {measured.uar:.4f} "
        f"({measured.num_samples} samples)",
    )
    return export_model(loaded.model, config, repository, version, **options)


def read_metrics(checkpoint: Path, path: Path) -> EvaluationMetrics:
    """evaluate's metrics.json for exactly this checkpoint file (its sha256 is recorded there)."""
    if not path.is_file():
        raise MetricsError(
            f"no evaluation of {checkpoint} ({path} does not exist): run `python -m fermodels evaluate "
            f"--checkpoint {checkpoint} ...` first, or pass --metrics PATH"
        )
    raw: dict[str, Any] = json.loads(path.read_text())
    if raw.get("checkpoint_sha256") != file_sha256(checkpoint):
        raise MetricsError(f"{path} is the evaluation of {raw.get('checkpoint')}, not of {checkpoint}")
    return EvaluationMetrics.from_dict(raw)


# ----------------------------------------------------------------------------- export


def export_model(
    model: nn.Module,
    config: ModelConfig,
    repository: Path,
    version: int = 1,
    *,
    force: bool = False,
    max_queue_delay_us: int = 2000,
    queue_timeout_us: int = 5_000_000,
    max_queue_size: int = 64,
    instance_count: int | None = None,
) -> Path:
    """Script, write and verify one model version; returns the model's folder ``<repository>/<name>``.

    Puts ``model`` in eval mode. Refuses to overwrite an existing version unless ``force``.
    """
    pbtxt = render_config_pbtxt(
        config,
        max_queue_delay_us=max_queue_delay_us,
        queue_timeout_us=queue_timeout_us,
        max_queue_size=max_queue_size,
        instance_count=instance_count,
    )
    model_dir = Path(repository) / config.name
    target = model_dir / str(check_version(version)) / MODEL_FILENAME
    if target.exists() and not force:
        raise FileExistsError(f"{target} already exists; pass force=True (CLI: --force) to overwrite it")
    wrapper = serving_wrapper(model, config)
    sample = sample_inputs(config, min(2, config.max_batch_size))
    expected = _run(wrapper, sample)
    _check_shapes(expected, config)
    with torchscript_deprecation_silenced():
        save_verified(torch.jit.script(wrapper), target, sample, expected)
    (model_dir / CONFIG_FILENAME).write_text(pbtxt, encoding="utf-8")
    (model_dir / LABELS_FILENAME).write_text(render_labels(config), encoding="utf-8")
    (model_dir / README_FILENAME).write_text(render_model_readme(config), encoding="utf-8")
    return model_dir


@contextmanager
def torchscript_deprecation_silenced() -> Iterator[None]:
    # torch 2.14 flags torch.jit.script/load as deprecated, but TorchScript is the format Triton's
    # libtorch backend loads; the notice would only bury the export's own output.
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=r"`torch\.jit\.", category=FutureWarning)
        yield


def check_version(version: int) -> int:
    if version < 1:
        raise ValueError(f"Triton model versions are positive integers, got {version}")
    return version


def _run(module: nn.Module | torch.jit.ScriptModule, inputs: Inputs) -> Outputs:
    with torch.no_grad():
        outputs: Outputs = tuple(module(*inputs))
    return outputs


def _check_shapes(outputs: Outputs, config: ModelConfig) -> None:
    batch = outputs[0].shape[0]
    expected: tuple[tuple[int, int], ...] = ((batch, config.num_classes), (batch, config.embed_dim))
    if config.has_text_side:
        expected = (*expected, (batch, len(config.prompts)))
    if config.affect_outputs:
        expected = (*expected, (batch, 0), (batch, len(config.affect_outputs)))
    actual = tuple(tuple(output.shape) for output in outputs)
    if actual != expected:
        raise ValueError(f"model outputs {actual} do not match the config's (C, D, P, A) shapes {expected}")


def save_verified(scripted: torch.jit.ScriptModule, target: Path, sample: Inputs, expected: Outputs) -> None:
    """Save to a temporary file, reload it, compare with eager, and only then move it into place."""
    target.parent.mkdir(parents=True, exist_ok=True)
    staging = target.with_name(target.name + ".tmp")
    try:
        scripted.save(str(staging))
        _verify(load_scripted(staging), sample, expected)
        os.replace(staging, target)
    finally:
        staging.unlink(missing_ok=True)


def load_scripted(path: Path) -> torch.jit.ScriptModule:
    # torch.jit.load has no annotations, which mypy --strict rejects inside typed code.
    with torchscript_deprecation_silenced():
        module: torch.jit.ScriptModule = torch.jit.load(str(path), map_location="cpu")  # type: ignore[no-untyped-call]
    return module


def _verify(reloaded: torch.jit.ScriptModule, sample: Inputs, expected: Outputs) -> None:
    for index, (got, want) in enumerate(zip(_run(reloaded, sample), expected, strict=True)):
        if not torch.allclose(got, want, rtol=0.0, atol=VERIFY_ATOL):
            diff = (got - want).abs().max().item()
            raise ExportVerificationError(f"OUTPUT__{index} of the reloaded model differs by {diff:.3g}")
