"""Detection and /predict speed, measured side by side in ONE run on the same media (the README's table).

    make bench                                  # = python -m load_tests.bench_detect
    python -m load_tests.bench_detect --requests 30 --concurrency 1,4,16

1. Detector: facenet-pytorch's own ``MTCNN.detect`` (the reference) against our cascade
   (service/detection/mtcnn.py, on the gateway's default OpenVINO runtime and on torch channels-last) at
   0.2 MP (messi5.jpg, one face), on a 1080p frame with several faces (insightface's t1.jpg group photo on
   a 1920x1080 canvas) and on a batch of 8 clip frames (Megamind.avi); then each net alone on the inputs
   the cascade gives it for messi5, in every runtime installed (why the gateway runs OpenVINO); then what a
   higher P-Net threshold would save and lose (R-Net candidates, ms, faces) on every real photo and clip.
2. Throughput on OpenCV's messi5.jpg and scikit-image's astronaut, alternating:
   the naive in-process loop a user would write (facenet-pytorch MTCNN, then the served TorchScript
   mini-Xception per face, batch 1), the service (its own process + the local Triton) at each concurrency,
   and the `fer` library (Haar front end, same weights) in its own venv.

facenet-pytorch and the naive loop run in a process of their own with the environment this command was
started with, as a user's script would; our detector runs here with the gateway's OpenMP settings
(service/launcher/openmp.py), as it runs in the gateway. Each side gets the settings it has in real life.

Nothing here asserts on time: speed is reported, not tested.
"""

from __future__ import annotations

import os

from service.launcher.openmp import openmp_defaults

# As the gateway sets it (service/__main__.py), before torch loads libgomp: our detector is measured as it
# runs there. facenet-pytorch runs in a process of its own without it (load_tests/bench_reference.py).
os.environ.update(GATEWAY_OPENMP := openmp_defaults(os.environ))

import argparse
import asyncio
import json
import platform
import statistics
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import av
import httpx
import numpy as np
import torch
from PIL import Image

from devstack.media import ROOT, ensure_face_photos, ensure_media
from devstack.stack import free_port, wait_until_ready
from load_tests.bench_media import THRESHOLDS, bench_threads, detector_cases, photos
from service.detection.base import Detections
from service.detection.mtcnn import (
    Candidates,
    CascadeDetector,
    CascadeNets,
    Net,
    load_nets,
    pyramid,
    scaled,
)
from service.detection.openvino_nets import openvino_nets
from service.detection.summed_area import SummedArea, as_tensor, crops, pyramid_level
from service.launcher.triton_local import LocalTriton

PEER_PYTHON = ROOT / ".cache" / "peer-venv" / "bin" / "python"
Call = Callable[[], float]  # runs once, returns its own seconds


def timed(call: Callable[[], object]) -> Call:
    def run() -> float:
        start = time.perf_counter()
        call()
        return time.perf_counter() - start

    return run


def alternating_ms(calls: list[Call], rounds: int = 7, burst: int = 4) -> list[float]:
    """Median ms of each call in its steady state, the calls taking turns in bursts (A A A A, B B B B, ...).

    Turns: a shared VM's speed drifts between runs, and alternating puts every call under the same drift.
    Bursts: each call's first run after the other's finds its caches refilled by the other and its threads
    asleep, which a loop of detections (a user's script, the gateway under load) never meets. That run is
    not timed. Measured (2 cores, 2026-12-03, back to back alone / one call a turn / bursts): ours messi5
    26 / 27-36 / 25 ms, facenet-pytorch 79 / 81-83 / 81 ms; single turns cost the faster side most."""
    for call in calls:
        call()  # warm-up
    times: list[list[float]] = [[] for _ in calls]
    for _ in range(rounds):
        for call, sink in zip(calls, times, strict=True):
            call()  # the burst's cold first run
            sink.extend(call() for _ in range(burst))
    return [statistics.median(sink) * 1000.0 for sink in times]


def user_environment() -> dict[str, str]:
    """The environment this benchmark was started with: without what it set for our side, above."""
    return {k: v for k, v in os.environ.items() if k not in GATEWAY_OPENMP}


class Reference:
    """facenet-pytorch's ``detect`` in its own process (load_tests/bench_reference.py), one case per call."""

    def __init__(self) -> None:
        self._process = subprocess.Popen(
            [sys.executable, "-m", "load_tests.bench_reference", "detect"],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
            env=user_environment(),
            cwd=ROOT,
        )
        if self._read() != "ready":
            raise RuntimeError("the reference process did not start")

    def _read(self) -> str:
        assert self._process.stdout is not None
        return self._process.stdout.readline().strip()

    def call(self, case: int) -> Call:
        def run() -> float:
            assert self._process.stdin is not None
            self._process.stdin.write(f"{case}\n")
            self._process.stdin.flush()
            answer = self._read()
            if not answer:
                raise RuntimeError(f"the reference process exited ({self._process.wait()})")
            return float(answer)

        return run

    def close(self) -> None:
        assert self._process.stdin is not None
        self._process.stdin.close()
        self._process.wait(timeout=60)


