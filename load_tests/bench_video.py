"""Clip analysis speed and gateway memory, measured in one run.

    python -m load_tests.bench_video

Starts a local Triton and the gateway as a separate process (`python -m service`, so its memory is its
own), then posts (a) OpenCV's real Megamind.avi (11.3 s) and (b) a 10 s, 25 fps clip synthesised from two
real face photos. Prints, per clip: analysis wall time, the ratio to the clip's duration (<1 = faster than
real time) and the gateway's peak resident memory (VmHWM) before and after. Reports; asserts nothing.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import time
from pathlib import Path

import httpx

from service.triton_local import LocalTriton
from tests import clips
from tests.media import ROOT, ensure_media
from tests.stack import wait_until_ready


def peak_rss_mib(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    raise RuntimeError("no VmHWM")


def start_gateway(grpc_url: str, port: int) -> subprocess.Popen[bytes]:
    env = {**os.environ, "FER_TRITON_URL": grpc_url, "FER_PORT": str(port), "FER_LOG_LEVEL": "warning"}
    process = subprocess.Popen([sys.executable, "-m", "service"], cwd=ROOT, env=env)
    try:
        wait_until_ready(f"http://127.0.0.1:{port}", process, within_s=120)
    except RuntimeError:
        process.kill()
        raise
    return process


def measure(url: str, pid: int, name: str, data: bytes, fps: float) -> str:
    before = peak_rss_mib(pid)
    start = time.perf_counter()
    response = httpx.post(f"{url}/predict", params={"fps": fps}, files={"file": (name, data)}, timeout=600)
    wall = time.perf_counter() - start
    if response.status_code != 200:
        raise RuntimeError(f"{name}: {response.status_code} {response.text}")
    body = response.json()
    video = body["video"]
    return (
        f"| {name} | {video['duration_s']:.2f} | {video['frames_decoded']} | {video['frames_analysed']} | "
        f"{body['summary']['people']} | {wall:.2f} | {wall / video['duration_s']:.2f} | "
        f"{before:.0f} | {peak_rss_mib(pid):.0f} |"
    )


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--fps", type=float, default=5.0, help="frames analysed per second of clip")
    parser.add_argument("--port", type=int, default=8091)
    args = parser.parse_args()
    media = ensure_media()
    synthetic = clips.encode(
        clips.scene(
            800,
            360,
            250,
            lambda i: [
                (clips.astronaut_face(media), 40 + (i % 50) * 4, 90),
                (clips.messi_face(media), 460, 30),
            ],
        ),
        fps=25,
    )
    with LocalTriton(ROOT / "model_repository") as triton:
        gateway = start_gateway(triton.endpoints.grpc_url, args.port)
        url = f"http://127.0.0.1:{args.port}"
        try:
            httpx.post(f"{url}/predict", files={"file": ("warm.mp4", synthetic)}, timeout=600)
            rows = [
                measure(url, gateway.pid, "Megamind.avi", (media / "Megamind.avi").read_bytes(), args.fps),
                measure(url, gateway.pid, "two_people_10s.mp4", synthetic, args.fps),
            ]
        finally:
            gateway.terminate()
            gateway.wait(timeout=60)
    print(f"analysis at {args.fps:g} fps; RSS = gateway peak resident memory (VmHWM) before/after the clip")
    header = (
        "clip | duration s | frames decoded | frames analysed | people | analysis s | ratio | RSS before MiB"
    )
    print(f"| {header} | RSS after MiB |")
    print("|---|---|---|---|---|---|---|---|---|")
    print("\n".join(rows))


if __name__ == "__main__":
    main()
