"""facenet-pytorch's side of `bench_detect`, in a process of its own with the environment of the user's shell.

The gateway sets its own OpenMP wait policy (service/launcher/openmp.py) before torch loads, and that
policy would also apply to facenet-pytorch if it ran in the benchmark's process. On 2 cores it changes
facenet-pytorch's times (docs/benchmarks.md), so each side runs in the environment it gets in real
life: ours as the gateway sets it, the reference as a user's own script has it. `bench_detect` starts
this module with the environment it was started with.

    python -m load_tests.bench_reference detect            # reads a case index per line, answers seconds
    python -m load_tests.bench_reference naive --requests 30  # runs the naive loop, prints JSON

Nothing imported here touches the environment: the media come from load_tests/bench_media.py.
"""

from __future__ import annotations

import argparse
import json
import sys
import time

import numpy as np
import torch
from PIL import Image

from load_tests.bench_media import MODEL_FILE, THRESHOLDS, bench_threads, detector_cases, photos


def serve_detect() -> None:
    """One facenet-pytorch ``detect`` per case index read from stdin; its seconds on stdout."""
    from facenet_pytorch import MTCNN

    reference = MTCNN(keep_all=True, thresholds=list(THRESHOLDS), min_face_size=20, post_process=False)
    # facenet-pytorch's batch mode wants a 4-D array; one image goes in as itself.
    samples = [np.stack(images) if len(images) > 1 else images[0] for _, images in detector_cases()]
    print("ready", flush=True)
    with torch.inference_mode():
        for line in sys.stdin:
            sample = samples[int(line)]
            start = time.perf_counter()
            reference.detect(sample)
            print(time.perf_counter() - start, flush=True)


def naive_loop(requests: int) -> dict[str, object]:
    """What a user writes first: MTCNN, then the model once per face (box crop, resize to 64, batch 1)."""
    from facenet_pytorch import MTCNN

    mtcnn = MTCNN(keep_all=True, thresholds=list(THRESHOLDS), min_face_size=20)
    model = torch.jit.load(str(MODEL_FILE)).eval()
    images = [Image.open(p).convert("RGB") for p in photos()]

    def one(image: Image.Image) -> int:
        boxes, _ = mtcnn.detect(image)
        for box in [] if boxes is None else boxes:
            face = image.crop(tuple(int(v) for v in box)).resize((64, 64), Image.Resampling.BILINEAR)
            pixels = torch.from_numpy(np.asarray(face, dtype=np.float32) / 255.0).permute(2, 0, 1)[None]
            model(pixels)
        return 0 if boxes is None else len(boxes)

    latencies, faces = [], 0
    with torch.inference_mode():
        one(images[0])
        start = time.perf_counter()
        for i in range(requests):
            t = time.perf_counter()
            faces += one(images[i % len(images)])
            latencies.append(time.perf_counter() - t)
    return {"wall": time.perf_counter() - start, "faces": faces, "latencies": latencies}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("what", choices=["detect", "naive"])
    parser.add_argument("--requests", type=int, default=30, help="images the naive loop runs")
    args = parser.parse_args(argv)
    torch.set_num_threads(bench_threads())
    if args.what == "detect":
        serve_detect()
    else:
        print(json.dumps(naive_loop(args.requests)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
