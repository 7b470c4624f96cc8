"""A track's expression over time: weighted mean, smoothing, segments."""

from __future__ import annotations

import numpy as np
import pytest

from service.serving.temporal import segments, smooth, weighted_average, weighted_mean


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


def test_the_weighted_mean_is_a_distribution_even_from_unnormalised_rows() -> None:
    # Scores that do not sum to one (rounding, or a model's sigmoid outputs) still give a distribution.
    mean = weighted_mean(np.array([[2.0, 1.0, 1.0], [2.0, 1.0, 1.0]], np.float32), np.ones(2))
    np.testing.assert_allclose(mean, [0.5, 0.25, 0.25], rtol=1e-6)
    assert mean.dtype == np.float32


def test_the_weighted_average_of_valence_is_not_renormalised() -> None:
    # Valence/arousal: a weighted mean of the values themselves, (0.6 * 0.5 + 0.2 * -0.5) / 0.8 = 0.25.
    values = np.array([[0.5, 0.2], [-0.5, 0.6]], np.float32)
    average = weighted_average(values, np.array([0.6, 0.2]))
    np.testing.assert_allclose(average, [0.25, 0.3], rtol=1e-6)
    assert average.dtype == np.float32


def test_a_frame_exactly_half_a_window_away_is_in_the_window_both_ways() -> None:
    # 0.2 s steps: the fourth timestamp is 0.6000000000000001, still "within 0.2 s" of 0.4.
    times = np.arange(4) * 0.2
    smoothed = smooth(onehot([0, 1, 1, 2]), times, np.ones(4), window_s=0.4)
    np.testing.assert_allclose(smoothed[1], onehot([0, 1, 1]).mean(axis=0), rtol=1e-6)
    np.testing.assert_allclose(smoothed[3], onehot([1, 2]).mean(axis=0), rtol=1e-6)
    assert smoothed.dtype == np.float32
    # At the exact edge of the tolerance each of two frames still sees the other: windows are symmetric.
    edge = np.array([0.0, 0.5 + 1e-9])
    both = smooth(onehot([0, 1]), edge, np.ones(2), window_s=1.0)
    np.testing.assert_allclose(both[0], both[1], rtol=1e-6)


def test_a_run_lasts_its_frames_sampling_steps_and_the_minimum_is_inclusive() -> None:
    # 4 fps: a run of two frames lasts 2 x 0.25 s = 0.5 s (not the 0.25 s between its timestamps), which
    # is enough for a 0.5 s minimum.
    times = np.arange(10) * 0.25
    found = segments(onehot([1] * 4 + [2] * 2 + [1] * 4), times, min_duration_s=0.5)
    assert [(s.label, s.start, s.stop) for s in found] == [(1, 0, 3), (2, 4, 5), (1, 6, 9)]
    # Two frames, two labels: each lasts one step.
    two = segments(onehot([0, 1]), np.array([0.0, 0.25]), min_duration_s=0.25)
    assert [(s.label, s.start, s.stop) for s in two] == [(0, 0, 0), (1, 1, 1)]


def test_a_short_run_at_either_end_joins_its_only_neighbour() -> None:
    times = np.arange(9) * 0.25
    first = segments(onehot([2] + [0] * 8), times, min_duration_s=0.5)
    assert [(s.label, s.start, s.stop) for s in first] == [(0, 0, 8)]
    last = segments(onehot([0] * 8 + [2]), times, min_duration_s=0.5)
    assert [(s.label, s.start, s.stop) for s in last] == [(0, 0, 8)]
    # The first run short, the second long enough, a longer last one that is not its neighbour.
    three = segments(onehot([2] + [0] * 3 + [1] * 5), times, min_duration_s=0.5)
    assert [(s.label, s.start, s.stop) for s in three] == [(0, 0, 3), (1, 4, 8)]


@pytest.mark.parametrize(
    ("labels", "expected"),
    [
        # long, short, medium: the short run joins the longer neighbour on its left ...
        ([0] * 5 + [1] + [2] * 3, [(0, 0, 5), (2, 6, 8)]),
        # ... medium, short, long: on its right ...
        ([0] * 3 + [1] + [2] * 5, [(0, 0, 2), (2, 3, 8)]),
        # ... and between equal neighbours, the earlier one.
        ([0] * 4 + [1] + [2] * 4, [(0, 0, 4), (2, 5, 8)]),
    ],
)
def test_a_short_run_in_the_middle_joins_its_longer_neighbour(
    labels: list[int], expected: list[tuple[int, int, int]]
) -> None:
    found = segments(onehot(labels), np.arange(len(labels)) * 0.25, min_duration_s=0.5)
    assert [(s.label, s.start, s.stop) for s in found] == expected


def test_a_segments_probability_is_the_mean_over_all_its_frames() -> None:
    smoothed = np.array([[0.9, 0.1], [0.7, 0.3], [0.5, 0.5], [0.2, 0.8]], np.float32)
    found = segments(smoothed, np.arange(4) * 0.25, min_duration_s=0.0)
    assert [(s.label, s.start, s.stop) for s in found] == [(0, 0, 2), (1, 3, 3)]  # a tie goes to 0
    assert found[0].mean_probability == pytest.approx((0.9 + 0.7 + 0.5) / 3)
