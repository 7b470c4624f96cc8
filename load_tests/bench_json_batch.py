"""N real photos as one JSON batch (POST /v1/predict) against N multipart requests (POST /predict).

    python -m load_tests.bench_json_batch                 # starts a local Triton + a gateway process itself
    python -m load_tests.bench_json_batch --url http://host:8080 --images 16 --rounds 3

The photos are the test media's real ones (OpenCV's messi5.jpg and fruits.jpg, scikit-image's astronaut,
the face photos of devstack.media), repeated to N. Each round sends the same N photos three ways, in turns:
one JSON batch; N multipart requests one after another; N multipart requests with 4 in flight. The table
gives the median round's wall time and images/s (client time included: base64 and JSON on both sides).

``--detector`` first measures the detector alone, in this process: the N decoded photos in one
``detect_images`` call against N concurrent ``detect`` calls left to BatchedDetector's cross-request
merging, with the cascade calls each made. Nothing here asserts on time: speed is reported, not tested.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import io
import statistics
import tempfile
import time
from collections.abc import Awaitable, Callable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import httpx
import numpy as np
from PIL import Image

from devstack.media import ROOT, ensure_face_photos, ensure_media
from devstack.stack import gateway_process
from service.config import Settings
from service.detection.base import Detections
from service.detection.batched import RGB, BatchedDetector
from service.detection.factory import build_detector
from service.launcher.triton_local import LocalTriton

MULTIPART_CONCURRENCY = 4


def photos(count: int) -> list[tuple[str, bytes]]:
    media = ensure_media()
    paths = [media / "messi5.jpg", media / "astronaut.png", media / "fruits.jpg", *ensure_face_photos()]
    return [(paths[i % len(paths)].name, paths[i % len(paths)].read_bytes()) for i in range(count)]


async def json_batch(client: httpx.AsyncClient, files: Sequence[tuple[str, bytes]]) -> int:
    images = [{"id": name, "data": base64.b64encode(data).decode("ascii")} for name, data in files]
    response = await client.post("/v1/predict", json={"images": images})
    response.raise_for_status()
    return sum(len(r["response"]["faces"]) for r in response.json()["results"])


async def multipart(client: httpx.AsyncClient, files: Sequence[tuple[str, bytes]], concurrency: int) -> int:
    gate = asyncio.Semaphore(concurrency)

    async def one(name: str, data: bytes) -> int:
        async with gate:
            response = await client.post("/predict", files={"file": (name, data)})
        response.raise_for_status()
        return len(response.json()["faces"])

    return sum(await asyncio.gather(*(one(name, data) for name, data in files)))


@dataclass
class Mode:
    name: str
    requests: int
    send: Callable[[httpx.AsyncClient], Awaitable[int]]
    walls: list[float]
    faces: int = 0

    @property
    def median_s(self) -> float:
        return statistics.median(self.walls)


async def measure(url: str, files: Sequence[tuple[str, bytes]], rounds: int) -> list[Mode]:
    n = len(files)
    modes = [
        Mode("one JSON batch (POST /v1/predict)", 1, lambda c: json_batch(c, files), []),
        Mode("multipart, one at a time (POST /predict)", n, lambda c: multipart(c, files, 1), []),
        Mode(
            f"multipart, {MULTIPART_CONCURRENCY} in flight (POST /predict)",
            n,
            lambda c: multipart(c, files, MULTIPART_CONCURRENCY),
            [],
        ),
    ]
    async with httpx.AsyncClient(base_url=url, timeout=300) as client:
        for mode in modes:  # warm-up, not counted
            await mode.send(client)
        for _ in range(rounds):
            for mode in modes:
                start = time.perf_counter()
                mode.faces = await mode.send(client)
                mode.walls.append(time.perf_counter() - start)
    return modes


def report(modes: list[Mode], images: int) -> str:
    base = modes[0].median_s
    lines = [
        f"{images} photos, {len(modes[0].walls)} rounds (median round shown)",
        "| way in | requests | faces | wall s | images/s | vs JSON batch |",
        "|---|---|---|---|---|---|",
    ]
    for mode in modes:
        lines.append(
            f"| {mode.name} | {mode.requests} | {mode.faces} | {mode.median_s:.2f} | "
            f"{images / mode.median_s:.2f} | {base / mode.median_s:.2f}x |"
        )
    return "\n".join(lines)


def detector_comparison(files: Sequence[tuple[str, bytes]], rounds: int) -> str:
    """One detect_images call against N concurrent detect calls merged by BatchedDetector."""
    settings = Settings(triton_url="unused:0")
    detector = build_detector(settings)
    assert isinstance(detector, BatchedDetector)
    cascade = detector._cascade
    calls: list[int] = []
    original = cascade.detect_many

    def counted(images: Sequence[RGB], min_face_sizes: Sequence[int] | None = None) -> list[Detections]:
        calls.append(len(images))
        return original(images, min_face_sizes)

    cascade.detect_many = counted  # type: ignore[method-assign]
    images = [np.asarray(Image.open(io.BytesIO(data)).convert("RGB")) for _, data in files]
    pool = ThreadPoolExecutor(settings.cpu_workers)
    try:
        ways: dict[str, Callable[[], object]] = {
            "one detect_images call": lambda: detector.detect_images(images),
            f"{len(images)} concurrent detect calls": lambda: list(pool.map(detector.detect, images)),
        }
        lines = ["| detection of the batch | cascade calls (images each) | median ms |", "|---|---|---|"]
        for name, run in ways.items():
            run()  # warm-up
            walls, seen = [], []
            for _ in range(rounds):
                calls.clear()
                start = time.perf_counter()
                run()
                walls.append(time.perf_counter() - start)
                seen = list(calls)
            each = ", ".join(map(str, seen))
            lines.append(f"| {name} | {len(seen)} ({each}) | {statistics.median(walls) * 1000:.0f} |")
    finally:
        pool.shutdown()
        detector.close()
    return "\n".join(lines)


@contextmanager
def local_stack() -> Iterator[str]:
    """A local Triton and `python -m service` as its own process (the client's work is not the gateway's)."""
    with (
        LocalTriton(ROOT / "model_repository", startup_timeout_s=600) as triton,
        tempfile.TemporaryDirectory() as folder,
        gateway_process(triton.endpoints.grpc_url, Path(folder) / "gateway.log") as (url, _),
    ):
        yield url


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--url", help="gateway URL; default: start a local stack")
    parser.add_argument("--images", type=int, default=16, help="photos per round (default 16)")
    parser.add_argument("--rounds", type=int, default=3, help="rounds per way (default 3)")
    parser.add_argument("--detector", action="store_true", help="also compare detection alone")
    args = parser.parse_args()
    files = photos(args.images)
    if args.detector:
        print(detector_comparison(files, args.rounds) + "\n")
    with contextmanager(lambda: iter([args.url]))() if args.url else local_stack() as url:
        modes = asyncio.run(measure(url, files, args.rounds))
    print(report(modes, len(files)))


if __name__ == "__main__":
    main()
