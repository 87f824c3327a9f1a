"""Reference baselines: building, serialising, and monitors seeded with them."""

import json

import numpy as np
import pytest
from scipy import stats as scipy_stats

from streamdrift.detectors import CategoricalMonitor, NumericMonitor, monitor_from_bytes
from streamdrift.detectors.baseline import (
    Baseline,
    BaselineBuilder,
    baseline_from_statistics,
    profile_of,
)
from streamdrift.detectors.sketches import QuantileSketch
from streamdrift.detectors.stats import RunningStats
from streamdrift.detectors.windows import NumericPeriod, NumericWindows


def numeric_baseline(values: np.ndarray, name: str = "x") -> Baseline:
    builder = BaselineBuilder()
    builder.add_columns({name: values.tolist()})
    return builder.build("m", "v1", source="test")


def feed(monitor, values, start=0, chunk=997):
    """Stream ``values`` in uneven batches, as a worker would; all detections."""
    found = []
    for i in range(0, len(values), chunk):
        part = values[i : i + chunk]
        found += monitor.update(part, np.arange(start + i, start + i + len(part)))
    return found


def test_builder_matches_numpy_and_counts_missing_and_categories():
    rng = np.random.default_rng(0)
    x = rng.normal(3, 2, 10_000)
    builder = BaselineBuilder()
    for part in np.array_split(x, 7):  # batches merge into the same moments
        builder.add_columns(
            {"x": [*part.tolist(), None], "c": ["a"] * (len(part) - 1) + ["b", None]}
        )
    baseline = builder.build("m", None, source="unit")
    profile = baseline.features["x"]
    assert profile.stats.count == 10_000 and profile.missing == 7
    assert profile.stats.mean == pytest.approx(x.mean(), rel=1e-12)
    assert RunningStats.from_state(profile.stats).variance == pytest.approx(x.var(ddof=1), rel=1e-9)
    assert QuantileSketch.from_bytes(profile.sketch).quantiles([0.5])[0] == pytest.approx(
        3, abs=0.1
    )
    categories = baseline.features["c"]
    assert categories.counts.counts == {"a": 10_000 - 7, "b": 7} and categories.missing == 7
    assert baseline.rows == 10_007 and Baseline.from_bytes(baseline.to_bytes()) == baseline


def test_builder_rejects_mixed_types_and_too_many_categories_by_name():
    builder = BaselineBuilder(max_categories=3)
    with pytest.raises(ValueError, match="'x' has values of types \\['float', 'str'\\]"):
        builder.add_rows([{"x": 1.0}, {"x": "a"}])
    builder.add_rows([{"y": 1.0}])
    with pytest.raises(ValueError, match="'y' was numeric"):
        builder.add_rows([{"y": "a"}])
    with pytest.raises(ValueError, match="'z' has more than 3 categories"):
        builder.add_columns({"z": ["a", "b", "c", "d"]})
    with pytest.raises(ValueError, match="malformed baseline"):
        Baseline.from_bytes(b"\x01garbage")


def test_summaries_bin_like_the_values_when_the_sketch_is_exact():
    rng = np.random.default_rng(1)
    values = rng.normal(size=150)  # below k: the sketch is exact
    cuts = NumericWindows.cuts_of(values, bins=10)
    direct = NumericPeriod(cuts, 200)
    direct.add(values, np.zeros(len(values), bool))
    sketch = QuantileSketch()
    sketch.update_many(values)
    stats = RunningStats()
    stats.update_many(values)
    seeded = NumericPeriod.of_summaries(cuts, stats, sketch, missing=0)
    assert seeded.bins.tolist() == direct.bins.tolist()


def test_seeded_monitor_catches_a_shift_present_from_the_first_event():
    """Without a baseline the monitor would take the shifted data as its reference."""
    rng = np.random.default_rng(2)
    baseline = numeric_baseline(rng.normal(size=20_000))
    shifted = rng.normal(0.5, 1, 3_000)
    unseeded = NumericMonitor()
    assert feed(unseeded, shifted) == []
    seeded = NumericMonitor()
    seeded.seed(baseline.features["x"], baseline.label)
    found = feed(seeded, shifted)
    assert [d.event for d in found] == ["detected"]
    assert found[0].position < 1_000
    assert seeded.summary()["reference_source"] == "m/v1 r0"
    assert seeded.summary()["warmup_remaining"] == 0


