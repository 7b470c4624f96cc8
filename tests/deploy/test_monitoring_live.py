"""A real Prometheus scraping the real gateway and a real Triton; the dashboard, alerts and HPA queries on it.

Prometheus (Debian's 2.42) runs on 127.0.0.1 with the compose config (deploy/monitoring/prometheus), its
targets pointed at the session's gateway and local Triton, scrape and rule evaluation every second. After a
few real /predict calls with a real photo, the gateway's request counter is read back through Prometheus'
HTTP API, and every query of the Grafana dashboard, every alert rule and every prometheus-adapter query is
run against the live data.
"""

from __future__ import annotations

import functools
import json
import re
import shutil
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import httpx
import pytest
import yaml

from devstack.stack import Gateway, free_port
from service.config import Settings
from service.launcher.triton_local import LocalTriton
from tests.deploy.prometheus import PrometheusServer
from tests.deploy.tools import ADAPTER_CONFIG, ALERTS, DASHBOARD, PROMETHEUS_CONFIG, alert_names, tool

pytestmark = [pytest.mark.deploy, pytest.mark.integration]

PREDICTIONS = 3
RATE_INTERVAL = "1m"  # stands in for Grafana's $__rate_interval: many 1 s scrapes, at least two after traffic
# Empty results are allowed only for series this test cannot produce: GPU metrics (no GPU), cAdvisor
# container metrics (Kubernetes only), 429 rejections and video metrics (only photos are sent).
# Series that exist only once their event happened: GPUs, cAdvisor, rejections, clips, and the embedded
# Triton's restarts (labelled by outcome, so no series before the first; the test stack never restarts it).
# Series the traffic below does not create (no GPU, no clips, no caller prompts, nothing rejected).
MAY_BE_EMPTY = re.compile(
    r"nv_gpu_|container_cpu_usage_seconds_total|fer_rejected_requests_total|fer_video_|fer_triton_restarts_total"
    r"|fer_prompt_cache_total"
)
DEFAULT_MODEL = Settings.model_fields["default_model"].default  # what the session gateway serves
PREDICT_COUNTER = 'sum(fer_http_requests_total{job="fer-gateway", route="/predict", status="200"})'


def live_config(directory: Path, gateway: Gateway, triton: LocalTriton, own_port: int) -> Path:
    """The compose Prometheus config with loopback targets and 1 s intervals, beside a copy of the rules."""
    config: dict[str, Any] = yaml.safe_load(PROMETHEUS_CONFIG.read_text())
    config["global"].update(scrape_interval="1s", scrape_timeout="1s", evaluation_interval="1s")
    targets = {
        "fer-gateway": urlsplit(gateway.url).netloc,
        "fer-triton": urlsplit(triton.endpoints.metrics_url).netloc,
        "prometheus": f"127.0.0.1:{own_port}",
    }
    assert {job["job_name"] for job in config["scrape_configs"]} == set(targets)
    for job in config["scrape_configs"]:
        job["static_configs"] = [{"targets": [targets[job["job_name"]]]}]
    assert config["rule_files"] == ["alerts.yml"]
    shutil.copy2(ALERTS, directory / "alerts.yml")
    path = directory / "prometheus.yml"
    path.write_text(yaml.safe_dump(config))
    return path


@pytest.fixture(scope="module")
def prometheus(
    tmp_path_factory: pytest.TempPathFactory, gateway: Gateway, triton: LocalTriton
) -> Iterator[PrometheusServer]:
    binary = tool("prometheus")
    directory = tmp_path_factory.mktemp("prometheus")
    port = free_port()
    config = live_config(directory, gateway, triton, port)
    with PrometheusServer(binary, config, directory / "data", port) as server:
        yield server


def values(server: PrometheusServer, expr: str) -> list[float]:
    return [float(sample["value"][1]) for sample in server.query(expr)]


@pytest.fixture(scope="module")
def traffic(prometheus: PrometheusServer, gateway: Gateway, media: Path) -> int:
    """Send real predictions once both targets are scraped; return how many /predict calls Prometheus saw."""
    prometheus.wait_for(
        lambda: sorted(values(prometheus, 'up{job=~"fer-gateway|fer-triton"}')) == [1.0, 1.0],
        30.0,
        "targets up",
    )
    before = sum(values(prometheus, PREDICT_COUNTER))
    photo = (media / "messi5.jpg").read_bytes()
    with httpx.Client(base_url=gateway.url, timeout=60, trust_env=False) as client:
        for _ in range(PREDICTIONS):
            response = client.post("/predict", content=photo, headers={"Content-Type": "image/jpeg"})
            assert response.status_code == 200, response.text
            assert response.json()["faces"], "messi5.jpg has a face"
    prometheus.wait_for(
        lambda: sum(values(prometheus, PREDICT_COUNTER)) >= before + PREDICTIONS, 30.0, "the /predict calls"
    )
    # rate() needs two samples in its window: series born with the traffic (the /predict counter, the
    # per-model histograms) must have been scraped twice, and the rates must have seen the traffic.
    seen = before + PREDICTIONS
    prometheus.wait_for(functools.partial(_scraped_twice, prometheus, seen), 30.0, "a second scrape")
    for expr in (
        "sum(rate(fer_faces_total[1m]))",
        'sum(rate(nv_inference_exec_count{job="fer-triton"}[1m]))',
    ):
        prometheus.wait_for(functools.partial(_positive, prometheus, expr), 30.0, expr)
    return int(sum(values(prometheus, PREDICT_COUNTER)) - before)


