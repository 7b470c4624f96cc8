"""`python -m fer_client predict|stream|jobs|models|health`: the service from a shell, for many files.

    python -m fer_client predict photos/ clip.mp4 --table --annotate out/ --concurrency 4
    python -m fer_client stream Megamind.avi --fps 10
    python -m fer_client models
    python -m fer_client health
    python -m fer_client jobs submit interview.mp4 --wait --csv --out interview.csv

Still images go to the service in JSON batches (POST /v1/predict, split by GET /v1/limits): one round trip
for many photos; clips and GIFs go one request per file (POST /predict).

Results go to stdout (table, CSV or JSON), progress and the service's warnings to stderr. Exit status: 0
when every file was analysed, 1 when any failed, 2 for bad arguments.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import TextIO

from fer_client.client import AsyncFerClient, FerClient, Result, plan
from fer_client.config import ClientSettings
from fer_client.errors import FerError
from fer_client.jobs_cli import add_jobs_parser, run_jobs
from fer_client.output import Outcome, csv_text, json_text, models_table, rows, table
from fer_client.protocol import PredictOptions
from fer_client.stream import Answer, PeopleTable, Player, video_frames

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


# Sent in JSON batches when there are several: still formats only (a GIF may be a clip).
STILL_SUFFIXES = frozenset([".jpg", ".jpeg", ".png", ".webp", ".bmp", ".tif", ".tiff"])


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
    predict.add_argument(
        "--one-by-one",
        action="store_true",
        help="one multipart request per file (default: still images go in JSON batches, POST /v1/predict)",
    )
    stream = commands.add_parser("stream", help="play a video file or camera as a live stream")
    stream.add_argument("source", help="a video file, or a V4L2 camera such as /dev/video0")
    stream.add_argument("--fps", type=float, default=10.0, help="frames sent per second (default 10)")
    stream.add_argument("--model", help="image model (default: the server's)")
    stream.add_argument("--prompt", action="append", default=[], help="custom text prompt (repeatable)")
    stream.add_argument("--max-side", type=int, default=0, help="shrink frames to this longest side")
    stream.add_argument("--json", action="store_true", help="print every answer as a JSON line")
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


class Progress:
    """One line per finished file on the log: ``[done/total] path: summary``."""

    def __init__(self, total: int, log: TextIO) -> None:
        self.total, self.done, self.log = total, 0, log

    def report(self, outcome: Outcome) -> Outcome:
        self.done += 1
        print(f"[{self.done}/{self.total}] {outcome.path}: {summary(outcome)}", file=self.log, flush=True)
        return outcome


def batchable(files: Sequence[Path], args: argparse.Namespace) -> list[int]:
    """The files sent in JSON batches: still images (by suffix; the server still sniffs the bytes), when
    there are two or more of them and --one-by-one was not given."""
    stills = [i for i, path in enumerate(files) if path.suffix.lower() in STILL_SUFFIXES and path.is_file()]
    return [] if args.one_by_one or len(stills) < 2 else stills


async def predict_all(
    files: Sequence[Path], options: PredictOptions, args: argparse.Namespace, log: TextIO
) -> list[Outcome]:
    """Still images in JSON batches split by the server's limits (fewer round trips), everything else
    (clips, GIFs, a photo too large for a batch) one request per file; ``--concurrency`` requests at once."""
    limit, progress = asyncio.Semaphore(max(1, args.concurrency)), Progress(len(files), log)
    outcomes: dict[int, Outcome] = {}

    async def one(client: AsyncFerClient, index: int) -> None:
        async with limit:
            outcomes[index] = progress.report(await analyse(client, files[index], options, args.annotate))

    async def batch(client: AsyncFerClient, chunk: list[int]) -> None:
        async with limit:
            found = await analyse_batch(client, [files[i] for i in chunk], options, args.annotate)
        for index, outcome in zip(chunk, found, strict=True):
            outcomes[index] = progress.report(outcome)

    async with AsyncFerClient(settings=settings_from(args)) as client:
        stills = batchable(files, args)
        limits = await client.limits() if stills else None
        chunks = (
            [[stills[i] for i in c] for c in plan([files[i] for i in stills], limits)[0]] if limits else []
        )
        singles = sorted({*range(len(files))} - {i for chunk in chunks for i in chunk})
        await asyncio.gather(*(batch(client, c) for c in chunks), *(one(client, i) for i in singles))
    return [outcomes[index] for index in range(len(files))]


async def analyse_batch(
    client: AsyncFerClient, paths: Sequence[Path], options: PredictOptions, out: Path | None
) -> list[Outcome]:
    """One JSON batch; each image's outcome (a batch refused as a whole: its error for each image)."""
    try:
        found = await client.predict_batch(paths, options)
    except FerError as error:
        return [Outcome(str(path), error=error) for path in paths]
    except OSError as error:
        return [Outcome(str(path), error=FerError(0, "io_error", str(error))) for path in paths]
    outcomes = []
    for path, item in zip(paths, found, strict=True):
        if isinstance(item, FerError):
            outcomes.append(Outcome(str(path), error=item))
        else:
            outcomes.append(await annotated(client, path, options, out, item))
    return outcomes


