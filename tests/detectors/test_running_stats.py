import math

import numpy as np
import pytest

from streamdrift.detectors import RunningStats
from streamdrift.detectors.stats import RunningStatsState


def stats_of(chunks):
    stats = RunningStats()
    for chunk in chunks:
        stats.update_many(chunk)
    return stats


@pytest.mark.parametrize("offset", [0.0, 1e9])
def test_batches_match_numpy(offset):
    rng = np.random.default_rng(1)
    values = offset + rng.normal(3.0, 2.0, 10_000)
    # uneven chunk sizes, including empty and single-value chunks
    chunks = np.split(values, [0, 1, 1, 17, 500, 9_999])
    stats = stats_of(chunks)
    assert stats.count == len(values)
    # the large offset would ruin a sum-of-squares implementation (variance ~4 at 1e9)
    assert stats.mean == pytest.approx(values.mean(), rel=1e-12)
    assert stats.variance == pytest.approx(values.var(ddof=1), rel=1e-6)
    assert stats.std == pytest.approx(values.std(ddof=1), rel=1e-6)
    assert (stats.min, stats.max) == (values.min(), values.max())


def test_merge_of_partitions_matches_numpy_over_all_values():
    rng = np.random.default_rng(2)
    partitions = [rng.exponential(scale, size) for scale, size in [(1, 1000), (5, 10), (0.1, 3000)]]
    merged = RunningStats()
    for part in partitions:
        merged.merge(stats_of(np.array_split(part, 3)))
    merged.merge(RunningStats())  # an empty partition changes nothing
    everything = np.concatenate(partitions)
    assert merged.count == len(everything)
    assert merged.mean == pytest.approx(everything.mean(), rel=1e-12)
    assert merged.variance == pytest.approx(everything.var(ddof=1), rel=1e-10)
    assert (merged.min, merged.max) == (everything.min(), everything.max())


def test_empty_and_single_value():
    stats = RunningStats()
    assert (stats.count, stats.variance, stats.min, stats.max) == (0, 0.0, math.inf, -math.inf)
    stats.update_many(np.array([4.0]))
    assert (stats.mean, stats.variance, stats.min, stats.max) == (4.0, 0.0, 4.0, 4.0)


def test_state_round_trip():
    stats = stats_of([np.random.default_rng(3).normal(size=100)])
    restored = RunningStats.from_state(stats.to_state())
    assert restored.to_state() == stats.to_state()
    assert isinstance(stats.to_state(), RunningStatsState)
