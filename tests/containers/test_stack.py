"""The compose stack on a real engine: export job → Triton stand-in → gateway → Prometheus, real media.

Runs with `make test-containers` (docs/containers.md). The drain test stops the gateway, so it runs last.
"""

from __future__ import annotations

import json
import threading
import time
from typing import Any

import httpx
import pytest

from devstack.media import ensure_media
from service.config import Settings
from tests.containers.conftest import Stack

TIMEOUT_S = 120.0


def post(
    stack: Stack, name: str, mime: str, key: str | None = None, params: dict[str, str] | None = None
) -> httpx.Response:
    headers = {"X-API-Key": key} if key else {}
    data = (ensure_media() / name).read_bytes()
    files = {"file": (name, data, mime)}
    return httpx.post(
        f"{stack.gateway}/predict", files=files, headers=headers, params=params, timeout=TIMEOUT_S
    )


def in_flight(stack: Stack) -> float:
    """The gateway's fer_in_flight_requests, read from its metrics port."""
    for line in httpx.get(f"{stack.metrics}/metrics", timeout=10).text.splitlines():
        if line.startswith("fer_in_flight_requests "):
            return float(line.split()[1])
    return 0.0


def test_images_report(stack: Stack) -> None:
    for row in stack.build_report:
        print(f"{row['image']:40} build {row['build_s']:>5} s  {int(row['size_bytes']) / 1e6:8.0f} MB")  # type: ignore[call-overload]
    images = {row["image"] for row in stack.build_report}
    assert {"fer-gateway:0.1.0", "fer-model-repository:0.1.0", "fer-offline/tritonserver:2.51.0"} <= images


def test_a_photo_gets_the_trained_default_models_answer(stack: Stack) -> None:
    response = post(stack, "messi5.jpg", "image/jpeg", stack.api_key)
    assert response.status_code == 200, response.text
    body = response.json()
    print(json.dumps({k: body[k] for k in ("model", "faces")}, indent=1)[:3000])
    assert body["model"]["name"] == Settings().default_model == "mini_xception_fer2013"
    assert body["model"]["trained"] is True
    assert len(body["faces"]) >= 1 and body["faces"][0]["detection_score"] > 0.9


def test_a_clip_is_analysed(stack: Stack) -> None:
    response = post(stack, "Megamind.avi", "video/x-msvideo", stack.api_key)
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["media"] == "video" and "mini_xception_fer2013" in response.text


def test_the_api_needs_the_key_and_the_metrics_port_does_not(stack: Stack) -> None:
    assert post(stack, "messi5.jpg", "image/jpeg").status_code == 401
    assert httpx.get(f"{stack.gateway}/metrics", timeout=10).status_code == 404
    assert httpx.get(f"{stack.metrics}/metrics", timeout=10).status_code == 200


def test_the_gateway_runs_as_10001_on_a_read_only_root(stack: Stack) -> None:
    gateway = stack.container("gateway")
    inspected: dict[str, Any] = json.loads(stack.docker("inspect", gateway).stdout)[0]
    assert inspected["Config"]["User"] == "10001:10001"
    assert inspected["HostConfig"]["ReadonlyRootfs"] is True
    assert stack.docker("exec", gateway, "id", "-u").stdout.strip() == "10001"
    write = stack.docker("exec", gateway, "python", "-c", "open('/app/x', 'w')")
    assert write.returncode != 0 and "Read-only file system" in write.stderr


def prometheus_query(stack: Stack, query: str) -> list[dict[str, Any]]:
    answer = httpx.get(f"{stack.prometheus}/api/v1/query", params={"query": query}, timeout=10).json()
    result: list[dict[str, Any]] = answer["data"]["result"]
    return result


def test_prometheus_scrapes_both_and_sees_the_requests(stack: Stack) -> None:
    assert post(stack, "messi5.jpg", "image/jpeg", stack.api_key).status_code == 200
    deadline, health = time.monotonic() + 60, {}
    while time.monotonic() < deadline:
        targets = httpx.get(f"{stack.prometheus}/api/v1/targets", timeout=10).json()["data"]["activeTargets"]
        health = {t["labels"]["job"]: t["health"] for t in targets}
        served = prometheus_query(stack, 'sum(fer_http_requests_total{route="/predict",status="200"})')
        if health.get("fer-gateway") == health.get("fer-triton") == "up" and served:
            break
        time.sleep(1)
    for target in targets:
        print(f"prometheus target {target['labels']['job']:12} {target['scrapeUrl']:40} {target['health']}")
    assert health.get("fer-gateway") == "up" and health.get("fer-triton") == "up", health
    assert float(served[0]["value"][1]) >= 1
    assert prometheus_query(stack, "nv_inference_request_success")


@pytest.mark.timeout(300)
def test_compose_stop_drains_an_in_flight_request(stack: Stack) -> None:
    """A clip in flight when `docker-compose stop` sends SIGTERM still gets its answer."""
    answers: list[httpx.Response] = []
    # Megamind.avi (11 s) at 6 fps: 64 frames through detection, tracking and both models, several seconds.
    clip = {"fps": "6", "max_frames": "64"}
    worker = threading.Thread(
        target=lambda: answers.append(post(stack, "Megamind.avi", "video/x-msvideo", stack.api_key, clip))
    )
    worker.start()
    deadline, serving = time.monotonic() + 30, 0.0
    while serving < 1 and worker.is_alive() and time.monotonic() < deadline:
        serving = in_flight(stack)
        time.sleep(0.05)
    assert worker.is_alive(), f"the request ended before the stop: {answers and answers[0].text[:300]}"
    assert serving >= 1, "the clip never reached the gateway's handler"
    started = time.monotonic()
    stop = stack.compose("stop", "-t", "30", "gateway", timeout=90)
    worker.join(TIMEOUT_S)
    took = time.monotonic() - started
    print(f"docker-compose stop took {took:.1f} s with a clip in flight")
    assert stop.returncode == 0, stop.stderr
    assert answers and answers[0].status_code == 200, answers and answers[0].text
    exit_code = json.loads(stack.docker("inspect", stack.container("gateway")).stdout)[0]["State"]["ExitCode"]
    assert exit_code == 0  # stopped by its own drain, not SIGKILL (137)
    assert took < 30  # within the grace period given to `stop`