async def annotated(
    client: AsyncFerClient, path: Path, options: PredictOptions, out: Path | None, result: Result
) -> Outcome:
    """The file's outcome, its annotated picture written first when asked for (one /annotate request)."""
    try:
        if out is not None:
            picture = await client.annotate(path, options)
            (out / f"{path.stem}.annotated.jpg").write_bytes(picture)
    except FerError as error:
        return Outcome(str(path), error=error)
    except OSError as error:
        return Outcome(str(path), error=FerError(0, "io_error", str(error)))
    return Outcome(str(path), result=result)


async def analyse(client: AsyncFerClient, path: Path, options: PredictOptions, out: Path | None) -> Outcome:
    try:
        result = await client.predict(path, options)
    except FerError as error:
        return Outcome(str(path), error=error)
    except OSError as error:  # unreadable file
        return Outcome(str(path), error=FerError(0, "io_error", str(error)))
    return await annotated(client, path, options, out, result)


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


def run_stream(args: argparse.Namespace, out: TextIO, log: TextIO) -> int:
    settings = settings_from(args)
    table = PeopleTable()

    def show(answer: Answer, latency: float | None) -> None:
        line = json.dumps(answer) if args.json else table.update(answer, latency)
        if line is not None:
            print(line, file=out, flush=True)

    options = {"model": args.model, "prompts": args.prompt or None, "fps": args.fps}
    player = Player(
        settings.url,
        api_key=settings.api_key.get_secret_value() if settings.api_key else None,
        options={name: value for name, value in options.items() if value is not None},
        on_answer=show,
    )
    stats = asyncio.run(player.play(video_frames(args.source, args.fps, args.max_side)))
    latencies = sorted(stats.latencies_s)
    p50 = f"{latencies[len(latencies) // 2] * 1000:.0f} ms" if latencies else "-"
    print(
        f"{stats.sent} frames sent, {stats.answered} answered, {stats.dropped} dropped, {stats.errors} "
        f"errors in {stats.seconds:.1f} s; median latency {p50}",
        file=log,
    )
    if stats.close_code is not None:
        print(f"fer-client: the stream was closed: {stats.close_code} {stats.close_reason}", file=log)
        return 1
    return 0


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
        if args.command == "stream":
            return run_stream(args, out, log)
        if args.command == "models":
            return run_models(args, out)
        if args.command == "jobs":
            with FerClient(settings=settings_from(args)) as client:
                return run_jobs(client, args, out, log)
        return run_health(args, out)
    except FerError as error:  # models/health: the service is down or refused
        print(f"fer-client: {error.code}: {error.message}", file=log)
        return 1
