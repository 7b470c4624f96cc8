"""Clip analysis speed and gateway memory, measured in one run.

    python -m load_tests.bench_video

Starts a local Triton and the gateway as a separate process (`python -m service`, so its memory is its
own), then posts (a) OpenCV's real Megamind.avi (11.3 s) and (b) a 10 s, 25 fps clip synthesised from two
real face photos. Prints, per clip: analysis wall time, the ratio to the clip's duration (<1 = faster than
real time) and the gateway's peak resident memory (VmHWM) before and after. Reports; asserts nothing.
"""

from __future__ import annotations

import argparse
import time

import httpx

from devstack import clips
from devstack.media import ROOT, ensure_media
from devstack.stack import gateway_process, memory_mib
from service.launcher.triton_local import LocalTriton


def measure(url: str, pid: int, name: str, data: bytes, fps: float) -> str:
    before = memory_mib(pid)
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
        f"{before:.0f} | {memory_mib(pid):.0f} |"
    )


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--fps", type=float, default=5.0, help="frames analysed per second of clip")
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
    log = ROOT / ".cache" / "bench_video_gateway.log"
    with (
        LocalTriton(ROOT / "model_repository") as triton,
        gateway_process(triton.endpoints.grpc_url, log, FER_LOG_LEVEL="warning") as (url, gateway),
    ):
        httpx.post(f"{url}/predict", files={"file": ("warm.mp4", synthetic)}, timeout=600)
        rows = [
            measure(url, gateway.pid, "Megamind.avi", (media / "Megamind.avi").read_bytes(), args.fps),
            measure(url, gateway.pid, "two_people_10s.mp4", synthetic, args.fps),
        ]
    print(f"analysis at {args.fps:g} fps; RSS = gateway peak resident memory (VmHWM) before/after the clip")
    header = (
        "clip | duration s | frames decoded | frames analysed | people | analysis s | ratio | RSS before MiB"
    )
    print(f"| {header} | RSS after MiB |")
    print("|---|---|---|---|---|---|---|---|---|")
    print("\n".join(rows))


if __name__ == "__main__":
    main()
