"""Distances and two-sample tests between a reference and a window, from mergeable summaries.

Numeric distributions come as :class:`~detectors.sketches.QuantileSketch` es, binned ones as
count vectors over the same bins, missing values as counts. Nothing needs the raw values, so
summaries of several partitions can be merged before comparing them.

Error bounds of the sketch-based measures
    A KLL sketch of ``n > k`` values estimates the CDF within its ``rank_error`` ε at every
    point (99% confidence; ε = 1.33% for k = 200) and is exact while it holds every value. Both
    estimated CDFs are step functions that jump only at retained values, so evaluating them at
    the union of both sketches' retained values gives the exact supremum and integral of their
    difference. Hence, against the same statistics on the raw values (``scipy.stats.ks_2samp``,
    ``scipy.stats.wasserstein_distance``)::

        |KS - KS_raw|  <= ε_ref + ε_win                       (ks_bound)
        |W1 - W1_raw|  <= (ε_ref + ε_win) * (max - min)       (wasserstein_bound)

    where max and min span both samples. The binned measures (PSI, Jensen-Shannon, Hellinger,
    chi-square) take exact counts and have no sketch error.

Smoothing
    PSI is infinite when a bin is empty on one side only, so it uses shares with a pseudo-count
    of ``SMOOTHING`` = 0.5 per bin: ``(count + 0.5) / (total + 0.5 * bins)``. Jensen-Shannon and
    Hellinger are finite without it and use the raw shares.

>>> import numpy as np
>>> reference, window = np.array([50, 30, 20]), np.array([30, 30, 40])
>>> round(psi(reference, window), 3), round(jensen_shannon(reference, window), 3)
(0.234, 0.207)
>>> statistic, p_value, dof = chi_square(reference, window)
>>> round(statistic, 2), round(p_value, 4), dof
(11.67, 0.0029, 2)
"""

from __future__ import annotations

import functools
import importlib
import math
from collections import Counter
from types import ModuleType
from typing import Any, cast

import numpy as np
from numpy.typing import NDArray
from scipy import optimize, special, stats

from streamdrift.detectors import kernels
from streamdrift.detectors.sketches import QuantileSketch
from streamdrift.detectors.stats import saturate

__all__ = [
    "MIN_EXPECTED",
    "SMOOTHING",
    "cdf_distances",
    "cdf_distances_of",
    "chi_square",
    "chi_square_p_value",
    "chi_square_statistic",
    "cohens_h",
    "hellinger",
    "jensen_shannon",
    "ks_bound",
    "ks_critical_value",
    "ks_p_value",
    "ks_significant",
    "ks_test",
    "missing_rate_p_value",
    "missing_rate_test",
    "missing_rate_z",
    "pool_small",
    "psi",
    "psi_terms",
    "wasserstein",
    "wasserstein_bound",
]

SMOOTHING = 0.5
# Cochran's rule: the chi-square approximation needs expected counts of at least 5.
MIN_EXPECTED = 5.0
# Counts over the same bins, of the reference and of a window (integers; floats work too).
_Counts = NDArray[np.int64 | np.float64]
_Ints = NDArray[np.int64]
# A sketch's retained values, sorted, and their weights (QuantileSketch.items).
Items = tuple[NDArray[np.float64], NDArray[np.float64]]


def ks_test(reference: QuantileSketch, window: QuantileSketch) -> tuple[float, float]:
    """Two-sample Kolmogorov-Smirnov statistic and two-sided p-value.

    The p-value is ``scipy.stats.ks_2samp(..., method="asymp")``'s: the one-sample Kolmogorov
    distribution at the effective size ``round(n * m / (n + m))``.

    >>> import numpy as np
    >>> reference, window = QuantileSketch(), QuantileSketch()
    >>> reference.update_many(np.arange(100.0))
    >>> window.update_many(np.arange(50.0, 150.0))
    >>> statistic, p_value = ks_test(reference, window)
    >>> statistic, f"{p_value:.1e}"
    (0.5, '4.4e-12')
    """
    statistic = cdf_distances(reference, window)[0]
    return statistic, ks_p_value(statistic, reference.count, window.count)


def cdf_distances(reference: QuantileSketch, window: QuantileSketch) -> tuple[float, float]:
    """The KS statistic (largest difference between the estimated CDFs) and the
    :func:`wasserstein` distance, from one evaluation of both CDFs."""
    return cdf_distances_of(reference.cdf_items(), window.cdf_items())


