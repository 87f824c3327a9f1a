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

__all__ = ["cdf_gaps", "warm_up"]

Floats = NDArray[np.float64]


@jit
def cdf_gaps(
    ref_values: Floats, ref_weights: Floats, win_values: Floats, win_weights: Floats
) -> tuple[Floats, Floats, float]:
    """``(gaps, steps, ks)`` of two samples sorted ascending, each with positive total weight:
    ``gaps[i] = |F_ref(p_i) - F_win(p_i)|`` at the distinct values ``p_0 < p_1 < ...`` of both,
    ``steps[i] = p_{i+1} - p_i`` (one fewer) and ``ks`` the largest gap."""
    n_ref = ref_values.shape[0]
    n_win = win_values.shape[0]
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
        while i < n_ref and ref_values[i] <= point:
            ref_cumulative += ref_weights[i]
            i += 1
        while j < n_win and win_values[j] <= point:
            win_cumulative += win_weights[j]
            j += 1
        gap = abs(ref_cumulative / ref_total - win_cumulative / win_total)
        gaps[k] = gap
        if k:
            steps[k - 1] = point - previous
        if gap > ks:
            ks = gap
        previous = point
        k += 1
    return gaps[:k], steps[: max(k - 1, 0)], ks


def warm_up() -> None:
    """Compile the kernel (or load it from the cache) on two tiny samples."""
    cdf_gaps(np.zeros(1), np.ones(1), np.ones(2), np.ones(2))
