"""/predict throughput of two checkouts of the gateway, alternating in ONE run against ONE Triton.

    git worktree add /tmp/before <ref>       # the older tree (its .venv and .cache may be symlinks)
    python -m load_tests.bench_before_after --before /tmp/before
    python -m load_tests.bench_before_after --before /tmp/before --concurrency 1,4,16 --rounds 2

Answers "does ordinary traffic pay for this change?": the same photos (``make bench``'s), the same
requests per level, the same local Triton serving this tree's model repository, and each gateway started
as `make run` starts it (``python -m service`` in its own checkout, its defaults). Sides alternate
(before, after, before, after, ...) so a drift of the shared machine falls on both. Prints images/s and
p50 per side and level (the median over rounds) and the after/before ratio. Reports; asserts nothing.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import platform
import statistics
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from devstack.media import ROOT, ensure_media
from devstack.stack import free_port, wait_until_ready
from load_tests.bench_detect import Throughput, service_level
from load_tests.bench_media import photos
from service.launcher.triton_local import LocalTriton


@contextmanager
def gateway(checkout: Path, triton_url: str) -> Iterator[str]:
    """``python -m service`` of ``checkout``, its own code first on the path, against ``triton_url``."""
    port = free_port()
    env = {**os.environ, "FER_TRITON_URL": triton_url, "FER_PORT": str(port), "FER_LOG_LEVEL": "warning"}
    env["PYTHONPATH"] = str(checkout)
    process = subprocess.Popen([sys.executable, "-m", "service"], env=env, cwd=checkout)
    url = f"http://127.0.0.1:{port}"
    try:
        wait_until_ready(url, process, within_s=300)
        yield url
    finally:
        process.terminate()
        process.wait(timeout=60)


def measure(checkout: Path, triton_url: str, levels: list[int], requests: int) -> dict[int, Throughput]:
    bodies = [p.read_bytes() for p in photos()]
    with gateway(checkout, triton_url) as url:
        return {c: asyncio.run(service_level(url, bodies, max(requests, 8 * c), c)) for c in levels}


def rows(runs: dict[str, list[dict[int, Throughput]]], levels: list[int]) -> list[str]:
    lines = [
        "| concurrency | before img/s | after img/s | after/before | before p50 ms | after p50 ms |",
        "|---|---|---|---|---|---|",
    ]
    for level in levels:
        rate = {side: statistics.median(r[level].images_per_s for r in runs[side]) for side in runs}
        p50 = {side: statistics.median(r[level].percentile_ms(0.5) for r in runs[side]) for side in runs}
        lines.append(
            f"| {level} | {rate['before']:.2f} | {rate['after']:.2f} | {rate['after'] / rate['before']:.2f}x "
            f"| {p50['before']:.0f} | {p50['after']:.0f} |"
        )
    return lines


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--before", type=Path, required=True, help="the older checkout")
    parser.add_argument("--after", type=Path, default=ROOT, help="the newer checkout (default: this one)")
    parser.add_argument("--requests", type=int, default=30, help="images per level (at least 8 waves)")
    parser.add_argument("--concurrency", default="1,4,16", help="comma-separated concurrency levels")
    parser.add_argument("--rounds", type=int, default=2, help="before/after pairs, alternating")
    args = parser.parse_args(argv)
    ensure_media()
    levels = [int(c) for c in args.concurrency.split(",")]
    sides = {"before": args.before.resolve(), "after": args.after.resolve()}
    commits = {
        side: subprocess.run(
            ["git", "-C", str(path), "rev-parse", "--short", "HEAD"], capture_output=True, text=True
        ).stdout.strip()
        for side, path in sides.items()
    }
    print(f"# {platform.node()}: {os.cpu_count()} CPUs, {time.strftime('%Y-%m-%d %H:%M')}, {commits}")
    runs: dict[str, list[dict[int, Throughput]]] = {side: [] for side in sides}
    with LocalTriton(ROOT / "model_repository") as triton:
        for _ in range(args.rounds):
            for side, path in sides.items():
                runs[side].append(measure(path, triton.endpoints.grpc_url, levels, args.requests))
                print(
                    f"{side}: " + ", ".join(f"c{c} {r.images_per_s:.2f}/s" for c, r in runs[side][-1].items())
                )
    print("\n".join(rows(runs, levels)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
