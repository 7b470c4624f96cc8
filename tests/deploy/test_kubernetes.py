"""Kustomize renders every overlay; the objects validate against Kubernetes' schemas; the wiring is right.

Core objects: kubernetes-validate's bundled JSON schemas (strict: unknown fields are errors) for the oldest
and newest Kubernetes we target. prometheus-operator objects (ServiceMonitor, PodMonitor, PrometheusRule):
the @kubernetes-models/prometheus-operator validators, run by node. Negative controls prove that both
validators reject broken objects.
"""

from __future__ import annotations

import copy
import json
import re
import subprocess
import tempfile
from typing import Any

import pytest
import yaml

from devstack.media import ROOT
from service.config import Settings
from tests.deploy.conftest import Manifest, kustomize
from tests.deploy.tools import OVERLAYS, crd_validator, run_unchecked, tool

pytestmark = pytest.mark.deploy

KUBERNETES_VERSIONS = ("1.30.0", "1.35.0")
CRD_KINDS = {"ServiceMonitor", "PodMonitor", "PrometheusRule"}
# What components/redis-jobs adds: Redis (Deployment, Service, NetworkPolicy, its data volume) and the jobs
# volume every gateway replica shares.
REDIS_MODE_KINDS = {
    "cpu-redis": ["Deployment", "Service", "NetworkPolicy", "PersistentVolumeClaim", "PersistentVolumeClaim"]
}
_NO_SCHEMA = re.compile(r"^WARN .*Couldn't find schema for kind (\w+) ")


def by_kind(objects: list[Manifest], kind: str) -> dict[str, Manifest]:
    return {obj["metadata"]["name"]: obj for obj in objects if obj["kind"] == kind}


def container(deployment: Manifest, name: str) -> Manifest:
    containers = deployment["spec"]["template"]["spec"]["containers"]
    return next(c for c in containers if c["name"] == name)


def kubernetes_validate(objects: list[Manifest], version: str) -> subprocess.CompletedProcess[str]:
    with tempfile.NamedTemporaryFile("w", suffix=".yaml") as manifest:
        yaml.safe_dump_all(objects, manifest)
        manifest.flush()
        return run_unchecked([tool("kubernetes-validate"), "--strict", "-k", version, manifest.name])


def crd_validate(objects: list[Manifest]) -> list[dict[str, Any]]:
    result = run_unchecked(["node", crd_validator()], stdin=json.dumps(objects))
    return [json.loads(line) for line in result.stdout.splitlines()]


# ----------------------------------------------------------------------------------------- rendering


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_overlay_renders_the_whole_deployment(rendered: dict[str, list[Manifest]], overlay: str) -> None:
    kinds = sorted(obj["kind"] for obj in rendered[overlay])
    assert kinds == sorted(
        [
            "Namespace",
            "ConfigMap",  # gateway settings
            "ConfigMap",  # Grafana dashboard
            "Deployment",
            "Deployment",
            "Service",
            "Service",
            "Service",  # the gateway's metrics port, apart from its public Service
            "PodDisruptionBudget",
            "PodDisruptionBudget",
            "HorizontalPodAutoscaler",
            "HorizontalPodAutoscaler",
            "NetworkPolicy",
            "NetworkPolicy",
            "ServiceMonitor",
            "PodMonitor",
            "PrometheusRule",
            *REDIS_MODE_KINDS.get(overlay, []),
        ]
    )
    namespaced = [obj for obj in rendered[overlay] if obj["kind"] != "Namespace"]
    assert {obj["metadata"]["namespace"] for obj in namespaced} == {"fer"}


def test_adapter_rules_render_as_the_configmap_the_chart_mounts() -> None:
    objects = kustomize("monitoring/prometheus-adapter")
    assert [(o["kind"], o["metadata"]["name"], o["metadata"]["namespace"]) for o in objects] == [
        ("ConfigMap", "fer-prometheus-adapter-rules", "monitoring")
    ]
    rules = yaml.safe_load(objects[0]["data"]["config.yaml"])["rules"]
    assert {rule["name"]["as"] for rule in rules} >= {"triton_pending_requests"}


