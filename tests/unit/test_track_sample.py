"""A long video's per-person crop sample: bounded by the number of people, empty when nothing needs it."""

from __future__ import annotations

import numpy as np

from service.vision.clip_analysis import TrackSample


def offered(size: int, count: int) -> TrackSample:
    sample = TrackSample(size)
    for index in range(count):
        sample.offer(np.full((1,), index, dtype=np.float32))
    return sample


def test_a_sample_never_holds_more_than_its_size_however_long_the_track() -> None:
    for count in (1, 7, 64, 65, 1000, 14_400):
        assert 0 < len(offered(64, count).crops) <= 64


def test_a_sample_is_spread_evenly_over_the_whole_track() -> None:
    kept = [int(c[0]) for c in offered(4, 100).crops]
    assert kept[0] == 0 and kept[-1] >= 50  # from the start to the second half, not the first few
    steps = np.diff(kept)
    assert (steps == steps[0]).all()


def test_a_sample_of_size_zero_keeps_nothing() -> None:
    """A job whose video model will not run (untrained, not asked for) keeps no crops at all: 64 crops of
    each of 499 people took a one-hour job's gateway from 1.3 to 2.9 GiB."""
    sample = offered(0, 14_400)
    assert sample.crops == [] and sample.seen == 14_400
