"""Issue 26's /metrics inflation repro against the gateway as `make run` starts it: made-up HTTP methods.

    python -m load_tests.metrics_junk                    # 3,000 connections, a 16 KB made-up method each
    python -m load_tests.metrics_junk --count 1000 --method-bytes 2000

Starts ``python -m service`` (embedded Triton unless FER_TRITON_URL names one), measures /metrics, sends
``--count`` requests whose method is ``Z<n>AAAA...`` on their own connections, then prints /metrics' size
before and after, how long a scrape and a /healthz take afterwards, and the gateway's memory. Reports;
asserts nothing (tests/integration/test_memory_mix.py holds the bound).
"""

from __future__ import annotations

import argparse
import os
import socket
import time
from pathlib import Path

import httpx

from devstack.stack import gateway_process, memory_mib


def send_junk(host: str, port: int, count: int, method_bytes: int, first: int = 0) -> None:
    """``count`` requests, each on its own connection, with the methods ``Z<first>AAA...`` onwards."""
    for index in range(first, first + count):
        head = (
            b"Z%05d" % index
            + b"A" * method_bytes
            + b" /healthz HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"
        )
        with socket.create_connection((host, port), timeout=15) as sock:
            sock.sendall(head)
            while sock.recv(65536):
                pass


def timed_get(url: str) -> tuple[httpx.Response, float]:
    start = time.perf_counter()
    response = httpx.get(url, timeout=30)
    return response, time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--count", type=int, default=3000)
    parser.add_argument("--method-bytes", type=int, default=16000)
    parser.add_argument("--log", type=Path, default=Path("/tmp/metrics-junk.log"))
    args = parser.parse_args()
    with gateway_process(
        os.environ.get("FER_TRITON_URL"), args.log, within_s=600, FER_LOG_LEVEL="warning"
    ) as (
        url,
        process,
    ):
        before = len(httpx.get(f"{url}/metrics", timeout=30).content)
        host, port = url.removeprefix("http://").split(":")
        send_junk(host, int(port), args.count, args.method_bytes)
        after, scrape_s = timed_get(f"{url}/metrics")
        _, healthz_s = timed_get(f"{url}/healthz")
        peak, rest = memory_mib(process.pid), memory_mib(process.pid, "VmRSS")
        print(
            f"/metrics: {before} B before, {len(after.content)} B after {args.count} made-up "
            f"{args.method_bytes} B methods; scrape {scrape_s * 1000:.0f} ms, "
            f"/healthz {healthz_s * 1000:.0f} ms; gateway VmHWM {peak:.0f} MiB, VmRSS {rest:.0f} MiB"
        )


if __name__ == "__main__":
    main()