# ----------------------------------------------------------------------------------------- schemas


@pytest.mark.parametrize("version", KUBERNETES_VERSIONS)
@pytest.mark.parametrize("overlay", OVERLAYS)
def test_core_objects_match_the_kubernetes_schemas(
    rendered: dict[str, list[Manifest]], overlay: str, version: str
) -> None:
    objects = [*rendered[overlay], *kustomize("monitoring/prometheus-adapter")]
    result = kubernetes_validate(objects, version)
    assert result.returncode == 0, result.stdout + result.stderr
    lines = result.stdout.splitlines()
    passed = [line for line in lines if line.startswith("INFO") and " passed " in line]
    unknown = {match.group(1) for line in lines if (match := _NO_SCHEMA.match(line))}
    assert not [line for line in lines if line.startswith(("ERROR", "FATAL"))], result.stdout
    # Every object was checked against a schema, except the CRDs, which the next test validates.
    assert len(passed) == len(objects) - sum(obj["kind"] in CRD_KINDS for obj in objects), result.stdout
    assert unknown == CRD_KINDS, result.stdout


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_prometheus_operator_objects_match_their_schemas(
    rendered: dict[str, list[Manifest]], overlay: str
) -> None:
    crds = [obj for obj in rendered[overlay] if obj["kind"] in CRD_KINDS]
    results = crd_validate(crds)
    assert {r["kind"] for r in results} == CRD_KINDS
    assert all(r["ok"] for r in results), results


def test_validators_reject_broken_objects(rendered: dict[str, list[Manifest]]) -> None:
    """Negative controls: a misspelt field and a bad duration must fail, or the checks above prove nothing."""
    objects = copy.deepcopy(rendered["cpu"])
    deployment = next(obj for obj in objects if obj["kind"] == "Deployment")
    deployment["spec"]["template"]["spec"]["containers"][0]["imagePullPolicyy"] = "Always"
    result = kubernetes_validate([deployment], KUBERNETES_VERSIONS[-1])
    assert result.returncode != 0 and "imagePullPolicyy" in result.stdout, result.stdout

    monitor = next(obj for obj in objects if obj["kind"] == "ServiceMonitor")
    monitor["spec"]["endpoints"][0]["interval"] = "15 seconds"
    rule = next(obj for obj in objects if obj["kind"] == "PrometheusRule")
    del rule["spec"]["groups"][0]["name"]
    assert [r["ok"] for r in crd_validate([monitor, rule])] == [False, False]


# ----------------------------------------------------------------------------------------- wiring


@pytest.fixture(params=OVERLAYS)
def objects(request: pytest.FixtureRequest, rendered: dict[str, list[Manifest]]) -> list[Manifest]:
    overlay: str = request.param
    return rendered[overlay]


def test_probes_hit_the_real_health_endpoints(objects: list[Manifest]) -> None:
    deployments = by_kind(objects, "Deployment")
    gateway = container(deployments["fer-gateway"], "gateway")
    triton = container(deployments["fer-triton"], "triton")
    # On the operations port (FER_METRICS_PORT): the probes carry no API key.
    assert _probe(gateway, "livenessProbe") == ("/healthz", 8081)
    assert _probe(gateway, "readinessProbe") == ("/readyz", 8081)
    assert _probe(gateway, "startupProbe") == ("/healthz", 8081)
    assert _probe(triton, "livenessProbe") == ("/v2/health/live", 8000)
    assert _probe(triton, "readinessProbe") == ("/v2/health/ready", 8000)
    assert _probe(triton, "startupProbe") == ("/v2/health/ready", 8000)
    assert "--http-port=8000" in triton["args"] and "--metrics-port=8002" in triton["args"]


def _probe(spec: Manifest, kind: str) -> tuple[str, int]:
    get = spec[kind]["httpGet"]
    ports = {port["name"]: port["containerPort"] for port in spec["ports"]}
    return get["path"], ports[get["port"]]


