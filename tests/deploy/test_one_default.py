"""One default everywhere: docker-compose.yml, the Kubernetes settings and Settings agree.

The defect this guards against was real: compose and deploy/k8s/base/gateway.env served the untrained
fer_former while `make run` (Settings) served the trained mini-Xception. Every FER_ variable the deployment
files set must equal Settings' default, except the few that are about the platform itself (listed below with
the reason); and the model they serve must be a trained one. Ports, the memory limit the budget is derived
from, and the allocator setting of `python -m service` are checked against the files that enforce them.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pytest
import yaml

from devstack.media import ROOT
from service.config import Settings
from service.launcher.openmp import GATEWAY_ARENAS, GATEWAY_OPENMP
from tests.deploy.conftest import Manifest
from tests.deploy.test_compose import compose_config
from tests.deploy.test_kubernetes import by_kind, container, settings_from_env

pytestmark = pytest.mark.deploy

GATEWAY_ENV = ROOT / "deploy" / "k8s" / "base" / "gateway.env"
# Settings a deployment sets on purpose, with why; anything else must be the Settings default.
PLATFORM_FIELDS = {
    "host": "listen on the container's interface, not loopback",
    "triton_url": "the Triton Service / compose service",
    "graceful_shutdown_timeout_s": "below the platform's grace period (compose, kubelet)",
    "metrics_port": "the operations port the platform scrapes and probes",
    "api_key_sha256": "keys on (a Secret / .env)",
}
UNTRAINED = {"fer_former", "poster"}  # exported with untrained weights (their configs say so)


@pytest.fixture(autouse=True)
def _settings_defaults(monkeypatch: pytest.MonkeyPatch) -> None:
    # tests/conftest.py switches resident tracking off for in-process gateways; the defaults are the code's.
    monkeypatch.delenv("FER_MEMORY_FOLLOW_RESIDENT", raising=False)


def env_file(path: Path) -> dict[str, str]:
    pairs = (
        line.split("=", 1) for line in path.read_text().splitlines() if line and not line.startswith("#")
    )
    return {name: value for name, value in pairs}


def compose_gateway() -> dict[str, Any]:
    gateway: dict[str, Any] = compose_config(ROOT / "docker-compose.yml")["services"]["gateway"]
    return gateway


def drift(env: dict[str, str]) -> dict[str, tuple[object, object]]:
    deployed, default = settings_from_env(env), Settings()
    fields = [name for name in Settings.model_fields if name not in PLATFORM_FIELDS]
    return {
        name: (getattr(deployed, name), getattr(default, name))
        for name in fields
        if getattr(deployed, name) != getattr(default, name)
    }


def test_compose_and_kubernetes_settings_are_the_settings_defaults() -> None:
    compose_env = {k: str(v) for k, v in compose_gateway()["environment"].items()}
    assert drift(compose_env) == {}, "docker-compose.yml differs from Settings"
    assert drift(env_file(GATEWAY_ENV)) == {}, "deploy/k8s/base/gateway.env differs from Settings"


def test_drift_is_detected() -> None:
    """Negative control: the defect as it was (compose serving fer_former) is caught."""
    env = {**env_file(GATEWAY_ENV), "FER_DEFAULT_MODEL": "fer_former", "FER_MAX_IN_FLIGHT": "16"}
    assert set(drift(env)) == {"default_model", "max_in_flight"}


def test_the_default_model_is_trained_and_in_the_repository() -> None:
    default = Settings().default_model
    assert default not in UNTRAINED
    config = (ROOT / "model_repository" / default / "config.pbtxt").read_text()
    assert re.search(rf'^name: "{default}"', config, re.M)
    exported = (ROOT / "deploy" / "model-repository.Dockerfile").read_text()
    assert default in re.search(r'ARG MODELS="([^"]+)"', exported).group(1).split()  # type: ignore[union-attr]


def test_ports_agree(rendered: dict[str, list[Manifest]]) -> None:
    dockerfile = (ROOT / "Dockerfile").read_text()
    image_port = int(re.search(r"FER_PORT=(\d+)", dockerfile).group(1))  # type: ignore[union-attr]
    assert f"EXPOSE {image_port}" in dockerfile
    compose = settings_from_env({k: str(v) for k, v in compose_gateway()["environment"].items()})
    kube = settings_from_env(env_file(GATEWAY_ENV))
    assert compose.port == kube.port == image_port == Settings().port
    assert compose.metrics_port == kube.metrics_port is not None
    gateway = container(by_kind(rendered["cpu"], "Deployment")["fer-gateway"], "gateway")
    assert {p["name"]: p["containerPort"] for p in gateway["ports"]} == {"http": kube.port, "metrics": 8081}


def test_memory_limit_is_the_one_the_budget_is_derived_from(rendered: dict[str, list[Manifest]]) -> None:
    limit = Settings().memory_limit_bytes
    gateway = container(by_kind(rendered["cpu"], "Deployment")["fer-gateway"], "gateway")
    assert _bytes(gateway["resources"]["limits"]["memory"]) == limit
    assert compose_gateway()["mem_limit"] in (limit, f"{limit // 2**30}g", str(limit))


def _bytes(quantity: str) -> int:
    units = {"Ki": 2**10, "Mi": 2**20, "Gi": 2**30}
    number, unit = re.fullmatch(r"(\d+)([KMG]i)", quantity).groups()  # type: ignore[union-attr]
    return int(number) * units[unit]


def test_allocator_and_thread_settings_match_python_m_service(rendered: dict[str, list[Manifest]]) -> None:
    """The image sets MALLOC_ARENA_MAX as `python -m service` applies it; no deployment overrides them."""
    dockerfile = (ROOT / "Dockerfile").read_text()
    assert re.search(rf"MALLOC_ARENA_MAX={GATEWAY_ARENAS}\b", dockerfile)
    knobs = {"MALLOC_ARENA_MAX", "OMP_WAIT_POLICY", *GATEWAY_OPENMP}
    compose_env = set(compose_gateway()["environment"])
    gateway = container(by_kind(rendered["cpu"], "Deployment")["fer-gateway"], "gateway")
    assert not knobs & (
        compose_env | set(env_file(GATEWAY_ENV)) | {e["name"] for e in gateway.get("env", [])}
    )


def test_the_image_names_are_the_ones_the_container_test_builds(rendered: dict[str, list[Manifest]]) -> None:
    built = set(re.findall(r"^build (\S+) ", (ROOT / "deploy/offline/build-images.sh").read_text(), re.M))
    images = {c["image"] for d in by_kind(rendered["cpu"], "Deployment").values() for c in _containers(d)}
    ours = {image for image in images if image.startswith("fer-")}
    assert ours == {"fer-gateway:0.1.0", "fer-model-repository:0.1.0"} and ours <= built
    compose = compose_config(ROOT / "docker-compose.yml")["services"]
    assert {compose["gateway"]["image"], compose["model-repository"]["image"]} == ours


def _containers(deployment: Manifest) -> list[Manifest]:
    spec = deployment["spec"]["template"]["spec"]
    return [*spec.get("initContainers", []), *spec["containers"]]


def test_compose_file_parses_as_yaml() -> None:
    assert yaml.safe_load((ROOT / "docker-compose.yml").read_text())["services"]["gateway"]
