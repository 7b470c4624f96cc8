"""STT: shapes, TorchScript parity and round trip, frame-order sensitivity, short clips, serving view."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from fermodels.models.stt import STT
from tests.models import helpers

BATCH = 2
FRAMES = 16
SCRIPTED_METHODS = ("forward", "forward_serving")
# TorchScript is what Triton's libtorch backend serves; torch 2.14's deprecation notice is known.
pytestmark = pytest.mark.filterwarnings("ignore:`torch.jit:FutureWarning")


@pytest.fixture(scope="module")
def model() -> STT:
    return helpers.seeded_model(STT)


scripted = helpers.scripted_fixture()


@pytest.fixture(scope="module")
def clips() -> torch.Tensor:
    return helpers.seeded_randn(BATCH, FRAMES, 3, 112, 112)


def test_shapes(model: STT, clips: torch.Tensor) -> None:
    with torch.no_grad():
        features = model.forward_features(clips)
        logits = model(clips)
        serving_logits, embedding = model.forward_serving(clips)
    assert features.shape == (BATCH, FRAMES, 49, 128)  # 7 x 7 tokens per 112 x 112 frame
    assert logits.shape == serving_logits.shape == (BATCH, 7)
    assert embedding.shape == model.pool(model.forward_features(clips)).shape == (BATCH, 128)


def test_param_count_is_small(model: STT) -> None:
    assert 500_000 < sum(p.numel() for p in model.parameters()) < 3_000_000


def test_serving_view_matches_forward_and_the_pooled_features(model: STT, clips: torch.Tensor) -> None:
    with torch.no_grad():
        logits, embedding = model.forward_serving(clips)
        torch.testing.assert_close(logits, model(clips))
        torch.testing.assert_close(embedding, model.pool(model.forward_features(clips)))


def test_scripted_and_reloaded_match_eager(
    model: STT, scripted: torch.jit.ScriptModule, clips: torch.Tensor, tmp_path: Path
) -> None:
    helpers.assert_torchscript_parity(model, scripted, (clips,), tmp_path, SCRIPTED_METHODS)


def test_frame_order_changes_the_output(model: STT, clips: torch.Tensor) -> None:
    reversed_clips = clips.flip(1)
    with torch.no_grad():
        difference = (model(reversed_clips) - model(clips)).abs().max()
    assert difference > 1e-4


def test_without_temporal_position_codes_frame_order_is_ignored(model: STT, clips: torch.Tensor) -> None:
    """The control for the test above: attention is permutation-equivariant and pooling symmetric, so
    the temporal position codes are what carry order — if they did nothing, order would not matter."""
    blind = STT().eval()
    blind.load_state_dict(model.state_dict())
    with torch.no_grad():
        blind.temporal_pos.zero_()
        torch.testing.assert_close(blind(clips.flip(1)), blind(clips), rtol=0, atol=1e-5)


def test_temporal_attention_mixes_frames(model: STT, clips: torch.Tensor) -> None:
    """Changing frame 0 must change the tokens of frame 5 (a per-frame model would leave them equal)."""
    edited = clips.clone()
    edited[:, 0] = torch.randn_like(edited[:, 0])
    with torch.no_grad():
        before, after = model.forward_features(clips), model.forward_features(edited)
    assert (after[:, 5] - before[:, 5]).abs().max() > 1e-4


@pytest.mark.parametrize("frames", [1, 8])
def test_shorter_clips_work_eager_and_scripted(
    model: STT, scripted: torch.jit.ScriptModule, clips: torch.Tensor, frames: int
) -> None:
    short = clips[:, :frames]
    with torch.no_grad():
        logits = model(short)
        assert model.forward_features(short).shape == (BATCH, frames, 49, 128)
        helpers.assert_same_outputs(scripted(short), logits)
    assert logits.shape == (BATCH, 7) and bool(torch.isfinite(logits).all())


def test_rejects_clips_longer_than_max_frames(model: STT) -> None:
    with pytest.raises(ValueError, match="max_frames"):
        model(torch.zeros(1, FRAMES + 1, 3, 112, 112))


def test_other_input_sizes_pool_to_the_same_grid(model: STT) -> None:
    with torch.no_grad():
        features = model.forward_features(torch.randn(1, 4, 3, 96, 96))
    assert features.shape == (1, 4, 49, 128)


def test_gradients_reach_stem_position_codes_and_head() -> None:
    model = STT(depth=1).train()
    clips = torch.randn(2, 4, 3, 112, 112)
    torch.nn.functional.cross_entropy(model(clips), torch.tensor([0, 6])).backward()
    for name in ("stem.0.weight", "spatial_pos", "temporal_pos", "blocks.0.temporal.attn.qkv.weight"):
        grad = model.get_parameter(name).grad
        assert grad is not None and bool(grad.abs().sum() > 0), name
    # Only the first 4 of 16 temporal codes were used.
    temporal_grad = model.temporal_pos.grad
    assert temporal_grad is not None and bool((temporal_grad[:, 4:] == 0).all())
