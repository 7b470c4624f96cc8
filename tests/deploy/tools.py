"""The real tools that consume the deployment artefacts, installed by ``deploy/tools/install-tools.sh``.

A missing tool fails the test in CI (``CI`` set: CI installs them, so absence is a bug) and skips it
elsewhere with the command that installs it.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from collections.abc import Mapping, Sequence
from pathlib import Path

import pytest
import yaml

from devstack.media import ROOT

TOOLS_DIR = Path(os.environ.get("FER_DEPLOY_TOOLS", ROOT / ".cache" / "deploy-tools"))
INSTALL = "bash deploy/tools/install-tools.sh"
DEPLOY = ROOT / "deploy"
MONITORING = DEPLOY / "monitoring"
ALERTS = MONITORING / "prometheus" / "alerts.yml"
PROMETHEUS_CONFIG = MONITORING / "prometheus" / "prometheus.yml"
DASHBOARD = MONITORING / "grafana" / "dashboards" / "fer-service.json"
ADAPTER_CONFIG = MONITORING / "prometheus-adapter" / "config.yaml"
OVERLAYS = ("cpu", "gpu", "cpu-redis")  # cpu-redis: cpu + components/redis-jobs (docs/jobs.md)
_TIMEOUT_S = 120


def alert_names() -> set[str]:
    """Every alert defined in deploy/monitoring/prometheus/alerts.yml."""
    groups = yaml.safe_load(ALERTS.read_text())["groups"]
    return {rule["alert"] for group in groups for rule in group["rules"]}


def missing(message: str) -> None:
    """Fail in CI, skip elsewhere."""
    if os.environ.get("CI"):
        pytest.fail(f"{message} (CI must install it: {INSTALL})")
    pytest.skip(f"{message}; install with: {INSTALL}")


def tool(name: str) -> Path:
    """Path of an installed tool in ``<tools>/bin``."""
    path = TOOLS_DIR / "bin" / name
    if not (path.exists() and os.access(path, os.X_OK)):
        missing(f"{name} is not installed in {path.parent}")
    return path


def crd_validator() -> Path:
    """The node script that validates prometheus-operator objects, with its node_modules installed."""
    script = TOOLS_DIR / "crd-validator" / "validate.mjs"
    installed = (TOOLS_DIR / "crd-validator" / "node_modules" / "@kubernetes-models").is_dir()
    if not (script.is_file() and installed):
        missing(f"the CRD validator is not installed in {script.parent}")
    if shutil.which("node") is None:
        missing("node is not on PATH")
    return script


def run(
    command: Sequence[str | Path],
    *,
    cwd: Path = ROOT,
    stdin: str | None = None,
    env: Mapping[str, str] | None = None,
) -> str:
    """Run a tool; fail the test with its output unless it exits 0. Returns stdout."""
    result = run_unchecked(command, cwd=cwd, stdin=stdin, env=env)
    if result.returncode != 0:
        pytest.fail(f"{_show(command)} exited {result.returncode}:\n{result.stdout}\n{result.stderr}")
    return result.stdout


def run_unchecked(
    command: Sequence[str | Path],
    *,
    cwd: Path = ROOT,
    stdin: str | None = None,
    env: Mapping[str, str] | None = None,
) -> subprocess.CompletedProcess[str]:
    """``env``: variables set on top of this process's environment."""
    args = [str(part) for part in command]
    full_env = {**os.environ, **env} if env is not None else None
    return subprocess.run(
        args,
        cwd=cwd,
        input=stdin,
        capture_output=True,
        text=True,
        timeout=_TIMEOUT_S,
        check=False,
        env=full_env,
    )


def _show(command: Sequence[str | Path]) -> str:
    return " ".join(str(part) for part in command)
