"""Issue 26 against the real gateway process with its DEFAULT settings: the audit's concurrent mix stays under
the 2 GiB ceiling, and made-up methods cannot inflate /metrics."""

from __future__ import annotations

from pathlib import Path
from urllib.parse import urlsplit

import httpx
import pytest

from devstack.stack import gateway_process
from load_tests.memory_mix import CEILING_MIB, noise_jpeg, run_mix, warm_up
from load_tests.metrics_junk import send_junk
from service.launcher.triton_local import LocalTriton

pytestmark = pytest.mark.integration


def test_the_concurrent_mix_stays_under_the_ceiling(triton: LocalTriton, media: Path, tmp_path: Path) -> None:
    """8 /annotate + 8 /predict of a 6300x6300 noise JPEG + 8 /annotate clients that never read."""
    data = noise_jpeg(media)
    with gateway_process(
        triton.endpoints.grpc_url,
        tmp_path / "gateway.log",
        FER_LOG_LEVEL="warning",
        FER_MEMORY_FOLLOW_RESIDENT="true",  # as `make run` and the deployments: the defaults
    ) as (url, process):
        warm_up(url, media)
        result = run_mix(url, process.pid, data, clients=8, hold_s=40.0)
    print("\n".join(result.lines()))
    assert result.peak_mib <= CEILING_MIB
    answered = sum(count for key, count in result.statuses.items() if key.endswith((" 200", " 429")))
    assert answered == 16, result.statuses  # every reading client got its picture or a 429, nothing else
    served = sum(count for key, count in result.statuses.items() if key.endswith(" 200"))
    # One near-limit picture fits the idle work pool, so the first in line is always served; the rest wait
    # their turn for FER_MEMORY_WAIT_S (on an idle 2-core machine 8 of the 16 were served). Before the free
    # heap was handed back, a pool shrunk by it refused all 16.
    assert served >= 1, result.statuses


def test_made_up_methods_leave_metrics_within_a_few_kb(triton: LocalTriton, tmp_path: Path) -> None:
    with gateway_process(triton.endpoints.grpc_url, tmp_path / "gateway.log", FER_LOG_LEVEL="warning") as (
        url,
        _,
    ):
        address = urlsplit(url)
        host, port = address.hostname or "", address.port or 0
        send_junk(host, port, 100, 2000, first=0)  # the collapsed series exists
        before = len(httpx.get(f"{url}/metrics", timeout=30).content)
        send_junk(host, port, 1000, 2000, first=1)
        after = len(httpx.get(f"{url}/metrics", timeout=30).content)
    print(f"/metrics: {before} B before, {after} B after 1,000 made-up 2 KB methods")
    assert after - before < 4096
