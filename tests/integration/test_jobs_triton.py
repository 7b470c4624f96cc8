"""Long videos as jobs against the real local Triton, real MTCNN and footage synthesised from the real
clips of the test media (Megamind.avi and vtest.avi looped): progress, parity with /predict, cancel, and a
gateway SIGKILLed mid-job whose job finishes after the restart. Low sampling rates keep it inside CI time.
"""

from __future__ import annotations

import signal
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from devstack.clips import long_video
from devstack.stack import Gateway, gateway_process, gateway_settings, start_gateway
from service.launcher.triton_local import LocalTriton

pytestmark = pytest.mark.integration
AVI = {"Content-Type": "video/x-msvideo"}


@pytest.fixture(scope="module")
def three_minutes(media: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    return long_video(media, 180.0, tmp_path_factory.mktemp("jobs") / "three-minutes.avi")


@pytest.fixture(scope="module")
def jobs_gateway(triton: LocalTriton, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Gateway]:
    # Small windows so a short clip crosses several, and frequent progress writes to watch.
    settings = gateway_settings(
        triton,
        jobs_dir=tmp_path_factory.mktemp("jobs-state"),
        jobs_window_frames=4,
        jobs_progress_interval_s=0.2,
    )
    running = start_gateway(settings)
    yield running
    running.stop()


@pytest.fixture
def http(jobs_gateway: Gateway) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=jobs_gateway.url, timeout=60) as client:
        yield client


def submit(client: httpx.Client, path: Path, **params: Any) -> dict[str, Any]:
    with path.open("rb") as body:
        answer = client.post("/v1/jobs", params=params, content=body, headers=AVI)
    assert answer.status_code == 202, answer.text
    job: dict[str, Any] = answer.json()
    return job


def watch(client: httpx.Client, job: dict[str, Any], within_s: float) -> list[dict[str, Any]]:
    """Every status seen until the job ends (or fail after ``within_s``)."""
    seen: list[dict[str, Any]] = []
    deadline = time.monotonic() + within_s
    while time.monotonic() < deadline:
        seen.append(client.get(job["status_url"]).json())
        if seen[-1]["state"] in ("succeeded", "failed", "cancelled"):
            return seen
        time.sleep(0.25)
    raise AssertionError(f"job {job['id']} still {seen[-1]['state']} after {within_s} s")


def wait_for_frames(client: httpx.Client, job: dict[str, Any], within_s: float) -> dict[str, Any]:
    deadline = time.monotonic() + within_s
    while time.monotonic() < deadline:
        status: dict[str, Any] = client.get(job["status_url"]).json()
        if status["progress"]["frames_analysed"] > 0:
            return status
        time.sleep(0.2)
    raise AssertionError(f"job {job['id']} analysed nothing within {within_s} s")


def test_a_three_minute_video_reports_rising_progress_and_gives_timelines(
    http: httpx.Client, three_minutes: Path
) -> None:
    job = submit(http, three_minutes, fps=0.5)
    seen = watch(http, job, within_s=150)
    done = seen[-1]
    assert done["state"] == "succeeded", done
    frames = [s["progress"]["frames_analysed"] for s in seen]
    assert frames == sorted(frames) and len(set(frames)) >= 3, frames  # rose, in several steps
    assert done["progress"]["frames_analysed"] == 90 and done["progress"]["percent"] == 100.0
    running = [s for s in seen if s["state"] == "running" and s["progress"]["frames_analysed"]]
    assert running and all(s["progress"]["eta_s"] is not None for s in running)
    result = http.get(job["result_url"], params={"limit": 10000}).json()
    assert result["video"]["duration_s"] == pytest.approx(180.0, abs=0.5)
    assert result["timeline_frames"] == 90 and len(result["timeline"]) == 90
    assert result["summary"]["people"] >= 1 and result["tracks"]
    assert all(track["segments"] and track["dynamic_expressions"] for track in result["tracks"])
    table = http.get(job["result_url"], params={"format": "csv"}).text.strip().splitlines()
    faces = sum(len(frame["faces"]) for frame in result["timeline"])
    assert len(table) == 1 + faces and faces > 0
    assert "happiness" in table[0] and "neutral" in table[0]


def test_a_job_equals_predict_on_a_short_clip(http: httpx.Client, media: Path) -> None:
    clip = media / "Megamind.avi"
    sync = http.post("/predict", params={"fps": 2}, content=clip.read_bytes(), headers=AVI).json()
    job = submit(http, clip, fps=2)
    assert watch(http, job, within_s=60)[-1]["state"] == "succeeded"
    result = http.get(job["result_url"]).json()
    for body in (sync, result):
        body.pop("timings_ms")
    assert result.pop("timeline_frames") == len(sync["timeline"]) > 4  # several 4-frame windows
    assert result == sync


def test_a_job_is_cancelled_mid_run(http: httpx.Client, three_minutes: Path) -> None:
    job = submit(http, three_minutes, fps=0.5)
    wait_for_frames(http, job, within_s=60)
    assert http.delete(job["status_url"]).json()["state"] == "cancelled"
    done = watch(http, job, within_s=30)[-1]
    assert done["state"] == "cancelled" and done["progress"]["frames_analysed"] < 90
    assert http.get(job["result_url"]).json()["error"]["code"] == "job_not_finished"


def test_a_job_survives_a_sigkilled_gateway(triton: LocalTriton, three_minutes: Path, tmp_path: Path) -> None:
    env = {"FER_JOBS_DIR": str(tmp_path), "FER_JOBS_PROGRESS_INTERVAL_S": "0.2", "FER_LOG_FORMAT": "text"}
    grpc = triton.endpoints.grpc_url
    with gateway_process(grpc, tmp_path / "first.log", **env) as (url, process):
        with httpx.Client(base_url=url, timeout=60) as client:
            job = submit(client, three_minutes, fps=0.5)
            wait_for_frames(client, job, within_s=90)
        process.send_signal(signal.SIGKILL)
        process.wait(timeout=30)
    with (
        gateway_process(grpc, tmp_path / "second.log", **env) as (url, _),
        httpx.Client(base_url=url, timeout=60) as client,
    ):
        done = watch(client, job, within_s=180)[-1]
        result = client.get(job["result_url"]).json()
    assert done["state"] == "succeeded" and done["attempts"] == 2, done
    assert result["timeline_frames"] == 90
    assert not (tmp_path / "uploads" / job["id"]).exists()
