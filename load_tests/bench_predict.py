"""Benchmark /predict: latency of single requests and throughput under concurrency, measured in one run.

    python -m load_tests.bench_predict                      # starts a local Triton + gateway itself
    python -m load_tests.bench_predict --url http://host:8080 --image photo.jpg

Prints a markdown table (the README's benchmark table comes from here) and ratios against
concurrency 1. Nothing here asserts on time: speed is reported, not tested.
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import httpx

from devstack.media import ROOT, ensure_media
from devstack.stack import gateway_settings, start_gateway
from service.launcher.triton_local import LocalTriton


@dataclass(frozen=True)
class Result:
    concurrency: int
    latencies_s: list[float]
    wall_s: float
    server_ms: dict[str, float]

    @property
    def throughput(self) -> float:
        return len(self.latencies_s) / self.wall_s

    def percentile(self, q: float) -> float:
        ordered = sorted(self.latencies_s)
        return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


@dataclass(frozen=True)
class Target:
    url: str
    data: bytes
    model: str | None  # None: the gateway's default model


async def _one(
    client: httpx.AsyncClient, target: Target, latencies: list[float], stages: list[dict[str, float]]
) -> None:
    params = {"model": target.model} if target.model else {}
    start = time.perf_counter()
    response = await client.post(
        "/predict", params=params, files={"file": ("image.jpg", target.data, "image/jpeg")}
    )
    latencies.append(time.perf_counter() - start)
    response.raise_for_status()
    stages.append(response.json()["timings_ms"])


async def run_level(target: Target, requests: int, concurrency: int) -> Result:
    latencies: list[float] = []
    stages: list[dict[str, float]] = []
    semaphore = asyncio.Semaphore(concurrency)
    async with httpx.AsyncClient(base_url=target.url, timeout=120) as client:
        for _ in range(3):  # warm-up, not counted
            await _one(client, target, [], [])

        async def guarded() -> None:
            async with semaphore:
                await _one(client, target, latencies, stages)

        start = time.perf_counter()
        await asyncio.gather(*(guarded() for _ in range(requests)))
        wall = time.perf_counter() - start
    medians = {key: statistics.median(s[key] for s in stages) for key in stages[0]}
    return Result(concurrency, latencies, wall, medians)


def report(results: list[Result], faces: int) -> str:
    base = results[0]
    lines = [
        f"faces per image: {faces}",
        "| concurrency | requests | p50 ms | p95 ms | req/s | vs c=1 | detect ms | infer ms |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for r in results:
        lines.append(
            f"| {r.concurrency} | {len(r.latencies_s)} | {r.percentile(0.5) * 1000:.1f} | "
            f"{r.percentile(0.95) * 1000:.1f} | {r.throughput:.2f} | {r.throughput / base.throughput:.2f}x | "
            f"{r.server_ms['detect']:.1f} | {r.server_ms['infer']:.1f} |"
        )
    return "\n".join(lines)


@contextmanager
def local_stack() -> Iterator[str]:
    """Local Triton + the real gateway on loopback, torn down afterwards."""
    with LocalTriton(ROOT / "model_repository") as triton:
        gateway = start_gateway(gateway_settings(triton))
        try:
            yield gateway.url
        finally:
            gateway.stop()


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--url", help="gateway URL; default: start a local stack")
    parser.add_argument("--image", type=Path, help="image to send; default: OpenCV's messi5.jpg")
    parser.add_argument("--requests", type=int, default=24, help="requests per concurrency level")
    parser.add_argument("--concurrency", default="1,2,4,8", help="comma-separated concurrency levels")
    parser.add_argument("--model", help="served model name; default: the gateway's default")
    args = parser.parse_args()
    data = (args.image or ensure_media() / "messi5.jpg").read_bytes()
    levels = [int(level) for level in args.concurrency.split(",")]
    with contextmanager(lambda: iter([args.url]))() if args.url else local_stack() as url:
        faces = len(
            httpx.post(f"{url}/predict", files={"file": ("i.jpg", data)}, timeout=120).json()["faces"]
        )
        target = Target(url, data, args.model)
        results = [asyncio.run(run_level(target, args.requests, level)) for level in levels]
    print(report(results, faces))


if __name__ == "__main__":
    main()