def test_gateway_settings_are_real_settings_and_reach_triton(objects: list[Manifest]) -> None:
    configmap = next(
        c for n, c in by_kind(objects, "ConfigMap").items() if n.startswith("fer-gateway-settings")
    )
    env = configmap["data"]
    settings = settings_from_env(env)
    services = by_kind(objects, "Service")
    host, port = env["FER_TRITON_URL"].split(":")
    grpc_port = next(p["port"] for p in services[host]["spec"]["ports"] if p["name"] == "grpc")
    assert (settings.triton_protocol, int(port)) == ("grpc", grpc_port)
    gateway = container(by_kind(objects, "Deployment")["fer-gateway"], "gateway")
    assert gateway["envFrom"] == [
        {"configMapRef": {"name": configmap["metadata"]["name"]}},
        {"secretRef": {"name": "fer-gateway-api-keys"}},  # keys on; not optional: no Secret, no pod
    ]
    assert "FER_API_KEY_SHA256" not in env  # the digests live in the Secret only
    assert gateway["ports"][0]["containerPort"] == settings.port and settings.host == "0.0.0.0"
    grace_s = by_kind(objects, "Deployment")["fer-gateway"]["spec"]["template"]["spec"][
        "terminationGracePeriodSeconds"
    ]
    assert settings.graceful_shutdown_timeout_s < grace_s  # requests drain before the kubelet's SIGKILL


def test_metrics_port_is_scraped_and_kept_off_the_public_service(objects: list[Manifest]) -> None:
    configmap = next(
        c for n, c in by_kind(objects, "ConfigMap").items() if n.startswith("fer-gateway-settings")
    )
    settings = settings_from_env(configmap["data"])
    gateway = container(by_kind(objects, "Deployment")["fer-gateway"], "gateway")
    ports = {port["name"]: port["containerPort"] for port in gateway["ports"]}
    assert ports == {"http": settings.port, "metrics": settings.metrics_port}
    services = by_kind(objects, "Service")
    assert [p["targetPort"] for p in services["fer-gateway"]["spec"]["ports"]] == ["http"]
    assert [p["targetPort"] for p in services["fer-gateway-metrics"]["spec"]["ports"]] == ["metrics"]
    monitor = by_kind(objects, "ServiceMonitor")["fer-gateway"]
    assert [e["port"] for e in monitor["spec"]["endpoints"]] == ["metrics"]
    wanted = monitor["spec"]["selector"]["matchLabels"].items()
    assert wanted <= services["fer-gateway-metrics"]["metadata"]["labels"].items()
    assert not wanted <= services["fer-gateway"]["metadata"]["labels"].items()


def settings_from_env(env: dict[str, str]) -> Settings:
    """Validate FER_* variables exactly as the gateway does; unknown FER_ names are errors here."""
    fields = {f"FER_{name.upper()}" for name in Settings.model_fields}
    assert set(env) <= fields, f"not Settings fields: {sorted(set(env) - fields)}"
    with pytest.MonkeyPatch.context() as patch:
        for name in fields:
            patch.delenv(name, raising=False)
        for name, value in env.items():
            patch.setenv(name, value)
        return Settings()


def test_services_pdbs_hpas_and_monitors_select_the_pods(objects: list[Manifest]) -> None:
    deployments = by_kind(objects, "Deployment")
    for kind in ("Service", "PodDisruptionBudget"):
        for name, obj in by_kind(objects, kind).items():
            selector = obj["spec"]["selector"]
            selector = selector.get("matchLabels", selector)
            assert _selects(deployments[name.removesuffix("-metrics")], selector), (kind, name)
    for name, hpa in by_kind(objects, "HorizontalPodAutoscaler").items():
        assert hpa["spec"]["scaleTargetRef"] == {"apiVersion": "apps/v1", "kind": "Deployment", "name": name}
    monitor = by_kind(objects, "ServiceMonitor")["fer-gateway"]
    assert (
        monitor["spec"]["selector"]["matchLabels"].items()
        <= by_kind(objects, "Service")["fer-gateway-metrics"]["metadata"]["labels"].items()
    )
    assert monitor["spec"]["endpoints"][0]["port"] == "metrics"
    pod_monitor = by_kind(objects, "PodMonitor")["fer-triton"]
    assert _selects(deployments["fer-triton"], pod_monitor["spec"]["selector"]["matchLabels"])
    endpoint = pod_monitor["spec"]["podMetricsEndpoints"][0]
    assert endpoint["port"] == "metrics" and endpoint["relabelings"][0]["replacement"] == "fer-triton"