def test_seeded_monitor_stays_quiet_on_the_baseline_distribution():
    rng = np.random.default_rng(3)
    baseline = numeric_baseline(rng.lognormal(size=50_000))
    monitor = NumericMonitor()
    monitor.seed(baseline.features["x"], baseline.label)
    assert feed(monitor, rng.lognormal(size=100_000), chunk=5_000) == []
    assert monitor.count == 100_000 and monitor.windows.evaluated == 200


def test_seeded_state_round_trips_mid_stream():
    rng = np.random.default_rng(4)
    baseline = numeric_baseline(rng.normal(size=5_000))
    values = np.concatenate([rng.normal(size=2_250), rng.normal(1, 1, 2_000)])
    whole = NumericMonitor()
    whole.seed(baseline.features["x"], baseline.label)
    expected = [(d.detector, d.position) for d in feed(whole, values)]
    first = NumericMonitor()
    first.seed(baseline.features["x"], baseline.label)
    found = feed(first, values[:2_250])
    restored = monitor_from_bytes(first.to_bytes())
    found += feed(restored, values[2_250:], start=2_250)
    assert restored.reference_source == "m/v1 r0" and restored.windows.ready
    assert [(d.detector, d.position) for d in found] == expected and expected


def test_seeded_categorical_monitor_catches_a_new_mix():
    rng = np.random.default_rng(5)
    builder = BaselineBuilder()
    builder.add_columns({"c": [str(v) for v in rng.choice(["a", "b"], 10_000, p=[0.7, 0.3])]})
    baseline = builder.build("m", "v1", source="test")
    monitor = CategoricalMonitor()
    monitor.seed(baseline.features["c"], baseline.label)
    values = [str(v) for v in rng.choice(["a", "b", "c"], 1_000, p=[0.4, 0.4, 0.2])]
    found = monitor.update(values, range(len(values)))
    assert [(d.event, d.test) for d in found] == [("detected", "chi2")]
    with pytest.raises(ValueError, match="categorical profile"):
        monitor.seed(numeric_baseline(np.ones(10)).features["x"], "x")


def test_uploaded_statistics_give_a_reference_close_to_the_data():
    ranks = np.linspace(0, 1, 101)
    quantiles = scipy_stats.norm.ppf(np.clip(ranks, 1e-4, 1 - 1e-4))
    document = {
        "model": "m",
        "version": "v2",
        "numeric": {
            "x": {
                "count": 100_000,
                "mean": 0.0,
                "std": 1.0,
                "missing": 10,
                "quantiles": {str(r): q for r, q in zip(ranks, quantiles, strict=True)},
            }
        },
        "categorical": {"c": {"counts": {"a": 3, "b": 1}}},
    }
    baseline = baseline_from_statistics(json.dumps(document).encode(), source="stats.json")
    assert baseline.version == "v2" and baseline.features["c"].counts.counts == {"a": 3, "b": 1}
    rng = np.random.default_rng(6)
    quiet = NumericMonitor()
    quiet.seed(baseline.features["x"], baseline.label)
    assert feed(quiet, rng.normal(size=50_000), chunk=5_000) == []
    shifted = NumericMonitor()
    shifted.seed(baseline.features["x"], baseline.label)
    assert [d.event for d in feed(shifted, rng.normal(1, 1, 2_000))] == ["detected"]
    with pytest.raises(ValueError, match="ranks 0 and 1"):
        bad = {
            "model": "m",
            "numeric": {"x": {"count": 5, "mean": 0, "std": 1, "quantiles": {"0.5": 0}}},
        }
        baseline_from_statistics(json.dumps(bad).encode(), source="bad")


def test_profile_of_live_summaries_seeds_like_a_built_baseline():
    rng = np.random.default_rng(7)
    values = rng.normal(size=3_000)
    stats, sketch = RunningStats(), QuantileSketch()
    stats.update_many(values)
    sketch.update_many(values)
    profile = profile_of(stats=stats, sketch=sketch, missing=2)
    assert profile.stats.count == 3_000 and profile.missing == 2
    with pytest.raises(ValueError, match="needs both"):
        profile_of(stats=stats)