def cdf_distances_of(reference: Items, window: Items) -> tuple[float, float]:
    """:func:`cdf_distances` of two sketches' :meth:`~detectors.sketches.QuantileSketch.items`
    or ``cdf_items`` (a caller may keep those of a sketch that no longer changes, such as a
    frozen reference).

    With the compiled kernels (:mod:`detectors.kernels.windows`): one merge of the two sorted
    samples, the same numbers bit for bit.
    """
    (ref_values, ref_weights), (win_values, win_weights) = reference, window
    # Empty samples (numpy's 0/0: nan) and spans beyond the float range take the numpy path.
    if kernels.compiled() and len(ref_values) and len(win_values):
        low = min(float(ref_values[0]), float(win_values[0]))
        if math.isfinite(max(float(ref_values[-1]), float(win_values[-1])) - low):
            gaps, steps, ks = _window_kernels().cdf_gaps(
                *map(_contiguous, (ref_values, ref_weights, win_values, win_weights))
            )
            if ks >= 0:  # else NaN or mismatched lengths: numpy's answer, whatever it is
                return ks, float(np.dot(gaps[:-1], steps))
    points, ref_cdf, win_cdf = _cdfs(ref_values, ref_weights, win_values, win_weights)
    gaps = np.abs(ref_cdf - win_cdf)
    if math.isfinite(float(points[-1]) - float(points[0])):
        return float(gaps.max()), float(np.dot(gaps[:-1], np.diff(points)))
    # Values spanning more than the float range: integrate over the halved values (exact),
    # then saturate the doubled distance.
    return float(gaps.max()), saturate(2 * float(np.dot(gaps[:-1], np.diff(points * 0.5))))


def ks_p_value(statistic: float, n: int, m: int) -> float:
    """Two-sided p-value of a two-sample KS statistic of samples of ``n`` and ``m`` values (see
    :func:`ks_test`). About 0.25 ms: callers that only compare it with a level should use
    :func:`ks_significant`."""
    return float(stats.kstwo.sf(statistic, _effective_size(n, m)))


def ks_significant(statistic: float, n: int, m: int, level: float) -> bool:
    """Whether :func:`ks_p_value` is below ``level``, by comparing the statistic with the
    critical value (the p-value falls strictly as the statistic grows) once (level, n, m) has
    come up a few times: the sizes of count-based windows repeat, those of event-time windows
    mostly do not, and a critical value costs about ten p-values.

    >>> ks_significant(0.5, 100, 100, 1e-6), ks_significant(0.1, 100, 100, 1e-6)
    (True, False)
    """
    return _CRITICAL_VALUES.significant(statistic, n, m, level)


class _CriticalValues:
    def __init__(self, after: int = 3, limit: int = 4096) -> None:
        self.after, self.limit = after, limit
        self.values: dict[tuple[float, int, int], float] = {}
        self.seen: Counter[tuple[float, int, int]] = Counter()

    def significant(self, statistic: float, n: int, m: int, level: float) -> bool:
        key = (level, n, m)
        critical = self.values.get(key)
        if critical is None:
            if len(self.seen) >= self.limit:
                self.seen.clear()
            self.seen[key] += 1
            if self.seen[key] < self.after:
                return ks_p_value(statistic, n, m) < level
            if len(self.values) >= self.limit:
                self.values.clear()
            critical = self.values[key] = ks_critical_value(level, n, m)
        return statistic > critical


_CRITICAL_VALUES = _CriticalValues()


def ks_critical_value(level: float, n: int, m: int) -> float:
    """The KS statistic whose p-value is ``level`` for samples of ``n`` and ``m`` values, to
    1e-12 (``kstwo.isf`` is off by up to 0.5% in the p-value at small levels)."""
    size = _effective_size(n, m)
    if stats.kstwo.sf(1.0, size) >= level:
        return 1.0
    return float(
        optimize.brentq(
            lambda d: math.log(max(stats.kstwo.sf(d, size), 1e-300)) - math.log(level),
            0.0,
            1.0,
            xtol=1e-12,
        )
    )


def _effective_size(n: int, m: int) -> float:
    return float(np.round(n * m / (n + m)))


def ks_bound(reference: QuantileSketch, window: QuantileSketch) -> float:
    """Largest difference between :func:`ks_test`'s statistic and the raw values' (see above)."""
    return _rank_error(reference) + _rank_error(window)


def wasserstein(reference: QuantileSketch, window: QuantileSketch) -> float:
    """Wasserstein-1 distance, ``∫ |F_ref(x) - F_win(x)| dx = ∫ |Q_ref(u) - Q_win(u)| du``.

    In the values' units; divide by the reference standard deviation for a scale-free effect.

    >>> import numpy as np
    >>> reference, window = QuantileSketch(), QuantileSketch()
    >>> reference.update_many(np.array([0.0, 1.0, 3.0]))
    >>> window.update_many(np.array([5.0, 6.0, 8.0]))
    >>> wasserstein(reference, window)
    5.0
    """
    return cdf_distances(reference, window)[1]


