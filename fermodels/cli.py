"""``python -m fermodels <command>``: one subcommand per job (export, import, train, evaluate).

Each subcommand is a ``_add_<name>(subparsers)`` that declares its arguments and sets ``handler`` to a
``_run_<name>(args) -> exit code`` function, so adding a command touches nothing else.
"""

from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Sequence
from pathlib import Path

from fermodels import registry
from fermodels.data import DATASET_NAMES, DatasetSpec
from fermodels.evaluate import CONFUSION_FILENAME, METRICS_FILENAME, evaluate
from fermodels.export import MetricsError, export_checkpoint, export_model
from fermodels.repository import CONFIG_FILENAME, LABELS_FILENAME, MODEL_FILENAME, README_FILENAME
from fermodels.train import OBJECTIVES, TrainOptions, train


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="fermodels", description="FER model tooling")
    subparsers = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    _add_export(subparsers)
    _add_export_detector(subparsers)
    _add_export_text(subparsers)
    _add_import(subparsers)
    _add_train(subparsers)
    _add_evaluate(subparsers)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    code: int = args.handler(args)
    return code


# ----------------------------------------------------------------------------- export


def _add_repository_arguments(parser: argparse.ArgumentParser) -> None:
    """Where every export command writes: the repository root, the version folder, overwrite or not."""
    parser.add_argument("--repository", type=Path, default=Path("model_repository"), help="repository root")
    parser.add_argument("--version", type=int, default=1, help="Triton model version (integer >= 1)")
    parser.add_argument("--force", action="store_true", help="overwrite an existing version")


