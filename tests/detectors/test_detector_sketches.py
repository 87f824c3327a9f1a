import numpy as np
import pytest

from streamdrift.detectors import CategoryCounts, QuantileSketch
from streamdrift.detectors.sketches import CategoryCountsState

RANKS = np.linspace(0.01, 0.99, 99)


def true_ranks(sorted_values, quantiles):
    """Fraction of the values <= each quantile (the inclusive rank KLL targets)."""
    return np.searchsorted(sorted_values, quantiles, side="right") / len(sorted_values)


def test_quantiles_within_documented_rank_error():
    values = np.random.default_rng(4).lognormal(size=100_000)
    sketch = QuantileSketch()
    for chunk in np.array_split(values, 37):
        sketch.update_many(chunk)
    errors = np.abs(true_ranks(np.sort(values), sketch.quantiles(RANKS)) - RANKS)
    assert sketch.rank_error == pytest.approx(0.0133, abs=1e-4)
    assert errors.max() <= sketch.rank_error


def test_merged_partitions_within_rank_error():
    rng = np.random.default_rng(5)
    partitions = [rng.normal(loc, 1.0, 30_000) for loc in (0.0, 2.0, 5.0)]
    merged = QuantileSketch()
    for part in partitions:
        sketch = QuantileSketch()
        sketch.update_many(part)
        merged.merge(sketch)
    everything = np.sort(np.concatenate(partitions))
    assert merged.count == len(everything)
    errors = np.abs(true_ranks(everything, merged.quantiles(RANKS)) - RANKS)
    assert errors.max() <= merged.rank_error


def test_exact_while_at_most_k_values():
    values = np.random.default_rng(6).normal(size=150)
    sketch = QuantileSketch(k=200)
    sketch.update_many(values)
    ranks = [0.0, 0.013, 0.257, 0.5, 0.771, 0.991, 1.0]  # off the i/150 steps, to skip rounding
    expected = np.quantile(values, ranks, method="inverted_cdf")
    assert sketch.quantiles(ranks) == list(expected)


def test_empty_sketch_has_no_quantiles():
    with pytest.raises(ValueError, match="empty"):
        QuantileSketch().quantiles([0.5])


def test_bytes_round_trip_and_malformed_bytes():
    sketch = QuantileSketch()
    sketch.update_many(np.random.default_rng(7).normal(size=5_000))
    restored = QuantileSketch.from_bytes(sketch.to_bytes())
    assert restored.quantiles(RANKS) == sketch.quantiles(RANKS)
    good = sketch.to_bytes()
    for bad in (b"", b"garbage", good[: len(good) // 2], bytes(len(good))):
        with pytest.raises(ValueError, match="malformed"):
            QuantileSketch.from_bytes(bad)


def test_category_counts_are_bounded():
    counts = CategoryCounts(max_categories=3)
    counts.update_many(["a", "b", "a"])
    assert counts.accepts("a") and counts.accepts("c")
    assert not counts.accepts("d", pending_new={"c"})  # "c" takes the last slot
    assert counts.accepts("c", pending_new={"c"})
    counts.update_many(["c", "c"])
    assert not counts.accepts("d")
    with pytest.raises(ValueError, match="do not fit"):
        counts.update_many(["a", "d"])
    # the failed batch counted nothing, not even its known value
    assert counts.counts == {"a": 2, "b": 1, "c": 2}
    assert counts.total == 5
    assert counts.top(2) == [("a", 2), ("c", 2)]


def test_category_batch_with_too_many_new_values_is_rejected_whole():
    counts = CategoryCounts(max_categories=2)
    with pytest.raises(ValueError):
        counts.update_many(["x", "y", "z"])
    assert counts.counts == {} and counts.total == 0


def test_category_merge_and_state():
    left, right = CategoryCounts(3), CategoryCounts(3)
    left.update_many(["a", "b"])
    right.update_many(["b", "b", "c"])
    left.merge(right)
    assert left.counts == {"a": 1, "b": 3, "c": 1} and left.total == 5
    other = CategoryCounts(3)
    other.update_many(["d"])
    with pytest.raises(ValueError):
        left.merge(other)
    assert left.counts == {"a": 1, "b": 3, "c": 1}
    restored = CategoryCounts.from_state(left.to_state())
    assert (restored.counts, restored.total, restored.max_categories) == (left.counts, 5, 3)
    with pytest.raises(ValueError, match="max_categories"):
        CategoryCounts.from_state(CategoryCountsState(max_categories=1, counts={"a": 1, "b": 1}))


@pytest.mark.parametrize("k", [8, 200, 500])
@pytest.mark.parametrize("n", [0, 1, 2, 7, 200, 201, 500, 5_000, 123_457])
def test_items_read_from_the_serialisation_match_the_sketch_iterator(k, n):
    rng = np.random.default_rng(n + k)
    sketch = QuantileSketch(k)
    values = np.round(rng.normal(size=n), 2)  # rounded: ties across levels
    for start in range(0, n, 1000):  # several updates: compactions between them
        sketch.update_many(values[start : start + 1000])
    pairs = sorted(sketch._sketch)  # the library's own view, ties ordered by weight
    items, weights = sketch.items()
    assert items.tolist() == [value for value, _ in pairs]
    assert weights.tolist() == [weight for _, weight in pairs]
    assert weights.sum() == n
    merged = QuantileSketch(k)
    merged.merge(sketch)
    merged.merge(QuantileSketch.from_bytes(sketch.to_bytes()))
    assert merged.items()[1].sum() == 2 * n
