"""``python -m fermodels <command>``: one subcommand per job (export now; train / evaluate to follow).

Each subcommand is a ``_add_<name>(subparsers)`` that declares its arguments and sets ``handler`` to a
``_run_<name>(args) -> exit code`` function, so adding a command touches nothing else.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path

from fermodels import registry
from fermodels.export import CONFIG_FILENAME, LABELS_FILENAME, MODEL_FILENAME, export_image_model


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="fermodels", description="FER model tooling")
    subparsers = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    _add_export(subparsers)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    code: int = args.handler(args)
    return code


# ----------------------------------------------------------------------------- export


def _add_export(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    parser = subparsers.add_parser("export", help="script a model into the Triton model repository")
    parser.add_argument("--model", required=True, choices=registry.available(), help="served model name")
    parser.add_argument("--repository", type=Path, default=Path("model_repository"), help="repository root")
    parser.add_argument("--version", type=int, default=1, help="Triton model version (integer >= 1)")
    parser.add_argument("--force", action="store_true", help="overwrite an existing version")
    parser.add_argument("--seed", type=int, default=0, help="seed of the (untrained) initialisation")
    parser.add_argument("--max-queue-delay-us", type=int, default=2000, help="dynamic batching delay")
    parser.add_argument("--queue-timeout-us", type=int, default=1_000_000, help="queued request timeout")
    parser.add_argument("--max-queue-size", type=int, default=64, help="queued requests beyond: rejected")
    parser.add_argument("--instance-count", type=int, default=1, help="model instances per device")
    parser.set_defaults(handler=_run_export)


def _run_export(args: argparse.Namespace) -> int:
    model, config = registry.build(args.model, seed=args.seed)
    try:
        model_dir = export_image_model(
            model,
            config,
            args.repository,
            args.version,
            force=args.force,
            max_queue_delay_us=args.max_queue_delay_us,
            queue_timeout_us=args.queue_timeout_us,
            max_queue_size=args.max_queue_size,
            instance_count=args.instance_count,
        )
    except FileExistsError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    written = (model_dir / str(args.version) / MODEL_FILENAME, model_dir / CONFIG_FILENAME)
    for path in (*written, model_dir / LABELS_FILENAME):
        print(f"wrote {path}")
    return 0
