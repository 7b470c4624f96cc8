"""How ``tests/models/data/poster_expected.json`` was made: the authors' own POSTER code, fed seeded weights.

Run by hand, never in CI (it needs the authors' repository, which must not enter this project)::

    git clone https://github.com/zczcwh/POSTER /tmp/authors/poster   # or any checkout of it
    python -m pip install --target /tmp/authors-site einops
    PYTHONPATH=/tmp/authors-site:/tmp/authors/poster:. python -m fermodels.ports.poster_reference \\
        --authors-dir /tmp/authors/poster --out tests/models/data/poster_expected.json

What it does, per variant (``rafdb``: ``models/emotion_hyp.py``; ``affectnet7`` / ``affectnet8``:
``models/emotion_hyp_affect.py`` with 7 / 8 classes, as ``test.py`` / ``test_affect.py`` build them):

1. builds ``pyramid_trans_expr(img_size=224, num_classes=..., type="large")``. Its constructor reads two
   pretrained files from ``./models/pretrain/`` that we neither have nor want; :func:`_no_pretrained_files`
   replaces ``torch.load`` for the duration of the constructor: the MobileFaceNet file becomes
   ``{"state_dict": <a fresh MobileFaceNet's own state dict>}`` (its strict ``load_state_dict`` then
   succeeds) and the IR-50 file becomes ``{}`` (``load_pretrained_weights`` then matches nothing and
   keeps the module's values). ``matplotlib.pyplot``, imported but unused by the model code, is stubbed
   when it is not installed;
2. replaces *every* state-dict entry by :func:`fermodels.ports.seeded_weights.seeded_state_dict` and loads
   it strictly, so no value of step 1 survives;
3. runs the eval-mode forward on :func:`reference_inputs` and stores the softmax of the logits (the
   first element of the authors' ``(logits, feature)`` return), rounded to 1e-6;
4. does the same for the first 4 inputs with :func:`probe_state_dict` (the position code amplified).

The JSON also records the official key and parameter counts, a digest of the official ``key:shape`` list
and the official entries the port drops (with shapes), so the tests can check the key set.
"""

from __future__ import annotations

import argparse
import hashlib
import importlib
import json
import math
import re
import subprocess
import sys
import types
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import torch
from torch import nn

from fermodels.contract import IMAGENET_MEAN, IMAGENET_STD
from fermodels.models.poster_official import is_dropped
from fermodels.ports.seeded_weights import seeded_state_dict

SEED = 0
BATCH = 16
SIZE = 224
DECIMALS = 6

# variant -> (authors' module, number of classes)
AUTHORS_MODELS: dict[str, tuple[str, int]] = {
    "rafdb": ("models.emotion_hyp", 7),
    "affectnet7": ("models.emotion_hyp_affect", 7),
    "affectnet8": ("models.emotion_hyp_affect", 8),
}


PROBE_BATCH = 4
# The seeding rule scales a (1, 50, 512) tensor by 1/sqrt(50 * 512), giving the position code a standard
# deviation near 0.006 against image tokens near 800 (IR-50's map enters the fusion un-normalised), so
# leaving it out moves the probabilities by about 2e-6, below any sane tolerance. The probe run raises it
# to a standard deviation near 100, where leaving it out moves them by about 2e-2.
PROBE_GAINS: dict[str, float] = {"pyramid_fuse.pos_embed": 100.0 * math.sqrt(50 * 512)}


def probe_state_dict(state_dict: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """The seeded state dict with the entries of :data:`PROBE_GAINS` amplified."""
    seeded = seeded_state_dict(state_dict)
    for key, gain in PROBE_GAINS.items():
        seeded[key] = seeded[key] * gain
    return seeded


def reference_inputs(batch: int = BATCH) -> torch.Tensor:
    """The first ``batch`` of 16 images drawn uniform in [0, 1] by ``torch.Generator`` seed 0 (16 are
    always drawn, so a smaller batch is a prefix of the full one), normalised per channel index by the
    ImageNet statistics as the authors' ``transforms.Normalize`` does (whatever the channel order)."""
    generator = torch.Generator().manual_seed(SEED)
    images = torch.rand((BATCH, 3, SIZE, SIZE), generator=generator, dtype=torch.float32)
    mean = torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1)
    std = torch.tensor(IMAGENET_STD).view(1, 3, 1, 1)
    return ((images - mean) / std)[:batch]


