"""The window tests' fast paths give the numbers of the code they replaced, bit for bit.

``_old_*`` below are the implementations before the window tests' kernels (commit 4e2e5b6:
``detectors/sketches.py`` ``_retained``, ``detectors/distances.py`` ``cdf_distances``,
``detectors/windows.py`` ``Histogram.pooled``/``top_contributors``, the tests' ``_measure`` and
``Windows._close``), kept here as the oracle. KLL compaction is randomised, so two sketches of
the same values may differ: the windows are checked at every close against the old code run on
the same reference and window objects, just before the new code closes the window.
"""

from __future__ import annotations

import math
from itertools import pairwise
from typing import Any

import msgspec
import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp
from scipy import special

from streamdrift.detectors import distances, kernels
from streamdrift.detectors.config import WindowParams
from streamdrift.detectors.distances import (
    cdf_distances,
    cdf_distances_of,
    chi_square,
    cohens_h,
    hellinger,
    jensen_shannon,
    ks_p_value,
    ks_significant,
    missing_rate_p_value,
    missing_rate_z,
    pool_small,
    psi,
    psi_terms,
)
from streamdrift.detectors.sketches import QuantileSketch, _retained
from streamdrift.detectors.stats import RunningStats, saturate
from streamdrift.detectors.windows import (
    MIN_VALUES,
    PSI_SEVERITY_CUTS,
    SEVERITY_CUTS,
    CategoricalPeriod,
    CategoricalWindows,
    Histogram,
    NumericPeriod,
    NumericWindows,
    severity,
)

# The compiled kernels (native/) against the reference code; tests/detectors/test_kernel_backends.py
# runs where they are not installed.
kernel = pytest.importorskip("streamdrift.detectors.kernels.windows", exc_type=ImportError)


@pytest.fixture(autouse=True, scope="module")
def _ks_decisions_by_p_value():
    """KS decisions by the p-value alone. ``ks_significant`` switches to a critical value once
    (level, n, m) has come up a few times: a process-wide count, which the oracle's calls would
    advance, and at a p-value equal to the level within rounding the two may disagree. Both
    codes ask the same function; here it answers the same way whatever the calls before."""
    saved = distances._CRITICAL_VALUES
    distances._CRITICAL_VALUES = distances._CriticalValues(after=2**62)
    yield
    distances._CRITICAL_VALUES = saved


RANDOM = settings(max_examples=120, deadline=None, suppress_health_check=[HealthCheck.too_slow])

# ---------------------------------------------------------------- the old code (the oracle)


def _old_retained(data: bytes) -> tuple[np.ndarray, np.ndarray]:
    flags = data[3]
    if flags & 1:
        return np.empty(0), np.empty(0)
    if flags & 4:
        return np.frombuffer(data, "<f8", 1, 8).copy(), np.ones(1)
    levels = int(data[18])
    starts = np.frombuffer(data, "<u4", levels, 20).astype(np.int64)
    items_at = 20 + 4 * levels + 16
    values = np.frombuffer(data, "<f8", offset=items_at)
    sizes = np.diff(np.append(starts, starts[0] + len(values)))
    weights = np.repeat(2.0 ** np.arange(levels), sizes)
    order = np.argsort(values, kind="stable")
    return values[order], weights[order]


def _old_cdf(values, weights, points):
    cumulative = np.concatenate([[0.0], np.cumsum(weights)])
    return cumulative[np.searchsorted(values, points, side="right")] / cumulative[-1]


def _old_cdf_distances_of(ref_items, win_items) -> tuple[float, float]:
    (ref_values, ref_weights), (win_values, win_weights) = ref_items, win_items
    points = np.union1d(ref_values, win_values)
    ref_cdf = _old_cdf(ref_values, ref_weights, points)
    win_cdf = _old_cdf(win_values, win_weights, points)
    gaps = np.abs(ref_cdf - win_cdf)
    if math.isfinite(float(points[-1]) - float(points[0])):
        return float(gaps.max()), float(np.dot(gaps[:-1], np.diff(points)))
    return float(gaps.max()), saturate(2 * float(np.dot(gaps[:-1], np.diff(points * 0.5))))


