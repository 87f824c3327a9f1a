"""Every distance and test against scipy on the same raw values, within the documented bounds."""

import numpy as np
import pytest
from scipy import stats
from scipy.spatial.distance import jensenshannon
from scipy.special import rel_entr

from streamdrift.detectors import QuantileSketch
from streamdrift.detectors.distances import (
    SMOOTHING,
    chi_square,
    cohens_h,
    hellinger,
    jensen_shannon,
    ks_bound,
    ks_critical_value,
    ks_p_value,
    ks_significant,
    ks_test,
    missing_rate_test,
    psi,
    wasserstein,
    wasserstein_bound,
)
from streamdrift.detectors.windows import CategoricalPeriod, NumericPeriod, NumericWindows

SAMPLES = {
    "normal shift": lambda rng, n: rng.normal(0.3, 1.0, n),
    "wider": lambda rng, n: rng.normal(0.0, 1.5, n),
    "lognormal": lambda rng, n: rng.lognormal(0.0, 1.0, n),
    "ties": lambda rng, n: rng.integers(0, 5, n).astype(float),
}


def sketch_of(values, k=200):
    sketch = QuantileSketch(k)
    sketch.update_many(values)
    return sketch


@pytest.mark.parametrize("name", SAMPLES)
def test_ks_and_wasserstein_equal_scipy_when_the_sketches_are_exact(name):
    rng = np.random.default_rng(1)
    reference, window = rng.normal(0.0, 1.0, 150), SAMPLES[name](rng, 120)
    ref_sketch, win_sketch = sketch_of(reference), sketch_of(window)
    assert ks_bound(ref_sketch, win_sketch) == 0.0
    expected = stats.ks_2samp(reference, window, method="asymp")
    statistic, p_value = ks_test(ref_sketch, win_sketch)
    assert statistic == pytest.approx(expected.statistic, abs=1e-12)
    assert p_value == pytest.approx(expected.pvalue, rel=1e-9)
    assert wasserstein(ref_sketch, win_sketch) == pytest.approx(
        stats.wasserstein_distance(reference, window), rel=1e-9
    )


@pytest.mark.parametrize("name", SAMPLES)
def test_sketched_ks_and_wasserstein_within_the_rank_error_bound(name):
    rng = np.random.default_rng(2)
    reference, window = rng.normal(0.0, 1.0, 20_000), SAMPLES[name](rng, 3_000)
    ref_sketch, win_sketch = sketch_of(reference), sketch_of(window)
    bound = ks_bound(ref_sketch, win_sketch)
    assert bound == pytest.approx(2 * 0.0133, abs=2e-4)
    expected = stats.ks_2samp(reference, window, method="asymp")
    statistic, p_value = ks_test(ref_sketch, win_sketch)
    assert abs(statistic - expected.statistic) <= bound
    effective = round(20_000 * 3_000 / 23_000)
    assert stats.kstwo.sf(expected.statistic + bound, effective) <= p_value
    assert p_value <= stats.kstwo.sf(max(expected.statistic - bound, 0.0), effective)
    raw = stats.wasserstein_distance(reference, window)
    bound = wasserstein_bound(ref_sketch, win_sketch)
    assert abs(wasserstein(ref_sketch, win_sketch) - raw) <= bound


def test_an_exact_window_leaves_only_the_reference_error():
    rng = np.random.default_rng(3)
    reference, window = rng.lognormal(size=50_000), rng.lognormal(0.1, 1.0, 500)
    ref_sketch, win_sketch = sketch_of(reference), sketch_of(window, k=500)
    assert win_sketch.exact and ks_bound(ref_sketch, win_sketch) == ref_sketch.rank_error
    statistic, _ = ks_test(ref_sketch, win_sketch)
    assert abs(statistic - stats.ks_2samp(reference, window).statistic) <= ref_sketch.rank_error


def binned(reference, window, bins=10):
    """Counts of both samples in right-closed bins at the reference's deciles, counted by numpy."""
    cuts = NumericWindows.cuts_of(reference, bins)
    return [
        np.bincount(np.digitize(x, cuts, right=True), minlength=len(cuts) + 1)
        for x in (reference, window)
    ]


@pytest.mark.parametrize("name", SAMPLES)
def test_binned_measures_equal_scipy(name):
    rng = np.random.default_rng(4)
    reference, window = binned(rng.normal(0.0, 1.0, 5_000), SAMPLES[name](rng, 500))
    keep = (reference + window) > 0  # scipy rejects bins empty on both sides
    expected = stats.chi2_contingency(np.array([reference, window])[:, keep], correction=False)
    statistic, p_value, dof = chi_square(reference, window)
    assert (statistic, p_value, dof) == pytest.approx(
        (expected.statistic, expected.pvalue, expected.dof)
    )
    smoothed = [(c + SMOOTHING) / (c + SMOOTHING).sum() for c in (reference, window)]
    assert psi(reference, window) == pytest.approx(
        rel_entr(smoothed[1], smoothed[0]).sum() + rel_entr(smoothed[0], smoothed[1]).sum()
    )
    assert jensen_shannon(reference, window) == pytest.approx(
        jensenshannon(reference, window, base=2), abs=1e-12
    )
    shares = [c / c.sum() for c in (reference, window)]
    assert hellinger(reference, window) == pytest.approx(
        np.linalg.norm(np.sqrt(shares[0]) - np.sqrt(shares[1])) / np.sqrt(2)
    )


