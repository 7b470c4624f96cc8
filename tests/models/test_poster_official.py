"""The port of the authors' POSTER computes what their code computes, and takes their checkpoints' keys.

Evidence without the released checkpoints: both sides get the same seeded weights
(``fermodels.ports.seeded_weights``), and ``tests/models/data/poster_expected.json`` holds the authors'
softmax outputs on fixed inputs, made by ``fermodels/ports/poster_reference.py`` (see its docstring). The
same JSON holds a digest of the official ``key:shape`` list and the official entries the port drops, so
the key-set checks need no authors' code either.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from functools import cache
from pathlib import Path
from typing import Any

import pytest
import torch
from torch import nn

from fermodels.importing.poster import read_poster
from fermodels.models.poster_official import (
    CLASS_NAMES,
    VARIANTS,
    build_poster,
    dropped_prefixes,
    is_dropped,
    official_to_port,
)
from fermodels.ports.poster_reference import PROBE_BATCH, key_digest, probe_state_dict, reference_inputs
from fermodels.ports.seeded_weights import seeded_state_dict

pytestmark = pytest.mark.filterwarnings("ignore:`torch.jit.[a-z]+` is deprecated:FutureWarning")

EXPECTED = Path(__file__).parent / "data" / "poster_expected.json"
TOLERANCE = 1e-4
# What the port documents as not built, in this order, for every variant.
DOCUMENTED_DROPS = ("ir_back.output_layer", "face_landback.output_layer", "pyramid_fuse.cls_token")
BUFFER_SUFFIXES = ("running_mean", "running_var", "num_batches_tracked")


@cache
def expected(variant: str) -> dict[str, Any]:
    document: dict[str, Any] = json.loads(EXPECTED.read_text())
    result: dict[str, Any] = document["variants"][variant]
    return result


@cache
def seeded_port(variant: str) -> nn.Module:
    model = build_poster(variant)
    model.load_state_dict(seeded_state_dict(model.state_dict()), strict=True)
    return model.eval()


@cache
def scripted_port(variant: str) -> torch.jit.ScriptModule:
    return torch.jit.script(seeded_port(variant))


@pytest.fixture(scope="module", autouse=True)
def _threads(one_torch_thread: None) -> Iterator[None]:
    yield


def _official_shapes(variant: str) -> dict[str, list[int]]:
    """The port's key:shape list plus the dropped entries recorded from the authors' model."""
    shapes = {key: list(value.shape) for key, value in seeded_port(variant).state_dict().items()}
    shapes.update(expected(variant)["dropped_keys"])
    return shapes


@pytest.mark.parametrize("variant", VARIANTS)
def test_dropped_prefixes_are_the_documented_ones(variant: str) -> None:
    assert dropped_prefixes(variant) == DOCUMENTED_DROPS
    dropped = list(expected(variant)["dropped_keys"])
    assert all(is_dropped(key, variant) for key in dropped)
    for prefix in DOCUMENTED_DROPS:  # each prefix removes something real from the official checkpoint
        assert any(key == prefix or key.startswith(prefix + ".") for key in dropped), prefix
    assert not any(is_dropped(key, variant) for key in seeded_port(variant).state_dict())


@pytest.mark.parametrize("variant", VARIANTS)
def test_key_set_is_official_minus_dropped(variant: str) -> None:
    shapes = _official_shapes(variant)
    assert len(shapes) == expected(variant)["official_keys"]
    assert key_digest(shapes) == expected(variant)["official_keys_sha256"]


@pytest.mark.parametrize("variant", VARIANTS)
def test_parameter_count_is_official_minus_dropped(variant: str) -> None:
    ported = sum(p.numel() for p in seeded_port(variant).parameters())
    dropped = sum(
        torch.Size(shape).numel()
        for key, shape in expected(variant)["dropped_keys"].items()
        if not key.endswith(BUFFER_SUFFIXES)
    )
    assert ported + dropped == expected(variant)["official_params"]


def test_official_counts() -> None:
    """The figures quoted for RAF-DB (1,309 keys, 71.9 M parameters) and the AffectNet model's."""
    assert expected("rafdb")["official_keys"] == 1309
    assert round(expected("rafdb")["official_params"] / 1e6, 1) == 71.9
    assert expected("affectnet7")["official_keys"] == expected("affectnet8")["official_keys"] == 1261


