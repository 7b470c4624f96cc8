"""Expected outputs of the authors' POSTER++ code for ``tests/models/test_poster_v2.py`` (run by hand, not
in CI: it needs the authors' repository and their old dependencies, kept outside the project).

The authors' model (``pyramid_trans_expr2`` in ``models/PosterV2_7cls.py`` / ``PosterV2_8cls.py``) is built
for 7 and 8 classes, every entry of its ``state_dict`` is replaced by
``fermodels.ports.seeded_weights.seeded_state_dict`` (no released file is needed), and its eval-mode
logits on fixed inputs are written as softmax probabilities, with the official key and parameter counts
and the keys the port drops.

The constructor ``torch.load``s IR-50 and MobileFaceNet weights from hard-coded Windows / relative paths.
Those files are not needed (every tensor is overwritten afterwards), so ``torch.load`` is replaced for the
duration of the constructor by a function returning the constructed sub-network's own ``state_dict``
(the MobileFaceNet loader reads ``['state_dict']``; the IR-50 loader accepts a bare state dict).

Their code imports timm 0.3.2, whose ``timm.models.layers.helpers`` imports ``torch._six`` (removed in
torch 2); a stand-in ``torch._six`` exposing ``container_abcs = collections.abc`` is registered first.
timm only supplies stateless layers here (``DropPath``, ``trunc_normal_``; the imported ``Mlp``/``Block``
are shadowed by the authors' own), so the timm version cannot change the numbers.

Setup and run (the scratch folders are outside the project; nothing is installed into the project venv)::

    git --git-dir=<mirror of Talented-Q/POSTER_V2> archive HEAD | tar x -C /tmp/authors/poster_v2
    python3 -m pip install --no-deps --target /tmp/authors-site2 \\
        timm==0.3.2 thop==0.1.1.post2209072238 einops==0.4.1
    PYTHONPATH=/tmp/authors-site2:/tmp/authors/poster_v2:. .venv/bin/python \\
        -m fermodels.ports.poster_v2_reference --authors-dir /tmp/authors/poster_v2
"""

from __future__ import annotations

import argparse
import collections.abc
import hashlib
import importlib
import json
import sys
import types
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import torch
from torch import nn

from fermodels.contract import IMAGENET_MEAN, IMAGENET_STD
from fermodels.models.poster_v2 import DROPPED_PREFIXES, NUM_CLASSES
from fermodels.ports.seeded_weights import seeded_state_dict

REPO = Path(__file__).resolve().parents[2]
DEFAULT_OUTPUT = REPO / "tests" / "models" / "data" / "poster_v2_expected.json"
INPUT_SEED = 0
BATCH = 16
SIDE = 224
# torchvision's ImageNet normalisation, as in the authors' test transform.
# The authors' module for each class count.
AUTHORS_MODULES = {7: "models.PosterV2_7cls", 8: "models.PosterV2_8cls"}


def reference_inputs() -> torch.Tensor:
    """Uniform [0, 1] RGB ``[16, 3, 224, 224]`` from ``Generator().manual_seed(0)``, ImageNet-normalised."""
    generator = torch.Generator().manual_seed(INPUT_SEED)
    images = torch.rand(BATCH, 3, SIDE, SIDE, generator=generator)
    mean = torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1)
    std = torch.tensor(IMAGENET_STD).view(1, 3, 1, 1)
    return (images - mean) / std


def state_dict_digest(shapes: dict[str, list[int]]) -> str:
    """SHA-256 of the sorted ``key:shape`` lines: compares key sets and shapes without storing them."""
    lines = sorted(f"{key}:{'x'.join(map(str, shape))}" for key, shape in shapes.items())
    return hashlib.sha256("\n".join(lines).encode()).hexdigest()


def _install_torch_six_shim() -> None:
    """timm 0.3.2 needs ``torch._six.container_abcs``; torch 2 no longer has the module."""
    if "torch._six" not in sys.modules:
        shim = types.ModuleType("torch._six")
        shim.container_abcs = collections.abc  # type: ignore[attr-defined]
        sys.modules["torch._six"] = shim


