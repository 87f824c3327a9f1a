"""The window tests' CDF pass, compiled: both estimated CDFs at the union of two sorted weighted
samples, in one merge instead of numpy's union, two binary searches and two cumulative sums.

:func:`~detectors.distances.cdf_distances` evaluates ``F(x) = cumsum(weights)[#values <= x] /
sum(weights)`` of each sample at every distinct value of either, and takes the largest absolute
difference (KS) and the differences times the gaps between consecutive points (Wasserstein-1).
numpy's cumulative sums are sequential, so a merge that adds the weights in the same order and
divides by the same total gives the same CDF values, differences and gaps bit for bit; the dot
product stays numpy's (BLAS sums in its own order).

The binned tests' kernels (``pool_small``, ``pool_counts``, ``chi_square_terms``, ``psi_parts``)
take count vectors (int64) whose sums are exact in any order (below 2**51 every partial sum of
counts, and of counts plus 0.5, is a float without rounding), so numpy's pairwise sums and their
sequential ones agree; they return False for anything else (negative or huge counts, other
lengths), and the caller takes numpy's path. Sums that round (the chi-square statistic, PSI) stay
numpy's, over arrays of the same bits. ``add_to_bins`` counts values into the bins their cuts
define, as ``np.searchsorted(cuts, values, side="left")`` does.
"""

from __future__ import annotations

from streamdrift_kernels import (  # native/src/windows.rs
    add_to_bins,
    cdf_gaps,
    chi_square_terms,
    pool_counts,
    pool_small,
    psi_parts,
)

__all__ = [
    "add_to_bins",
    "cdf_gaps",
    "chi_square_terms",
    "pool_counts",
    "pool_small",
    "psi_parts",
]