def test_numeric_period_bins_equal_numpy_and_histogram_feeds_chi2():
    rng = np.random.default_rng(5)
    warmup, reference = rng.normal(size=500), rng.normal(size=5_000)
    window = rng.normal(0.5, 1.0, 700)
    cuts = NumericWindows.cuts_of(warmup, 10)
    periods = [NumericPeriod(cuts, 200), NumericPeriod(cuts, 800)]
    for period, values in zip(periods, (reference, window), strict=True):
        for chunk in np.array_split(values, 7):
            period.add(chunk, np.zeros(len(chunk), bool))
    histogram = periods[0].histogram(periods[1])
    for counts, values in ((histogram.reference, reference), (histogram.current, window)):
        by_numpy = np.bincount(np.digitize(values, cuts, right=True), minlength=len(cuts) + 1)
        assert counts.tolist() == by_numpy.tolist()
    expected = stats.chi2_contingency([histogram.reference, histogram.current], correction=False)
    assert chi_square(histogram.reference, histogram.current)[1] == pytest.approx(expected.pvalue)


def test_categorical_histogram_pools_rare_categories_like_a_crosstab():
    rng = np.random.default_rng(6)
    known = ["a", "b", "c", "d", "r1", "r2"]
    reference = rng.choice(known, 5_000, p=[0.4, 0.3, 0.2, 0.0984, 0.0008, 0.0008]).tolist()
    window = rng.choice(["a", "b", "c", "new"], 500, p=[0.3, 0.3, 0.2, 0.2]).tolist()
    periods = [CategoricalPeriod(10), CategoricalPeriod(10)]
    for period, values in zip(periods, (reference, window), strict=True):
        period.add(values, np.zeros(len(values), bool))
    histogram = periods[0].histogram(periods[1]).pooled()
    # r1 and r2 are expected to hold fewer than 5 values: pooled; "new" holds 20%: kept apart.
    assert histogram.labels == ["a", "b", "c", "d", "(new)", "(other)"]
    table = np.array(
        [
            [values.count(c) for c in ["a", "b", "c", "d", "new", "r1", "r2"]]
            for values in (reference, window)
        ]
    )
    table = np.column_stack([table[:, :5], table[:, 5:].sum(axis=1)])
    assert np.array_equal(table, [histogram.reference, histogram.current])
    expected = stats.chi2_contingency(table, correction=False)
    statistic, p_value, _ = chi_square(histogram.reference, histogram.current)
    assert (statistic, p_value) == pytest.approx((expected.statistic, expected.pvalue))
    assert {c["bin"] for c in histogram.top_contributors()[:2]} == {"d", "(new)"}


def test_missing_rate_test_is_fishers_exact_test():
    for table in ((50, 5_000, 25, 500), (0, 5_000, 2, 500), (400, 5_000, 40, 500)):
        ref_missing, ref_events, missing, events = table
        z, p_value = missing_rate_test(*table)
        expected = stats.fisher_exact(
            [[ref_missing, ref_events - ref_missing], [missing, events - missing]]
        )
        assert p_value == pytest.approx(expected.pvalue)
        pooled = (ref_missing + missing) / (ref_events + events)
        spread = np.sqrt(pooled * (1 - pooled) * (1 / ref_events + 1 / events))
        assert z == pytest.approx((missing / events - ref_missing / ref_events) / spread)
    assert missing_rate_test(0, 5_000, 0, 500) == (0.0, 1.0)
    assert cohens_h(0.0, 0.01) == pytest.approx(2 * np.arcsin(0.1))


@pytest.mark.parametrize("level", [1e-9, 1e-6, 0.05, 0.5])
@pytest.mark.parametrize(("n", "m"), [(5_000, 500), (5_000, 431), (200, 30), (40, 40)])
def test_ks_significance_by_critical_value_agrees_with_the_p_value(level, n, m):
    critical = ks_critical_value(level, n, m)
    rng = np.random.default_rng(n + m)
    for statistic in np.concatenate(
        [rng.uniform(0, 1, 300), critical * (1 + np.array([-1e-6, 1e-6]))]
    ):
        assert ks_significant(statistic, n, m, level) == (ks_p_value(statistic, n, m) < level)
