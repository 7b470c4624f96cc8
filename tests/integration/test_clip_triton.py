"""Imported CLIP checkpoints through the real local Triton and the gateway's own client and prompt path:
a seeded OpenCLIP ViT-S-32-alt (an OpenCLIP training checkpoint) and a small seeded transformers CLIPModel,
each served as a face model plus its text tower. The face model's outputs at batch 1, 3 and 16 equal
open_clip's / transformers' own computation, and the gateway's caller-prompt path (TextScorer: the
tokenizer read from the repository, the CLIP text tower in Triton) gives the libraries' text embeddings
and true image-text cosines, with method 'clip'."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from typing import Any

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from fermodels.contract import CANONICAL_LABELS, prompts_for
from service.config import Settings
from service.inference.triton import TritonBackend
from service.launcher.triton_local import LocalTriton
from service.metrics import Metrics
from service.serving.prompting import ClassPrompts, PromptEncoder, TextScorer
from service.serving.responses import model_info
from tests.models.clip_helpers import (
    open_clip,
    save_hf_clip,
    save_openclip_training_checkpoint,
    seeded_openclip,
)
from tests.models.test_import_clip import clip_normalise, crops, run_import

pytestmark = [
    pytest.mark.integration,
    pytest.mark.skipif(open_clip is None, reason="open-clip-torch is not installed"),
]

ATOL = 1e-4
PROMPTS = ("a person grinning from ear to ear", "someone who looks \u201cterrified\u201d &amp; pale", "calm")


@pytest.fixture(scope="module")
def clip_triton(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[LocalTriton, Any, Any, Any]]:
    tmp = tmp_path_factory.mktemp("clip-triton")
    repository = tmp / "repository"
    openclip_model = seeded_openclip("ViT-S-32-alt")
    checkpoint = save_openclip_training_checkpoint(openclip_model, tmp / "epoch_1.pt")
    code, err = run_import(
        "--format", "openclip", "--arch", "ViT-S-32-alt", "--checkpoint", str(checkpoint), "--name", "clip",
        "--repository", str(repository),
    )  # fmt: skip
    assert code == 0, err
    hf_model = save_hf_clip(tmp / "tiny-clip")
    code, err = run_import(
        "--format", "hf-clip", "--checkpoint", str(tmp / "tiny-clip"), "--name", "hfclip",
        "--repository", str(repository),
    )  # fmt: skip
    assert code == 0, err
    with LocalTriton(repository) as server:
        yield server, repository, openclip_model, hf_model


def served(triton: LocalTriton, repository: Any, name: str, x: torch.Tensor) -> dict[str, Any]:
    """One face-model call and one caller-prompt embedding, through the gateway's own classes."""

    async def call() -> dict[str, Any]:
        backend = TritonBackend(
            triton.endpoints.grpc_url, protocol="grpc", timeout_s=120, retry_after_s=1, metrics=Metrics()
        )
        try:
            settings = Settings(text_tokenizer_dir=repository)
            scorer = TextScorer(PromptEncoder(settings, backend, Metrics()), ClassPrompts())
            model = await backend.served_model(name)
            outputs = await backend.infer_image(model, x.numpy().astype(np.float32))
            caller = await scorer.caller(PROMPTS, name)
            scores = scorer.score(model.config, outputs, caller)
            info = model_info(
                model, scorer.expression_encoder(model.config), scorer.caller_encoder(model.config)
            )
            return {"outputs": outputs, "caller": caller, "scores": scores, "info": info}
        finally:
            await backend.close()

    return asyncio.run(call())


@pytest.mark.parametrize("batch", [1, 3, 16])
def test_openclip_through_triton_and_the_gateway_prompt_path(clip_triton: Any, batch: int) -> None:
    triton, repository, model, _ = clip_triton
    x = crops(batch, 224, seed=batch)
    got = served(triton, repository, "clip", x)
    with torch.no_grad():
        image = model.encode_image(clip_normalise(x), normalize=True)
        fixed = model.encode_text(open_clip.tokenize(list(prompts_for(CANONICAL_LABELS))), normalize=True)
        caller = model.encode_text(open_clip.tokenize(list(PROMPTS)), normalize=True)
        want_p = (model.logit_scale.exp() * image @ fixed.t()).softmax(-1)
    outputs, scores = got["outputs"], got["scores"]
    assert np.abs(outputs.embeddings - image.numpy()).max() <= ATOL
    assert np.abs(outputs.probabilities - want_p.numpy()).max() <= ATOL
    assert np.abs(scores.expression - (image @ fixed.t()).numpy()).max() <= ATOL
    assert np.abs(got["caller"].vectors - caller.numpy()).max() <= ATOL
    assert np.abs(scores.caller - (image @ caller.t()).numpy()).max() <= ATOL
    assert (scores.expression_method, scores.caller_method) == ("clip", "clip")
    info = got["info"]
    assert (info.clip, info.caller_prompt_encoder, info.text_similarity_method) == (True, "clip_text", "clip")


def test_hf_clip_through_triton_and_the_gateway_prompt_path(clip_triton: Any) -> None:
    from transformers import CLIPTokenizerFast  # type: ignore[attr-defined]

    triton, repository, _, model = clip_triton
    x = crops(3, 64, seed=7)
    got = served(triton, repository, "hfclip", x)
    tokenizer = CLIPTokenizerFast.from_pretrained(repository.parent / "tiny-clip")
    tokens = tokenizer(list(PROMPTS), padding=True, return_tensors="pt")
    with torch.no_grad():
        image = F.normalize(model.get_image_features(pixel_values=clip_normalise(x)).pooler_output, dim=-1)
        caller = F.normalize(model.get_text_features(**tokens).pooler_output, dim=-1)
    assert np.abs(got["outputs"].embeddings - image.numpy()).max() <= ATOL
    assert np.abs(got["caller"].vectors - caller.numpy()).max() <= ATOL
    assert np.abs(got["scores"].caller - (image @ caller.t()).numpy()).max() <= ATOL