def _selects(deployment: Manifest, selector: dict[str, str]) -> bool:
    return bool(selector.items() <= deployment["spec"]["template"]["metadata"]["labels"].items())


def test_network_policies_let_only_the_gateway_reach_triton(objects: list[Manifest]) -> None:
    deployments, policies = by_kind(objects, "Deployment"), by_kind(objects, "NetworkPolicy")
    for name, policy in policies.items():
        assert _selects(deployments[name], policy["spec"]["podSelector"]["matchLabels"]), name
        assert policy["spec"]["policyTypes"] == ["Ingress", "Egress"]
    triton = policies["fer-triton"]["spec"]
    inference, metrics = triton["ingress"]
    assert _selects(deployments["fer-gateway"], inference["from"][0]["podSelector"]["matchLabels"])
    assert {port["port"] for port in inference["ports"]} == {"grpc", "http"}
    assert [port["port"] for port in metrics["ports"]] == ["metrics"]
    assert triton["egress"] == []
    named = {port["name"] for port in container(deployments["fer-triton"], "triton")["ports"]}
    assert named >= {"grpc", "http", "metrics"}
    gateway = policies["fer-gateway"]["spec"]
    assert [port["port"] for port in gateway["ingress"][0]["ports"]] == ["http"]
    to_triton = gateway["egress"][0]
    assert _selects(deployments["fer-triton"], to_triton["to"][0]["podSelector"]["matchLabels"])
    configmap = next(
        c for n, c in by_kind(objects, "ConfigMap").items() if n.startswith("fer-gateway-settings")
    )
    settings = settings_from_env(configmap["data"])
    assert int(str(settings.triton_url).rsplit(":", 1)[1]) in {port["port"] for port in to_triton["ports"]}


def test_triton_hpa_uses_the_metric_the_adapter_serves(objects: list[Manifest]) -> None:
    adapter = yaml.safe_load((ROOT / "deploy/monitoring/prometheus-adapter/config.yaml").read_text())
    served = {rule["name"]["as"] for rule in adapter["rules"]}
    metric = by_kind(objects, "HorizontalPodAutoscaler")["fer-triton"]["spec"]["metrics"][0]
    assert metric["type"] == "Pods" and metric["pods"]["metric"]["name"] in served


def test_model_repository_reaches_triton_read_only(objects: list[Manifest]) -> None:
    spec = by_kind(objects, "Deployment")["fer-triton"]["spec"]["template"]["spec"]
    init = spec["initContainers"][0]
    triton = container(by_kind(objects, "Deployment")["fer-triton"], "triton")
    assert init["image"] == "fer-model-repository:0.1.0"
    assert init["volumeMounts"] == [{"name": "models", "mountPath": "/model-repository"}]
    mount = next(m for m in triton["volumeMounts"] if m["name"] == "models")
    assert mount == {"name": "models", "mountPath": "/models", "readOnly": True}
    assert "--model-repository=/models" in triton["args"]


def test_gpu_overlay_requests_a_gpu_and_cpu_overlay_none(rendered: dict[str, list[Manifest]]) -> None:
    def triton(overlay: str) -> Manifest:
        return container(by_kind(rendered[overlay], "Deployment")["fer-triton"], "triton")

    assert triton("gpu")["resources"]["limits"]["nvidia.com/gpu"] == "1"
    assert "--allow-gpu-metrics=true" in triton("gpu")["args"]
    assert "nvidia.com/gpu" not in json.dumps(triton("cpu"))
    assert "--allow-gpu-metrics=false" in triton("cpu")["args"]
    for overlay in OVERLAYS:
        for deployment in by_kind(rendered[overlay], "Deployment").values():
            for spec in deployment["spec"]["template"]["spec"]["containers"]:
                assert spec["resources"]["requests"] and spec["resources"]["limits"], spec["name"]