# ----------------------------------------------------------------------------- 1. the detector


def _detector_row(name: str, images: list[np.ndarray], theirs: Call, ours: dict[str, CascadeDetector]) -> str:
    cells = []
    with torch.inference_mode():
        for detector in ours.values():
            reference_ms, ours_ms = alternating_ms([theirs, timed(lambda d=detector: d.detect_many(images))])
            cells.append(f"{reference_ms:.1f} | {ours_ms:.1f} | {reference_ms / ours_ms:.2f}x")
        faces = sum(len(found) for found in next(iter(ours.values())).detect_many(images))
    return f"| {name} | {faces} | " + " | ".join(cells) + " |"


def bench_detector(threads: int) -> list[str]:
    ours = {
        "OpenVINO (default)": CascadeDetector(
            thresholds=THRESHOLDS, min_face_size=20, nets=openvino_nets(threads)
        ),
        "torch channels-last": CascadeDetector(thresholds=THRESHOLDS, min_face_size=20),
    }
    head = " | ".join(f"facenet-pytorch ms | ours, {runtime} ms | speed-up" for runtime in ours)
    rows = [f"| input | faces | {head} |", "|---|---|" + "---|---|---|" * len(ours)]
    reference = Reference()
    try:
        for case, (name, images) in enumerate(detector_cases()):
            rows.append(_detector_row(name, images, reference.call(case), ours))
    finally:
        reference.close()
    return rows


def net_inputs(image: np.ndarray) -> tuple[list[torch.Tensor], torch.Tensor, torch.Tensor]:
    """What the cascade feeds each net for this image: P-Net's pyramid levels, then R-Net's and O-Net's
    crops of the candidates the torch cascade finds (their count is printed with the table)."""
    table = SummedArea(as_tensor(image))
    levels = [pyramid_level([table], scaled(table.shape, s)) for s in pyramid(table.shape, 20)]
    detector = CascadeDetector(thresholds=THRESHOLDS, min_face_size=20)
    proposals = detector._proposals([table], [20])
    refined = detector._refine([table], proposals)
    return (
        levels,
        crops([table], proposals.boxes, proposals.image, 24),
        crops([table], refined.boxes, refined.image, 48),
    )


def bench_nets(threads: int) -> list[str]:
    """Each net alone, timed alternately in every runtime: the measurement the default runtime rests on."""
    image = np.asarray(Image.open(ensure_media() / "messi5.jpg").convert("RGB"))
    levels, rnet_in, onet_in = net_inputs(image)
    default_layout = tuple(net.to(memory_format=torch.contiguous_format) for net in load_nets())
    runtimes: dict[str, CascadeNets] = {
        "torch default layout": CascadeNets(*default_layout),
        "torch channels-last": CascadeNets(*load_nets()),
        "OpenVINO": openvino_nets(threads),
    }
    stages: list[tuple[str, Callable[[CascadeNets], Net], list[torch.Tensor]]] = [
        (f"P-Net, {len(levels)} pyramid levels", lambda n: n.pnet, levels),
        (f"R-Net, {len(rnet_in)} candidates", lambda n: n.rnet, [rnet_in]),
        (f"O-Net, {len(onet_in)} candidates", lambda n: n.onet, [onet_in]),
    ]
    rows = [
        "| net (messi5) | " + " | ".join(f"{runtime} ms" for runtime in runtimes) + " |",
        "|---|" + "---|" * len(runtimes),
    ]
    with torch.inference_mode():
        for name, pick, inputs in stages:
            # The default-layout nets get default-layout inputs (the cascade builds channels-last ones).
            calls = [
                _run_all(
                    pick(nets), [x.contiguous() for x in inputs] if runtime.endswith("layout") else inputs
                )
                for runtime, nets in runtimes.items()
            ]
            medians = alternating_ms([timed(call) for call in calls])
            rows.append(f"| {name} | " + " | ".join(f"{ms:.1f}" for ms in medians) + " |")
    return rows


def _run_all(net: Net, inputs: list[torch.Tensor]) -> Callable[[], object]:
    return lambda: [net(x) for x in inputs]


def sweep_images() -> list[np.ndarray]:
    """Every real photo here and every 5th frame of Megamind.avi: the faces a threshold may lose."""
    media = ensure_media()
    paths = [media / "messi5.jpg", media / "astronaut.png", *ensure_face_photos()]
    images = [np.asarray(Image.open(path).convert("RGB")) for path in paths]
    with av.open(str(media / "Megamind.avi")) as container:
        frames = enumerate(container.decode(video=0))
        images += [frame.to_ndarray(format="rgb24") for i, frame in frames if i % 5 == 0]
    return images