def _add_export(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    parser = subparsers.add_parser("export", help="script a model into the Triton model repository")
    source = parser.add_mutually_exclusive_group(required=True)
    source.add_argument("--model", choices=registry.available(), help="a registry model (untrained/ported)")
    source.add_argument("--checkpoint", type=Path, help="trained weights: a checkpoint written by train")
    parser.add_argument(
        "--metrics", type=Path, help="evaluate's metrics.json of --checkpoint (default: next to it)"
    )
    _add_repository_arguments(parser)
    parser.add_argument("--seed", type=int, default=0, help="seed of the (untrained) initialisation")
    parser.add_argument("--max-queue-delay-us", type=int, default=2000, help="dynamic batching delay")
    parser.add_argument("--queue-timeout-us", type=int, default=5_000_000, help="queued request timeout")
    parser.add_argument("--max-queue-size", type=int, default=64, help="queued requests beyond: rejected")
    parser.add_argument(
        "--instance-count", type=int, help="model instances per device (default: the model's own, usually 1)"
    )
    parser.set_defaults(handler=_run_export)


def _run_export(args: argparse.Namespace) -> int:
    options = {
        "force": args.force,
        "max_queue_delay_us": args.max_queue_delay_us,
        "queue_timeout_us": args.queue_timeout_us,
        "max_queue_size": args.max_queue_size,
        "instance_count": args.instance_count,
    }
    try:
        if args.checkpoint is not None:
            model_dir = export_checkpoint(
                args.checkpoint, args.repository, args.version, metrics=args.metrics, **options
            )
        else:
            model, config = registry.build(args.model, seed=args.seed)
            model_dir = export_model(model, config, args.repository, args.version, **options)
    except (FileExistsError, MetricsError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    written = (model_dir / str(args.version) / MODEL_FILENAME, model_dir / CONFIG_FILENAME)
    for path in (*written, model_dir / LABELS_FILENAME, model_dir / README_FILENAME):
        print(f"wrote {path}")
    return 0


def _add_export_detector(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    parser = subparsers.add_parser(
        "export-detector", help="script MTCNN's P/R/O-Nets into the repository (FER_DETECTOR_BACKEND=triton)"
    )
    _add_repository_arguments(parser)
    parser.set_defaults(handler=_run_export_detector)


def _run_export_detector(args: argparse.Namespace) -> int:
    from fermodels.detector_export import export_detector

    try:
        folders = export_detector(args.repository, args.version, force=args.force)
    except FileExistsError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    for folder in folders:
        print(f"wrote {folder / str(args.version) / MODEL_FILENAME}, {folder / CONFIG_FILENAME}")
    return 0


def _add_export_text(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    parser = subparsers.add_parser(
        "export-text", help="script the text encoder (all-MiniLM-L6-v2) into the repository"
    )
    _add_repository_arguments(parser)
    parser.add_argument(
        "--write-tokenizer-asset",
        action="store_true",
        help="refresh fermodels/assets/minilm_tokenizer.json.gz",
    )
    parser.set_defaults(handler=_run_export_text)


def _run_export_text(args: argparse.Namespace) -> int:
    from fermodels.text_export import export_text_encoder

    try:
        folder = export_text_encoder(
            args.repository, args.version, force=args.force, write_tokenizer=args.write_tokenizer_asset
        )
    except FileExistsError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    print(f"wrote {folder / str(args.version) / MODEL_FILENAME}, {folder / CONFIG_FILENAME}")
    return 0


def _add_import(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    from fermodels.importing import FORMATS

    parser = subparsers.add_parser(
        "import", help="serve a published checkpoint file (read without running its code)"
    )
    parser.add_argument("--format", required=True, choices=sorted(FORMATS), help="the checkpoint's family")
    parser.add_argument("--checkpoint", type=Path, required=True, help="the file as the authors publish it")
    parser.add_argument("--name", required=True, help="the served (Triton) model name")
    parser.add_argument(
        "--dataset", help="the class set, where the format has several (affectnet7|affectnet8)"
    )
    parser.add_argument("--labels", help="comma-separated output order in canonical words (overrides)")
    parser.add_argument(
        "--arch",
        help="openclip only: the open_clip architecture (ViT-B-32-quickgelu, RN50, ...)",
    )
    _add_repository_arguments(parser)
    parser.set_defaults(handler=_run_import)


def _run_import(args: argparse.Namespace) -> int:
    from fermodels.importing import CheckpointImportError, ImportRequest, import_checkpoint
    from fermodels.importing.clip import TEXT_SUFFIX, TEXT_TOKENIZER_FILENAME

    labels = tuple(label.strip() for label in args.labels.split(",")) if args.labels else None
    request = ImportRequest(args.checkpoint, args.name, dataset=args.dataset, labels=labels, arch=args.arch)
    try:
        model_dir = import_checkpoint(
            args.format, request, args.repository, args.version, force=args.force, report=print
        )
    except CheckpointImportError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except FileExistsError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    written = (model_dir / str(args.version) / MODEL_FILENAME, model_dir / CONFIG_FILENAME)
    for path in (*written, model_dir / LABELS_FILENAME, model_dir / README_FILENAME):
        print(f"wrote {path}")
    text_dir = model_dir.with_name(f"{model_dir.name}{TEXT_SUFFIX}")
    if (text_dir / TEXT_TOKENIZER_FILENAME).is_file():  # a CLIP format: the text tower beside it
        for path in (text_dir / str(args.version) / MODEL_FILENAME, text_dir / CONFIG_FILENAME):
            print(f"wrote {path}")
        print(f"wrote {text_dir / TEXT_TOKENIZER_FILENAME}")
    return 0


# ----------------------------------------------------------------------------- train / evaluate


def _add_dataset_arguments(parser: argparse.ArgumentParser, default_split: str) -> None:
    parser.add_argument("--dataset", required=True, choices=DATASET_NAMES, help="layout, see fermodels.data")
    parser.add_argument("--data-root", type=Path, required=True, help="the dataset's root folder")
    parser.add_argument("--split", default=default_split, help="train | val | test (imagefolder: any folder)")
    parser.add_argument("--fold", type=int, default=1, help="DFEW fold (set_<fold>.csv), 1-5")
    parser.add_argument("--batch-size", type=int, default=64, help="samples per batch")
    parser.add_argument("--device", default="auto", help="auto (CUDA if available), cpu, cuda, cuda:1, ...")
    parser.add_argument("--num-workers", type=int, default=0, help="DataLoader worker processes")
    parser.add_argument("--no-progress", action="store_true", help="no tqdm progress bars")


def _dataset_spec(args: argparse.Namespace) -> DatasetSpec:
    return DatasetSpec(args.dataset, args.data_root, args.split, args.fold)


def _log_progress() -> None:
    # Per-epoch metrics and resume notices are INFO records of fermodels.train / fermodels.evaluate.
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")


def _add_train(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    parser = subparsers.add_parser("train", help="train a model; writes last.pt and best.pt (by val UAR)")
    parser.add_argument("--model", required=True, choices=registry.available(), help="model name")
    _add_dataset_arguments(parser, default_split="train")
    parser.add_argument("--val-split", default="test", help="split of the same dataset to validate on")
    parser.add_argument("--out-dir", type=Path, required=True, help="folder for checkpoints")
    parser.add_argument("--epochs", type=int, default=30, help="total epochs (a resumed run continues to it)")
    parser.add_argument("--lr", type=float, default=3e-4, help="AdamW peak learning rate")
    parser.add_argument("--weight-decay", type=float, default=0.05, help="AdamW weight decay")
    parser.add_argument("--warmup-epochs", type=int, default=1, help="linear warm-up before cosine decay")
    parser.add_argument("--seed", type=int, default=0, help="seed of initialisation, shuffling, augmentation")
    parser.add_argument("--balanced", action="store_true", help="sample classes equally often")
    parser.add_argument("--no-augment", action="store_true", help="no flip / shift jitter")
    parser.add_argument("--text-loss-weight", type=float, default=1.0, help="weight of the text-logit CE")
    parser.add_argument(
        "--objective",
        choices=OBJECTIVES,
        default="ce",
        help="ce | kefer (KE-FER, models with a text side) | compact (CE + centre pull)",
    )
    parser.add_argument("--center-weight", type=float, default=0.01, help="compact: centre-pull weight")
    parser.add_argument("--alignment-weight", type=float, default=1.0, help="kefer: alignment weight")
    parser.add_argument("--self-contrast-weight", type=float, default=1.0, help="kefer: self-contrast weight")
    parser.add_argument("--resume", type=Path, help="continue from this checkpoint (usually last.pt)")
    parser.set_defaults(handler=_run_train)


def _run_train(args: argparse.Namespace) -> int:
    _log_progress()
    options = TrainOptions(
        epochs=args.epochs,
        batch_size=args.batch_size,
        lr=args.lr,
        weight_decay=args.weight_decay,
        warmup_epochs=args.warmup_epochs,
        seed=args.seed,
        device=args.device,
        num_workers=args.num_workers,
        balanced=args.balanced,
        augment=not args.no_augment,
        text_loss_weight=args.text_loss_weight,
        objective=args.objective,
        center_weight=args.center_weight,
        alignment_weight=args.alignment_weight,
        self_contrast_weight=args.self_contrast_weight,
        val_split=args.val_split,
        progress=not args.no_progress,
    )
    result = train(args.model, _dataset_spec(args), args.out_dir, options, resume=args.resume)
    print(f"trained {result.epochs_run} epochs; best validation UAR {result.best_uar:.4f}")
    print(f"wrote {result.last}\nwrote {result.best}")
    return 0


def _add_evaluate(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    parser = subparsers.add_parser("evaluate", help="metrics.json and confusion.png of a checkpoint")
    parser.add_argument("--checkpoint", type=Path, required=True, help="a checkpoint written by train")
    _add_dataset_arguments(parser, default_split="test")
    parser.add_argument("--out-dir", type=Path, help="report folder (default: the checkpoint's folder)")
    parser.set_defaults(handler=_run_evaluate)


def _run_evaluate(args: argparse.Namespace) -> int:
    _log_progress()
    out_dir = args.out_dir or args.checkpoint.parent
    metrics = evaluate(
        args.checkpoint,
        _dataset_spec(args),
        out_dir,
        batch_size=args.batch_size,
        device=args.device,
        num_workers=args.num_workers,
        progress=not args.no_progress,
    )
    print(f"WAR {metrics['war']:.4f}  UAR {metrics['uar']:.4f}  ({metrics['num_samples']} samples)")
    print(f"wrote {out_dir / METRICS_FILENAME}\nwrote {out_dir / CONFUSION_FILENAME}")
    return 0
