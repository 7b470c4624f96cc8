"""``--format openclip`` and ``--format hf-clip``: CLIP checkpoints as two served models.

- ``<name>``: the image tower as a face model (``fermodels.models.clip.ClipZeroShot``): face crops RGB
  [0, 1] -> CLIP's mean/std inside the TorchScript -> unit image embedding (``OUTPUT__1``); its expression
  distribution is CLIP zero-shot, ``softmax(logit_scale.exp() * cos(image, prompt_c))`` over the canonical
  expression prompts (``prompts_for(labels)``), embedded once here by the checkpoint's own text tower and
  baked in as a constant matrix; ``OUTPUT__2`` is the true cosine with each prompt. Its config says
  ``similarity="clip"`` and names ``<name>_text`` as its ``text_encoder``.
- ``<name>_text``: the text tower as a text-encoder model (ids + mask -> unit embeddings), with the
  checkpoint's tokenizer as a tokenizers-library ``tokenizer.json`` beside it (sha256 in its config), so the
  gateway embeds a caller's prompts with the same CLIP.

openclip: a plain state dict (``torch.save(model.state_dict())``, ``open_clip_pytorch_model.bin`` or
``open_clip_model.safetensors`` from the hub) or an OpenCLIP training checkpoint (``{"epoch", "name",
"state_dict", "optimizer", ...}``, keys maybe ``module.``-prefixed), read by the restricted reader; the file
does not say its architecture, so ``--arch`` names it and ``open_clip.create_model(arch, pretrained=None)``
builds it. OpenAI's own release (``ViT-B-32.pt``, a ``torch.jit.save`` archive in float16) is read for
its weights only: the pickled module tree through the restricted reader (``torchscript_state_dict``), never
its compiled code; the three shape records OpenAI's archives carry (``input_resolution``,
``context_length``, ``vocab_size``) are dropped as ``open_clip.build_model_from_openai_state_dict`` drops
them, and float16 weights load into the float32 tower. Only architectures with OpenAI's BPE tokenizer
(``open_clip.tokenize``) and a plain text tower are accepted. Its ``tokenizer.json`` is built from
open_clip's bundled BPE vocabulary; the one step the tokenizers library cannot express (ftfy / HTML
cleaning) is ``TextEncoderConfig.clean = "openclip"``, applied by the gateway before the tokenizer.

hf-clip: a ``save_pretrained`` folder of ``transformers.CLIPModel``: ``config.json``, ``model.safetensors``
(or ``pytorch_model.bin``, through the restricted reader), ``tokenizer.json`` (the fast tokenizer's file,
used as it is).
"""

from __future__ import annotations

import json
import logging
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Final

import torch

from fermodels.contract import (
    CANONICAL_LABELS,
    CLIP_MEAN,
    CLIP_STD,
    CLIP_WINDOW,
    TextEncoderConfig,
    prompts_for,
)
from fermodels.export import torchscript_deprecation_silenced
from fermodels.importing.base import Built, BuiltTextEncoder, ImportFormat, ImportRequest, load_strict
from fermodels.importing.reader import (
    CheckpointImportError,
    CorruptCheckpointError,
    NotACheckpointError,
    StateDict,
    is_torchscript_archive,
    read_checkpoint_file,
    tensor_mapping,
    torchscript_state_dict,
    training_state_dict,
)
from fermodels.models.clip import (
    ClipZeroShot,
    HfClipImageTower,
    HfClipTextFeatures,
    OpenClipImageTower,
    OpenClipTextFeatures,
    PaddedTextEncoder,
)

TEXT_SUFFIX: Final = "_text"
TEXT_TOKENIZER_FILENAME: Final = "tokenizer.json"
OPENCLIP_PROVENANCE: Final = (
    "an OpenCLIP checkpoint (model code: mlfoundations/open_clip, MIT; the weights' licence is their "
    "publisher's: OpenAI CLIP MIT, LAION OpenCLIP MIT)"
)
HF_PROVENANCE: Final = "a transformers CLIPModel folder (the weights' licence is their publisher's)"
# open_clip's own pre-token pattern (tokenizer.SimpleTokenizer), after its lower-casing clean.
OPENCLIP_PATTERN: Final = r"""'s|'t|'re|'ve|'m|'ll|'d|[\p{L}]+|[\p{N}]|[^\s\p{L}\p{N}]+"""
SOT, EOT = "<start_of_text>", "<end_of_text>"
_SAMPLE_PROMPTS: Final = ("a face", "a photo of a person making a happy facial expression.")


def clip_labels(request: ImportRequest) -> tuple[str, ...]:
    labels = request.labels or CANONICAL_LABELS
    unknown = [label for label in labels if label not in CANONICAL_LABELS]
    if unknown:
        raise CheckpointImportError(f"--labels {unknown} are not canonical labels {CANONICAL_LABELS}")
    return tuple(labels)


