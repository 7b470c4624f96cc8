"""`python -m fer_client predict|models|health|jobs`: the service from a shell, over many files at once.

    python -m fer_client predict photos/ clip.mp4 --table --annotate out/ --concurrency 4
    python -m fer_client models
    python -m fer_client health
    python -m fer_client jobs submit interview.mp4 --wait --csv --out interview.csv

Results go to stdout (table, CSV or JSON), progress and the service's warnings to stderr. Exit status: 0
when every file was analysed, 1 when any failed, 2 for bad arguments.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import TextIO

from fer_client.client import AsyncFerClient, FerClient
from fer_client.config import ClientSettings
from fer_client.errors import FerError
from fer_client.jobs_cli import add_jobs_parser, run_jobs
from fer_client.output import Outcome, csv_text, json_text, models_table, rows, table
from fer_client.protocol import PredictOptions

# What a folder contributes: the suffixes the service reads (it still sniffs the bytes, not the name).
MEDIA_SUFFIXES = frozenset(
    [
        ".jpg",
        ".jpeg",
        ".png",
        ".webp",
        ".bmp",
        ".tif",
        ".tiff",
        ".gif",
        ".mp4",
        ".mov",
        ".m4v",
        ".webm",
        ".mkv",
        ".avi",
    ]
)


def parser() -> argparse.ArgumentParser:
    root = argparse.ArgumentParser(prog="fer-client", description="Client of the FER service.")
    root.add_argument("--url", help="gateway base URL (default: FER_CLIENT_URL or http://127.0.0.1:8080)")
    root.add_argument("--timeout", type=float, help="seconds per request (default: FER_CLIENT_TIMEOUT_S)")
    commands = root.add_subparsers(dest="command", required=True)
    predict = commands.add_parser("predict", help="analyse photos, clips or folders of them")
    predict.add_argument("paths", nargs="+", type=Path, help="files, or folders searched recursively")
    shape = predict.add_mutually_exclusive_group()
    shape.add_argument("--table", dest="format", action="store_const", const="table", help="(default)")
    shape.add_argument("--csv", dest="format", action="store_const", const="csv")
    shape.add_argument("--json", dest="format", action="store_const", const="json")
    predict.add_argument("--annotate", type=Path, metavar="OUTDIR", help="also write annotated pictures")
    predict.add_argument("--prompt", action="append", default=[], help="custom text prompt (repeatable)")
    predict.add_argument("--model", help="image model (default: the server's)")
    predict.add_argument("--fps", type=float, help="clip frames analysed per second")
    predict.add_argument("--concurrency", type=int, default=2, help="requests in flight (default 2)")
    commands.add_parser("models", help="the served models and whether their weights are trained")
    commands.add_parser("health", help="readiness of the gateway, Triton and every model")
    add_jobs_parser(commands)
    return root


def media_files(paths: Iterable[Path]) -> list[Path]:
    """Files as given (whatever their suffix), and folders' media files, recursively, in sorted order."""
    found: list[Path] = []
    for path in paths:
        if path.is_dir():
            found += sorted(p for p in path.rglob("*") if p.is_file() and p.suffix.lower() in MEDIA_SUFFIXES)
        else:
            found.append(path)
    return found


def settings_from(args: argparse.Namespace) -> ClientSettings:
    base = ClientSettings()
    overrides = {"url": args.url, "timeout_s": args.timeout}
    chosen = {name: value for name, value in overrides.items() if value is not None}
    return ClientSettings.model_validate({**base.model_dump(), **chosen}) if chosen else base


async def predict_all(
    files: Sequence[Path], options: PredictOptions, args: argparse.Namespace, log: TextIO
) -> list[Outcome]:
    limit = asyncio.Semaphore(max(1, args.concurrency))
    done = 0

    async def one(client: AsyncFerClient, path: Path) -> Outcome:
        nonlocal done
        async with limit:
            outcome = await analyse(client, path, options, args.annotate)
        done += 1
        print(f"[{done}/{len(files)}] {path}: {summary(outcome)}", file=log, flush=True)
        return outcome

    async with AsyncFerClient(settings=settings_from(args)) as client:
        return list(await asyncio.gather(*(one(client, path) for path in files)))


async def analyse(client: AsyncFerClient, path: Path, options: PredictOptions, out: Path | None) -> Outcome:
    try:
        result = await client.predict(path, options)
        if out is not None:
            picture = await client.annotate(path, options)
            (out / f"{path.stem}.annotated.jpg").write_bytes(picture)
    except FerError as error:
        return Outcome(str(path), error=error)
    except OSError as error:  # unreadable file, or OUTDIR not writable
        return Outcome(str(path), error=FerError(0, "io_error", str(error)))
    return Outcome(str(path), result=result)


def summary(outcome: Outcome) -> str:
    if outcome.error is not None:
        return f"error {outcome.error.code}: {outcome.error.message}"
    if outcome.result is None:
        return "no result"
    if outcome.result.media == "video":
        return f"{outcome.result.summary.people} person(s)"
    return f"{len(outcome.result.faces)} face(s)"


def warnings_of(outcomes: Sequence[Outcome]) -> list[str]:
    """Each distinct warning once (an untrained model's warning would otherwise repeat per file)."""
    seen: dict[str, None] = {}
    for outcome in outcomes:
        for warning in outcome.result.warnings if outcome.result else []:
            seen.setdefault(warning)
    return list(seen)


def render(outcomes: Sequence[Outcome], fmt: str) -> str:
    if fmt == "json":
        return json_text(outcomes)
    records = [record for outcome in outcomes for record in rows(outcome)]
    return csv_text(records).rstrip("\n") if fmt == "csv" else table(records)


def run_predict(args: argparse.Namespace, out: TextIO, log: TextIO) -> int:
    files = media_files(args.paths)
    if not files:
        print("fer-client: no media files found", file=log)
        return 2
    if args.annotate is not None:
        args.annotate.mkdir(parents=True, exist_ok=True)
    options = PredictOptions(model=args.model, prompts=tuple(args.prompt), fps=args.fps)
    outcomes = asyncio.run(predict_all(files, options, args, log))
    for warning in warnings_of(outcomes):
        print(f"warning: {warning}", file=log)
    print(render(outcomes, args.format or "table"), file=out)
    return 1 if any(outcome.error for outcome in outcomes) else 0


def run_models(args: argparse.Namespace, out: TextIO) -> int:
    with FerClient(settings=settings_from(args)) as client:
        print(models_table(client.models()), file=out)
    return 0


def run_health(args: argparse.Namespace, out: TextIO) -> int:
    with FerClient(settings=settings_from(args)) as client:
        health = client.health()
    print(f"status: {health.status}", file=out)
    for name, ok in health.checks.items():
        print(f"  {name}: {'ok' if ok else 'FAILING'}", file=out)
    return 0 if health.status == "ok" else 1


def main(argv: Sequence[str] | None = None, out: TextIO = sys.stdout, log: TextIO = sys.stderr) -> int:
    args = parser().parse_args(argv)
    try:
        if args.command == "predict":
            return run_predict(args, out, log)
        if args.command == "models":
            return run_models(args, out)
        if args.command == "jobs":
            with FerClient(settings=settings_from(args)) as client:
                return run_jobs(client, args, out, log)
        return run_health(args, out)
    except FerError as error:  # models/health: the service is down or refused
        print(f"fer-client: {error.code}: {error.message}", file=log)
        return 1