@contextmanager
def _no_pretrained_files(mobilefacenet_state: Callable[[], dict[str, torch.Tensor]]) -> Iterator[None]:
    """``torch.load`` answering the constructor's two pretrained-file reads without touching the disk."""
    real_load = torch.load

    def fake_load(path: object, *args: object, **kwargs: object) -> dict[str, Any]:
        if str(path).endswith("mobilefacenet_model_best.pth.tar"):
            return {"state_dict": mobilefacenet_state()}
        if str(path).endswith("ir50.pth"):
            return {}
        raise FileNotFoundError(f"unexpected torch.load({path!r}) while building the authors' model")

    torch.load = fake_load  # type: ignore[assignment]
    try:
        yield
    finally:
        torch.load = real_load


def _stub_unused_imports() -> None:
    """``models/emotion_hyp*.py`` import ``matplotlib.pyplot`` without using it."""
    try:
        importlib.import_module("matplotlib.pyplot")
    except ImportError:
        sys.modules["matplotlib"] = types.ModuleType("matplotlib")
        sys.modules["matplotlib.pyplot"] = types.ModuleType("matplotlib.pyplot")


def build_authors_model(variant: str) -> nn.Module:
    """The authors' test-time model for ``variant``, every entry replaced by its seeded value."""
    module_name, num_classes = AUTHORS_MODELS[variant]
    _stub_unused_imports()
    mobilefacenet = importlib.import_module("models.mobilefacenet")
    authors = importlib.import_module(module_name)
    with _no_pretrained_files(lambda: mobilefacenet.MobileFaceNet([112, 112], 136).state_dict()):
        model: nn.Module = authors.pyramid_trans_expr(img_size=SIZE, num_classes=num_classes, type="large")
    model.load_state_dict(seeded_state_dict(model.state_dict()), strict=True)
    return model.eval()


def _authors_commit(authors_dir: Path) -> str | None:
    result = subprocess.run(
        ["git", "-C", str(authors_dir), "rev-parse", "HEAD"], capture_output=True, text=True, check=False
    )
    return result.stdout.strip() or None


def key_digest(shapes: dict[str, list[int]]) -> str:
    """SHA-256 over the sorted ``key:shape`` lines of a state dict, so the tests can prove the port's key
    set plus the dropped entries equals the official one without the authors' code."""
    lines = "\n".join(f"{key}:{list(shape)}" for key, shape in sorted(shapes.items()))
    return hashlib.sha256(lines.encode("utf-8")).hexdigest()


def _rounded(probabilities: torch.Tensor) -> list[list[float]]:
    return [[round(float(p), DECIMALS) for p in row] for row in probabilities]


def expected_for(variant: str, inputs: torch.Tensor) -> dict[str, Any]:
    """Key and parameter counts and rounded softmax rows of the authors' model for one variant."""
    model = build_authors_model(variant)
    shapes = {key: list(value.shape) for key, value in model.state_dict().items()}
    dropped = {key: shape for key, shape in shapes.items() if is_dropped(key, variant)}
    with torch.no_grad():
        logits, _feature = model(inputs)
    probabilities = torch.softmax(logits.double(), dim=1)
    model.load_state_dict(probe_state_dict(model.state_dict()), strict=True)
    with torch.no_grad():
        probe_logits, _feature = model(inputs[:PROBE_BATCH])
    probe = torch.softmax(probe_logits.double(), dim=1)
    return {
        "official_keys": len(model.state_dict()),
        "official_params": sum(p.numel() for p in model.parameters()),
        "official_keys_sha256": key_digest(shapes),
        "dropped_keys": dropped,
        "probabilities": _rounded(probabilities),
        "probe_probabilities": _rounded(probe),
    }


def _compact_rows(text: str) -> str:
    """Innermost lists (one probability row each) on one line, so the file reads as a table."""
    return re.sub(r"\[\s+([^\[\]]+?)\s+\]", lambda m: "[" + " ".join(m.group(1).split()) + "]", text)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    parser.add_argument("--authors-dir", type=Path, required=True, help="checkout of zczcwh/POSTER")
    parser.add_argument("--out", type=Path, default=Path("tests/models/data/poster_expected.json"))
    args = parser.parse_args(argv)
    sys.path.insert(0, str(args.authors_dir.resolve()))
    torch.manual_seed(SEED)  # the constructors draw initial values that step 2 overwrites anyway
    inputs = reference_inputs()
    document: dict[str, Any] = {
        "source": "github.com/zczcwh/POSTER",
        "authors_commit": _authors_commit(args.authors_dir),
        "torch": torch.__version__,
        "inputs": f"torch.Generator seed {SEED}: rand({BATCH}, 3, {SIZE}, {SIZE}), (x - mean) / std "
        f"with mean {IMAGENET_MEAN}, std {IMAGENET_STD}",
        "weights": "fermodels.ports.seeded_weights.seeded_state_dict on every state-dict entry",
        "variants": {variant: expected_for(variant, inputs) for variant in AUTHORS_MODELS},
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(_compact_rows(json.dumps(document, indent=1)) + "\n")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