def test_dashboard_configmap_is_the_dashboard_file(objects: list[Manifest]) -> None:
    configmap = by_kind(objects, "ConfigMap")["fer-grafana-dashboard"]
    assert configmap["metadata"]["labels"]["grafana_dashboard"] == "1"
    shipped = (ROOT / "deploy/monitoring/grafana/dashboards/fer-service.json").read_text()
    assert configmap["data"]["fer-service.json"] == shipped


def test_triton_and_export_images_are_one_ngc_release(objects: list[Manifest]) -> None:
    """Triton's libtorch must load what export wrote: both images come from the same NGC release."""
    triton = container(by_kind(objects, "Deployment")["fer-triton"], "triton")
    release = ngc_release(triton["image"], "tritonserver")
    dockerfile = (ROOT / "deploy/model-repository.Dockerfile").read_text()
    compose = yaml.safe_load((ROOT / "docker-compose.yml").read_text())["services"]
    assert release == ngc_release(_arg_default(dockerfile, "PYTORCH_IMAGE"), "pytorch")
    assert release == ngc_release(compose["triton"]["image"], "tritonserver")
    assert release == ngc_release(compose["model-repository"]["build"]["args"]["PYTORCH_IMAGE"], "pytorch")


def ngc_release(image: str, repository: str) -> str:
    match = re.fullmatch(rf"nvcr\.io/nvidia/{repository}:(\d\d\.\d\d)-py3", image)
    assert match, image
    return match.group(1)


def _arg_default(dockerfile: str, name: str) -> str:
    match = re.search(rf"^ARG {name}=(\S+)$", dockerfile, re.MULTILINE)
    assert match, name
    return match.group(1)


def test_redis_mode_shares_state_and_volume_and_only_the_gateway_reaches_redis(
    rendered: dict[str, list[Manifest]],
) -> None:
    objects = rendered["cpu-redis"]
    configmap = next(
        c for n, c in by_kind(objects, "ConfigMap").items() if n.startswith("fer-gateway-settings")
    )
    settings = settings_from_env(configmap["data"])
    host_port = settings.jobs_redis_url.removeprefix("redis://").split("/")[0]
    host, port = host_port.split(":")
    service = by_kind(objects, "Service")[host]
    assert int(port) in {p["port"] for p in service["spec"]["ports"]}
    deployments = by_kind(objects, "Deployment")
    assert _selects(deployments[host], service["spec"]["selector"])
    assert settings.jobs_workers >= 1 and settings.jobs_lease_s > 0
    gateway = deployments["fer-gateway"]["spec"]["template"]["spec"]
    jobs = next(v for v in gateway["volumes"] if v["name"] == "jobs")
    claim = by_kind(objects, "PersistentVolumeClaim")[jobs["persistentVolumeClaim"]["claimName"]]
    assert claim["spec"]["accessModes"] == ["ReadWriteMany"]  # every replica mounts it
    mount = next(
        m for m in container(deployments["fer-gateway"], "gateway")["volumeMounts"] if m["name"] == "jobs"
    )
    assert mount["mountPath"] == "/var/lib/fer/jobs"
    policies = by_kind(objects, "NetworkPolicy")
    redis_in = policies[host]["spec"]["ingress"]
    assert len(redis_in) == 1 and _selects(
        deployments["fer-gateway"], redis_in[0]["from"][0]["podSelector"]["matchLabels"]
    )
    to_redis = [
        rule
        for rule in policies["fer-gateway"]["spec"]["egress"]
        if {"port": int(port), "protocol": "TCP"} in rule["ports"]
    ]
    assert len(to_redis) == 1 and _selects(
        deployments[host], to_redis[0]["to"][0]["podSelector"]["matchLabels"]
    )
    redis = container(deployments[host], "redis")
    assert "noeviction" in redis["args"] and redis["image"] == "redis:7.2.5"
    for overlay in ("cpu", "gpu"):  # the default stays SQLite in the pod's own folder
        plain = next(
            c
            for n, c in by_kind(rendered[overlay], "ConfigMap").items()
            if n.startswith("fer-gateway-settings")
        )
        assert "FER_JOBS_REDIS_URL" not in plain["data"]
