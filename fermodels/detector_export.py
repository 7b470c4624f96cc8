"""Export MTCNN's three nets (facenet-pytorch's trained weights) into Triton's repository, for GPU detection.

    python -m fermodels export-detector --repository model_repository

Writes ``mtcnn_pnet``, ``mtcnn_rnet`` and ``mtcnn_onet`` (``config.pbtxt`` + ``1/model.pt``), each scripted,
reloaded and compared with the eager net before it is moved into place. With ``FER_DETECTOR_BACKEND=triton``
the gateway runs the cascade's logic (pyramid, crops, NMS) and Triton runs the nets, next to the FER models
on the same GPU. The contract, per net (``INPUT__0`` FP32, pixels normalised as MTCNN wants, (x-127.5)/128):

- P-Net: ``[N, 3, H, W]`` (any size: one pyramid level) -> ``OUTPUT__0`` regression ``[N, 4, h, w]``,
  ``OUTPUT__1`` face probability ``[N, 2, h, w]``;
- R-Net: ``[N, 3, 24, 24]`` -> regression ``[N, 4]``, probability ``[N, 2]``;
- O-Net: ``[N, 3, 48, 48]`` -> regression ``[N, 4]``, landmarks ``[N, 10]``, probability ``[N, 2]``.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Final

import torch
from torch import nn

from fermodels.contract import DETECTOR_STAGES, DetectorStage
from fermodels.export import check_version, save_verified, torchscript_deprecation_silenced
from fermodels.repository import (
    CONFIG_FILENAME,
    MODEL_FILENAME,
    render_libtorch_options,
    render_parameter,
    render_tensor,
    render_warmup,
)

DETECTOR_PARAMETER_KEY: Final = "fer_detector"
WEIGHTS: Final = "facenet-pytorch 2.6.0 wheel, facenet_pytorch/data/{}.pt (MIT)"


def _net(stage: DetectorStage) -> nn.Module:
    from facenet_pytorch.models.mtcnn import ONet, PNet, RNet

    build: type[nn.Module] = {"pnet": PNet, "rnet": RNet, "onet": ONet}[stage.weights]
    net: nn.Module = build().eval()
    return net


def export_detector(repository: Path, version: int = 1, *, force: bool = False) -> list[Path]:
    """Script, verify and write the three nets; returns their model folders."""
    folders = []
    for stage in DETECTOR_STAGES:
        folder = Path(repository) / stage.name
        target = folder / str(check_version(version)) / MODEL_FILENAME
        if target.exists() and not force:
            raise FileExistsError(f"{target} already exists; pass force=True (CLI: --force) to overwrite it")
        net = _net(stage)
        sample = torch.rand(
            2, 3, stage.sample_size, stage.sample_size, generator=torch.Generator().manual_seed(0)
        )
        with torch.no_grad():
            expected = tuple(net(sample))
        with torchscript_deprecation_silenced():
            save_verified(torch.jit.script(net), target, (sample,), expected)
        (folder / CONFIG_FILENAME).write_text(render_stage_config(stage), encoding="utf-8")
        folders.append(folder)
    return folders


def render_stage_config(stage: DetectorStage) -> str:
    outputs = ",\n".join(
        _tensor(name, dims) for name, dims in zip(stage.output_names, stage.output_dims, strict=True)
    )
    provenance = json.dumps(
        {"stage": stage.weights, "weights": WEIGHTS.format(stage.weights)}, sort_keys=True
    )
    lines = [
        "# Written by `python -m fermodels export-detector`: re-export rather than edit by hand.",
        f'name: "{stage.name}"',
        'platform: "pytorch_libtorch"',
        f"max_batch_size: {stage.max_batch_size}",
        f"input [\n{_tensor(stage.input_name, stage.input_dims)}\n]",
        f"output [\n{outputs}\n]",
    ]
    if stage.dynamic_batching:
        # No queue delay: the gateway already sends each stage's candidates of several images in one call.
        lines.append("dynamic_batching { max_queue_delay_microseconds: 0 }")
    lines += [
        "instance_group [ { count: 1 } ]",
        "version_policy: { latest: { num_versions: 1 } }",
        _warmup(stage),
        render_parameter(DETECTOR_PARAMETER_KEY, provenance),
        render_libtorch_options(),
        "",
    ]
    return "\n".join(lines)


def _tensor(name: str, dims: tuple[int, ...]) -> str:
    return render_tensor(name, ", ".join(str(d) for d in dims))


def _warmup(stage: DetectorStage) -> str:
    return render_warmup(", ".join(str(stage.sample_size if d < 0 else d) for d in stage.input_dims))
