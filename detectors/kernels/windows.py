"""The window tests' CDF pass, compiled: both estimated CDFs at the union of two sorted weighted
samples, in one merge instead of numpy's union, two binary searches and two cumulative sums.

:func:`~detectors.distances.cdf_distances` evaluates ``F(x) = cumsum(weights)[#values <= x] /
sum(weights)`` of each sample at every distinct value of either, and takes the largest absolute
difference (KS) and the differences times the gaps between consecutive points (Wasserstein-1).
numpy's cumulative sums are sequential, so a merge that adds the weights in the same order and
divides by the same total gives the same CDF values, differences and gaps bit for bit; the dot
product stays numpy's (BLAS sums in its own order).
"""

from __future__ import annotations

import numpy as np
from numpy.typing import NDArray

from streamdrift.detectors.kernels._jit import jit

__all__ = [
    "add_to_bins",
    "cdf_gaps",
    "chi_square_terms",
    "pool_counts",
    "pool_small",
    "psi_parts",
    "warm_up",
]

Floats = NDArray[np.float64]
Ints = NDArray[np.int64]
Bools = NDArray[np.bool_]


@jit
def cdf_gaps(
    ref_values: Floats, ref_weights: Floats, win_values: Floats, win_weights: Floats
) -> tuple[Floats, Floats, float]:
    """``(gaps, steps, ks)`` of two samples sorted ascending, each with positive total weight:
    ``gaps[i] = |F_ref(p_i) - F_win(p_i)|`` at the distinct values ``p_0 < p_1 < ...`` of both,
    ``steps[i] = p_{i+1} - p_i`` (one fewer) and ``ks`` the largest gap. ``ks`` is -1 (and
    nothing computed) for what the caller must take to numpy: NaN among the values, or weights
    and values of different lengths."""
    n_ref = ref_values.shape[0]
    n_win = win_values.shape[0]
    if ref_weights.shape[0] != n_ref or win_weights.shape[0] != n_win:
        return np.empty(0), np.empty(0), -1.0
    for i in range(n_ref):
        if ref_values[i] != ref_values[i]:
            return np.empty(0), np.empty(0), -1.0
    for j in range(n_win):
        if win_values[j] != win_values[j]:
            return np.empty(0), np.empty(0), -1.0
    ref_total = 0.0
    for i in range(n_ref):
        ref_total += ref_weights[i]
    win_total = 0.0
    for j in range(n_win):
        win_total += win_weights[j]
    gaps = np.empty(n_ref + n_win)
    steps = np.empty(max(n_ref + n_win - 1, 0))
    ref_cumulative = 0.0
    win_cumulative = 0.0
    ks = 0.0
    i = 0
    j = 0
    k = 0
    previous = 0.0
    while i < n_ref or j < n_win:
        if j >= n_win or (i < n_ref and ref_values[i] <= win_values[j]):
            point = ref_values[i]
        else:
            point = win_values[j]
        consumed = i + j
        while i < n_ref and ref_values[i] <= point:
            ref_cumulative += ref_weights[i]
            i += 1
        while j < n_win and win_values[j] <= point:
            win_cumulative += win_weights[j]
            j += 1
        if i + j == consumed:  # unsorted input: never loop forever
            return np.empty(0), np.empty(0), -1.0
        gap = abs(ref_cumulative / ref_total - win_cumulative / win_total)
        gaps[k] = gap
        if k:
            steps[k - 1] = point - previous
        if gap > ks:
            ks = gap
        previous = point
        k += 1
    return gaps[:k], steps[: max(k - 1, 0)], ks


# The binned tests' kernels below take count vectors (int64) whose sums are exact in any order
# (below 2**51: every partial sum of counts, and of counts plus 0.5, is a float without
# rounding), so numpy's pairwise sums and these sequential ones agree; they return False for
# anything else (negative or huge counts, other lengths), and the caller takes numpy's path.
# Sums that round (the chi-square statistic, PSI) stay numpy's, over arrays of the same bits.
EXACT = 2.0**51


@jit
def _exact_counts(reference: Ints, window: Ints) -> bool:
    if reference.shape[0] != window.shape[0]:
        return False
    total = 0.0
    for j in range(reference.shape[0]):
        if reference[j] < 0 or window[j] < 0:
            return False
        total += float(reference[j]) + float(window[j])
    return total < EXACT


@jit
def pool_small(reference: Ints, window: Ints, min_expected: float) -> tuple[bool, Bools]:
    """``(ok, small)``: :func:`~detectors.distances.pool_small`'s mask."""
    n = reference.shape[0]
    small = np.zeros(n, dtype=np.bool_)
    if not _exact_counts(reference, window):
        return False, small
    ref_total = 0
    win_total = 0
    for j in range(n):
        ref_total += reference[j]
        win_total += window[j]
    if ref_total + win_total >= 2**31:  # (r + w) * smaller in int64, as numpy, never wraps
        return False, small
    smaller = min(ref_total, win_total)
    total = float(max(ref_total + win_total, 1))
    for j in range(n):
        small[j] = float((reference[j] + window[j]) * smaller) / total < min_expected
    return True, small


