"""The Grafana dashboard's structure and coverage (its queries run on live data in test_monitoring_live).

No Grafana binary can be installed here (Debian has none; it is on neither PyPI nor npm), so the JSON is
checked for what Grafana needs to load it and for the panels operators need; every PromQL query in it is
executed by a real Prometheus in test_monitoring_live.py.
"""

from __future__ import annotations

import json
import re
from itertools import combinations
from typing import Any

import pytest
import yaml

from service.metrics import Metrics
from tests.deploy.tools import ADAPTER_CONFIG, ALERTS, DASHBOARD

pytestmark = pytest.mark.deploy

Panel = dict[str, Any]


@pytest.fixture(scope="module")
def dashboard() -> dict[str, Any]:
    loaded: dict[str, Any] = json.loads(DASHBOARD.read_text())
    return loaded


def panels(dashboard: dict[str, Any]) -> list[Panel]:
    return [panel for panel in dashboard["panels"] if panel["type"] != "row"]


def all_exprs(dashboard: dict[str, Any]) -> str:
    return "\n".join(target["expr"] for panel in panels(dashboard) for target in panel["targets"])


def test_dashboard_loads_as_grafana_expects(dashboard: dict[str, Any]) -> None:
    assert dashboard["uid"] == "fer-service" and dashboard["title"]
    assert isinstance(dashboard["schemaVersion"], int)
    ids = [panel["id"] for panel in dashboard["panels"]]
    assert len(ids) == len(set(ids))
    for panel in panels(dashboard):
        assert panel["datasource"] == {"type": "prometheus", "uid": "${datasource}"}, panel["title"]
        assert panel["targets"], panel["title"]
        assert len({t["refId"] for t in panel["targets"]}) == len(panel["targets"]), panel["title"]
    datasource = next(v for v in dashboard["templating"]["list"] if v["name"] == "datasource")
    assert (datasource["type"], datasource["query"]) == ("datasource", "prometheus")


def test_panels_do_not_overlap_and_fit_the_grid(dashboard: dict[str, Any]) -> None:
    boxes = [panel["gridPos"] for panel in dashboard["panels"]]
    assert all(box["x"] >= 0 and box["x"] + box["w"] <= 24 for box in boxes)
    for a, b in combinations(boxes, 2):
        apart_x = a["x"] + a["w"] <= b["x"] or b["x"] + b["w"] <= a["x"]
        apart_y = a["y"] + a["h"] <= b["y"] or b["y"] + b["h"] <= a["y"]
        assert apart_x or apart_y, (a, b)


def test_dashboard_covers_what_operators_watch(dashboard: dict[str, Any]) -> None:
    exprs = all_exprs(dashboard)
    required = {
        "request rate": "rate(fer_http_requests_total",
        "error rate": 'status=~"5.."',
        "latency percentiles": "histogram_quantile(0.95, sum by (le) (rate(fer_http_request_duration_seconds",
        "latency per stage": "sum by (le, stage) (rate(fer_stage_duration_seconds_bucket",
        "faces/s": "rate(fer_faces_total",
        "Triton queue time": "nv_inference_queue_duration_us",
        "Triton compute time": "nv_inference_compute_infer_duration_us",
        "batch sizes": "nv_inference_exec_count",
        "gateway batch sizes": "fer_triton_batch_size_sum",
        "GPU utilisation": "nv_gpu_utilization",
        "CPU utilisation": "nv_cpu_utilization",
        "queue length": "nv_inference_pending_request_count",
    }
    missing = [what for what, text in required.items() if text not in exprs]
    assert not missing, missing


def gateway_metric_names() -> set[str]:
    """Every metric family the gateway exports (service/metrics.py)."""
    # process_* / python_info come from prometheus_client itself; fer_* are the service's own.
    return {family.name for family in Metrics().registry.collect() if family.name.startswith("fer_")}


def _families(text: str) -> set[str]:
    """fer_* metric families named in ``text`` (sample suffixes that prometheus_client adds stripped)."""
    names = set(re.findall(r"\bfer_[a-z_]+", text))
    return {re.sub(r"_(total|bucket|sum|count|created)$", "", name) for name in names}


def test_every_gateway_metric_is_on_the_dashboard(dashboard: dict[str, Any]) -> None:
    assert gateway_metric_names() <= _families(all_exprs(dashboard))


def test_monitoring_queries_name_only_real_gateway_metrics(dashboard: dict[str, Any]) -> None:
    """A misspelt metric would make a panel, alert or HPA silently empty."""
    adapter = yaml.safe_load(ADAPTER_CONFIG.read_text())["rules"]
    adapter_queries = [text for rule in adapter for text in (rule["seriesQuery"], rule["metricsQuery"])]
    texts = [all_exprs(dashboard), ALERTS.read_text(), *adapter_queries]
    referenced = set().union(*(_families(text) for text in texts))
    assert referenced <= gateway_metric_names(), referenced - gateway_metric_names()