def _scraped_twice(server: PrometheusServer, total: float) -> bool:
    """The gateway scrape that first saw ``total`` /predict calls is at least 2 s old: a later one exists."""
    past = server.api("query", query=PREDICT_COUNTER, time=str(time.time() - 2.0))["result"]
    return bool(past) and float(past[0]["value"][1]) >= total


def _positive(server: PrometheusServer, expr: str) -> bool:
    return any(value > 0 for value in values(server, expr))


def test_gateway_request_counter_reaches_prometheus(prometheus: PrometheusServer, traffic: int) -> None:
    assert traffic >= PREDICTIONS
    series = prometheus.query('fer_http_requests_total{route="/predict", method="POST", status="200"}')
    assert {s["metric"]["job"] for s in series} == {"fer-gateway"}


def test_triton_metrics_reach_prometheus(prometheus: PrometheusServer, traffic: int) -> None:
    models = {
        s["metric"]["model"] for s in prometheus.query('nv_inference_request_success{job="fer-triton"}')
    }
    assert DEFAULT_MODEL in models
    served = f'sum(nv_inference_request_success{{job="fer-triton", model="{DEFAULT_MODEL}"}})'
    assert sum(values(prometheus, served)) >= traffic


def dashboard_queries() -> list[tuple[str, str]]:
    """(panel title, PromQL) for every target of every panel, Grafana variables substituted."""
    dashboard = json.loads(DASHBOARD.read_text())
    substitutions = {
        "$__rate_interval": RATE_INTERVAL,
        "$__interval": "15s",
        "$__range": "5m",
        "$model": ".*",
    }
    queries = []
    for panel in dashboard["panels"]:
        for target in panel.get("targets", []):
            expr = target["expr"]
            for variable, value in substitutions.items():
                expr = expr.replace(variable, value)
            assert "$" not in expr, f"unsubstituted variable in {panel['title']!r}: {expr}"
            queries.append((panel["title"], expr))
    return queries


def test_every_dashboard_query_succeeds_on_live_data(prometheus: PrometheusServer, traffic: int) -> None:
    queries = dashboard_queries()
    assert len(queries) >= 20
    end = time.time()
    empty = []
    for title, expr in queries:
        result = prometheus.query(expr)  # raises unless status is success
        series = prometheus.api("query_range", query=expr, start=str(end - 30), end=str(end), step="1")
        assert series["resultType"] == "matrix", title
        if not result and not MAY_BE_EMPTY.search(expr):
            empty.append(f"{title}: {expr}")
    assert not empty, "dashboard queries without data after real traffic:\n" + "\n".join(empty)


def test_dashboard_variable_lists_the_served_models(prometheus: PrometheusServer, traffic: int) -> None:
    dashboard = json.loads(DASHBOARD.read_text())
    variable = next(v for v in dashboard["templating"]["list"] if v["name"] == "model")
    match = re.fullmatch(r"label_values\((\w+), (\w+)\)", variable["query"]["query"])
    assert match, variable["query"]
    models = prometheus.api(f"label/{match.group(2)}/values", **{"match[]": match.group(1)})
    assert DEFAULT_MODEL in models


def test_alert_rules_evaluate_and_stay_quiet_on_a_healthy_stack(
    prometheus: PrometheusServer, traffic: int
) -> None:
    expected = alert_names()

    def rules() -> list[dict[str, Any]]:
        groups = prometheus.api("rules")["groups"]
        return [rule for group in groups for rule in group["rules"]]

    prometheus.wait_for(
        lambda: all(rule["health"] == "ok" for rule in rules()) and len(rules()) == len(expected),
        30.0,
        "every rule evaluated",
    )
    evaluated = rules()
    assert {rule["name"] for rule in evaluated} == expected
    assert all(not rule.get("lastError") for rule in evaluated), evaluated
    state = {rule["name"]: rule["state"] for rule in evaluated}
    quiet = ("FERTritonNotReady", "FERGatewayDown", "FERGatewayHighErrorRate")
    assert {name: state[name] for name in quiet} == dict.fromkeys(quiet, "inactive")


def test_triton_not_ready_expression_fires_without_triton(prometheus: PrometheusServer, traffic: int) -> None:
    """The same expression, pointed at a job that does not exist, returns a series (the alert would fire)."""
    rule = next(
        rule
        for group in yaml.safe_load(ALERTS.read_text())["groups"]
        for rule in group["rules"]
        if rule["alert"] == "FERTritonNotReady"
    )
    assert prometheus.query(rule["expr"]) == []
    assert prometheus.query(rule["expr"].replace('job="fer-triton"', 'job="fer-triton-missing"'))


def test_prometheus_adapter_queries_return_a_value_per_target(
    prometheus: PrometheusServer, traffic: int
) -> None:
    """Each adapter rule as the adapter would run it for the HPA (its template filled in by hand)."""
    for rule in yaml.safe_load(ADAPTER_CONFIG.read_text())["rules"]:
        match = re.match(r"(\w+)\{", rule["seriesQuery"])
        assert match, rule["seriesQuery"]
        series = match.group(1)
        job = "fer-triton" if series.startswith("nv_") else "fer-gateway"
        assert prometheus.query(f'{series}{{job="{job}"}}'), series
        expr = (
            rule["metricsQuery"]
            .replace("<<.Series>>", series)
            .replace("<<.LabelMatchers>>", f'job="{job}"')
            .replace("<<.GroupBy>>", "job")
        )
        result = prometheus.query(expr)
        assert [sample["metric"] for sample in result] == [{"job": job}], (rule["name"]["as"], expr, result)