def _same_face(box: np.ndarray, others: np.ndarray) -> bool:
    x1, y1 = np.maximum(box[:2], others[:, :2]).T
    x2, y2 = np.minimum(box[2:], others[:, 2:]).T
    inter = np.clip(x2 - x1, 0, None) * np.clip(y2 - y1, 0, None)
    areas = (others[:, 2] - others[:, 0]) * (others[:, 3] - others[:, 1])
    union = (box[2] - box[0]) * (box[3] - box[1]) + areas - inter
    return bool((inter / union >= 0.7).any())


class CountingCascade(CascadeDetector):
    """The cascade, counting the candidates P-Net hands to R-Net."""

    candidates = 0

    def _refine(self, images: list[SummedArea], candidates: Candidates) -> Candidates:
        self.candidates += len(candidates)
        return super()._refine(images, candidates)


def bench_pnet_thresholds(threads: int, thresholds: tuple[float, ...] = (0.6, 0.65, 0.7, 0.8)) -> list[str]:
    """What P-Net's threshold costs: R-Net candidates and time against the faces (final score >= 0.9, as
    the gateway keeps them) that facenet-pytorch's default 0.6 finds and a higher threshold loses."""
    images, nets = sweep_images(), openvino_nets(threads)

    def run(pnet: float) -> tuple[list[Detections], int, float]:
        detector = CountingCascade(thresholds=(pnet, *THRESHOLDS[1:]), min_face_size=20, nets=nets)
        detector.detect_many(images[:2])  # warm-up
        detector.candidates = 0
        start = time.perf_counter()
        with torch.inference_mode():
            found = [detector.detect(image).top(len(image), 0.9) for image in images]
        return found, detector.candidates, (time.perf_counter() - start) * 1000.0 / len(images)

    reference, base_candidates, _ = run(thresholds[0])
    rows = [
        f"| P-Net threshold ({len(images)} images, {sum(map(len, reference))} faces at {thresholds[0]}) "
        "| R-Net candidates | ms per image | faces lost |",
        "|---|---|---|---|",
    ]
    for pnet in thresholds:
        found, candidates, ms = run(pnet)
        lost = sum(
            not len(mine) or not _same_face(box, mine.boxes)
            for theirs, mine in zip(reference, found, strict=True)
            for box in theirs.boxes
        )
        rows.append(f"| {pnet} | {candidates} ({candidates / base_candidates:.0%}) | {ms:.1f} | {lost} |")
    return rows


# ----------------------------------------------------------------------------- 2. throughput


@dataclass(frozen=True)
class Throughput:
    name: str
    images: int
    faces: int
    wall_s: float
    latencies_s: list[float]
    detect_ms: list[float] = field(default_factory=list)  # the gateway's own stage timings (service rows)
    infer_ms: list[float] = field(default_factory=list)

    @property
    def images_per_s(self) -> float:
        return self.images / self.wall_s

    def percentile_ms(self, q: float) -> float:
        ordered = sorted(self.latencies_s) or [float("nan")]
        return ordered[min(len(ordered) - 1, int(q * len(ordered)))] * 1000.0


def naive_loop(requests: int) -> Throughput:
    """The naive loop (load_tests/bench_reference.py) in its own process, with the user's environment."""
    command = [sys.executable, "-m", "load_tests.bench_reference", "naive", "--requests", str(requests)]
    result = subprocess.run(
        command, capture_output=True, text=True, check=True, env=user_environment(), cwd=ROOT
    )
    data = json.loads(result.stdout.strip().splitlines()[-1])
    return Throughput(
        "naive loop (facenet-pytorch MTCNN + model per face)",
        requests,
        data["faces"],
        data["wall"],
        data["latencies"],
    )


async def service_level(url: str, bodies: list[bytes], requests: int, concurrency: int) -> Throughput:
    latencies: list[float] = []
    detect: list[float] = []
    infer: list[float] = []
    faces = 0
    gate = asyncio.Semaphore(concurrency)
    async with httpx.AsyncClient(base_url=url, timeout=120) as client:

        async def one(i: int, record: bool = True) -> None:
            nonlocal faces
            async with gate:
                start = time.perf_counter()
                response = await client.post("/predict", files={"file": ("i", bodies[i % len(bodies)])})
                response.raise_for_status()
                if record:
                    latencies.append(time.perf_counter() - start)
                    body = response.json()
                    faces += len(body["faces"])
                    detect.append(body["timings_ms"]["detect"])
                    infer.append(body["timings_ms"]["infer"])

        # Warm-up: two waves at this concurrency. The first waves at a new level run slower (measured at
        # concurrency 16: 24.9 img/s for the first 64 requests, then 27.4-28.8 for every later 64 or 200):
        # the merged cascade meets batch shapes it has not run yet. A service that has been up for a
        # minute has met them; the table reports that steady state.
        await asyncio.gather(*(one(i, record=False) for i in range(max(4, 2 * concurrency))))
        start = time.perf_counter()
        await asyncio.gather(*(one(i) for i in range(requests)))
        wall = time.perf_counter() - start
    name = f"the service, concurrency {concurrency} ({requests} requests)"
    return Throughput(name, requests, faces, wall, latencies, detect, infer)


