"""The layering the folders show, held by the imports themselves (module-level and in-function alike).

edge (service/http, ``python -m service``) → serving → detection / vision / inference / launcher →
the shared contract (settings, exceptions, schemas, metrics, array types) → ``fermodels.contract``, the
serving contract, which imports nothing but the standard library. A module may import its own layer or any
layer below it, never one above.
"""

from __future__ import annotations

import ast
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]

# Higher ranks may import lower ones. Keys are module prefixes; the longest matching prefix decides.
LAYERS: dict[str, int] = {
    "service.__main__": 4,
    "service.http": 4,
    "service.serving": 3,
    "service.jobs": 3,  # long-video jobs drive the clip pipeline, beside it
    "service.detection": 2,
    "service.vision": 2,
    "service.inference": 2,
    "service.launcher": 2,
    "service.config": 1,
    "service.exceptions": 1,
    "service.schemas": 1,
    "service.metrics": 1,
    "service.arrays": 1,
    "service": 1,  # the package itself
    "fermodels.contract": 0,
}


def layer_of(module: str) -> int | None:
    matches = [prefix for prefix in LAYERS if module == prefix or module.startswith(prefix + ".")]
    return LAYERS[max(matches, key=len)] if matches else None


def module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def imported_modules(path: Path) -> set[str]:
    tree = ast.parse(path.read_text(encoding="utf-8"))
    found: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            found.add(node.module)
            found.update(f"{node.module}.{alias.name}" for alias in node.names)
    return found


def gateway_modules() -> list[Path]:
    excluded = ROOT / "service" / "launcher" / "triton_backend"  # runs inside Triton, not the gateway
    return sorted(p for p in (ROOT / "service").rglob("*.py") if excluded not in p.parents)


@pytest.mark.parametrize("path", gateway_modules(), ids=lambda p: str(p.relative_to(ROOT)))
def test_no_module_imports_a_layer_above_its_own(path: Path) -> None:
    name = module_name(path)
    own = layer_of(name)
    assert own is not None, f"{name} is in no layer: add its folder to LAYERS"
    upward = sorted(
        target for target in imported_modules(path) if (rank := layer_of(target)) is not None and rank > own
    )
    assert not upward, f"{name} (layer {own}) imports from a higher layer: {upward}"


def test_the_serving_contract_imports_only_the_standard_library() -> None:
    path = ROOT / "fermodels" / "contract.py"
    third_party = sorted(
        target
        for target in imported_modules(path)
        if target.split(".")[0] not in sys.stdlib_module_names and target != "__future__"
    )
    assert not third_party


def test_the_layer_table_catches_an_upward_import(tmp_path: Path) -> None:
    """The check itself can fail: a vision module importing the edge is reported."""
    fake = tmp_path / "bad.py"
    fake.write_text("from service.http.app import create_app\n", encoding="utf-8")
    upward = sorted(t for t in imported_modules(fake) if (layer_of(t) or 0) > LAYERS["service.vision"])
    assert upward == ["service.http.app", "service.http.app.create_app"]
