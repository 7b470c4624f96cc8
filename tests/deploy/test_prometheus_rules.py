"""Prometheus config and alert rules checked by promtool (Debian's prometheus package).

- ``promtool check config`` on the compose Prometheus config (which loads the rules);
- ``promtool check rules`` on alerts.yml and on the groups of the Kubernetes PrometheusRule;
- ``promtool test rules``: every alert fires on synthetic series shaped like the real metrics
  (deploy/monitoring/prometheus/alerts.test.yml) and stays silent on healthy ones;
- the PrometheusRule is exactly what deploy/tools/render_prometheusrule.py makes of alerts.yml.
"""

from __future__ import annotations

import importlib.util
import shutil
from pathlib import Path
from types import ModuleType

import pytest
import yaml

from devstack.media import ROOT
from tests.deploy.tools import ALERTS, MONITORING, PROMETHEUS_CONFIG, alert_names, run, run_unchecked, tool

pytestmark = pytest.mark.deploy

PROMETHEUS_RULE = MONITORING / "prometheusrule.yaml"


def test_promtool_checks_the_compose_prometheus_config(tmp_path: Path) -> None:
    # Laid out as compose mounts it: the config and the rules side by side.
    shutil.copy2(PROMETHEUS_CONFIG, tmp_path / "prometheus.yml")
    shutil.copy2(ALERTS, tmp_path / "alerts.yml")
    output = run([tool("promtool"), "check", "config", tmp_path / "prometheus.yml"])
    assert "SUCCESS: 1 rule files found" in output


def test_promtool_checks_the_alert_rules() -> None:
    output = run([tool("promtool"), "check", "rules", ALERTS])
    assert f"SUCCESS: {_rule_count(ALERTS)} rules found" in output


def test_promtool_checks_the_prometheusrule_groups(tmp_path: Path) -> None:
    groups = yaml.safe_load(PROMETHEUS_RULE.read_text())["spec"]
    (tmp_path / "rules.yml").write_text(yaml.safe_dump(groups))
    run([tool("promtool"), "check", "rules", tmp_path / "rules.yml"])


def test_promtool_rejects_a_broken_rule(tmp_path: Path) -> None:
    """Negative control: a PromQL syntax error must fail the check."""
    broken = ALERTS.read_text().replace('up{job="fer-gateway"} == 0', 'up{job="fer-gateway" == 0', 1)
    (tmp_path / "alerts.yml").write_text(broken)
    result = run_unchecked([tool("promtool"), "check", "rules", tmp_path / "alerts.yml"])
    assert result.returncode != 0, result.stdout


def test_every_alert_fires_in_promtool_unit_tests() -> None:
    tests = MONITORING / "prometheus" / "alerts.test.yml"
    output = run([tool("promtool"), "test", "rules", tests])
    assert "SUCCESS" in output
    tested = {
        case["alertname"]
        for test in yaml.safe_load(tests.read_text())["tests"]
        for case in test["alert_rule_test"]
        if case["exp_alerts"]
    }
    untested = alert_names() - tested
    assert not untested, f"alerts without a firing unit test: {sorted(untested)}"


def test_prometheusrule_is_generated_from_the_rules_file() -> None:
    renderer = _load_renderer()
    assert PROMETHEUS_RULE.read_text() == renderer.render(), (
        "deploy/monitoring/prometheusrule.yaml is stale: run python deploy/tools/render_prometheusrule.py"
    )
    spec = yaml.safe_load(PROMETHEUS_RULE.read_text())["spec"]
    assert spec == {"groups": yaml.safe_load(ALERTS.read_text())["groups"]}


def _load_renderer() -> ModuleType:
    path = ROOT / "deploy" / "tools" / "render_prometheusrule.py"
    spec = importlib.util.spec_from_file_location("render_prometheusrule", path)
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _rule_count(path: Path) -> int:
    return sum(len(group["rules"]) for group in yaml.safe_load(path.read_text())["groups"])
