"""One command for the locust load test against a local stack (``make locust``):

    python -m load_tests.locust_run --seconds 60 --users 6

Starts a local Triton and the gateway as its own process (``python -m service``), writes the clip the clip
users post (3 s, two real faces, H.264), runs ``load_tests/locustfile.py`` headless for ``--seconds`` and
prints locust's table as Markdown. Exits with locust's exit code: 1 when a threshold failed (error rate,
p95; see the locustfile), so CI can gate on it. Arguments after ``--`` go to locust unchanged.
"""

from __future__ import annotations

import argparse
import csv
import subprocess
import sys
from pathlib import Path

from devstack import clips
from devstack.media import ROOT, ensure_media
from devstack.stack import gateway_process
from service.launcher.triton_local import LocalTriton

CLIP = ROOT / ".cache" / "load-media" / "clip.mp4"


def write_clip(media: Path) -> Path:
    """Two real faces for 3 s at 10 fps (800x360): ~15 frames analysed at the users' 5 fps."""
    CLIP.parent.mkdir(parents=True, exist_ok=True)
    CLIP.write_bytes(clips.encode(clips.two_people(media, count=30), fps=10))
    return CLIP


def parse_args(argv: list[str] | None) -> tuple[argparse.Namespace, list[str]]:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--seconds", type=int, default=60, help="how long locust runs")
    parser.add_argument("--users", type=int, default=6, help="concurrent simulated users (9 image : 1 clip)")
    parser.add_argument("--spawn-rate", type=float, default=2.0, help="users started per second")
    parser.add_argument("--csv", type=Path, default=ROOT / ".cache" / "locust" / "run", help="CSV prefix")
    args, rest = parser.parse_known_args(argv)
    return args, [arg for arg in rest if arg != "--"]


def locust_command(args: argparse.Namespace, url: str, extra: list[str]) -> list[str]:
    return [
        sys.executable, "-m", "locust", "-f", str(ROOT / "load_tests" / "locustfile.py"), "--headless",
        "--host", url, "-u", str(args.users), "-r", str(args.spawn_rate), "-t", f"{args.seconds}s",
        "--csv", str(args.csv), "--only-summary", "--clip", str(CLIP), *extra,
    ]  # fmt: skip


def markdown(stats_csv: Path) -> str:
    """locust's ``*_stats.csv`` as a Markdown table: requests, failures, percentiles, throughput."""
    columns = (
        "Name",
        "Request Count",
        "Failure Count",
        "50%",
        "95%",
        "99%",
        "Max Response Time",
        "Requests/s",
    )
    lines = ["| " + " | ".join(columns) + " |", "|" + "---|" * len(columns)]
    with stats_csv.open() as handle:
        for row in csv.DictReader(handle):
            cells = [
                row["Name"],
                *(f"{float(row[c]):.0f}" for c in columns[1:-1]),
                f"{float(row[columns[-1]]):.2f}",
            ]
            lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    args, extra = parse_args(argv)
    media = ensure_media()
    write_clip(media)
    args.csv.parent.mkdir(parents=True, exist_ok=True)
    with (
        LocalTriton(ROOT / "model_repository") as triton,
        gateway_process(triton.endpoints.grpc_url, args.csv.with_suffix(".gateway.log")) as (url, _process),
    ):
        code = subprocess.run(locust_command(args, url, extra), cwd=ROOT, check=False).returncode
    print(f"\nlocust {args.users} users, {args.seconds} s, exit code {code}")
    print(markdown(Path(f"{args.csv}_stats.csv")))
    return code


if __name__ == "__main__":
    sys.exit(main())
