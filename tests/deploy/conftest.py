"""Deployment artefacts checked by the real tools that consume them (see deploy/README.md).

The live monitoring test uses the session fixtures of tests/conftest.py: the one real local Triton and the
real gateway under uvicorn on loopback ports that the integration tests share.
"""

from __future__ import annotations

from typing import Any

import pytest
import yaml

from tests.deploy.tools import DEPLOY, OVERLAYS, run, tool

Manifest = dict[str, Any]


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line(
        "markers", "deploy: checks a deployment artefact with the real tool that consumes it"
    )


def kustomize(directory: str) -> list[Manifest]:
    """``kubectl kustomize deploy/<directory>``, parsed."""
    output = run([tool("kubectl"), "kustomize", DEPLOY / directory])
    return [doc for doc in yaml.safe_load_all(output) if doc]


@pytest.fixture(scope="session")
def rendered() -> dict[str, list[Manifest]]:
    """Every overlay rendered once per session: overlay name -> its objects."""
    return {overlay: kustomize(f"k8s/overlays/{overlay}") for overlay in OVERLAYS}
