"""Scaffolding shared by the transformer model tests: seeded models and inputs, TorchScript parity with
eager mode, and TorchScript save/load round trips."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, TypeVar

import pytest
import torch
from torch import nn

from fermodels.export import load_scripted

ModelT = TypeVar("ModelT", bound=nn.Module)
Outputs = torch.Tensor | tuple[torch.Tensor, ...]

# Scripted and eager runs of the same weights may differ by float reordering only.
SCRIPT_ATOL = 1e-5


def seeded_model(factory: Callable[[], ModelT], seed: int = 0) -> ModelT:
    """``factory()`` built after ``torch.manual_seed(seed)``, in eval mode."""
    torch.manual_seed(seed)
    return factory().eval()


def scripted_fixture() -> Any:
    """A module-scoped ``scripted`` fixture: the test module's ``model`` fixture compiled once by
    ``torch.jit.script``. Use as ``scripted = scripted_fixture()`` (pytest takes the fixture's name from
    the module attribute)."""

    @pytest.fixture(scope="module")
    def scripted(model: nn.Module) -> torch.jit.ScriptModule:
        return torch.jit.script(model)

    return scripted


def seeded_randn(*shape: int, seed: int = 1) -> torch.Tensor:
    """Standard-normal test input from a private generator (the global RNG is left alone)."""
    return torch.randn(*shape, generator=torch.Generator().manual_seed(seed))


def assert_same_outputs(actual: Outputs, expected: Outputs, atol: float = SCRIPT_ATOL) -> None:
    """The same output structure (one tensor, or a tuple of as many), element-wise within ``atol``."""
    if isinstance(expected, torch.Tensor):
        assert isinstance(actual, torch.Tensor), f"expected one tensor, got {type(actual).__name__}"
        torch.testing.assert_close(actual, expected, rtol=0, atol=atol)
        return
    assert isinstance(actual, tuple), f"expected a tuple, got {type(actual).__name__}"
    for got, want in zip(actual, expected, strict=True):
        torch.testing.assert_close(got, want, rtol=0, atol=atol)


def assert_matches_eager(
    eager: nn.Module,
    scripted: torch.jit.ScriptModule,
    inputs: Sequence[torch.Tensor],
    methods: Sequence[str] = ("forward",),
) -> None:
    """Each of ``methods`` gives the eager model's outputs when called on ``scripted``."""
    with torch.no_grad():
        for method in methods:
            assert_same_outputs(getattr(scripted, method)(*inputs), getattr(eager, method)(*inputs))


def save_and_reload(scripted: torch.jit.ScriptModule, directory: Path) -> torch.jit.ScriptModule:
    """``scripted`` saved to a file and loaded back as the serving side loads it."""
    path = directory / "model.pt"
    scripted.save(str(path))
    return load_scripted(path)


def assert_torchscript_parity(
    eager: nn.Module,
    scripted: torch.jit.ScriptModule,
    inputs: Sequence[torch.Tensor],
    directory: Path,
    methods: Sequence[str] = ("forward",),
) -> None:
    """``scripted``, and ``scripted`` after a save/load round trip through ``directory``, give the eager
    model's outputs for each of ``methods``."""
    assert_matches_eager(eager, scripted, inputs, methods)
    assert_matches_eager(eager, save_and_reload(scripted, directory), inputs, methods)