def _old_cdf_distances(reference: QuantileSketch, window: QuantileSketch) -> tuple[float, float]:
    return _old_cdf_distances_of(
        _old_retained(reference.to_bytes()), _old_retained(window.to_bytes())
    )


def _old_pool_small(reference, window):
    smaller = min(reference.sum(), window.sum())
    total = reference.sum() + window.sum()
    return (reference + window) * smaller / max(total, 1) < 5.0


def _old_chi_square(reference, window):
    table = np.array([reference, window], dtype=np.float64)
    table = table[:, table.sum(axis=0) > 0]
    dof = table.shape[1] - 1
    if dof < 1 or table.sum(axis=1).min() == 0:
        return 0.0, 1.0, 0
    expected = np.outer(table.sum(axis=1), table.sum(axis=0)) / table.sum()
    statistic = float(np.sum((table - expected) ** 2 / expected))
    return statistic, float(special.chdtrc(dof, statistic)), dof


def _old_smoothed(counts):
    values = np.asarray(counts, dtype=np.float64) + 0.5
    return values / values.sum()


def _old_psi_terms(reference, window):
    ref, win = _old_smoothed(reference), _old_smoothed(window)
    return (win - ref) * np.log(win / ref)


def _edge(value, infinite):
    return infinite if value is None else f"{value:.6g}"


def _old_histogram(reference, current):
    """(labels, reference counts, current counts), pooled as ``Histogram.pooled`` did."""
    if isinstance(reference, NumericPeriod):
        edges = [None, *reference.cuts.tolist(), None]
        labels = [f"({_edge(low, '-inf')}, {_edge(high, 'inf')}]" for low, high in pairwise(edges)]
        ref, cur = reference.bins, current.bins
    else:
        known = [value for value, _ in reference.counts.top(len(reference.counts.counts))]
        counts = current.counts.counts
        seen = [counts.get(value, 0) for value in known]
        labels = [*known, "(new)"]
        ref = np.array([reference.counts.counts[value] for value in known] + [0], dtype=np.int64)
        cur = np.array([*seen, current.count - sum(seen)], dtype=np.int64)
    return _old_pooled(labels, ref, cur)


def _old_pooled(labels, ref, cur):
    small = _old_pool_small(ref, cur)
    if small.sum() < 2:
        return labels, ref, cur
    keep = ~small
    return (
        [label for label, kept in zip(labels, keep, strict=True) if kept] + ["(other)"],
        np.append(ref[keep], ref[small].sum()),
        np.append(cur[keep], cur[small].sum()),
    )


def _old_psi(ref, cur):
    return float(_old_psi_terms(ref, cur).sum())


def _old_top_contributors(labels, ref, cur):
    terms = _old_psi_terms(ref, cur)
    ref_shares = ref / max(ref.sum(), 1)
    cur_shares = cur / max(cur.sum(), 1)
    order = np.argsort(-terms, kind="stable")[:5]
    return [
        {
            "bin": labels[i],
            "reference": float(ref_shares[i]),
            "current": float(cur_shares[i]),
            "psi": float(terms[i]),
        }
        for i in order
    ]


