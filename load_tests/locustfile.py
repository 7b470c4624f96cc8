"""Locust users for /predict: still images and short clips in a realistic mix (9:1), with pass/fail.

Headless against a running gateway:

    locust -f load_tests/locustfile.py --headless -u 6 -r 2 -t 60s --host http://127.0.0.1:8080

or, starting a local Triton and the gateway first: ``python -m load_tests.locust_run`` (``make locust``).
At the end the run fails (exit code 1) when the error rate or a p95 is over its threshold
(``--max-error-rate``, ``--max-image-p95-ms``, ``--max-clip-p95-ms``). A 429 counts as an error: under a
load the stack should hold, it should not shed any. The default p95s fit 6 users on a 2-core machine with
no GPU, where a clip (seconds of MTCNN) and the images share both cores; tighten them on real hardware.
"""

from __future__ import annotations

import argparse
import logging
import random
from pathlib import Path

from locust import HttpUser, between, events, task
from locust.env import Environment

ROOT = Path(__file__).resolve().parent.parent
MEDIA = ROOT / ".cache" / "test-media"
logger = logging.getLogger("locustfile")


@events.init_command_line_parser.add_listener
def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--images",
        default=f"{MEDIA / 'messi5.jpg'},{MEDIA / 'astronaut.png'}",
        help="comma-separated still images the image users post",
    )
    parser.add_argument(
        "--clip",
        default=str(ROOT / ".cache" / "load-media" / "clip.mp4"),
        help="the clip the clip users post (python -m load_tests.locust_run writes it)",
    )
    parser.add_argument("--max-error-rate", type=float, default=0.01, help="largest share of failed requests")
    parser.add_argument("--max-image-p95-ms", type=float, default=5000.0, help="largest image p95 (ms)")
    parser.add_argument("--max-clip-p95-ms", type=float, default=20000.0, help="largest clip p95 (ms)")


def read_files(paths: str) -> list[tuple[str, bytes]]:
    return [(Path(path).name, Path(path).read_bytes()) for path in paths.split(",") if path]


class ImageUser(HttpUser):
    """Someone uploading photos: one every 0.5-1.5 s."""

    weight = 9
    wait_time = between(0.5, 1.5)

    def on_start(self) -> None:
        self.images = read_files(self.environment.parsed_options.images)

    @task
    def predict_image(self) -> None:
        name, data = random.choice(self.images)
        self.client.post("/predict", files={"file": (name, data)}, name="image", timeout=60)


class ClipUser(HttpUser):
    """Someone uploading a short clip: one every 2-4 s."""

    weight = 1
    wait_time = between(2, 4)

    def on_start(self) -> None:
        (self.clip,) = read_files(self.environment.parsed_options.clip)

    @task
    def predict_clip(self) -> None:
        name, data = self.clip
        self.client.post(
            "/predict", params={"fps": 5}, files={"file": (name, data)}, name="clip", timeout=120
        )


def verdicts(environment: Environment) -> list[str]:
    """What failed the thresholds (empty: the run passed)."""
    options, stats = environment.parsed_options, environment.stats
    failed = []
    if stats.total.fail_ratio > options.max_error_rate:
        failed.append(f"error rate {stats.total.fail_ratio:.2%} > {options.max_error_rate:.2%}")
    for name, limit in (("image", options.max_image_p95_ms), ("clip", options.max_clip_p95_ms)):
        entry = stats.get(name, "POST")
        p95 = entry.get_response_time_percentile(0.95) if entry.num_requests else 0
        if p95 > limit:
            failed.append(f"{name} p95 {p95:.0f} ms > {limit:.0f} ms")
    return failed


@events.quitting.add_listener
def check_thresholds(environment: Environment, **_kwargs: object) -> None:
    failed = verdicts(environment)
    for reason in failed:
        logger.error("threshold failed: %s", reason)
    if not failed:
        logger.info("all thresholds met")
    environment.process_exit_code = 1 if failed else 0
