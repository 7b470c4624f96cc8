"""Long-video jobs: analysis time as a ratio of the video's duration, and the gateway's peak memory.

    python -m load_tests.bench_jobs --minutes 1 10 60 --fps 1 [--size 1280x720]

Starts a local Triton, then for each length synthesises a video by looping the real clips of the test
media (Megamind.avi and vtest.avi, 720x528, 4 fps, MPEG-4; devstack.clips.long_video), starts a fresh gateway
process (`python -m service`, so its peak resident memory, VmHWM, belongs to that video alone), submits the
video to POST /v1/jobs and follows it to the end. Prints a Markdown table; asserts nothing.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import httpx

from devstack.clips import long_video
from devstack.media import ROOT, ensure_media
from devstack.stack import gateway_process, memory_mib
from service.launcher.triton_local import LocalTriton

HEADER = (
    "| video | duration (s) | frames analysed | people | analysis (s) | time / duration | "
    "gateway at rest (MiB) | gateway peak (MiB) |\n|---|---|---|---|---|---|---|---|"
)


def run_job(url: str, path: Path, fps: float) -> tuple[dict[str, object], float]:
    with path.open("rb") as body:
        job = httpx.post(
            f"{url}/v1/jobs",
            params={"fps": fps},
            content=body,
            headers={"Content-Type": "video/*"},
            timeout=600,
        ).json()
    start = time.perf_counter()
    while (status := httpx.get(f"{url}{job['status_url']}", timeout=60).json())["state"] in (
        "queued",
        "running",
    ):
        time.sleep(1.0)
    if status["state"] != "succeeded":
        raise RuntimeError(f"{path.name}: {status}")
    result = httpx.get(f"{url}{job['result_url']}", params={"limit": 1}, timeout=600).json()
    return result, time.perf_counter() - start


def measure(
    grpc_url: str, minutes: float, fps: float, work: Path, size: tuple[int, int] | None = None
) -> str:
    video = long_video(ensure_media(), minutes * 60.0, work / f"{minutes:g}min.avi", size=size)
    env = {"FER_JOBS_DIR": str(work / f"jobs-{minutes:g}"), "FER_LOG_FORMAT": "text"}
    with gateway_process(grpc_url, work / f"gateway-{minutes:g}.log", **env) as (url, process):
        rest = memory_mib(process.pid, "VmRSS")
        result, wall = run_job(url, video, fps)
        peak = memory_mib(process.pid)
    info, summary = result["video"], result["summary"]
    assert isinstance(info, dict) and isinstance(summary, dict)
    duration = float(info["duration_s"])
    return (
        f"| {minutes:g} min | {duration:.0f} | {info['frames_analysed']} | {summary['people']} | "
        f"{wall:.1f} | {wall / duration:.3f} | {rest:.0f} | {peak:.0f} |"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--minutes", type=float, nargs="+", default=[1.0, 10.0])
    parser.add_argument("--fps", type=float, default=1.0, help="frames analysed per second of video")
    parser.add_argument(
        "--size",
        type=lambda text: tuple(int(part) for part in text.split("x")),
        default=None,
        help="frame size WIDTHxHEIGHT, e.g. 1280x720 (the clips scaled up, aspect kept, padded); "
        "default: the clips' own 720x528",
    )
    args = parser.parse_args()
    with (
        tempfile.TemporaryDirectory(prefix="fer-bench-jobs-") as folder,
        LocalTriton(ROOT / "model_repository", startup_timeout_s=900) as triton,
    ):
        lines = [
            measure(triton.endpoints.grpc_url, minutes, args.fps, Path(folder), args.size)
            for minutes in args.minutes
        ]
    size = "x".join(map(str, args.size)) if args.size else "720x528"
    print(f"sampling {args.fps:g} fps, frames {size}\n{HEADER}\n" + "\n".join(lines))


if __name__ == "__main__":
    main()
