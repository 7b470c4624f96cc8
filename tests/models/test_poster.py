"""POSTER: shapes, TorchScript parity and round trip, the landmark stream is used, gradients reach both."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

from fermodels.contract import ModelConfig
from fermodels.models.poster import POSTER
from tests.models import helpers

BATCH = 3
# TorchScript is what Triton's libtorch backend serves; torch 2.14's deprecation notice is known.
pytestmark = pytest.mark.filterwarnings("ignore:`torch.jit:FutureWarning")


def _template_landmarks(batch: int) -> torch.Tensor:
    """The 5 ArcFace template points in [0, 1] crop coordinates, jittered as a real alignment leaves them."""
    template = torch.tensor(ModelConfig(name="x", architecture="x").landmark_template()) / 112.0
    jitter = 0.02 * torch.randn(batch, 5, 2, generator=torch.Generator().manual_seed(2))
    return template.expand(batch, -1, -1) + jitter


@pytest.fixture(scope="module")
def model() -> POSTER:
    return helpers.seeded_model(POSTER)


scripted = helpers.scripted_fixture()


@pytest.fixture(scope="module")
def images() -> torch.Tensor:
    return helpers.seeded_randn(BATCH, 3, 112, 112)


@pytest.fixture(scope="module")
def landmarks() -> torch.Tensor:
    return _template_landmarks(BATCH)


def test_shapes(model: POSTER, images: torch.Tensor, landmarks: torch.Tensor) -> None:
    with torch.no_grad():
        features = model.forward_features(images, landmarks)
        logits = model(images, landmarks)
    # class token + (14 * 14 image + 5 landmark) + (7 * 7 image + 5 landmark) fused tokens.
    assert features.shape == (BATCH, 1 + 196 + 5 + 49 + 5, 128)
    assert logits.shape == (BATCH, 7)
    torch.testing.assert_close(model.forward_head(features), logits)


def test_param_count_is_small(model: POSTER) -> None:
    assert 500_000 < sum(p.numel() for p in model.parameters()) < 5_000_000


def test_68_point_landmarks() -> None:
    model = POSTER(num_landmarks=68).eval()
    with torch.no_grad():
        logits = model(torch.randn(2, 3, 112, 112), torch.rand(2, 68, 2))
    assert logits.shape == (2, 7)


def test_rejects_the_wrong_number_of_landmarks(model: POSTER, images: torch.Tensor) -> None:
    with pytest.raises(ValueError, match=r"landmarks must be \[N, 5, 2\]"):
        model(images, torch.rand(BATCH, 68, 2))


def test_scripted_and_reloaded_match_eager(
    model: POSTER,
    scripted: torch.jit.ScriptModule,
    images: torch.Tensor,
    landmarks: torch.Tensor,
    tmp_path: Path,
) -> None:
    helpers.assert_torchscript_parity(
        model, scripted, (images, landmarks), tmp_path, ("forward", "forward_serving")
    )


def test_landmarks_change_the_output(model: POSTER, images: torch.Tensor, landmarks: torch.Tensor) -> None:
    moved = landmarks.clone()
    moved[:, 3:, 0] += torch.tensor([-0.03, 0.03])  # mouth corners spread, as in a smile
    with torch.no_grad():
        difference = (model(images, moved) - model(images, landmarks)).abs().max()
    # ~5e-2 at initialisation thanks to the Fourier features; raw (x, y) coordinates gave ~1e-4.
    assert difference > 1e-3


def test_image_changes_the_output(model: POSTER, images: torch.Tensor, landmarks: torch.Tensor) -> None:
    with torch.no_grad():
        difference = (model(images.flip(-1), landmarks) - model(images, landmarks)).abs().max()
    assert difference > 1e-4


def test_gradients_reach_both_streams_and_both_fusion_directions(
    images: torch.Tensor, landmarks: torch.Tensor
) -> None:
    model = POSTER(depth=1).train()
    points = landmarks.clone().requires_grad_(True)
    F.cross_entropy(model(images, points), torch.tensor([0, 3, 6])).backward()
    names = [
        "stem.0.weight",  # image stream
        "landmark_embed.mlp.0.weight",  # landmark stream
        "landmark_embed.identity",
        "levels.0.fusion.landmarks_from_image.q.weight",
        "levels.1.fusion.image_from_landmarks.kv.weight",
        "levels.1.stage.0.residual.1.weight",
    ]
    for name in names:
        grad = model.get_parameter(name).grad
        assert grad is not None and bool(grad.abs().sum() > 0), name
    assert points.grad is not None and bool(points.grad.abs().sum() > 0)


def test_serving_view_is_the_logits_and_the_class_token(
    model: POSTER, images: torch.Tensor, landmarks: torch.Tensor
) -> None:
    with torch.no_grad():
        logits, embedding = model.forward_serving(images, landmarks)
        torch.testing.assert_close(logits, model(images, landmarks))
        torch.testing.assert_close(embedding, model.forward_features(images, landmarks)[:, 0])
    assert embedding.shape == (BATCH, model.dim)
