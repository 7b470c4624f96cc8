"""Soak test: steady mixed load for 10 minutes, gateway memory and p99 sampled every 30 s (``make soak``).

    python -m load_tests.soak                 # 10 minutes
    python -m load_tests.soak --minutes 1     # a quick proof that it works

Starts a local Triton and the gateway as its own process (so its memory is its own), then ``--workers``
threads post back to back: 9 still images (messi5.jpg, astronaut.png) to every clip (3 s, two real faces).
Every ``--interval-s`` it prints one row: requests and errors in the window, image p50/p99, clip p99, and
the gateway's resident memory (VmRSS) and peak (VmHWM). Fails (exit 1) when the error rate is over
``--max-error-rate`` or resident memory grew more than ``--max-rss-growth-mib`` from the first row to the
last: a leak shows as growth that a warm gateway should not have.

``--distinct-sizes N`` sends the photos resized to N different random sizes (240-1280 px a side, in turn)
instead of as they are: every new size brings new pyramid shapes and buffer sizes, which is where the
detector's shape caches and the allocator's heaps grow. Run it as the image runs the gateway:

    MALLOC_ARENA_MAX=2 python -m load_tests.soak --minutes 5 --distinct-sizes 600
"""

from __future__ import annotations

import argparse
import io
import itertools
import sys
import threading
import time
from dataclasses import dataclass
from pathlib import Path

import httpx
import numpy as np

from devstack.media import ROOT, ensure_media
from devstack.stack import gateway_process, memory_mib
from load_tests.locust_run import write_clip
from service.launcher.triton_local import LocalTriton

CLIP_EVERY = 10  # one request in ten is a clip: the same 9:1 mix as the locust users


@dataclass(frozen=True)
class Result:
    finished: float  # time.monotonic()
    kind: str  # "image" or "clip"
    status: int  # 0: no answer (transport error)
    seconds: float


@dataclass(frozen=True)
class Load:
    url: str
    images: list[tuple[str, bytes]]
    clip: tuple[str, bytes]
    results: list[Result]
    stop: threading.Event


def post(client: httpx.Client, load: Load, turn: int) -> Result:
    kind = "clip" if turn % CLIP_EVERY == CLIP_EVERY - 1 else "image"
    name, data = load.clip if kind == "clip" else load.images[turn % len(load.images)]
    began = time.monotonic()
    try:
        status = client.post("/predict", params={"fps": 5}, files={"file": (name, data)}).status_code
    except httpx.HTTPError:
        status = 0
    now = time.monotonic()
    return Result(now, kind, status, now - began)


def worker(load: Load, first_turn: int) -> None:
    with httpx.Client(base_url=load.url, timeout=120) as client:
        for turn in itertools.count(first_turn):
            if load.stop.is_set():
                return
            load.results.append(post(client, load, turn))  # list.append is atomic under the GIL


def percentile_ms(results: list[Result], kind: str, q: float) -> str:
    seconds = [r.seconds for r in results if r.kind == kind]
    return f"{np.percentile(seconds, q) * 1000:.0f}" if seconds else "-"


def row(minute: float, window: list[Result], pid: int) -> tuple[str, float]:
    """One table row for the results finished in a window, and the gateway's VmRSS now (MiB)."""
    rss, peak = memory_mib(pid, "VmRSS"), memory_mib(pid, "VmHWM")
    errors = sum(1 for r in window if not 200 <= r.status < 300)
    cells = [f"{minute:.1f}", str(len(window)), str(errors), percentile_ms(window, "image", 50)]
    cells += [
        percentile_ms(window, "image", 99),
        percentile_ms(window, "clip", 99),
        f"{rss:.0f}",
        f"{peak:.0f}",
    ]
    return "| " + " | ".join(cells) + " |", rss


def sample(load: Load, pid: int, args: argparse.Namespace) -> list[float]:
    """Print a row every interval until the run is over; return the RSS of each row."""
    print(
        "| minute | requests | errors | image p50 ms | image p99 ms | clip p99 ms | RSS MiB | peak RSS MiB |"
    )
    print("|---|---|---|---|---|---|---|---|")
    began, seen, rss = time.monotonic(), 0, []
    while (elapsed := time.monotonic() - began) < args.minutes * 60:
        time.sleep(min(args.interval_s, args.minutes * 60 - elapsed))
        window, seen = load.results[seen:], len(load.results)
        line, now = row((time.monotonic() - began) / 60, window, pid)
        print(line, flush=True)
        rss.append(now)
    return rss


def verdict(results: list[Result], rss: list[float], args: argparse.Namespace) -> list[str]:
    """What failed (empty: the soak passed)."""
    failed = []
    error_rate = sum(1 for r in results if not 200 <= r.status < 300) / max(len(results), 1)
    if error_rate > args.max_error_rate:
        failed.append(f"error rate {error_rate:.2%} > {args.max_error_rate:.2%}")
    if len(rss) > 1 and rss[-1] - rss[0] > args.max_rss_growth_mib:
        failed.append(f"RSS grew {rss[-1] - rss[0]:.0f} MiB > {args.max_rss_growth_mib:.0f} MiB")
    return failed


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--minutes", type=float, default=10.0, help="how long the load runs")
    parser.add_argument("--interval-s", type=float, default=30.0, help="seconds between two rows")
    parser.add_argument("--workers", type=int, default=3, help="threads posting back to back")
    parser.add_argument("--max-error-rate", type=float, default=0.01, help="largest share of failed requests")
    parser.add_argument(
        "--max-rss-growth-mib", type=float, default=300.0, help="largest RSS growth, first→last"
    )
    parser.add_argument(
        "--distinct-sizes", type=int, default=0, help="photos at this many random sizes (0: as they are)"
    )
    return parser.parse_args(argv)


def resized_photos(photos: list[Path], count: int, seed: int = 3) -> list[tuple[str, bytes]]:
    """``count`` JPEGs of the photos in turn, each at its own random size (240-1280 px a side)."""
    from PIL import Image

    random = np.random.default_rng(seed)
    sources = [Image.open(path).convert("RGB") for path in photos]
    bodies = []
    for index in range(count):
        width, height = (int(side) for side in random.integers(240, 1281, size=2))
        buffer = io.BytesIO()
        sources[index % len(sources)].resize((width, height)).save(buffer, "JPEG", quality=90)
        bodies.append((f"{width}x{height}.jpg", buffer.getvalue()))
    return bodies


def run(url: str, pid: int, media: Path, args: argparse.Namespace) -> list[str]:
    photos = [media / name for name in ("messi5.jpg", "astronaut.png")]
    if args.distinct_sizes:
        images = resized_photos(photos, args.distinct_sizes)
    else:
        images = [(path.name, path.read_bytes()) for path in photos]
    clip = write_clip(media)
    load = Load(url, images, (clip.name, clip.read_bytes()), [], threading.Event())
    threads = [threading.Thread(target=worker, args=(load, i * 3)) for i in range(args.workers)]
    for thread in threads:
        thread.start()
    try:
        rss = sample(load, pid, args)
    finally:
        load.stop.set()
        for thread in threads:
            thread.join(timeout=180)
    return verdict(load.results, rss, args)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    media = ensure_media()
    log = ROOT / ".cache" / "soak-gateway.log"
    with (
        LocalTriton(ROOT / "model_repository") as triton,
        gateway_process(triton.endpoints.grpc_url, log, FER_LOG_LEVEL="warning") as (url, process),
    ):
        failed = run(url, process.pid, media, args)
    for reason in failed:
        print(f"FAILED: {reason}")
    print("soak passed" if not failed else f"soak failed ({len(failed)} threshold(s))")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
