"""Seeded CLIP checkpoints written as their publishers write them (no real CLIP weights exist here)."""

from __future__ import annotations

import copy
import warnings
from pathlib import Path
from typing import Any

import torch

from fermodels.ports.seeded_weights import seeded_state_dict

open_clip: Any
try:
    import open_clip as _open_clip

    open_clip = _open_clip
except ImportError:  # pragma: no cover - the tests that need it skip
    open_clip = None


def seeded_openclip(arch: str) -> Any:
    """``open_clip.create_model(arch)`` with the seeded-weights rule applied to every tensor."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        model = open_clip.create_model(arch, pretrained=None, device="cpu").eval()
    model.load_state_dict(seeded_state_dict(model.state_dict()))
    return model


def save_openclip_training_checkpoint(model: Any, path: Path) -> Path:
    """What OpenCLIP's training loop saves (open_clip_train/main.py): epoch, run name, the DDP-wrapped
    model's state dict (``module.`` keys) and the optimizer's."""
    state = {f"module.{key}": value for key, value in model.state_dict().items()}
    optimizer = {"state": {}, "param_groups": [{"lr": 5e-4, "weight_decay": 0.2, "params": [0, 1, 2]}]}
    torch.save({"epoch": 32, "name": "seeded-run", "state_dict": state, "optimizer": optimizer}, path)
    return path


def save_openai_archive(model: Any, path: Path) -> Any:
    """A stand-in for OpenAI's release (``ViT-B-32.pt``): the tower traced, ``torch.jit.save``-d in float16,
    with the three shape records OpenAI's archives carry as tensors (``open_clip``'s
    ``build_model_from_openai_state_dict`` drops ``input_resolution``, ``context_length``, ``vocab_size``).
    Returns the eager model with its weights rounded to float16 and back, what the archive holds."""
    shapes = {"input_resolution": 224, "context_length": 77, "vocab_size": 49408}
    archived = copy.deepcopy(model).half().float()
    carrier = copy.deepcopy(archived)
    for name, value in shapes.items():
        if hasattr(carrier, name):
            delattr(carrier, name)
        carrier.register_buffer(name, torch.tensor(value))
    size = int(model.visual.image_size[0])
    example = {
        "encode_image": (torch.ones(1, 3, size, size),),
        "encode_text": (torch.zeros(1, 77, dtype=torch.int),),
    }
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        traced = torch.jit.trace_module(carrier, example, check_trace=False)  # type: ignore[no-untyped-call]
        traced.half()
        traced.save(str(path))
    return archived


def save_hf_clip(folder: Path, *, image_size: int = 64) -> Any:
    """A small seeded ``transformers.CLIPModel`` with a fast CLIP tokenizer (open_clip's BPE vocabulary,
    built offline), written by ``save_pretrained``; returns the model."""
    from tokenizers import Tokenizer
    from transformers import CLIPConfig, CLIPModel, CLIPTokenizerFast  # type: ignore[attr-defined]

    from fermodels.importing.clip import EOT, SOT, openclip_tokenizer_json

    text = dict(
        vocab_size=49408,
        hidden_size=64,
        intermediate_size=128,
        num_hidden_layers=2,
        num_attention_heads=4,
        max_position_embeddings=77,
        bos_token_id=49406,
        eos_token_id=49407,
        pad_token_id=49407,
    )
    vision = dict(
        hidden_size=64,
        intermediate_size=128,
        num_hidden_layers=2,
        num_attention_heads=4,
        image_size=image_size,
        patch_size=16,
    )
    config = CLIPConfig(text_config=text, vision_config=vision, projection_dim=32)
    model = CLIPModel(config).eval()  # type: ignore[no-untyped-call]
    model.load_state_dict(seeded_state_dict(model.state_dict()))
    model.save_pretrained(folder)
    tokenizer = Tokenizer.from_str(openclip_tokenizer_json(open_clip.tokenizer._tokenizer).decode("utf-8"))
    CLIPTokenizerFast(
        tokenizer_object=tokenizer, bos_token=SOT, eos_token=EOT, unk_token=EOT, pad_token=EOT
    ).save_pretrained(folder)
    return model


# 200 prompts for the tokenizer checks: expression wording, punctuation, contractions, digits, HTML entities,
# curly quotes, accents, full-width letters, ligatures, CJK, emoji, odd whitespace, and long ones (truncated).
_BASE = (
    "a photo of a person making a happy facial expression.",
    "A Photo Of A PERSON smiling",
    "someone who's absolutely furious, red-faced and shouting!!!",
    "they're calm; we've seen it, I'm sure, you'll see, he'd say",
    "3 people, 42 faces, 1000000 smiles",
    "Tom &amp; Jerry &lt;3 &quot;surprised&quot;",
    "\u201ccurly quotes\u201d and \u2018single ones\u2019",
    "na\u00efve caf\u00e9 r\u00e9sum\u00e9 \u00fcber",
    "\uff26\uff55\uff4c\uff4c\uff57\uff49\uff44\uff54\uff48 letters",
    "\ufb01ne \ufb02ower",
    "\u7b11\u9854\u306e\u4eba \u6012\u3063\u305f\u9854",
    "\U0001f600 grinning \U0001f620 angry \u2764\ufe0f",
    "tabs\tand\nnew lines   and\u00a0no-break spaces",
    "   leading and trailing   ",
    "\u0417\u043b\u043e\u0439 \u0447\u0435\u043b\u043e\u0432\u0435\u043a",
    "\u0634\u062e\u0635 \u0633\u0639\u064a\u062f",
    "e-mail: someone@example.com, url http://x.y/z?q=1",
    "CAPS LOCK DISGUST",
    "mixed123numbers456",
    "ÀÉÎÕÜ accents upper",
)


def tokenizer_prompts() -> list[str]:
    prompts = list(_BASE)
    long = " ".join(f"word{i} very expressive face" for i in range(40))
    prompts += [long, long.upper(), "fear " * 100]
    adjectives = ("happy", "sad", "angry", "surprised", "fearful", "disgusted", "neutral", "contemptuous")
    templates = (
        "a photo of {} face.",
        "a close-up of someone looking {}",
        "an {}-looking man!",
        "the woman is {}, isn't she?",
        "A {} CHILD",
    )
    for template in templates:
        for adjective in adjectives:
            prompts.append(template.format(adjective))
    index = 0
    while len(prompts) < 200:
        a, b = _BASE[index % len(_BASE)], adjectives[index % len(adjectives)]
        prompts.append(f"{b} {a[: 10 + index % 30]} #{index}")
        index += 1
    return prompts[:200]
