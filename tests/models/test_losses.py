"""Losses: STT's compact softmax and KE-FER's objective — values, gradients' direction, optimisation."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from fermodels.contract import RAFDB_LABELS, load_text_embeddings, prompts_for
from fermodels.losses import (
    CompactSoftmaxLoss,
    EmotionalToNeutral,
    KEFERObjective,
    self_contrast_loss,
    text_difference_alignment_loss,
)
from fermodels.models.fer_former import FERFormer

NUM_CLASSES = 7
DIM = 16
NEUTRAL = RAFDB_LABELS.index("neutral")
# TorchScript is what Triton's libtorch backend serves; torch 2.14's deprecation notice is known.
pytestmark = pytest.mark.filterwarnings("ignore:`torch.jit:FutureWarning")


@pytest.fixture
def generator() -> torch.Generator:
    return torch.Generator().manual_seed(0)


def _toy_problem(generator: torch.Generator, n: int = 64) -> tuple[torch.Tensor, torch.Tensor]:
    """Inputs [n, 32] that a linear model can classify: class means plus noise."""
    labels = torch.arange(n) % NUM_CLASSES
    means = torch.randn(NUM_CLASSES, 32, generator=generator)
    return means[labels] + 0.3 * torch.randn(n, 32, generator=generator), labels


# ----------------------------------------------------------------------------- compact softmax


def test_compact_softmax_is_ce_plus_weighted_centre_term(generator: torch.Generator) -> None:
    loss = CompactSoftmaxLoss(NUM_CLASSES, DIM, center_weight=0.5)
    logits, features = torch.randn(8, NUM_CLASSES, generator=generator), torch.randn(8, DIM)
    labels = torch.arange(8) % NUM_CLASSES
    centre = 0.5 * (features - loss.centers[labels]).pow(2).sum(dim=1).mean()
    expected = F.cross_entropy(logits, labels) + 0.5 * centre
    torch.testing.assert_close(loss(logits, features, labels), expected)


def test_centre_term_is_zero_at_the_centres_and_pulls_features_toward_them() -> None:
    loss = CompactSoftmaxLoss(NUM_CLASSES, DIM)
    labels = torch.tensor([0, 1, 2, 2])
    assert loss.center_term(loss.centers[labels].detach(), labels).item() == 0.0
    features = torch.randn(4, DIM, requires_grad=True)
    loss.center_term(features, labels).backward()
    assert features.grad is not None
    stepped = features.detach() - 0.5 * features.grad
    distance = (features.detach() - loss.centers[labels]).norm(dim=1)
    assert bool(((stepped - loss.centers[labels]).norm(dim=1) < distance).all())


def test_centres_move_toward_their_class_features() -> None:
    loss = CompactSoftmaxLoss(NUM_CLASSES, DIM, center_weight=1.0)
    labels = torch.arange(NUM_CLASSES).repeat(4)
    features = torch.randn(len(labels), DIM)
    # Each centre has 4 of the 28 samples: its gradient is (4 / 28) · (centre − class mean), so lr 3.5
    # moves it half-way to the mean per step.
    optimiser = torch.optim.SGD(loss.parameters(), lr=3.5)
    before = loss.center_term(features, labels).item()
    for _ in range(30):
        optimiser.zero_grad()
        loss(torch.zeros(len(labels), NUM_CLASSES), features, labels).backward()
        optimiser.step()
    # Each centre converges to its class mean, the minimiser of the centre term.
    class_means = torch.stack([features[labels == c].mean(dim=0) for c in range(NUM_CLASSES)])
    torch.testing.assert_close(loss.centers.detach(), class_means, atol=1e-3, rtol=0)
    assert loss.center_term(features, labels).item() < 0.5 * before


def test_compact_softmax_trains_a_toy_classifier(generator: torch.Generator) -> None:
    inputs, labels = _toy_problem(generator)
    torch.manual_seed(0)
    encoder, head = nn.Linear(32, DIM), nn.Linear(DIM, NUM_CLASSES)
    loss = CompactSoftmaxLoss(NUM_CLASSES, DIM, center_weight=0.1)
    params = [*encoder.parameters(), *head.parameters(), *loss.parameters()]
    optimiser = torch.optim.Adam(params, lr=0.05)
    values = []
    for _ in range(30):
        optimiser.zero_grad()
        features = encoder(inputs)
        value = loss(head(features), features, labels)
        value.backward()
        optimiser.step()
        values.append(value.item())
    assert all(torch.isfinite(torch.tensor(values)))
    assert values[-1] < 0.5 * values[0]


# ----------------------------------------------------------------------------- KE-FER pieces


def test_alignment_is_zero_when_the_differences_match(generator: torch.Generator) -> None:
    text = torch.randn(NUM_CLASSES, DIM, generator=generator)
    labels = torch.tensor([0, 1, 2, 3, 4, 5])
    image = torch.randn(6, DIM, generator=generator)
    neutral = image - (text[labels] - text[NEUTRAL])  # exactly the text-space step
    for metric in ("mse", "cosine"):
        value = text_difference_alignment_loss(image, neutral, text[labels], text[NEUTRAL], metric)
        assert float(value) == pytest.approx(0.0, abs=1e-6), metric


def test_alignment_is_positive_when_the_differences_do_not_match(generator: torch.Generator) -> None:
    text = torch.randn(NUM_CLASSES, DIM, generator=generator)
    labels = torch.tensor([0, 1, 2])
    image = torch.randn(3, DIM, generator=generator)
    neutral = image + (text[labels] - text[NEUTRAL])  # the opposite direction
    per_sample = text_difference_alignment_loss(
        image, neutral, text[labels], text[NEUTRAL], "cosine", reduction="none"
    )
    torch.testing.assert_close(per_sample, torch.full((3,), 2.0))
    assert float(text_difference_alignment_loss(image, neutral, text[labels], text[NEUTRAL])) > 1.0


def test_self_contrast_prefers_the_class_text_to_the_neutral(generator: torch.Generator) -> None:
    text = F.normalize(torch.randn(NUM_CLASSES, DIM, generator=generator), dim=-1)
    labels = torch.tensor([0, 3, 5])
    neutral = F.normalize(torch.randn(3, DIM, generator=generator), dim=-1)
    at_text = self_contrast_loss(text[labels], neutral, text, labels)
    at_neutral = self_contrast_loss(neutral, neutral, text, labels)
    assert bool(torch.isfinite(at_text)) and bool(torch.isfinite(at_neutral))
    assert float(at_text) < float(at_neutral)
    assert float(at_text) < 0.1 < 1.0 < float(at_neutral)  # τ = 0.1 makes the preference sharp


def test_self_contrast_is_scale_invariant(generator: torch.Generator) -> None:
    text, image, neutral = (torch.randn(k, DIM, generator=generator) for k in (NUM_CLASSES, 4, 4))
    labels = torch.tensor([0, 1, 2, 3])
    torch.testing.assert_close(
        self_contrast_loss(3 * image, 0.1 * neutral, 7 * text, labels),
        self_contrast_loss(image, neutral, text, labels),
    )


def test_emotional_to_neutral_keeps_the_shape() -> None:
    assert EmotionalToNeutral(DIM, hidden_dim=8)(torch.randn(5, DIM)).shape == (5, DIM)


# ----------------------------------------------------------------------------- KE-FER objective


def test_objective_parts_are_finite_and_weighted(generator: torch.Generator) -> None:
    objective = KEFERObjective(DIM, NEUTRAL, alignment_weight=0.5, self_contrast_weight=2.0)
    image, text = torch.randn(6, DIM, generator=generator), torch.randn(NUM_CLASSES, DIM, generator=generator)
    losses = objective(image, text, torch.tensor([0, 1, 2, 3, 4, NEUTRAL]))
    for part in losses[:4]:
        assert part.shape == () and bool(torch.isfinite(part))
    expected = losses.classification + 0.5 * losses.alignment + 2.0 * losses.self_contrast
    torch.testing.assert_close(losses.total, expected)
    assert losses.logits.shape == (6, NUM_CLASSES)


def test_objective_leaves_neutral_samples_out_of_the_self_contrast(generator: torch.Generator) -> None:
    objective = KEFERObjective(DIM, NEUTRAL)
    image, text = torch.randn(4, DIM, generator=generator), torch.randn(NUM_CLASSES, DIM, generator=generator)
    only_neutral = objective(image, text, torch.full((4,), NEUTRAL))
    assert only_neutral.self_contrast.item() == 0.0
    assert only_neutral.alignment.item() > 0.0  # MSE: a neutral face's neutral should be itself


def test_objective_trains_a_toy_encoder(generator: torch.Generator) -> None:
    inputs, labels = _toy_problem(generator)
    text = torch.randn(NUM_CLASSES, DIM, generator=generator)  # a constant text matrix, as at serving
    torch.manual_seed(0)
    encoder = nn.Linear(32, DIM)
    objective = KEFERObjective(DIM, NEUTRAL)
    optimiser = torch.optim.Adam([*encoder.parameters(), *objective.parameters()], lr=0.02)
    history = []
    for _ in range(30):
        optimiser.zero_grad()
        losses = objective(encoder(inputs), text, labels)
        losses.total.backward()
        optimiser.step()
        history.append([part.item() for part in losses[:4]])
    first, last = history[0], history[-1]
    assert all(torch.isfinite(torch.tensor(history)).flatten())
    assert last[0] < 0.5 * first[0]  # total
    assert last[2] < first[2] and last[3] < first[3]  # alignment and self-contrast both improve


def test_objective_works_with_fer_former_serving_outputs() -> None:
    prompts = prompts_for(RAFDB_LABELS)
    torch.manual_seed(0)
    model = FERFormer(
        torch.tensor(load_text_embeddings(prompts).vectors),
        stem_channels=(8, 16),
        dim=32,
        depth=1,
        num_heads=2,
    ).train()
    objective = KEFERObjective(model.embed_dim, NEUTRAL)
    _, image, text = model.forward_serving(torch.randn(4, 3, 112, 112))
    objective(image, text, torch.tensor([0, 3, 5, NEUTRAL])).total.backward()
    for name, module in (("image_proj", model.image_proj), ("text_proj", model.text_proj)):
        assert module.weight.grad is not None and bool(module.weight.grad.abs().sum() > 0), name
    first_layer = objective.to_neutral.mlp[0]
    assert isinstance(first_layer, nn.Linear) and first_layer.weight.grad is not None
    assert bool(first_layer.weight.grad.abs().sum() > 0)