def text_name(name: str) -> str:
    return f"{name}{TEXT_SUFFIX}"


@contextmanager
def _quiet() -> Iterator[None]:
    """open_clip logs a warning for pretrained=None and tracing warns about Python values; neither is news."""
    logger = logging.getLogger()
    level = logger.level
    logger.setLevel(logging.ERROR)
    try:
        with warnings.catch_warnings(), torchscript_deprecation_silenced():
            warnings.simplefilter("ignore")
            yield
    finally:
        logger.setLevel(level)


def _face_config(
    request: ImportRequest, architecture: str, labels: tuple[str, ...], size: int, dim: int, **extra: Any
) -> dict[str, Any]:
    return {
        "architecture": architecture,
        "input_size": size,
        "labels": labels,
        "prompts": prompts_for(labels),
        "text_encoder": text_name(request.name),
        "similarity": "clip",
        "embed_dim": dim,
        "crop_window": CLIP_WINDOW,
        "accuracy": "not measured (CLIP zero-shot over the expression prompts; no FER evaluation)",
        **extra,
    }


# ----------------------------------------------------------------------------- openclip


# Not weights: the shapes OpenAI's TorchScript archives record as tensors (open_clip drops them too).
OPENAI_SHAPE_RECORDS: Final = ("input_resolution", "context_length", "vocab_size")


def read_openclip(path: Path) -> StateDict:
    """The weights of a state dict / OpenCLIP training checkpoint (``.safetensors`` read by safetensors) or
    of OpenAI's TorchScript release."""
    path = Path(path)
    if path.suffix == ".safetensors":
        return _read_safetensors(path)
    if is_torchscript_archive(path):
        state = torchscript_state_dict(path)
        return {key: value for key, value in state.items() if key not in OPENAI_SHAPE_RECORDS}
    return training_state_dict(path, "state_dict", "an OpenCLIP state dict or training checkpoint")


def _read_safetensors(path: Path) -> StateDict:
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    if not path.is_file():
        raise NotACheckpointError(f"{path} does not exist or is not a file")
    try:
        return dict(load_file(str(path)))
    except (SafetensorError, OSError, ValueError) as exc:
        message = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise CorruptCheckpointError(f"{path.name} is not a readable safetensors file ({message})") from None


def _openclip_model(arch: str | None) -> Any:
    import open_clip

    if not arch:
        raise CheckpointImportError("--format openclip needs --arch (the file does not name its tower)")
    if arch not in open_clip.list_models():
        raise CheckpointImportError(f"unknown open_clip architecture {arch!r} (see open_clip.list_models())")
    with _quiet():
        model = open_clip.create_model(arch, pretrained=None, device="cpu")
    if not isinstance(model, open_clip.CLIP) or getattr(model, "logit_bias", None) is not None:
        raise CheckpointImportError(
            f"{arch} is not a plain CLIP (custom text tower or SigLIP); only OpenAI-style towers are imported"
        )
    tokenizer = open_clip.get_tokenizer(arch)
    if not isinstance(tokenizer, open_clip.tokenizer.SimpleTokenizer) or tokenizer.reduction_fn is not None:
        raise CheckpointImportError(f"{arch} does not use open_clip's BPE tokenizer; it cannot be imported")
    return model.eval(), tokenizer


def without_derived_buffers(model: torch.nn.Module, state: StateDict) -> StateDict:
    """``state`` less the model's non-persistent buffers (the causal attention mask): a traced archive
    stores them, a state dict does not, and the tower computes them itself."""
    derived = {name for name, _ in model.named_buffers()} - set(model.state_dict())
    return {key: value for key, value in state.items() if key not in derived}


def openclip_tokenizer_json(tokenizer: Any) -> bytes:
    """A tokenizers-library ``tokenizer.json`` giving ``open_clip.tokenize``'s ids for cleaned text (see
    ``TextEncoderConfig.clean``): open_clip's vocabulary and merge ranks, its pre-token pattern, byte-level
    symbols, ``</w>`` word ends, ``<start_of_text> ... <end_of_text>`` around every prompt."""
    from tokenizers import AddedToken, Regex, Tokenizer, models, normalizers, pre_tokenizers, processors

    merges = sorted(tokenizer.bpe_ranks, key=tokenizer.bpe_ranks.__getitem__)
    bpe = models.BPE(
        vocab=dict(tokenizer.encoder),
        merges=[tuple(pair) for pair in merges],
        end_of_word_suffix="</w>",
        continuing_subword_prefix="",
        fuse_unk=False,
    )
    result = Tokenizer(bpe)
    result.normalizer = normalizers.Sequence(
        [normalizers.Replace(Regex(r"\s+"), " "), normalizers.Strip(), normalizers.Lowercase()]
    )
    result.pre_tokenizer = pre_tokenizers.Sequence(
        [
            pre_tokenizers.Split(Regex(OPENCLIP_PATTERN), behavior="removed", invert=True),
            pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False),
        ]
    )
    result.add_special_tokens([AddedToken(SOT, normalized=False), AddedToken(EOT, normalized=False)])
    sot, eot = tokenizer.encoder[SOT], tokenizer.encoder[EOT]
    result.post_processor = processors.TemplateProcessing(
        single=f"{SOT} $A {EOT}", special_tokens=[(SOT, sot), (EOT, eot)]
    )
    return result.to_str().encode("utf-8")


