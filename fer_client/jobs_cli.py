"""`fer-client jobs submit|status|wait|result|cancel|list`: long videos as jobs, with a progress bar.

fer-client jobs submit interview.mp4 --fps 2 --wait --csv interview.csv
fer-client jobs status 9f1c...   |   fer-client jobs wait 9f1c...   |   fer-client jobs cancel 9f1c...
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any, TextIO

from fer_client.client import FerClient
from fer_client.protocol import PredictOptions
from service.schemas import JobStatus

BAR_WIDTH = 30


def add_jobs_parser(commands: Any) -> None:
    jobs = commands.add_parser("jobs", help="long videos as asynchronous jobs")
    actions = jobs.add_subparsers(dest="action", required=True)
    submit = actions.add_parser("submit", help="upload a video as a job (prints its id)")
    submit.add_argument("path", type=Path)
    submit.add_argument("--fps", type=float, help="frames analysed per second of video")
    submit.add_argument("--model", help="image model (default: the server's)")
    submit.add_argument("--wait", action="store_true", help="follow it with a progress bar to the end")
    for name in ("status", "wait", "cancel"):
        actions.add_parser(name).add_argument("job_id")
    result = actions.add_parser("result", help="the finished job's clip response (JSON) or --csv table")
    result.add_argument("job_id")
    result.add_argument("--csv", action="store_true", help="one row per analysed frame per person")
    for parser in (submit, result):
        parser.add_argument("--out", type=Path, help="write the result here (JSON, or CSV with --csv)")
    submit.add_argument("--csv", action="store_true", help="with --wait: the result as the CSV table")
    actions.add_parser("list", help="your jobs")


def progress_bar(status: JobStatus) -> str:
    progress = status.progress
    filled = round(BAR_WIDTH * progress.percent / 100.0)
    eta = f" ETA {progress.eta_s:.0f} s" if progress.eta_s is not None else ""
    frames = f"{progress.frames_analysed}/{progress.frames_expected} frames"
    bar = "#" * filled + "." * (BAR_WIDTH - filled)
    return f"\r[{bar}] {progress.percent:5.1f}% {frames}{eta} {status.state}"


def run_jobs(client: FerClient, args: argparse.Namespace, out: TextIO, log: TextIO) -> int:
    if args.action == "list":
        for job in client.jobs().jobs:
            print(f"{job.id}  {job.state:9}  {job.progress.percent:5.1f}%", file=out)
        return 0
    if args.action == "submit":
        options = PredictOptions(model=args.model, fps=args.fps)
        status = client.submit_job(args.path, options)
        print(status.id, file=out)
        return follow(client, status.id, args, out, log) if args.wait else 0
    if args.action == "status":
        print(client.job(args.job_id).model_dump_json(indent=2), file=out)
        return 0
    if args.action == "cancel":
        print(client.cancel_job(args.job_id).state, file=out)
        return 0
    if args.action == "wait":
        return follow(client, args.job_id, args, out, log)
    return write_result(client, args.job_id, args, out)


def follow(client: FerClient, job_id: str, args: argparse.Namespace, out: TextIO, log: TextIO) -> int:
    status = client.wait_job(job_id, lambda s: print(progress_bar(s), end="", file=log, flush=True))
    print(file=log)
    if status.state != "succeeded":
        error = f": {status.error.code}: {status.error.message}" if status.error else ""
        print(f"fer-client: job {job_id} {status.state}{error}", file=log)
        return 1
    return (
        write_result(client, job_id, args, out) if getattr(args, "out", None) or args.action == "wait" else 0
    )


def write_result(client: FerClient, job_id: str, args: argparse.Namespace, out: TextIO) -> int:
    data = client.job_result(job_id, csv=bool(getattr(args, "csv", False)))
    if getattr(args, "out", None):
        args.out.write_bytes(data)
    else:
        print(data.decode("utf-8"), file=out)
    return 0
