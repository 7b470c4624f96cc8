"""The POSTER++ port computes what the authors' code computes, under the authors' key names.

Expected values come from ``fermodels/ports/poster_v2_reference.py``, which ran the authors' own model
(github.com/Talented-Q/POSTER_V2) with every state-dict entry set by ``seeded_state_dict`` on fixed inputs;
the same rule fills our port here, so equal probabilities mean equal computation. The key digest ties our
key names and shapes to the authors' state dict minus the documented dropped prefixes.
"""

import json
from functools import cache
from pathlib import Path
from typing import Any

import pytest
import torch

from fermodels.models.poster_v2 import (
    DROPPED_PREFIXES,
    PosterV2,
    build_poster_v2,
    dropped_prefixes,
    official_state_dict,
)
from fermodels.ports.poster_v2_reference import reference_inputs, state_dict_digest
from fermodels.ports.seeded_weights import seeded_state_dict

# torch 2.14 deprecates TorchScript, but Triton's libtorch backend still serves TorchScript files.
pytestmark = pytest.mark.filterwarnings("ignore:`torch.jit.[a-z]+` is deprecated:FutureWarning")

EXPECTED_PATH = Path(__file__).parent / "data" / "poster_v2_expected.json"
# Probabilities are stored rounded to 1e-6; the port agrees with the authors' code to ~5e-7.
PROBABILITY_ATOL = 1e-4
VARIANTS = (7, 8)
BATCH_SIZES = (1, 3, 16)


@cache
def expected(num_classes: int) -> dict[str, Any]:
    record: dict[str, Any] = json.loads(EXPECTED_PATH.read_text())["variants"][str(num_classes)]
    return record


@cache
def seeded_model(num_classes: int) -> PosterV2:
    """Our port with the seeded weights, strictly loaded."""
    model = build_poster_v2(num_classes)
    model.load_state_dict(seeded_state_dict(model.state_dict()), strict=True)
    return model


@cache
def scripted_model(num_classes: int) -> torch.jit.ScriptModule:
    return torch.jit.script(seeded_model(num_classes))


@cache
def inputs() -> torch.Tensor:
    return reference_inputs()


@pytest.mark.parametrize("num_classes", VARIANTS)
def test_keys_are_the_authors_minus_the_dropped_prefixes(num_classes: int) -> None:
    record = expected(num_classes)
    model = build_poster_v2(num_classes)
    state = model.state_dict()
    assert (
        state_dict_digest({key: list(value.shape) for key, value in state.items()})
        == record["kept_keys_sha256"]
    ), "key names or shapes differ from the authors' state dict minus DROPPED_PREFIXES"
    assert len(state) == record["num_kept_keys"]
    assert len(state) + len(record["dropped_keys"]) == record["num_keys"] == 747
    assert sum(p.numel() for p in model.parameters()) == record["num_kept_params"]
    assert dropped_prefixes(num_classes) == DROPPED_PREFIXES
    assert all(key.startswith(DROPPED_PREFIXES) for key in record["dropped_keys"])
    for prefix in DROPPED_PREFIXES:
        assert any(key.startswith(prefix) for key in record["dropped_keys"]), f"{prefix} drops nothing"
    assert not any(key.startswith(DROPPED_PREFIXES) for key in state)


def test_official_checkpoint_layout_loads_strictly() -> None:
    """A DataParallel state dict with the unbuilt modules' keys loads after ``official_state_dict``."""
    model = build_poster_v2(7)
    official = {f"module.{key}": value for key, value in seeded_state_dict(model.state_dict()).items()}
    for key in expected(7)["dropped_keys"]:
        official[f"module.{key}"] = torch.zeros(1)
    model.load_state_dict(official_state_dict(official), strict=True)
    with pytest.raises(RuntimeError, match="Unexpected key"):
        model.load_state_dict({key.removeprefix("module."): v for key, v in official.items()}, strict=True)


def test_renamed_key_fails_strict_loading() -> None:
    model = build_poster_v2(8)
    state = seeded_state_dict(model.state_dict())
    state["VIT.head.fc.weight"] = state.pop("VIT.head.linear.weight")
    with pytest.raises(RuntimeError, match=r"VIT\.head\.linear\.weight"):
        model.load_state_dict(state, strict=True)


def test_only_released_class_counts() -> None:
    with pytest.raises(ValueError, match="classes"):
        build_poster_v2(6)
    with pytest.raises(ValueError, match="classes"):
        dropped_prefixes(9)


@pytest.mark.usefixtures("one_torch_thread")
@pytest.mark.parametrize("batch", BATCH_SIZES)
@pytest.mark.parametrize("scripted", [False, True], ids=["eager", "script"])
@pytest.mark.parametrize("num_classes", VARIANTS)
def test_probabilities_match_authors(num_classes: int, scripted: bool, batch: int) -> None:
    model = scripted_model(num_classes) if scripted else seeded_model(num_classes)
    # Batches start at different rows so that each size sees other faces in other batch positions.
    start = {1: 5, 3: 9, 16: 0}[batch]
    with torch.no_grad():
        probabilities = model(inputs()[start : start + batch]).softmax(dim=-1)
    want = torch.tensor(expected(num_classes)["probabilities"][start : start + batch])
    assert probabilities.shape == (batch, num_classes)
    torch.testing.assert_close(probabilities, want, rtol=0, atol=PROBABILITY_ATOL)
