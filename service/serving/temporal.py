"""A person's expression over a clip, from the trained image model's per-frame distributions.

Three answers to the questions people ask of a clip: the track's overall distribution (a mean over its
frames weighted by detection score, so blurred or half-hidden faces count less), a smoothed timeline (a
centred window over neighbouring frames, again detection-weighted), and segments ("happiness 2.1-4.5 s"):
runs of one smoothed top label, with runs shorter than a minimum merged into their longer neighbour so a
single noisy frame does not split a segment. Pure numpy: no API schemas.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from service.arrays import Float64Array, FloatArray


@dataclass(frozen=True)
class Segment:
    label: int  # index into the model's labels
    start: int  # first and last row (inclusive) of the track's frames
    stop: int
    mean_probability: float


def weighted_mean(probabilities: FloatArray, weights: Float64Array) -> FloatArray:
    """``[T, C]`` per-frame distributions and ``[T]`` weights (detection scores) → a ``[C]`` distribution."""
    mean = weighted_average(probabilities, weights)
    result: FloatArray = (mean / mean.sum()).astype(np.float32)
    return result


def weighted_average(values: FloatArray, weights: Float64Array) -> FloatArray:
    """``[T, K]`` per-frame values and ``[T]`` weights → their weighted average ``[K]``, as it is (for
    quantities that are not distributions, such as valence and arousal)."""
    w = _floored(weights)
    result: FloatArray = ((values.astype(np.float64) * w[:, None]).sum(axis=0) / w.sum()).astype(np.float32)
    return result


def smooth(
    probabilities: FloatArray, timestamps: Float64Array, weights: Float64Array, window_s: float
) -> FloatArray:
    """Each frame's distribution replaced by the weighted mean over the frames within ``window_s / 2``.

    Timestamps are sorted, so each window is a contiguous run found by binary search and its sums come from
    running totals: time and memory linear in the track's length (an hour-long job's tracks included)."""
    w = _floored(weights)
    half = window_s / 2.0 + 1e-9
    lo = np.searchsorted(timestamps, timestamps - half, side="left")
    hi = np.searchsorted(timestamps, timestamps + half, side="right")
    weighted = np.vstack(
        [np.zeros((1, probabilities.shape[1])), np.cumsum(probabilities * w[:, None], axis=0)]
    )
    totals = np.concatenate([[0.0], np.cumsum(w)])
    mixed = (weighted[hi] - weighted[lo]) / (totals[hi] - totals[lo])[:, None]
    result: FloatArray = mixed.astype(np.float32)
    return result


def _floored(weights: Float64Array) -> Float64Array:
    """Detection-score weights, floored: a zero score must not zero a track (or a window) out."""
    floored: Float64Array = np.maximum(weights.astype(np.float64), 1e-6)
    return floored


def segments(smoothed: FloatArray, timestamps: Float64Array, min_duration_s: float) -> list[Segment]:
    """Runs of one top label; a run lasting less than ``min_duration_s`` joins its longer neighbour."""
    if len(smoothed) == 0:
        return []
    top = smoothed.argmax(axis=1)
    runs = _runs([int(label) for label in top])
    # A run of n frames lasts n sampling steps (a single frame is not an instant).
    step = float(np.median(np.diff(timestamps))) if len(timestamps) > 1 else 0.0
    while len(runs) > 1:
        durations = [float(timestamps[stop] - timestamps[start]) + step for _, start, stop in runs]
        shortest = int(np.argmin(durations))
        if durations[shortest] >= min_duration_s:
            break
        runs = _merge(runs, shortest, durations)
    return [_segment(smoothed, label, start, stop) for label, start, stop in runs]


def _runs(labels: list[int]) -> list[tuple[int, int, int]]:
    """(label, first, last) runs of equal consecutive labels: each frame a run of one, joined."""
    return _rejoin([(label, index, index) for index, label in enumerate(labels)])


def _merge(
    runs: list[tuple[int, int, int]], index: int, durations: list[float]
) -> list[tuple[int, int, int]]:
    """Give run ``index``'s frames to its longer neighbour; equal neighbours of one label join up."""
    left, right = index - 1, index + 1
    into = left if right >= len(runs) or (left >= 0 and durations[left] >= durations[right]) else right
    _, start, stop = runs[index]
    label, n_start, n_stop = runs[into]
    merged = list(runs)
    merged[into] = (label, min(start, n_start), max(stop, n_stop))
    del merged[index]
    return _rejoin(merged)


def _rejoin(runs: list[tuple[int, int, int]]) -> list[tuple[int, int, int]]:
    joined: list[tuple[int, int, int]] = []
    for label, start, stop in runs:
        if joined and joined[-1][0] == label:
            joined[-1] = (label, joined[-1][1], stop)
        else:
            joined.append((label, start, stop))
    return joined


def _segment(smoothed: FloatArray, label: int, start: int, stop: int) -> Segment:
    return Segment(label, start, stop, float(smoothed[start : stop + 1, label].mean()))
