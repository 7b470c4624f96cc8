"""The audit's concurrent memory mix against the gateway as `make run` starts it (issue 26): peak and rest.

    python -m load_tests.memory_mix                      # `python -m service`, embedded Triton, defaults
    python -m load_tests.memory_mix --clients 4          # a smaller mix
    FER_MEMORY_RESERVE_BYTES=... python -m load_tests.memory_mix   # any FER_ setting reaches the gateway

Starts ``python -m service`` (no FER_TRITON_URL: it starts its embedded Triton, as `make run` does), warms
it with one photo and one /annotate, then at once: ``--clients`` /annotate of a 6300x6300 noise JPEG (just
under the default 40 Mpx; ~6.7 MiB), as many /predict of the same JPEG, and as many /annotate clients that
send the JPEG and never read their answers (small receive buffer; the gateway's write timeout must drop
them). Prints the gateway's VmHWM (peak resident) before and after, its resident memory once the mix is
over, and the statuses; exits 1 when the peak is over ``--ceiling-mib`` (the 2 GiB pod limit).
"""

from __future__ import annotations

import argparse
import io
import os
import socket
import sys
import threading
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import numpy as np
from PIL import Image

from devstack.media import ensure_media
from devstack.stack import gateway_process, memory_mib

SIDE = 6300  # 39.7 Mpx: just under the default FER_MAX_IMAGE_PIXELS
CEILING_MIB = 2048  # the Kubernetes overlays' limit, and FER_MEMORY_LIMIT_BYTES's default


def noise_jpeg(media: Path, side: int = SIDE) -> bytes:
    """A ``side`` square of grey noise (+-24 levels; ~6.7 MiB at 6300 px, quality 75) with a real
    portrait at its centre, so detection, cropping, inference and drawing all run."""
    rng = np.random.default_rng(26)
    grey = 128 + rng.integers(-24, 24, (side, side, 3), dtype=np.int16)
    canvas = Image.fromarray(grey.astype(np.uint8))
    del grey
    with Image.open(media / "astronaut.png") as portrait:
        face = portrait.convert("RGB").resize((1536, 1536), Image.Resampling.LANCZOS)
    canvas.paste(face, ((side - 1536) // 2, (side - 1536) // 2))
    buffer = io.BytesIO()
    canvas.save(buffer, format="JPEG", quality=75)
    return buffer.getvalue()


@dataclass
class MixResult:
    rest_before_mib: float  # VmRSS once warm
    peak_before_mib: float  # VmHWM once warm
    peak_mib: float  # VmHWM after the mix
    rest_after_mib: float  # VmRSS once the mix is over
    statuses: Counter[str] = field(default_factory=Counter)
    seconds: float = 0.0

    def lines(self) -> list[str]:
        statuses = ", ".join(f"{key}: {count}" for key, count in sorted(self.statuses.items()))
        return [
            f"warm: VmRSS {self.rest_before_mib:.0f} MiB, VmHWM {self.peak_before_mib:.0f} MiB",
            f"mix:  VmHWM {self.peak_mib:.0f} MiB (peak); VmRSS after {self.rest_after_mib:.0f} MiB; "
            f"{self.seconds:.0f} s",
            f"answers: {statuses}",
        ]


def warm_up(url: str, media: Path) -> None:
    messi = (media / "messi5.jpg").read_bytes()
    for path in ("/predict", "/annotate"):
        response = httpx.post(f"{url}{path}", files={"file": ("m.jpg", messi)}, timeout=120)
        response.raise_for_status()


def post(url: str, path: str, data: bytes, statuses: Counter[str]) -> None:
    try:
        status = str(httpx.post(f"{url}{path}", files={"file": ("big.jpg", data)}, timeout=180).status_code)
    except httpx.HTTPError as exc:
        status = type(exc).__name__
    statuses[f"{path} {status}"] += 1  # Counter += under the GIL: good enough for a tally


def never_read(url: str, data: bytes, hold_s: float, statuses: Counter[str]) -> None:
    """An /annotate whose client sends everything and then reads nothing for ``hold_s``."""
    host, port = url.removeprefix("http://").split(":")
    head = (
        f"POST /annotate HTTP/1.1\r\nHost: {host}\r\nContent-Type: image/jpeg\r\n"
        f"Content-Length: {len(data)}\r\n\r\n"
    ).encode()
    with socket.socket() as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        sock.settimeout(60)
        sock.connect((host, int(port)))
        try:
            sock.sendall(head + data)
        except OSError as exc:
            statuses[f"unread {type(exc).__name__}"] += 1
            return
        time.sleep(hold_s)
        statuses["unread held"] += 1


def run_mix(url: str, pid: int, data: bytes, clients: int, hold_s: float) -> MixResult:
    statuses: Counter[str] = Counter()
    rest, peak = memory_mib(pid, "VmRSS"), memory_mib(pid)
    threads = [threading.Thread(target=post, args=(url, "/annotate", data, statuses)) for _ in range(clients)]
    threads += [threading.Thread(target=post, args=(url, "/predict", data, statuses)) for _ in range(clients)]
    threads += [
        threading.Thread(target=never_read, args=(url, data, hold_s, statuses)) for _ in range(clients)
    ]
    began = time.monotonic()
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=600)
    seconds = time.monotonic() - began
    time.sleep(1.0)
    return MixResult(rest, peak, memory_mib(pid), memory_mib(pid, "VmRSS"), statuses, seconds)


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--clients", type=int, default=8, help="of each kind (default 8: 24 in all)")
    parser.add_argument("--hold-s", type=float, default=40.0, help="how long the unread clients stay")
    parser.add_argument("--ceiling-mib", type=float, default=CEILING_MIB)
    parser.add_argument("--log", type=Path, default=Path("/tmp/memory-mix.log"))
    args = parser.parse_args()
    media = ensure_media()
    data = noise_jpeg(media)
    print(f"{SIDE}x{SIDE} noise JPEG: {len(data) / 2**20:.1f} MiB")
    # `make run`'s process (embedded Triton unless FER_TRITON_URL names one); quiet unless asked.
    with gateway_process(
        os.environ.get("FER_TRITON_URL"),
        args.log,
        within_s=600,
        FER_LOG_LEVEL=os.environ.get("FER_LOG_LEVEL", "warning"),
    ) as (url, process):
        warm_up(url, media)
        result = run_mix(url, process.pid, data, args.clients, args.hold_s)
    print("\n".join(result.lines()))
    return 0 if result.peak_mib <= args.ceiling_mib else 1


if __name__ == "__main__":
    sys.exit(main())