@pytest.mark.parametrize("variant", VARIANTS)
def test_dataparallel_checkpoint_loads_strictly(variant: str, tmp_path: Path) -> None:
    """A checkpoint laid out as the authors' train.py saves it imports with nothing left over."""
    port_state = seeded_port(variant).state_dict()
    official = {f"module.{key}": value for key, value in port_state.items()}
    for key, shape in expected(variant)["dropped_keys"].items():
        official[f"module.{key}"] = torch.zeros(shape)
    path = tmp_path / "official.pth"
    torch.save({"iter": 0, "model_state_dict": official, "optimizer_state_dict": {}}, path)
    kept, dropped = official_to_port(read_poster(path), variant)
    model = build_poster(variant)
    model.load_state_dict(kept, strict=True)
    assert sorted(dropped) == sorted(expected(variant)["dropped_keys"])
    for key, value in model.state_dict().items():
        assert torch.equal(value, port_state[key]), key


def test_renamed_key_fails_strict_loading() -> None:
    state = seeded_port("rafdb").state_dict()
    renamed = {key.replace("pyramid_fuse.blocks.0.", "pyramid_fuse.block.0."): v for key, v in state.items()}
    with pytest.raises(RuntimeError, match="Missing key"):
        build_poster("rafdb").load_state_dict(renamed, strict=True)


def test_affectnet_state_does_not_fit_rafdb() -> None:
    """The RAF-DB model's token-mixing convs are required keys, not optional extras."""
    with pytest.raises(RuntimeError, match=r"blocks\.0\.block_l\.conv\.weight"):
        build_poster("rafdb").load_state_dict(seeded_port("affectnet7").state_dict(), strict=True)


@pytest.mark.parametrize("scripted", [False, True], ids=["eager", "torchscript"])
@pytest.mark.parametrize("batch", [1, 3, 16])
@pytest.mark.parametrize("variant", VARIANTS)
def test_matches_authors_outputs(variant: str, batch: int, scripted: bool) -> None:
    model = scripted_port(variant) if scripted else seeded_port(variant)
    with torch.no_grad():
        logits = model(reference_inputs(batch))
    assert logits.shape == (batch, len(CLASS_NAMES[variant]))
    probabilities = torch.softmax(logits.double(), dim=1)
    want = torch.tensor(expected(variant)["probabilities"][:batch], dtype=torch.float64)
    torch.testing.assert_close(probabilities, want, rtol=0.0, atol=TOLERANCE)


@pytest.mark.parametrize("variant", VARIANTS)
def test_matches_authors_with_amplified_position_code(variant: str) -> None:
    """Seeded at its rule's scale the position code barely matters; amplified, it must be added."""
    model = build_poster(variant)
    model.load_state_dict(probe_state_dict(model.state_dict()), strict=True)
    with torch.no_grad():
        logits = model.eval()(reference_inputs(PROBE_BATCH))
    want = torch.tensor(expected(variant)["probe_probabilities"], dtype=torch.float64)
    torch.testing.assert_close(torch.softmax(logits.double(), dim=1), want, rtol=0.0, atol=TOLERANCE)


def test_layer_norms_use_the_authors_eps() -> None:
    """The fusion transformer's partial(nn.LayerNorm, eps=1e-6); the seeded parity run cannot see eps
    (its tokens' variances dwarf both 1e-5 and 1e-6), so it is checked structurally."""
    norms = [m for m in seeded_port("rafdb").modules() if isinstance(m, nn.LayerNorm)]
    assert len(norms) == 8 * 3 * 4 + 1
    assert {m.eps for m in norms} == {1e-6}


def test_unknown_variant_is_refused() -> None:
    with pytest.raises(ValueError, match="unknown POSTER variant"):
        build_poster("affectnet")