def _old_close(windows) -> dict[str, Any]:
    """What the old ``Windows._close`` reported for the open window (nothing is changed)."""
    reference, current = windows.reference, windows.current
    labels, ref, cur = _old_histogram(reference, current)
    params = windows.params
    measured: dict[str, tuple[float, float, float, Any]] = {}
    if isinstance(reference, NumericPeriod) and current.count >= MIN_VALUES:
        statistic, distance = _old_cdf_distances(reference.sketch, current.sketch)
        effect = saturate(distance / reference.scale)
        below = lambda level, s=statistic: ks_significant(s, reference.count, current.count, level)  # noqa: E731
        p = ks_p_value(statistic, reference.count, current.count)
        measured["ks"] = (statistic, p, effect, below, params.wasserstein_floor, SEVERITY_CUTS)
    if current.count >= MIN_VALUES:
        statistic, p, _ = _old_chi_square(ref, cur)
        measured["chi2"] = (
            statistic,
            p,
            _old_psi(ref, cur),
            None,
            params.psi_floor,
            PSI_SEVERITY_CUTS,
        )
    table = (reference.missing, reference.events, current.missing, current.events)
    effect = cohens_h(reference.missing_rate, current.missing_rate)
    p = missing_rate_p_value(*table)
    measured["missing"] = (
        missing_rate_z(*table),
        p,
        effect,
        None,
        params.missing_floor,
        SEVERITY_CUTS,
    )
    results = {}
    for name, (statistic, p, effect, below, floor, cuts) in measured.items():
        p_below = below or (lambda level, p=p: p < level)
        results[name] = {
            "statistic": statistic,
            "p_value": p,
            "effect_size": effect,
            "severity": severity(effect, cuts),
            "drifted": effect >= floor and p_below(windows.alpha),
            "quiet": effect < floor / 2 or not p_below(windows.alpha),
            "settled": effect < floor / 2 or not p_below(max(windows.alpha, params.resolve_alpha)),
        }
    counted = current.count > 0
    distances = {}
    if counted:
        distances = {
            "psi": _old_psi(ref, cur),
            "jensen_shannon": jensen_shannon(ref, cur),
            "hellinger": hellinger(ref, cur),
        }
        if isinstance(reference, NumericPeriod):
            if "ks" in results:
                distances["wasserstein"] = saturate(results["ks"]["effect_size"] * reference.scale)
        else:
            known = reference.counts.counts
            new = sum(n for value, n in current.counts.counts.items() if value not in known)
            distances["new_category_rate"] = new / current.count
    return {
        "results": results,
        "score": _old_psi(ref, cur) if current.count else 0.0,
        "reference": reference.summary(),
        "current": current.summary(),
        "tests": {
            name: {
                "statistic": r["statistic"],
                "p_value": r["p_value"],
                "effect": {"ks": "wasserstein_sigma", "chi2": "psi", "missing": "cohens_h"}[name],
                "effect_size": r["effect_size"],
                "floor": {
                    "ks": params.wasserstein_floor,
                    "chi2": params.psi_floor,
                    "missing": params.missing_floor,
                }[name],
                "drifted": r["drifted"],
            }
            for name, r in results.items()
        },
        "distances": distances,
        "top_contributors": _old_top_contributors(labels, ref, cur) if counted else [],
    }


# ---------------------------------------------------------------- comparing bit for bit


def _bits(value: Any) -> Any:
    """``value`` with every float as its hex form (so -0.0, nan and the last bit count)."""
    if isinstance(value, dict):
        return {key: _bits(item) for key, item in value.items()}
    if isinstance(value, list | tuple):
        return [_bits(item) for item in value]
    if isinstance(value, float | np.floating):
        return ("float", type(value).__name__, float(value).hex())
    return value


def _new_close(windows, evaluation) -> dict[str, Any]:
    details = evaluation.details
    return {
        "results": {
            r.test: {
                "statistic": r.statistic,
                "p_value": r.p_value,
                "effect_size": r.effect_size,
                "severity": r.severity,
                "drifted": r.drifted,
                "quiet": r.quiet,
                "settled": r.settled(windows.params.resolve_alpha),
            }
            for r in evaluation.results
        },
        "score": windows.score,
        "reference": evaluation.reference,
        "current": evaluation.current,
        "tests": details["tests"],
        "distances": details["distances"],
        "top_contributors": details["top_contributors"],
    }


class _Checked:
    """Mix-in: every close is compared with the old code's numbers for the same window."""

    closes = 0

    def _close(self, index):
        expected = _old_close(self)
        evaluation = super()._close(index)  # type: ignore[misc]
        assert _bits(_new_close(self, evaluation)) == _bits(expected)
        type(self).closes += 1
        return evaluation


