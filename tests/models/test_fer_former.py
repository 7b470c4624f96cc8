"""FERFormer: shapes, TorchScript parity, save/load, serving outputs, gradients, registry determinism."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

from fermodels.contract import RAFDB_LABELS, load_text_embeddings, prompts_for
from fermodels.export import ServingWrapper
from fermodels.models.fer_former import FERFormer
from fermodels.registry import build
from tests.models import helpers

BATCH = 3
SCRIPTED_METHODS = ("forward", "forward_serving")
# TorchScript is what Triton's libtorch backend serves; torch 2.14's deprecation notice is known.
pytestmark = pytest.mark.filterwarnings("ignore:`torch.jit:FutureWarning")


@pytest.fixture(scope="module")
def text_vectors() -> torch.Tensor:
    return torch.tensor(load_text_embeddings(prompts_for(RAFDB_LABELS)).vectors)


@pytest.fixture(scope="module")
def model(text_vectors: torch.Tensor) -> FERFormer:
    return helpers.seeded_model(lambda: FERFormer(text_vectors))


scripted = helpers.scripted_fixture()


@pytest.fixture(scope="module")
def images() -> torch.Tensor:
    return helpers.seeded_randn(BATCH, 3, 112, 112)


def test_shapes(model: FERFormer, images: torch.Tensor) -> None:
    with torch.no_grad():
        features = model.forward_features(images)
        class_logits, text_logits = model(images)
        logits, image, text = model.forward_serving(images)
    # 2 prefix tokens + 36 + 9 + 4 + 1 multi-granularity tokens.
    assert features.shape == (BATCH, 52, 192)
    assert model.stem(images).shape == (BATCH, 128, 14, 14)
    assert class_logits.shape == text_logits.shape == logits.shape == (BATCH, 7)
    assert image.shape == (BATCH, model.embed_dim)
    assert text.shape == (7, model.embed_dim)


def test_param_count_is_small(model: FERFormer) -> None:
    count = sum(p.numel() for p in model.parameters())
    assert 1_000_000 < count < 5_000_000  # "a few million" for a 2-core CPU target


def test_scripted_and_reloaded_match_eager(
    model: FERFormer, scripted: torch.jit.ScriptModule, images: torch.Tensor, tmp_path: Path
) -> None:
    helpers.assert_torchscript_parity(model, scripted, (images,), tmp_path, SCRIPTED_METHODS)


def test_state_dict_round_trip_carries_text_embeddings(
    model: FERFormer, text_vectors: torch.Tensor, images: torch.Tensor, tmp_path: Path
) -> None:
    torch.save(model.state_dict(), tmp_path / "weights.pt")
    fresh = FERFormer(torch.zeros_like(text_vectors)).eval()
    fresh.load_state_dict(torch.load(tmp_path / "weights.pt", weights_only=True))
    torch.testing.assert_close(fresh.text_embeddings, text_vectors)
    with torch.no_grad():
        torch.testing.assert_close(fresh(images), model(images))


def test_serving_outputs_follow_the_contract(model: FERFormer, images: torch.Tensor) -> None:
    _, config = build("fer_former")
    wrapper = ServingWrapper(model, config).eval()
    with torch.no_grad():
        probs, embedding, similarity = wrapper(images.sigmoid())  # serving inputs are in [0, 1]
    torch.testing.assert_close(probs.sum(dim=1), torch.ones(BATCH))
    assert bool((probs >= 0).all())
    torch.testing.assert_close(embedding.norm(dim=1), torch.ones(BATCH))
    assert similarity.shape == (BATCH, 7)
    assert bool((similarity.abs() <= 1).all())
    cosine = (
        F.normalize(model.forward_serving(images.sigmoid() * 2 - 1)[1], dim=-1)
        @ F.normalize(model.text_embedding(), dim=-1).t()
    )
    torch.testing.assert_close(similarity, cosine.detach())


def test_text_logits_are_scaled_cosine(model: FERFormer, images: torch.Tensor) -> None:
    with torch.no_grad():
        _, text_logits = model(images)
        _, image, text = model.forward_serving(images)
    cosine = F.normalize(image, dim=-1) @ F.normalize(text, dim=-1).t()
    torch.testing.assert_close(text_logits, model.logit_scale.exp() * cosine)


def test_gradient_reaches_both_heads_and_the_stem(text_vectors: torch.Tensor, images: torch.Tensor) -> None:
    model = FERFormer(text_vectors, depth=1).train()
    targets = torch.tensor([0, 3, 6])
    class_logits, text_logits = model(images)
    (F.cross_entropy(class_logits, targets) + F.cross_entropy(text_logits, targets)).backward()
    for name in (
        "head.weight",
        "image_proj.weight",
        "text_proj.weight",
        "logit_scale",
        "cls_token",
        "text_token",
    ):
        grad = model.get_parameter(name).grad
        assert grad is not None and bool(grad.abs().sum() > 0), name
    stem_grad = model.stem[0].weight.grad
    assert stem_grad is not None and bool(stem_grad.abs().sum() > 0)
    assert not model.text_embeddings.requires_grad  # the prompts' embeddings are constants


def test_rejects_patch_sizes_that_do_not_tile_the_grid(text_vectors: torch.Tensor) -> None:
    with pytest.raises(ValueError, match="do not tile"):
        FERFormer(text_vectors, grid_size=12, patch_sizes=(2, 5))


def test_rejects_non_matrix_text_embeddings() -> None:
    with pytest.raises(ValueError, match="text_embeddings"):
        FERFormer(torch.zeros(384))


def test_registry_build_is_deterministic_and_leaves_the_global_rng_alone() -> None:
    state = torch.random.get_rng_state()
    first, config = build("fer_former", seed=0)
    second, _ = build("fer_former", seed=0)
    other, _ = build("fer_former", seed=1)
    assert torch.equal(torch.random.get_rng_state(), state)
    for (name, a), b in zip(first.state_dict().items(), second.state_dict().values(), strict=True):
        assert torch.equal(a, b), name
    assert not torch.equal(first.state_dict()["head.weight"], other.state_dict()["head.weight"])
    assert config.name == config.architecture == "fer_former"
    assert config.labels == RAFDB_LABELS and config.prompts == prompts_for(RAFDB_LABELS)
    assert config.embed_dim == 192 and not config.trained and "all-MiniLM-L6-v2" in config.text_encoder


def test_registry_rejects_unknown_names() -> None:
    with pytest.raises(KeyError, match="fer_former"):
        build("no_such_model")
