#!/usr/bin/env python3
"""Write the offline stack's compose file for Debian's docker-compose 1.29 (docs/containers.md).

    deploy/offline/compose-config.py OUT.yml
    docker-compose -f OUT.yml up -d

`docker-compose.yml` publishes ports (8080, 9090, 3000) for users on a bridge network. The offline override
(deploy/compose/offline.yml) puts every service on the host network, and compose 1.29 refuses
`network_mode: host` beside published ports ("incompatible with port_bindings"); an override file cannot
remove a list there (compose v2's `ports: !reset []` is not YAML that 1.29 reads). So this merges the two
files with `docker-compose config` (variables interpolated from the environment, paths made absolute) and
drops `ports` from the services on the host network, where they would mean nothing anyway. Everything else
is the merged configuration unchanged. Runs with the system python3 that docker-compose itself uses (its
PyYAML).
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[2]
FILES = ("docker-compose.yml", "deploy/compose/offline.yml")


def merged() -> dict[str, object]:
    command = ["docker-compose", *(arg for name in FILES for arg in ("-f", name)), "config"]
    text = subprocess.run(command, cwd=ROOT, capture_output=True, text=True, check=True).stdout
    config: dict[str, object] = yaml.safe_load(text)
    return config


def without_host_ports(config: dict[str, object]) -> dict[str, object]:
    services = config["services"]
    assert isinstance(services, dict)
    for service in services.values():
        if service.get("network_mode") == "host":
            service.pop("ports", None)
    return config


def main(out: str) -> None:
    Path(out).write_text(yaml.safe_dump(without_host_ports(merged()), sort_keys=False))


if __name__ == "__main__":
    main(sys.argv[1])