def wasserstein_bound(reference: QuantileSketch, window: QuantileSketch) -> float:
    """Largest difference between :func:`wasserstein` and the raw values' (see above)."""
    low, high = min(reference.min, window.min), max(reference.max, window.max)
    bound = ks_bound(reference, window)
    return saturate(bound * 2 * (high / 2 - low / 2)) if bound else 0.0


def psi_terms(reference: _Counts, window: _Counts) -> NDArray[np.float64]:
    """Each bin's share of the population stability index: ``(w - r) * ln(w / r)`` (smoothed)."""
    if counts := _countable(reference, window):
        exact, differences, ratios = _window_kernels().psi_parts(*counts, SMOOTHING)
        if exact:
            terms: NDArray[np.float64] = differences * np.log(ratios)
            return terms
    ref, win = _smoothed(reference), _smoothed(window)
    return (win - ref) * np.log(win / ref)


def psi(reference: _Counts, window: _Counts) -> float:
    """Population stability index of two count vectors over the same bins (symmetric KL).

    Rule of thumb: below 0.1 no change, 0.1-0.25 moderate, above 0.25 large.
    """
    return float(psi_terms(reference, window).sum())


def jensen_shannon(reference: _Counts, window: _Counts) -> float:
    """Jensen-Shannon distance (square root of the divergence, base 2): 0 same, 1 disjoint."""
    ref, win = _shares(reference), _shares(window)
    mid = (ref + win) / 2
    divergence = (_kl(ref, mid) + _kl(win, mid)) / 2
    return math.sqrt(max(divergence, 0.0) / math.log(2))


def hellinger(reference: _Counts, window: _Counts) -> float:
    """Hellinger distance ``sqrt(1 - Σ sqrt(r * w))``: 0 same, 1 disjoint."""
    overlap = float(np.sum(np.sqrt(_shares(reference) * _shares(window))))
    return math.sqrt(max(1.0 - overlap, 0.0))


def chi_square(reference: _Counts, window: _Counts) -> tuple[float, float, int]:
    """Pearson's chi-square test of homogeneity of the 2 x bins table: statistic, p, dof.

    Bins empty on both sides are left out; no continuity correction (as
    ``scipy.stats.chi2_contingency(..., correction=False)``). ``(0.0, 1.0, 0)`` when fewer than
    two bins are left.
    """
    statistic, dof = chi_square_statistic(reference, window)
    return statistic, chi_square_p_value(statistic, dof), dof


def chi_square_statistic(reference: _Counts, window: _Counts) -> tuple[float, int]:
    """The statistic and degrees of freedom of :func:`chi_square` (``(0.0, 0)`` when it has
    fewer than two bins), without its p-value."""
    if counts := _countable(reference, window):
        exact, terms, dof = _window_kernels().chi_square_terms(*counts)
        if exact:
            return (float(np.sum(terms)), dof) if dof else (0.0, 0)
    table = np.array([reference, window], dtype=np.float64)
    # Always the masked copy (column-major): its sums' order is the statistic's bits.
    table = table[:, table.sum(axis=0) > 0]
    dof = table.shape[1] - 1
    if dof < 1 or table.sum(axis=1).min() == 0:
        return 0.0, 0
    expected = np.outer(table.sum(axis=1), table.sum(axis=0)) / table.sum()
    return float(np.sum((table - expected) ** 2 / expected)), dof


def chi_square_p_value(statistic: float, dof: int) -> float:
    """The p-value of :func:`chi_square` from its statistic and degrees of freedom."""
    return float(special.chdtrc(dof, statistic)) if dof else 1.0


def pool_small(reference: _Counts, window: _Counts) -> NDArray[np.bool_]:
    """Mask of the bins to pool into one: those whose smaller expected count (under
    homogeneity) is below ``MIN_EXPECTED``. Pooling them keeps :func:`chi_square` calibrated.

    >>> pool_small(np.array([500, 3, 0]), np.array([100, 1, 2])).tolist()
    [False, True, True]
    """
    if counts := _countable(reference, window):
        exact, mask = _window_kernels().pool_small(*counts, MIN_EXPECTED)
        if exact:
            pooled: NDArray[np.bool_] = mask
            return pooled
    smaller = min(reference.sum(), window.sum())
    total = reference.sum() + window.sum()
    small: NDArray[np.bool_] = (reference + window) * smaller / max(total, 1) < MIN_EXPECTED
    return small


