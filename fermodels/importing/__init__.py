"""``python -m fermodels import``: a foreign checkpoint file -> a served model, without running its code.

``FORMATS`` is the table of families (``--format``); each entry is an ``ImportFormat`` (see ``base``):
its reader goes through the one restricted unpickler (``reader``), its builder sizes the architecture from
the weights and loads them strictly. ``import_checkpoint`` then writes the model exactly as ``export`` does
(``export_model``: verified TorchScript, config.pbtxt, labels.txt, README), first into a temporary folder
beside the repository, and moves the files into place only when everything succeeded.

To add a family: write ``read_x(path) -> StateDict`` and ``build_x(state, request) -> Built`` and add
``ImportFormat(name="x", read=..., build=..., defaults={...}, provenance="...")`` to ``_ENTRIES``.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import tempfile
from collections.abc import Callable
from dataclasses import fields, replace
from pathlib import Path
from typing import Any, Final

from fermodels.contract import ModelConfig, file_sha256
from fermodels.export import check_version, export_model
from fermodels.importing.base import Built, BuiltTextEncoder, ImportFormat, ImportRequest, load_strict
from fermodels.importing.clip import HF_CLIP, OPENCLIP, text_name
from fermodels.importing.hsemotion import HSEMOTION
from fermodels.importing.poster import POSTER
from fermodels.importing.poster_v2 import POSTER_V2
from fermodels.importing.reader import (
    CheckpointImportError,
    CorruptCheckpointError,
    InertRecord,
    NotACheckpointError,
    StateDictMismatchError,
    UnsafeCheckpointError,
    module_state_dict,
    read_checkpoint_file,
    tensor_mapping,
)
from fermodels.repository import CONFIG_FILENAME, LABELS_FILENAME, MODEL_FILENAME, README_FILENAME

__all__ = [
    "FORMATS",
    "Built",
    "BuiltTextEncoder",
    "CheckpointImportError",
    "CorruptCheckpointError",
    "ImportFormat",
    "ImportRequest",
    "InertRecord",
    "NotACheckpointError",
    "StateDictMismatchError",
    "UnsafeCheckpointError",
    "import_checkpoint",
    "load_strict",
    "module_state_dict",
    "read_checkpoint_file",
    "tensor_mapping",
]

_ENTRIES: Final = (HSEMOTION, POSTER, POSTER_V2, OPENCLIP, HF_CLIP)
FORMATS: Final[dict[str, ImportFormat]] = {entry.name: entry for entry in _ENTRIES}
_CONFIG_FIELDS: Final = frozenset(f.name for f in fields(ModelConfig))


def imported_config(entry: ImportFormat, built: Built, request: ImportRequest, sha256: str) -> ModelConfig:
    """The family's defaults, then what the file decided, then the request's name and the provenance."""
    values: dict[str, Any] = {**entry.defaults, **built.config}
    unknown = sorted(set(values) - _CONFIG_FIELDS)
    if unknown:
        raise TypeError(f"format {entry.name!r} sets unknown ModelConfig fields {unknown}")
    values.update(
        name=request.name,
        trained=True,
        weights=f"{request.checkpoint.name} (sha256 {sha256}), {entry.provenance}",
    )
    try:
        return ModelConfig(**values)
    except ValueError as exc:
        raise CheckpointImportError(f"invalid model config: {exc}") from None


def import_checkpoint(
    format_name: str,
    request: ImportRequest,
    repository: Path,
    version: int = 1,
    *,
    force: bool = False,
    report: Callable[[str], None] = lambda _line: None,
) -> Path:
    """Read, build and export one checkpoint; returns ``<repository>/<name>``. The repository is written
    only after the model was built, scripted and verified; CheckpointImportError otherwise."""
    try:
        entry = FORMATS[format_name]
    except KeyError:
        raise CheckpointImportError(f"unknown format {format_name!r}; known: {', '.join(FORMATS)}") from None
    model_dir = Path(repository) / request.name
    for name in (request.name, text_name(request.name)):
        target = Path(repository) / name / str(check_version(version)) / MODEL_FILENAME
        if target.exists() and not force:
            raise FileExistsError(f"{target} already exists; pass force=True (CLI: --force) to overwrite it")
    state = entry.read(request.checkpoint)
    built = entry.build(state, request)
    if built.dropped:
        report(f"dropped {len(built.dropped)} keys of modules the authors' forward never calls:")
        for key in built.dropped:
            report(f"  {key}")
    sha256 = _source_sha256(request.checkpoint)
    config = imported_config(entry, built, request, sha256)
    Path(repository).mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".import-{request.name}-", dir=repository))
    try:
        staged = export_model(built.model, config, staging, version, force=True)
        if built.text_encoder is not None:
            text_dir = Path(repository) / text_name(request.name)
            staged_text = _stage_text_encoder(built.text_encoder, entry, request, sha256, staging, version)
            _move_text_into_place(staged_text, text_dir, version, built.text_encoder.config.tokenizer)
        _move_into_place(staged, model_dir, version)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return model_dir


def _source_sha256(checkpoint: Path) -> str:
    """The file's sha256; a folder's (hf-clip) is that of its weights file."""
    if Path(checkpoint).is_dir():
        for name in ("model.safetensors", "pytorch_model.bin"):
            if (Path(checkpoint) / name).is_file():
                return file_sha256(Path(checkpoint) / name)
    return file_sha256(checkpoint)


def _stage_text_encoder(
    text: BuiltTextEncoder,
    entry: ImportFormat,
    request: ImportRequest,
    sha256: str,
    staging: Path,
    version: int,
) -> Path:
    from fermodels.text_export import write_text_tower

    config = replace(
        text.config,
        name=text_name(request.name),
        tokenizer_sha256=hashlib.sha256(text.tokenizer).hexdigest(),
        weights=f"{request.checkpoint.name} (sha256 {sha256}), {entry.provenance}",
    )
    folder = staging / config.name
    write_text_tower(text.scripted, text.module, config, text.tokenizer, text.sample, folder, version)
    return folder


def _move_text_into_place(staged: Path, text_dir: Path, version: int, tokenizer: str) -> None:
    (text_dir / str(version)).mkdir(parents=True, exist_ok=True)
    os.replace(staged / str(version) / MODEL_FILENAME, text_dir / str(version) / MODEL_FILENAME)
    for name in (tokenizer, CONFIG_FILENAME):
        os.replace(staged / name, text_dir / name)


def _move_into_place(staged: Path, model_dir: Path, version: int) -> None:
    # The weights first, then the files that describe them: each rename is atomic on one file system.
    (model_dir / str(version)).mkdir(parents=True, exist_ok=True)
    os.replace(staged / str(version) / MODEL_FILENAME, model_dir / str(version) / MODEL_FILENAME)
    for name in (CONFIG_FILENAME, LABELS_FILENAME, README_FILENAME):
        os.replace(staged / name, model_dir / name)
