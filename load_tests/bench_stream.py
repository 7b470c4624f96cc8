"""Live-stream throughput and latency: 1, 4 and 8 concurrent streams of real video frames.

    python -m load_tests.bench_stream                  # starts a local Triton and `python -m service`
    python -m load_tests.bench_stream --url http://127.0.0.1:8080 --streams 1,4

Each stream plays the first ``--seconds`` of OpenCV's Megamind.avi (720x528, one face) as a live camera
would: JPEG frames sent at ``--fps`` in real time, with the stream asking for the same rate. The gateway
keeps only each stream's newest frame, so when the machine cannot keep up, frames are dropped (counted)
rather than queued. Reported per level: frames answered per second per stream, the share dropped, and p50 /
p95 of the time from a frame sent to its answer received. Reports; asserts nothing.
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass

from devstack.media import ROOT, ensure_media
from devstack.stack import gateway_process
from fer_client.stream import Player, StreamStats, video_frames
from service.launcher.triton_local import LocalTriton

Frames = list[tuple[float, bytes]]


@dataclass(frozen=True)
class Level:
    streams: int
    stats: list[StreamStats]

    @property
    def latencies_ms(self) -> list[float]:
        return sorted(1000.0 * s for stats in self.stats for s in stats.latencies_s)

    def percentile(self, q: float) -> float:
        values = self.latencies_ms
        return values[min(len(values) - 1, round(q * (len(values) - 1)))] if values else float("nan")

    def row(self) -> str:
        per_stream = statistics.mean(s.answered / s.seconds for s in self.stats)
        sent, dropped = sum(s.sent for s in self.stats), sum(s.dropped for s in self.stats)
        closed = sum(s.close_code is not None for s in self.stats)
        total = per_stream * self.streams
        return (
            f"| {self.streams} | {sent // self.streams} | {per_stream:.2f} | {total:.2f} | "
            f"{100.0 * dropped / sent:.0f} % | {self.percentile(0.5):.0f} | {self.percentile(0.95):.0f} | "
            f"{closed} |"
        )


async def run_level(url: str, frames: Frames, streams: int, fps: float) -> Level:
    players = [Player(url, options={"fps": fps}, drain_timeout_s=60) for _ in range(streams)]
    stats = await asyncio.gather(*(player.play(iter(frames)) for player in players))
    return Level(streams, list(stats))


@contextmanager
def local_stack() -> Iterator[str]:
    """Local Triton + the gateway as its own process (the clients do not share its cores' GIL)."""
    log = ROOT / ".cache" / "bench_stream_gateway.log"
    with (
        LocalTriton(ROOT / "model_repository") as triton,
        gateway_process(triton.endpoints.grpc_url, log, FER_LOG_LEVEL="warning") as (url, _),
    ):
        yield url


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--url", help="gateway URL; default: start a local stack")
    parser.add_argument("--streams", default="1,4,8", help="comma-separated numbers of concurrent streams")
    parser.add_argument("--fps", type=float, default=10.0, help="frames each stream sends per second")
    parser.add_argument("--seconds", type=float, default=10.0, help="seconds of video each stream plays")
    args = parser.parse_args()
    source = ensure_media() / "Megamind.avi"
    frames = [(t, data) for t, data in video_frames(str(source), args.fps) if t < args.seconds]
    levels = [int(level) for level in args.streams.split(",")]
    with contextmanager(lambda: iter([args.url]))() if args.url else local_stack() as url:
        asyncio.run(run_level(url, frames[:5], 1, args.fps))  # warm-up: models loaded, detector traced
        results = [asyncio.run(run_level(url, frames, level, args.fps)) for level in levels]
    print(f"{len(frames)} frames of Megamind.avi (720x528) per stream, sent at {args.fps:g} fps in real time")
    print(
        "| streams | frames sent per stream | answered frames/s per stream | answered frames/s total | "
        "dropped | p50 ms | p95 ms | streams closed |"
    )
    print("|---|---|---|---|---|---|---|---|")
    print("\n".join(result.row() for result in results))


if __name__ == "__main__":
    main()