def missing_rate_test(
    reference_missing: int, reference_events: int, missing: int, events: int
) -> tuple[float, float]:
    """Change of the missing rate: the pooled two-proportion z (for reading) and the two-sided
    p-value of Fisher's exact test on the 2 x 2 table (valid for rare missing values too, where
    the z test's normal approximation fires far too often).

    >>> z, p_value = missing_rate_test(50, 5000, 25, 500)
    >>> round(z, 2), f"{p_value:.1e}"
    (7.35, '3.6e-09')
    """
    return (
        missing_rate_z(reference_missing, reference_events, missing, events),
        missing_rate_p_value(reference_missing, reference_events, missing, events),
    )


def missing_rate_z(
    reference_missing: int, reference_events: int, missing: int, events: int
) -> float:
    """The pooled two-proportion z of :func:`missing_rate_test`."""
    pooled = (reference_missing + missing) / (reference_events + events)
    spread = math.sqrt(pooled * (1 - pooled) * (1 / reference_events + 1 / events))
    difference = missing / events - reference_missing / reference_events
    return difference / spread if spread else 0.0


def missing_rate_p_value(
    reference_missing: int, reference_events: int, missing: int, events: int
) -> float:
    """Fisher's exact two-sided p-value of :func:`missing_rate_test` (1 when nothing is missing
    on either side, without asking scipy)."""
    if reference_missing + missing == 0 or reference_missing + missing == reference_events + events:
        return 1.0
    table = [[reference_missing, reference_events - reference_missing], [missing, events - missing]]
    return float(stats.fisher_exact(table).pvalue)


def cohens_h(reference_rate: float, rate: float) -> float:
    """Cohen's h, ``|2 asin(sqrt(p2)) - 2 asin(sqrt(p1))|``: the effect size of a change in a
    proportion (0.2 small, 0.5 medium, 0.8 large), comparable near 0 and near 0.5.

    >>> round(cohens_h(0.01, 0.05), 2)
    0.25
    """
    return abs(2 * math.asin(math.sqrt(rate)) - 2 * math.asin(math.sqrt(reference_rate)))


def _cdfs(
    ref_values: NDArray[np.float64],
    ref_weights: NDArray[np.float64],
    win_values: NDArray[np.float64],
    win_weights: NDArray[np.float64],
) -> tuple[NDArray[np.float64], NDArray[np.float64], NDArray[np.float64]]:
    """Both estimated CDFs (``P(X <= x)``) at the union of the sketches' retained values."""
    points = np.union1d(ref_values, win_values)
    return points, _cdf(ref_values, ref_weights, points), _cdf(win_values, win_weights, points)


def _cdf(
    values: NDArray[np.float64], weights: NDArray[np.float64], points: NDArray[np.float64]
) -> NDArray[np.float64]:
    cumulative = np.concatenate([[0.0], np.cumsum(weights)])
    cdf: NDArray[np.float64] = (
        cumulative[np.searchsorted(values, points, side="right")] / cumulative[-1]
    )
    return cdf


@functools.cache
def _window_kernels() -> ModuleType:
    """:mod:`detectors.kernels.windows`, imported on first use (with the compiled backend only:
    the extension need not be installed). Cached: an import statement in a function costs ~2 us
    a call."""
    return importlib.import_module("streamdrift.detectors.kernels.windows")


def _contiguous(array: NDArray[Any]) -> NDArray[Any]:
    """The kernels take C-contiguous arrays only (a slice of a sketch's items is copied)."""
    return np.ascontiguousarray(array)


def _countable(reference: _Counts, window: _Counts) -> tuple[_Ints, _Ints] | None:
    """The counts, if the compiled binned kernels take them (1-d int64 arrays; they check the
    rest: same length, not negative, sums exact in any order)."""
    if (
        kernels.compiled()
        and isinstance(reference, np.ndarray)
        and isinstance(window, np.ndarray)
        and reference.dtype == np.int64
        and window.dtype == np.int64
        and reference.ndim == 1
        and window.ndim == 1
    ):
        return cast("_Ints", _contiguous(reference)), cast("_Ints", _contiguous(window))
    return None


def _rank_error(sketch: QuantileSketch) -> float:
    return 0.0 if sketch.exact else sketch.rank_error


def _shares(counts: _Counts) -> NDArray[np.float64]:
    values = np.asarray(counts, dtype=np.float64)
    shares: NDArray[np.float64] = values / values.sum()
    return shares


def _smoothed(counts: _Counts) -> NDArray[np.float64]:
    values = np.asarray(counts, dtype=np.float64) + SMOOTHING
    shares: NDArray[np.float64] = values / values.sum()
    return shares


def _kl(p: NDArray[np.float64], q: NDArray[np.float64]) -> float:
    present = p > 0
    return float(np.sum(p[present] * np.log(p[present] / q[present])))