@jit
def pool_counts(reference: Ints, window: Ints, small: Bools) -> tuple[Ints, Ints]:
    """Both count vectors with the ``small`` bins summed into one last bin (int64 sums wrap as
    numpy's do: the same numbers)."""
    kept = 0
    for j in range(small.shape[0]):
        if not small[j]:
            kept += 1
    ref_pooled = np.empty(kept + 1, dtype=np.int64)
    win_pooled = np.empty(kept + 1, dtype=np.int64)
    ref_other = 0
    win_other = 0
    k = 0
    for j in range(small.shape[0]):
        if small[j]:
            ref_other += reference[j]
            win_other += window[j]
        else:
            ref_pooled[k] = reference[j]
            win_pooled[k] = window[j]
            k += 1
    ref_pooled[kept] = ref_other
    win_pooled[kept] = win_other
    return ref_pooled, win_pooled


@jit
def chi_square_terms(reference: Ints, window: Ints) -> tuple[bool, Floats, int]:
    """``(ok, terms, dof)``: the 2 x bins table of :func:`~detectors.distances.chi_square`'s
    ``(observed - expected) ** 2 / expected`` over the bins not empty on both sides (empty
    when it has fewer than two), for numpy to sum."""
    n = reference.shape[0]
    if not _exact_counts(reference, window):
        return False, np.empty((2, 0)), 0
    kept = 0
    ref_total = 0.0
    win_total = 0.0
    for j in range(n):
        if float(reference[j]) + float(window[j]) > 0:
            kept += 1
            ref_total += float(reference[j])
            win_total += float(window[j])
    if kept < 2 or min(ref_total, win_total) == 0:
        return True, np.empty((2, 0)), 0
    total = ref_total + win_total
    terms = np.empty((2, kept))
    k = 0
    for j in range(n):
        observed_ref = float(reference[j])
        observed_win = float(window[j])
        column = observed_ref + observed_win
        if column > 0:
            expected = ref_total * column / total
            terms[0, k] = (observed_ref - expected) * (observed_ref - expected) / expected
            expected = win_total * column / total
            terms[1, k] = (observed_win - expected) * (observed_win - expected) / expected
            k += 1
    return True, terms, kept - 1


@jit
def psi_parts(reference: Ints, window: Ints, smoothing: float) -> tuple[bool, Floats, Floats]:
    """``(ok, differences, ratios)`` of the smoothed shares, ``w - r`` and ``w / r``:
    :func:`~detectors.distances.psi_terms` is ``differences * log(ratios)`` (numpy's log)."""
    n = reference.shape[0]
    differences = np.empty(n)
    ratios = np.empty(n)
    if not _exact_counts(reference, window):
        return False, differences, ratios
    ref_total = 0.0
    win_total = 0.0
    for j in range(n):
        ref_total += float(reference[j]) + smoothing
        win_total += float(window[j]) + smoothing
    for j in range(n):
        ref = (float(reference[j]) + smoothing) / ref_total
        win = (float(window[j]) + smoothing) / win_total
        differences[j] = win - ref
        ratios[j] = win / ref
    return True, differences, ratios


@jit
def add_to_bins(bins: Ints, cuts: Floats, values: Floats) -> None:
    """``bins += bincount(searchsorted(cuts, values), minlength=len(bins))`` in place: bin i
    counts the values above ``cuts[i - 1]`` and at most ``cuts[i]`` (right-closed; NaN, which
    numpy sorts last, in the last bin)."""
    n_cuts = cuts.shape[0]
    for value in values:
        if value != value:  # NaN
            bins[n_cuts] += 1
            continue
        low = 0
        high = n_cuts
        while low < high:  # the first cut >= value
            middle = (low + high) // 2
            if cuts[middle] < value:
                low = middle + 1
            else:
                high = middle
        bins[low] += 1


def warm_up() -> None:
    """Compile the kernels (or load them from the cache) on tiny inputs."""
    cdf_gaps(np.zeros(1), np.ones(1), np.ones(2), np.ones(2))
    counts = np.array([3, 0, 4], dtype=np.int64)
    pool_small(counts, counts, 5.0)
    pool_counts(counts, counts, np.array([True, False, True]))
    chi_square_terms(counts, counts)
    psi_parts(counts, counts, 0.5)
    add_to_bins(np.zeros(2, dtype=np.int64), np.zeros(1), np.ones(2))