def build_openclip(state: StateDict, request: ImportRequest) -> Built:
    model, tokenizer = _openclip_model(request.arch)
    arch = request.arch
    load_strict(model, without_derived_buffers(model, state), f"open_clip {arch}")
    labels = clip_labels(request)
    prompts = prompts_for(labels)
    with torch.no_grad():
        text = model.encode_text(tokenizer(list(prompts)), normalize=True)
        scale = float(model.logit_scale.exp())
    size = model.visual.image_size
    size = int(size[0] if isinstance(size, tuple | list) else size)
    preprocess = getattr(model.visual, "preprocess_cfg", {})
    face = ClipZeroShot(OpenClipImageTower(model), text, scale, size).eval()
    context = int(tokenizer.context_length)
    encoder = PaddedTextEncoder(OpenClipTextFeatures(model), context, 0).eval()
    with _quiet():
        scripted = torch.jit.script(encoder)
    sample = tokenizer(list(_SAMPLE_PROMPTS))
    config = TextEncoderConfig(
        encoder=f"OpenCLIP {arch} text tower",
        dim=int(text.shape[1]),
        max_tokens=context,
        max_batch_size=32,
        license="see the checkpoint's publisher (OpenAI CLIP: MIT; LAION OpenCLIP: MIT)",
        pad_id=0,
        clean="openclip",
    )
    built_text = BuiltTextEncoder(
        encoder, scripted, config, openclip_tokenizer_json(tokenizer), (sample, (sample != 0).long())
    )
    face_config = _face_config(
        request,
        f"openclip_{arch}",
        labels,
        size,
        int(text.shape[1]),
        mean=tuple(preprocess.get("mean", CLIP_MEAN)),
        std=tuple(preprocess.get("std", CLIP_STD)),
    )
    return Built(face, face_config, text_encoder=built_text)


# What both CLIP formats serve: CLIP's own statistics on the aligned crop (its window is the config's).
CLIP_DEFAULTS: Final[dict[str, object]] = {
    "mean": CLIP_MEAN,
    "std": CLIP_STD,
    "crop_mode": "aligned",
    "channel_order": "rgb",
    "max_batch_size": 16,
}

OPENCLIP: Final = ImportFormat(
    name="openclip",
    read=read_openclip,
    build=build_openclip,
    defaults={
        **CLIP_DEFAULTS,
        "license": "see the checkpoint's publisher (OpenAI CLIP: MIT; LAION OpenCLIP: MIT)",
    },
    provenance=OPENCLIP_PROVENANCE,
    description="OpenCLIP / OpenAI CLIP state dicts and training checkpoints (--arch names the tower)",
)


# ----------------------------------------------------------------------------- hf-clip


def read_hf_clip(folder: Path) -> StateDict:
    """The weights of a ``CLIPModel.save_pretrained`` folder (safetensors first, else pytorch_model.bin)."""
    folder = Path(folder)
    if not folder.is_dir():
        raise NotACheckpointError(f"{folder} is not a folder (hf-clip takes a save_pretrained folder)")
    if not (folder / "config.json").is_file():
        raise NotACheckpointError(f"{folder.name} has no config.json")
    if (folder / "model.safetensors").is_file():
        return _read_safetensors(folder / "model.safetensors")
    if (folder / "pytorch_model.bin").is_file():
        state = tensor_mapping(read_checkpoint_file(folder / "pytorch_model.bin"))
        if state is None:
            raise NotACheckpointError(f"{folder.name}/pytorch_model.bin holds no state dict")
        return state
    raise NotACheckpointError(f"{folder.name} has neither model.safetensors nor pytorch_model.bin")