class CheckedNumeric(_Checked, NumericWindows):
    pass


class CheckedCategorical(_Checked, CategoricalWindows):
    pass


# ---------------------------------------------------------------- streams


def _stream(kind: str, rng: np.random.Generator, n: int) -> np.ndarray:
    if kind == "normal":
        return rng.normal(size=n)
    if kind == "constant":
        return np.full(n, rng.choice([0.0, -0.0, 3.5, -1e300]))
    if kind == "ties":  # few distinct values, zeros of both signs among them
        return rng.choice([-0.0, 0.0, 1.0, 2.0, 2.0, 7.5], n)
    if kind == "extremes":  # spans beyond the float range, subnormals, huge and tiny values
        return rng.choice([-1.7e308, 1.7e308, 5e-324, -5e-324, 0.0, 1e-300, 1.0, 1e200], n)
    if kind == "shift":
        values = rng.normal(size=n)
        values[n // 2 :] = values[n // 2 :] * 3 + 2
        return values
    if kind == "lognormal":
        return rng.lognormal(0, 2, n)
    return rng.integers(-3, 4, n).astype(np.float64)  # integers


KINDS = ["normal", "constant", "ties", "extremes", "shift", "lognormal", "integers"]


def _with_missing(values: np.ndarray, rng: np.random.Generator, share: float) -> np.ndarray:
    values = values.copy()
    values[rng.random(len(values)) < share] = np.nan
    return values


def _batches(rng: np.random.Generator, n: int, largest: int) -> list[tuple[int, int]]:
    if not n:
        return []
    cuts = np.sort(rng.integers(0, n, rng.integers(0, max(n // 20, 1) + 1)))
    bounds = [0, *np.unique(cuts).tolist(), n]
    if largest:
        bounds = sorted({*bounds, *range(0, n, largest)})
    return [(a, b) for a, b in pairwise(bounds) if b > a]


def _params(data: st.DataObject, by_time: bool) -> WindowParams:
    return WindowParams(
        events=data.draw(st.integers(10, 120), label="events"),
        reference_events=data.draw(st.sampled_from([10, 50, 200, 700]), label="reference"),
        bins=data.draw(st.integers(2, 12), label="bins"),
        alpha=data.draw(st.sampled_from([1e-6, 0.01, 0.3]), label="alpha"),
        seconds=data.draw(st.sampled_from([1.0, 7.5]), label="seconds") if by_time else 0.0,
        allowed_lateness_s=data.draw(st.sampled_from([0.0, 2.0]), label="late") if by_time else 0,
        psi_floor=data.draw(st.sampled_from([0.0, 0.1]), label="psi_floor"),
        wasserstein_floor=data.draw(st.sampled_from([0.0, 0.1]), label="w_floor"),
    )


def _numeric_windows(
    data: st.DataObject, by_time: bool
) -> tuple[CheckedNumeric, np.random.Generator]:
    rng = np.random.default_rng(data.draw(st.integers(0, 2**32 - 1), label="seed"))
    params = _params(data, by_time)
    kind = data.draw(st.sampled_from(KINDS), label="warm-up kind")
    cuts = NumericWindows.cuts_of(_stream(kind, rng, 300), params.bins)
    if not len(cuts):
        cuts = np.array([0.0])
    # A small k puts even short references in estimation mode.
    k = data.draw(st.sampled_from([8, 20, 200]), label="k")
    return CheckedNumeric(params, params.alpha, cuts, k), rng


def _feed(windows, values, rng, by_time: bool, largest: int = 0) -> int:
    n = len(values)
    positions = np.arange(n) + 1000
    times = None
    if by_time:
        times = np.cumsum(rng.exponential(0.05, n)) + 1.7e9
        times += np.where(rng.random(n) < 0.05, rng.normal(0, 3, n), 0)  # late and early ones
    closed = 0
    for a, b in _batches(rng, n, largest):
        if isinstance(values, np.ndarray):
            chunk, missing = values[a:b], np.isnan(values[a:b])
        else:
            chunk = values[a:b]
            missing = np.array([value is None for value in chunk], dtype=bool)
        closed += len(
            windows.update(chunk, missing, positions[a:b], None if times is None else times[a:b])
        )
        if rng.random() < 0.1:
            closed += len(windows.update_missing(int(rng.integers(1, 30)), int(positions[b - 1])))
    return closed


# ---------------------------------------------------------------- the tests


@RANDOM
@given(data=st.data())
def test_numeric_windows_report_what_the_old_code_did(data):
    by_time = data.draw(st.booleans(), label="event time")
    windows, rng = _numeric_windows(data, by_time)
    kind = data.draw(st.sampled_from(KINDS), label="kind")
    n = data.draw(st.integers(0, 3_000), label="n")
    values = _with_missing(
        _stream(kind, rng, n), rng, data.draw(st.sampled_from([0.0, 0.05, 0.6]), label="missing")
    )
    _feed(windows, values, rng, by_time)


@settings(RANDOM, max_examples=60)
@given(data=st.data())
def test_seeded_and_restored_windows_report_what_the_old_code_did(data):
    """A reference from a stored baseline (its items kept from the start), and windows restored
    mid-stream from their state: the kept items are the restored sketch's."""
    by_time = data.draw(st.booleans(), label="event time")
    windows, rng = _numeric_windows(data, by_time)
    kind = data.draw(st.sampled_from(KINDS), label="kind")
    baseline = _stream(kind, rng, data.draw(st.integers(1, 1_500), label="baseline"))
    stats, sketch = RunningStats(), QuantileSketch(windows.k)
    stats.update_many(baseline)
    sketch.update_many(baseline)
    windows.seed(NumericPeriod.of_summaries(windows.cuts, stats, sketch, int(rng.integers(0, 50))))
    values = _with_missing(_stream(data.draw(st.sampled_from(KINDS)), rng, 1_500), rng, 0.05)
    half = data.draw(st.integers(0, 1_500), label="restore at")
    _feed(windows, values[:half], rng, by_time)
    state = windows.to_state()
    restored = CheckedNumeric.from_state(
        msgspec.msgpack.decode(msgspec.msgpack.encode(state), type=type(state)),
        windows.params,
        windows.alpha,
        windows.k,
    )
    assert msgspec.msgpack.encode(restored.to_state()) == msgspec.msgpack.encode(state)
    _feed(restored, values[half:], rng, by_time)


@RANDOM
@given(data=st.data())
def test_categorical_windows_report_what_the_old_code_did(data):
    by_time = data.draw(st.booleans(), label="event time")
    params = _params(data, by_time)
    rng = np.random.default_rng(data.draw(st.integers(0, 2**32 - 1), label="seed"))
    windows = CheckedCategorical(params, params.alpha, data.draw(st.integers(1, 12)))
    n = data.draw(st.integers(0, 2_000), label="n")
    p = rng.dirichlet(np.ones(8) * data.draw(st.sampled_from([0.2, 5.0])))
    values = [str(v) for v in rng.choice(list("abcdefgh"), n, p=p)]
    missing_share = data.draw(st.sampled_from([0.0, 0.1]))
    values = [None if rng.random() < missing_share else v for v in values]
    # Categories beyond max_categories are the monitor's to refuse: keep the known ones.
    allowed = set(sorted({v for v in values if v is not None})[: windows.max_categories])
    values = [v if v in allowed else None for v in values]
    _feed(windows, values, rng, by_time)


def test_the_checked_windows_closed_windows_of_every_kind():
    """The property tests above compared real windows (not only empty streams)."""
    assert CheckedNumeric.closes > 100 and CheckedCategorical.closes > 50


def test_steady_state_windows_from_a_monitor_report_what_the_old_code_did():
    """The default parameters: a 5,000-value reference in estimation mode, windows of 500."""
    rng = np.random.default_rng(3)
    params = WindowParams()
    cuts = NumericWindows.cuts_of(rng.normal(size=500), params.bins)
    windows = CheckedNumeric(params, params.alpha, cuts, 200)
    values = np.concatenate([rng.normal(size=12_000), rng.normal(0.3, 1.5, 3_000)])
    before = CheckedNumeric.closes
    _feed(windows, _with_missing(values, rng, 0.01), rng, False, largest=300)
    assert CheckedNumeric.closes - before >= 18 and windows.drifted


def _sorted_sample(draw, elements) -> tuple[np.ndarray, np.ndarray]:
    values = np.sort(np.array(draw(st.lists(elements, min_size=1, max_size=60)), dtype=np.float64))
    levels = draw(st.lists(st.integers(0, 40), min_size=len(values), max_size=len(values)))
    return values, 2.0 ** np.array(levels, dtype=np.float64)


FLOATS = st.one_of(
    st.floats(allow_nan=False, allow_infinity=False),
    st.sampled_from([0.0, -0.0, 1.0, -1.0, 5e-324, 1.7e308, -1.7e308]),
    st.integers(-3, 3).map(float),
)


@settings(max_examples=1_000, deadline=None)
@given(data=st.data())
def test_the_cdf_kernel_gives_numpys_numbers(data):
    """Weighted samples with ties, zeros of both signs, subnormals and spans beyond the float
    range: the KS statistic and the Wasserstein distance of the old numpy pass, bit for bit."""
    reference = _sorted_sample(data.draw, FLOATS)
    window = _sorted_sample(data.draw, FLOATS)
    expected = _old_cdf_distances_of(reference, window)
    got = cdf_distances_of(reference, window)
    assert [x.hex() for x in got] == [x.hex() for x in expected]
    assert all(type(x) is float for x in got)
    gaps, steps, ks = kernel.cdf_gaps(*reference, *window)
    assert len(steps) == len(gaps) - 1 and ks == gaps.max()


def test_both_backends_give_the_same_distances():
    rng = np.random.default_rng(4)
    reference, window = QuantileSketch(20), QuantileSketch(500)
    reference.update_many(rng.normal(size=3_000))
    window.update_many(rng.normal(0.2, 1, 400))
    compiled = cdf_distances(reference, window)
    kernels.use("reference")
    try:
        assert cdf_distances(reference, window) == compiled
    finally:
        kernels.use("auto")
    assert compiled == _old_cdf_distances(reference, window)


@settings(max_examples=300, deadline=None)
@given(
    n=st.integers(0, 3_000),
    k=st.sampled_from([8, 20, 200, 500]),
    kind=st.sampled_from(KINDS),
    seed=st.integers(0, 2**32 - 1),
)
def test_retained_items_are_the_old_parsers(n, k, kind, seed):
    sketch = QuantileSketch(k)
    sketch.update_many(_stream(kind, np.random.default_rng(seed), n))
    data = sketch.to_bytes()
    got, expected = _retained(data), _old_retained(data)
    assert [a.tobytes() for a in got] == [a.tobytes() for a in expected]


@settings(max_examples=200, deadline=None)
@given(
    n=st.integers(0, 1_000),
    k=st.sampled_from([8, 500]),
    kind=st.sampled_from(KINDS),
    seed=st.integers(0, 2**32 - 1),
)
def test_cdf_items_are_the_items_but_for_the_order_of_equal_values(n, k, kind, seed):
    sketch = QuantileSketch(k)
    sketch.update_many(_stream(kind, np.random.default_rng(seed), n))
    (values, weights), (cdf_values, cdf_weights) = sketch.items(), sketch.cdf_items()
    assert np.array_equal(values, cdf_values) and weights.tobytes() == cdf_weights.tobytes()
    if not sketch.exact:  # weighted values keep their order
        assert values.tobytes() == cdf_values.tobytes()


def test_kept_items_follow_every_change_of_the_sketch():
    rng = np.random.default_rng(5)
    sketch = QuantileSketch(20)
    sketch.update_many(rng.normal(size=100))
    kept = sketch.items(keep=True)
    assert sketch.items() is kept  # not parsed again
    sketch.update_many(rng.normal(size=5))
    assert sketch.items() is not kept
    assert [a.tobytes() for a in sketch.items()] == [
        a.tobytes() for a in _old_retained(sketch.to_bytes())
    ]
    kept = sketch.items(keep=True)
    other = QuantileSketch(20)
    other.update_many(rng.normal(size=50))
    sketch.merge(other)
    assert sketch.items() is not kept and sketch.count == 155
    assert [a.tobytes() for a in sketch.items()] == [
        a.tobytes() for a in _old_retained(sketch.to_bytes())
    ]
    restored = QuantileSketch.from_bytes(sketch.to_bytes())
    assert restored.items() is not sketch.items(keep=True)


def test_a_reference_replaced_by_a_seed_is_tested_with_its_own_items():
    """The KS test reads the reference's kept items: a new reference (seeded from a baseline)
    brings its own sketch, so nothing of the old one is used."""
    rng = np.random.default_rng(6)
    params = WindowParams(events=100, reference_events=200)
    windows = CheckedNumeric(params, params.alpha, np.array([0.0]), 20)
    _feed(windows, rng.normal(size=600), rng, False)
    stats, sketch = RunningStats(), QuantileSketch(20)
    far = rng.normal(50, 1, 400)
    stats.update_many(far)
    sketch.update_many(far)
    windows.seed(NumericPeriod.of_summaries(windows.cuts, stats, sketch, 0))
    found = windows.update(rng.normal(size=100), np.zeros(100, bool), np.arange(100))
    assert [result.statistic for result in found[0].results if result.test == "ks"] == [1.0]


@pytest.mark.parametrize("backend", ["compiled", "reference"])
def test_windows_close_alike_with_either_backend(backend):
    kernels.use(backend)
    try:
        test_steady_state_windows_from_a_monitor_report_what_the_old_code_did()
    finally:
        kernels.use("auto")


COUNTS = st.one_of(
    st.integers(0, 3),
    st.integers(0, 2_000),
    st.sampled_from([0, 1, 4, 5, 2**31, 2**51, 2**60, -1]),  # huge or negative: numpy's path
)


@settings(max_examples=2_000, deadline=None)
@given(data=st.data())
def test_the_binned_kernels_give_numpys_numbers(data):
    """Pooling, chi-square and PSI of count vectors (empty bins on one or both sides, one bin,
    huge and negative counts, float counts) as the numpy code computed them, bit for bit."""
    n = data.draw(st.integers(1, 40))
    counts = hnp.arrays(np.int64, n, elements=COUNTS)
    reference, window = data.draw(counts), data.draw(counts)
    if data.draw(st.booleans()):
        reference = reference.astype(np.float64) * data.draw(st.sampled_from([1.0, 0.37]))
    with np.errstate(all="ignore"):
        expected = (
            _old_pool_small(reference, window),
            _old_chi_square(reference, window),
            _old_psi_terms(reference, window),
        )
        got = (
            pool_small(reference, window),
            chi_square(reference, window),
            psi_terms(reference, window),
        )
        psi_got = psi(reference, window)
        psi_expected = float(expected[2].sum())
    assert got[0].tobytes() == expected[0].tobytes()
    assert _bits(got[1]) == _bits(expected[1])
    assert got[2].tobytes() == expected[2].tobytes()
    assert _bits(psi_got) == _bits(psi_expected)


@settings(max_examples=1_000, deadline=None)
@given(data=st.data())
def test_the_binning_kernel_counts_as_numpy_does(data):
    """Values on the cuts (right-closed bins), zeros of both signs, infinities and NaN."""
    cuts = np.unique(
        np.array(data.draw(st.lists(FLOATS, min_size=1, max_size=12)), dtype=np.float64)
    )
    special_values = st.sampled_from([np.nan, np.inf, -np.inf, *cuts.tolist()])
    values = np.array(
        data.draw(st.lists(st.one_of(FLOATS, special_values), max_size=80)), dtype=np.float64
    )
    bins = np.array(
        data.draw(
            st.lists(
                COUNTS.filter(lambda c: 0 <= c < 2**40),
                min_size=len(cuts) + 1,
                max_size=len(cuts) + 1,
            )
        ),
        dtype=np.int64,
    )
    expected = bins + np.bincount(np.searchsorted(cuts, values), minlength=len(bins))
    kernel.add_to_bins(bins, cuts, values)
    assert bins.tolist() == expected.tolist()


@settings(max_examples=100, deadline=None)
@given(kind=st.sampled_from(KINDS), seed=st.integers(0, 2**32 - 1), bins=st.integers(2, 12))
def test_a_periods_bins_are_numpys_counts(kind, seed, bins):
    rng = np.random.default_rng(seed)
    cuts = NumericWindows.cuts_of(_stream(kind, rng, 300), bins)
    if not len(cuts):
        cuts = np.array([0.0])
    period = NumericPeriod(cuts, 50)
    values = _with_missing(_stream(kind, rng, 1_000), rng, 0.1)
    for a, b in _batches(rng, len(values), 0):
        period.add(values[a:b], np.isnan(values[a:b]))
    present = values[~np.isnan(values)]
    expected = np.bincount(np.searchsorted(cuts, present), minlength=len(cuts) + 1)
    assert period.bins.dtype == np.int64 and period.bins.tolist() == expected.tolist()


@settings(max_examples=1_000, deadline=None)
@given(data=st.data())
def test_pooled_histograms_are_the_old_codes(data):
    n = data.draw(st.integers(1, 30))
    counts = hnp.arrays(np.int64, n, elements=COUNTS.filter(lambda c: c >= 0))
    reference, current = data.draw(counts), data.draw(counts)
    labels = [f"b{i}" for i in range(n)]
    with np.errstate(all="ignore"):
        expected = _old_pooled(labels, reference, current)
        got = Histogram(labels, reference, current).pooled()
    assert got.labels == expected[0]
    assert got.reference.dtype == got.current.dtype == np.int64
    assert got.reference.tolist() == expected[1].tolist()
    assert got.current.tolist() == expected[2].tolist()


def test_a_categorical_periods_kept_side_follows_its_counts():
    reference, window = CategoricalPeriod(10), CategoricalPeriod(10)
    reference.add(["a", "b", "a"], np.zeros(3, bool))
    window.add(["b", "c"], np.zeros(2, bool))
    first = reference.histogram(window)
    assert (first.labels, first.reference.tolist(), first.current.tolist()) == (
        ["a", "b", "(new)"],
        [2, 1, 0],
        [0, 1, 1],
    )
    reference.add(["b", "b", "c"], np.zeros(3, bool))
    second = reference.histogram(window)
    assert (second.labels, second.reference.tolist(), second.current.tolist()) == (
        ["b", "a", "c", "(new)"],
        [3, 2, 1, 0],
        [1, 0, 1, 0],
    )
    restored = CategoricalPeriod.from_state(reference.to_state())
    assert restored.histogram(window).reference.tolist() == [3, 2, 1, 0]


def test_the_cdf_kernel_leaves_nan_and_mismatched_weights_to_numpy():
    values, ones = np.array([0.0, 1.0, np.nan]), np.ones(3)
    assert kernel.cdf_gaps(values, ones, np.array([0.5]), np.ones(1))[2] == -1.0
    assert kernel.cdf_gaps(np.array([0.5]), np.ones(1), values, ones)[2] == -1.0
    assert kernel.cdf_gaps(np.array([0.5]), np.ones(2), values, ones)[2] == -1.0
    assert kernel.cdf_gaps(np.array([2.0, 1.0]), np.ones(2), np.array([1.5]), np.ones(1))[2] >= 0
    with np.errstate(all="ignore"):
        expected = _old_cdf_distances_of((values, ones), (np.array([0.5]), np.ones(1)))
        got = cdf_distances_of((values, ones), (np.array([0.5]), np.ones(1)))
    assert _bits(got) == _bits(expected)