@contextmanager
def service_process() -> Iterator[str]:
    """The local Triton and the gateway as its own process (`python -m service`), as users run it."""
    with LocalTriton(ROOT / "model_repository") as triton:
        port = free_port()
        env = {**os.environ, "FER_TRITON_URL": triton.endpoints.grpc_url, "FER_PORT": str(port)}
        env["FER_LOG_LEVEL"] = "warning"
        process = subprocess.Popen([sys.executable, "-m", "service"], env=env, cwd=ROOT)
        url = f"http://127.0.0.1:{port}"
        try:
            wait_until_ready(url, process, within_s=120)
            yield url
        finally:
            process.terminate()
            process.wait(timeout=60)


def peer_fer(paths: list[Path], requests: int) -> Throughput | None:
    if not PEER_PYTHON.exists():
        return None
    script = f"""
import json, os, sys, time
os.environ.setdefault("TF_USE_LEGACY_KERAS", "1"); os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
import cv2
from fer.fer import FER
paths = {json.dumps([str(p) for p in paths])}
detector = FER(use_tflite=False)
images = [cv2.imread(p) for p in paths]
detector.detect_emotions(images[0])
faces, latencies = 0, []
start = time.perf_counter()
for i in range({requests}):
    t = time.perf_counter()
    faces += len(detector.detect_emotions(images[i % len(images)]))
    latencies.append(time.perf_counter() - t)
print(json.dumps({{"wall": time.perf_counter() - start, "faces": faces, "latencies": latencies}}))
"""
    result = subprocess.run([str(PEER_PYTHON), "-c", script], capture_output=True, text=True, check=True)
    data = json.loads(result.stdout.strip().splitlines()[-1])
    return Throughput(
        "`fer` library, Haar front end (same weights)",
        requests,
        data["faces"],
        data["wall"],
        data["latencies"],
    )


def throughput_rows(results: list[Throughput]) -> list[str]:
    base = results[0].images_per_s
    rows = [
        "| what | images/s | faces/s | p50 ms | p95 ms | vs naive | detect ms p50 | infer ms p50 / p95 |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for r in results:
        stages = (
            f"{statistics.median(r.detect_ms):.0f} | {statistics.median(r.infer_ms):.0f} / "
            f"{sorted(r.infer_ms)[int(0.95 * (len(r.infer_ms) - 1))]:.0f}"
            if r.detect_ms
            else "— | —"
        )
        rows.append(
            f"| {r.name} | {r.images_per_s:.1f} | {r.faces / r.wall_s:.1f} | {r.percentile_ms(0.5):.0f} "
            f"| {r.percentile_ms(0.95):.0f} | {r.images_per_s / base:.2f}x | {stages} |"
        )
    return rows


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--requests", type=int, default=30, help="images per row of the throughput table")
    parser.add_argument("--concurrency", default="1,4,16", help="comma-separated concurrency levels")
    parser.add_argument("--skip-detector", action="store_true", help="only the throughput table")
    args = parser.parse_args(argv)
    torch.set_num_threads(bench_threads())
    print(
        f"# {platform.node()}: {os.cpu_count()} CPUs, torch {torch.__version__}, {time.strftime('%Y-%m-%d')}"
    )
    if not args.skip_detector:
        threads = bench_threads()
        print("\n".join(bench_detector(threads)), end="\n\n")
        print("\n".join(bench_nets(threads)), end="\n\n")
        print("\n".join(bench_pnet_thresholds(threads)), end="\n\n")
    paths = photos()
    results = [naive_loop(args.requests)]
    bodies = [p.read_bytes() for p in paths]
    with service_process() as url:
        for level in (int(c) for c in args.concurrency.split(",")):
            # At least 8 waves of `level` requests: with fewer, the first wave's ramp and the last one's
            # drain (fewer requests left than clients) weigh on the wall time.
            requests = max(args.requests, 8 * level)
            results.append(asyncio.run(service_level(url, bodies, requests, level)))
    peer = peer_fer(paths, args.requests)
    print("\n".join(throughput_rows([*results, *([peer] if peer else [])])))
    return 0


if __name__ == "__main__":
    sys.exit(main())