def _hf_config(folder: Path) -> Any:
    from transformers import CLIPConfig

    try:
        raw = json.loads((folder / "config.json").read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise CorruptCheckpointError(f"{folder.name}/config.json does not read as JSON ({exc})") from None
    if raw.get("model_type") != "clip":
        raise CheckpointImportError(f"{folder.name}/config.json is a {raw.get('model_type')!r}, not 'clip'")
    return CLIPConfig.from_dict(raw)


def _hf_tokenizer(folder: Path) -> tuple[bytes, int, Any]:
    from tokenizers import Tokenizer

    path = folder / TEXT_TOKENIZER_FILENAME
    if not path.is_file():
        raise NotACheckpointError(f"{folder.name} has no {TEXT_TOKENIZER_FILENAME} (the fast tokenizer)")
    data = path.read_bytes()
    try:
        tokenizer = Tokenizer.from_str(data.decode("utf-8"))
    except Exception as exc:  # tokenizers raises its own Exception type for a malformed file
        raise CorruptCheckpointError(
            f"{folder.name}/{TEXT_TOKENIZER_FILENAME} does not load ({exc})"
        ) from None
    pad_id = 0
    config_path = folder / "tokenizer_config.json"
    if config_path.is_file():
        pad = json.loads(config_path.read_text(encoding="utf-8")).get("pad_token")
        pad = pad.get("content") if isinstance(pad, dict) else pad
        found = tokenizer.token_to_id(pad) if isinstance(pad, str) else None
        pad_id = int(found) if found is not None else 0
    return data, pad_id, tokenizer


def _tokens(tokenizer: Any, prompts: tuple[str, ...], context: int, pad_id: int) -> tuple[torch.Tensor, ...]:
    tokenizer.enable_truncation(context)
    tokenizer.enable_padding(pad_id=pad_id)
    encoded = tokenizer.encode_batch(list(prompts))
    ids = torch.tensor([item.ids for item in encoded], dtype=torch.int64)
    return ids, torch.tensor([item.attention_mask for item in encoded], dtype=torch.int64)


def build_hf_clip(state: StateDict, request: ImportRequest) -> Built:
    from transformers import CLIPModel

    folder = Path(request.checkpoint)
    config = _hf_config(folder)
    data, pad_id, tokenizer = _hf_tokenizer(folder)
    model = CLIPModel(config).eval()  # type: ignore[no-untyped-call]
    expected = set(model.state_dict())
    dropped = tuple(sorted(key for key in state if key not in expected and key.endswith("position_ids")))
    state = {key: value for key, value in state.items() if key not in dropped}
    load_strict(model, state, f"transformers CLIPModel ({folder.name}/config.json)")
    labels = clip_labels(request)
    prompts = prompts_for(labels)
    context = int(config.text_config.max_position_embeddings)
    size = int(config.vision_config.image_size)
    features = HfClipTextFeatures(model).eval()
    encoder = PaddedTextEncoder(features, context, pad_id).eval()
    with torch.no_grad():
        text = encoder(*_tokens(tokenizer, prompts, context, pad_id))
        scale = float(model.logit_scale.exp())
    image = HfClipImageTower(model).eval()
    with _quiet(), torch.no_grad():
        traced_image = torch.jit.trace(image, torch.rand(2, 3, size, size), check_trace=False)  # type: ignore[no-untyped-call]
        full = (
            torch.full((2, context), pad_id, dtype=torch.int64),
            torch.ones(2, context, dtype=torch.int64),
        )
        traced_text = torch.jit.trace(features, full, check_trace=False)  # type: ignore[no-untyped-call]
        scripted = torch.jit.script(PaddedTextEncoder(traced_text, context, pad_id))
    mean, std = _hf_stats(folder)
    text_config = TextEncoderConfig(
        encoder=f"transformers CLIPModel text tower ({folder.name})",
        dim=int(text.shape[1]),
        max_tokens=context,
        max_batch_size=32,
        license="see the checkpoint's publisher",
        pad_id=pad_id,
    )
    sample = _tokens(tokenizer, _SAMPLE_PROMPTS, context, pad_id)
    built_text = BuiltTextEncoder(encoder, scripted, text_config, data, (sample[0], sample[1]))
    face = ClipZeroShot(traced_image, text, scale, size).eval()
    face_config = _face_config(request, "hf_clip", labels, size, int(text.shape[1]), mean=mean, std=std)
    return Built(face, face_config, dropped=dropped, text_encoder=built_text)


def _hf_stats(folder: Path) -> tuple[tuple[float, ...], tuple[float, ...]]:
    path = folder / "preprocessor_config.json"
    if not path.is_file():
        return CLIP_MEAN, CLIP_STD
    raw = json.loads(path.read_text(encoding="utf-8"))
    return tuple(raw.get("image_mean", CLIP_MEAN)), tuple(raw.get("image_std", CLIP_STD))


HF_CLIP: Final = ImportFormat(
    name="hf-clip",
    read=read_hf_clip,
    build=build_hf_clip,
    defaults={**CLIP_DEFAULTS, "license": "see the checkpoint's publisher"},
    provenance=HF_PROVENANCE,
    description="a transformers CLIPModel save_pretrained folder (config.json, weights, tokenizer.json)",
)
