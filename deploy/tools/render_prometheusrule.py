"""Write deploy/monitoring/prometheusrule.yaml (prometheus-operator) from the Prometheus rule file.

The rule file (deploy/monitoring/prometheus/alerts.yml) is the one source: docker-compose mounts it, promtool
checks it, and this script wraps its groups in a PrometheusRule for Kubernetes. tests/deploy fails when the
committed PrometheusRule differs from what this script writes, so edit alerts.yml and run:

    python deploy/tools/render_prometheusrule.py          # rewrite
    python deploy/tools/render_prometheusrule.py --check  # exit 1 if out of date
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

import yaml

MONITORING = Path(__file__).resolve().parent.parent / "monitoring"
RULES = MONITORING / "prometheus" / "alerts.yml"
TARGET = MONITORING / "prometheusrule.yaml"
HEADER = (
    "# GENERATED from prometheus/alerts.yml by deploy/tools/render_prometheusrule.py: do not edit.\n"
    "# `release: kube-prometheus-stack` matches that chart's default ruleSelector; change it to your\n"
    "# Prometheus' selector if it differs.\n"
)


def _str_presenter(dumper: Any, value: str) -> Any:
    """Multi-line strings (PromQL, descriptions) as literal blocks, so the generated file stays readable."""
    style = "|" if "\n" in value else None
    return dumper.represent_scalar("tag:yaml.org,2002:str", value, style=style)


_Dumper: Any = type("_Dumper", (yaml.SafeDumper,), {})
_Dumper.add_representer(str, _str_presenter)


def prometheus_rule(rules_file: Path = RULES) -> dict[str, Any]:
    """The PrometheusRule object holding exactly the groups of ``rules_file``."""
    groups = yaml.safe_load(rules_file.read_text())["groups"]
    return {
        "apiVersion": "monitoring.coreos.com/v1",
        "kind": "PrometheusRule",
        "metadata": {
            "name": "fer-service",
            "labels": {"app.kubernetes.io/name": "fer-service", "release": "kube-prometheus-stack"},
        },
        "spec": {"groups": groups},
    }


def render(rules_file: Path = RULES) -> str:
    body: str = yaml.dump(prometheus_rule(rules_file), Dumper=_Dumper, sort_keys=False, width=110)
    return HEADER + body


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--check", action="store_true", help="exit 1 if the committed file is out of date")
    args = parser.parse_args(argv)
    text = render()
    if args.check:
        current = TARGET.read_text() if TARGET.exists() else ""
        if current != text:
            print(f"{TARGET} is out of date: run python {Path(__file__).name}", file=sys.stderr)
            return 1
        return 0
    TARGET.write_text(text)
    print(f"wrote {TARGET}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