@contextmanager
def _no_pretrained_files() -> Iterator[None]:
    """``torch.load`` answers with a placeholder while the authors' constructor runs (see module doc)."""
    original: Callable[..., Any] = torch.load
    pending: list[nn.Module] = []

    def fake_load(*_args: Any, **_kwargs: Any) -> Any:
        module = pending.pop(0)
        return {"state_dict": module.state_dict()}

    # The constructor loads right after building each sub-network; record them as they are built.
    original_setattr = nn.Module.__setattr__

    def recording_setattr(self: nn.Module, name: str, value: Any) -> None:
        if name in ("face_landback", "ir_back") and isinstance(value, nn.Module):
            pending.append(value)
        original_setattr(self, name, value)

    torch.load = fake_load
    nn.Module.__setattr__ = recording_setattr  # type: ignore[method-assign]
    try:
        yield
    finally:
        torch.load = original
        nn.Module.__setattr__ = original_setattr  # type: ignore[method-assign]


def build_authors_model(num_classes: int) -> nn.Module:
    """The authors' ``pyramid_trans_expr2`` with seeded weights, in eval mode."""
    _install_torch_six_shim()
    module = importlib.import_module(AUTHORS_MODULES[num_classes])
    with _no_pretrained_files():
        model: nn.Module = module.pyramid_trans_expr2(img_size=SIDE, num_classes=num_classes)
    model.load_state_dict(seeded_state_dict(model.state_dict()), strict=True)
    return model.eval()


def variant_record(num_classes: int, inputs: torch.Tensor) -> dict[str, Any]:
    """Counts, key digests and probabilities of one variant."""
    model = build_authors_model(num_classes)
    state = model.state_dict()
    shapes = {key: list(value.shape) for key, value in state.items()}
    kept = {key: shape for key, shape in shapes.items() if not key.startswith(DROPPED_PREFIXES)}
    dropped = sorted(key for key in shapes if key not in kept)
    with torch.no_grad():
        # Row by row as well as batched: the two agree, and the authors' shape code is batch-safe eagerly.
        logits = model(inputs)
        rows = torch.cat([model(inputs[i : i + 1]) for i in range(inputs.shape[0])])
    row_gap = float((logits - rows).abs().max())
    probabilities = logits.softmax(dim=-1)
    return {
        "num_keys": len(state),
        "num_params": sum(p.numel() for p in model.parameters()),
        "num_kept_keys": len(kept),
        "num_kept_params": sum(p.numel() for k, p in model.named_parameters() if k in kept),
        "kept_keys_sha256": state_dict_digest(kept),
        "dropped_keys": dropped,
        "batch_vs_rows_max_abs_logit_gap": row_gap,
        "probabilities": [[round(float(p), 6) for p in row] for row in probabilities],
    }


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    parser.add_argument("--authors-dir", type=Path, required=True, help="checkout of Talented-Q/POSTER_V2")
    parser.add_argument("--output", type=Path, default=DEFAULT_OUTPUT)
    args = parser.parse_args(argv)
    sys.path.insert(0, str(args.authors_dir.resolve()))
    torch.set_num_threads(1)
    inputs = reference_inputs()
    record: dict[str, Any] = {
        "source": "github.com/Talented-Q/POSTER_V2 models/PosterV2_{7,8}cls.py pyramid_trans_expr2",
        "weights": "fermodels.ports.seeded_weights.seeded_state_dict of every state-dict entry",
        "inputs": f"torch.rand({BATCH}, 3, {SIDE}, {SIDE}, generator=Generator().manual_seed({INPUT_SEED})),"
        " then (x - ImageNet mean) / ImageNet std",
        "torch": torch.__version__,
        "variants": {str(n): variant_record(n, inputs) for n in NUM_CLASSES},
    }
    args.output.parent.mkdir(parents=True, exist_ok=True)
    args.output.write_text(json.dumps(record, indent=1) + "\n")
    print(f"wrote {args.output}")


if __name__ == "__main__":
    main()
