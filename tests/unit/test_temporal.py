"""A track's expression over time: weighted mean, smoothing, segments."""

from __future__ import annotations

import numpy as np
import pytest

from service.serving.temporal import segments, smooth, weighted_mean


def onehot(labels: list[int], classes: int = 3, certainty: float = 0.8) -> np.ndarray:
    rest = (1 - certainty) / (classes - 1)
    rows = np.full((len(labels), classes), rest, np.float32)
    rows[np.arange(len(labels)), labels] = certainty
    return rows


def test_the_weighted_mean_trusts_confident_detections_more() -> None:
    per_frame = onehot([0, 1])
    assert weighted_mean(per_frame, np.array([1.0, 1.0]))[0] == pytest.approx(0.45)  # (0.8 + 0.1) / 2
    skewed = weighted_mean(per_frame, np.array([0.99, 0.33]))
    assert skewed.argmax() == 0 and skewed.sum() == pytest.approx(1.0)


def test_smoothing_removes_a_single_odd_frame() -> None:
    labels = [0, 0, 0, 1, 0, 0, 0]
    times = np.arange(7) * 0.2
    smoothed = smooth(onehot(labels), times, np.ones(7), window_s=1.0)
    assert list(smoothed.argmax(axis=1)) == [0] * 7
    assert np.allclose(smoothed.sum(axis=1), 1.0)
    unsmoothed = smooth(onehot(labels), times, np.ones(7), window_s=0.0)
    assert list(unsmoothed.argmax(axis=1)) == labels


def test_a_change_of_expression_gives_two_segments_with_their_times() -> None:
    times = np.arange(20) * 0.2  # 5 fps, 4 s
    found = segments(onehot([1] * 10 + [0] * 10), times, min_duration_s=0.5)
    assert [(s.label, s.start, s.stop) for s in found] == [(1, 0, 9), (0, 10, 19)]
    assert found[0].mean_probability == pytest.approx(0.8)


def test_short_runs_join_their_longer_neighbour() -> None:
    times = np.arange(12) * 0.2
    labels = [1] * 5 + [2] + [1] * 6  # one stray frame (0.2 s) inside happiness
    found = segments(onehot(labels), times, min_duration_s=0.5)
    assert [(s.label, s.start, s.stop) for s in found] == [(1, 0, 11)]
    kept = segments(onehot(labels), times, min_duration_s=0.0)
    assert len(kept) == 3


def test_one_frame_and_no_frame() -> None:
    assert segments(onehot([2]), np.array([1.5]), 0.5)[0].label == 2
    assert segments(np.zeros((0, 3), np.float32), np.zeros(0), 0.5) == []


def test_linear_smoothing_equals_the_pairwise_definition_on_irregular_times() -> None:
    rng = np.random.default_rng(3)
    times = np.cumsum(rng.uniform(0.05, 0.6, 400))
    probabilities = rng.dirichlet(np.ones(7), 400).astype(np.float32)
    weights = rng.uniform(0.0, 1.0, 400)
    near = np.abs(times[:, None] - times[None, :]) <= 0.75 + 1e-9
    w = near * np.maximum(weights, 1e-6)[None, :]
    expected = (w @ probabilities.astype(np.float64)) / w.sum(axis=1, keepdims=True)
    np.testing.assert_allclose(smooth(probabilities, times, weights, 1.5), expected, atol=1e-6)
