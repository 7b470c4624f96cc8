"""docker-compose.yml (and its GPU override) validated by docker-compose itself, and wired as documented.

``docker-compose config`` (Debian's 1.29.2) parses the files, validates them against the Compose schema and
resolves variables and overrides; it needs no Docker engine.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import yaml

from devstack.media import ROOT
from tests.deploy.conftest import Manifest, kustomize
from tests.deploy.test_kubernetes import settings_from_env
from tests.deploy.tools import run, run_unchecked, tool

pytestmark = pytest.mark.deploy

COMPOSE = ROOT / "docker-compose.yml"
GPU = ROOT / "deploy" / "compose" / "gpu.yml"
OFFLINE = ROOT / "deploy" / "compose" / "offline.yml"
# API keys are on: `up` and `config` refuse to run without the digests (here: of the key "compose-test").
KEYS_ENV = {"FER_API_KEY_SHA256": '["0b1e0e6e4cbdb7d6c3a2c6e0d0e8f6f0b8d7e4b1a3c5e7f9a1b3c5d7e9f1a3c5"]'}


def compose_config(*files: Path, cwd: Path = ROOT) -> dict[str, Any]:
    """The effective configuration as docker-compose resolves it."""
    args: list[str | Path] = [tool("docker-compose")]
    for path in files:
        args += ["-f", path]
    output = run([*args, "config"], cwd=cwd, env=KEYS_ENV)
    config: dict[str, Any] = yaml.safe_load(output)
    return config


@pytest.fixture(scope="module")
def stack() -> dict[str, Any]:
    services: dict[str, Any] = compose_config(COMPOSE)["services"]
    return services


def test_compose_file_is_valid(stack: dict[str, Any]) -> None:
    assert set(stack) == {"model-repository", "triton", "gateway", "prometheus", "grafana"}


def test_docker_compose_rejects_an_invalid_file(tmp_path: Path) -> None:
    """Negative control: the same file with a misspelt key must fail validation."""
    broken = COMPOSE.read_text().replace("    healthcheck:", "    helthcheck:", 1)
    (tmp_path / "docker-compose.yml").write_text(broken)
    result = run_unchecked([tool("docker-compose"), "config", "-q"], cwd=tmp_path, env=KEYS_ENV)
    assert result.returncode != 0 and "helthcheck" in result.stderr, result.stderr


def test_gateway_waits_for_a_healthy_triton_over_grpc(stack: dict[str, Any]) -> None:
    gateway, triton = stack["gateway"], stack["triton"]
    assert gateway["depends_on"]["triton"]["condition"] == "service_healthy"
    assert "/v2/health/ready" in " ".join(triton["healthcheck"]["test"])
    settings = settings_from_env({k: str(v) for k, v in gateway["environment"].items()})
    assert (settings.triton_url, settings.triton_protocol) == ("triton:8001", "grpc")
    assert "--grpc-port=8001" in triton["command"]
    assert gateway["ports"][0]["target"] == settings.port


def test_triton_serves_the_exported_repository_read_only(stack: dict[str, Any]) -> None:
    triton = stack["triton"]
    assert triton["depends_on"]["model-repository"]["condition"] == "service_completed_successfully"
    assert "model-repository:/models:ro" in triton["volumes"]
    assert "--model-repository=/models" in triton["command"]
    assert stack["model-repository"]["volumes"] == ["model-repository:/model-repository:rw"]


def test_gpu_override_adds_a_gpu_and_detection_on_it_and_nothing_else() -> None:
    cpu, gpu = compose_config(COMPOSE)["services"], compose_config(COMPOSE, GPU)["services"]
    devices = gpu["triton"]["deploy"]["resources"]["reservations"]["devices"]
    assert devices == [{"driver": "nvidia", "count": 1, "capabilities": ["gpu"]}]
    flip = {"--allow-gpu-metrics=false": "--allow-gpu-metrics=true"}
    assert gpu["triton"]["command"] == [flip.get(arg, arg) for arg in cpu["triton"]["command"]]
    assert "deploy" not in cpu["triton"]
    # MTCNN's nets move to Triton's GPU too; the gateway changes in nothing else.
    assert gpu["gateway"]["environment"].pop("FER_DETECTOR_BACKEND") == "triton"
    assert "FER_DETECTOR_BACKEND" not in cpu["gateway"]["environment"]
    assert _unordered(gpu, skip="triton") == _unordered(cpu, skip="triton")


def _unordered(services: dict[str, Any], skip: str) -> dict[str, Any]:
    """Services without ``skip``, volume lists as sets (docker-compose reorders merged volumes)."""
    return {
        name: {key: set(value) if key == "volumes" else value for key, value in service.items()}
        for name, service in services.items()
        if name != skip
    }


def test_triton_flags_match_kubernetes(stack: dict[str, Any]) -> None:
    """compose and the cpu overlay start Triton the same way (compose adds the program name)."""
    deployment: Manifest = next(
        obj
        for obj in kustomize("k8s/overlays/cpu")
        if obj["kind"] == "Deployment" and obj["metadata"]["name"] == "fer-triton"
    )
    spec = deployment["spec"]["template"]["spec"]["containers"][0]
    assert stack["triton"]["command"] == [*spec["command"], *spec["args"]]


def test_monitoring_mounts_are_the_shared_files(stack: dict[str, Any]) -> None:
    """Prometheus and Grafana read deploy/monitoring, the same files kustomize packages."""
    mounts = {
        volume.split(":")[1]: Path(volume.split(":")[0])
        for service in ("prometheus", "grafana")
        for volume in stack[service]["volumes"]
        if volume.startswith("/")
    }
    monitoring = ROOT / "deploy" / "monitoring"
    assert mounts == {
        "/etc/prometheus/prometheus.yml": monitoring / "prometheus" / "prometheus.yml",
        "/etc/prometheus/alerts.yml": monitoring / "prometheus" / "alerts.yml",
        "/etc/grafana/provisioning": monitoring / "grafana" / "provisioning",
        "/var/lib/grafana/dashboards": monitoring / "grafana" / "dashboards",
    }
    assert all(path.exists() for path in mounts.values())
    config = yaml.safe_load((monitoring / "prometheus" / "prometheus.yml").read_text())
    targets = {job["job_name"]: job["static_configs"][0]["targets"] for job in config["scrape_configs"]}
    gateway = settings_from_env({k: str(v) for k, v in stack["gateway"]["environment"].items()})
    assert targets["fer-gateway"] == [f"gateway:{gateway.metrics_port}"] and targets["fer-triton"] == [
        "triton:8002"
    ]


def test_grafana_provisioning_points_at_the_mounted_dashboards(stack: dict[str, Any]) -> None:
    provisioning = ROOT / "deploy" / "monitoring" / "grafana" / "provisioning"
    provider = yaml.safe_load((provisioning / "dashboards" / "fer.yml").read_text())["providers"][0]
    assert provider["options"]["path"] == "/var/lib/grafana/dashboards"
    datasource = yaml.safe_load((provisioning / "datasources" / "prometheus.yml").read_text())["datasources"][
        0
    ]
    assert (datasource["uid"], datasource["url"]) == ("prometheus", "http://prometheus:9090")
    home = stack["grafana"]["environment"]["GF_DASHBOARDS_DEFAULT_HOME_DASHBOARD_PATH"]
    assert home == "/var/lib/grafana/dashboards/fer-service.json"
