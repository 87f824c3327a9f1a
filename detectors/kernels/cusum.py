"""The CUSUM bank over a batch, compiled: :class:`~detectors.cusum.Cusum`'s numpy passes as one
loop over the values, in the same floating-point order.

The numpy code computes, per watched CUSUM ``j`` (a row: side and allowance) and value ``t``
since the last restart, ``mean_t = mean_0 + cumsum(x - mean_0)_t / n_t``, ``climbed_jt =
cumsum(sign_j (x - mean_t) - k_j)`` and ``S_jt = climbed_jt - min(min(climbed_j1..jt),
-S_j0)``: cumulative sums and minima, which are sequential in numpy too, so a loop that adds in
the same order gives the same bits.
"""

from __future__ import annotations

import numpy as np
from numpy.typing import NDArray
from streamdrift_kernels import cusum_scan as _scan  # native/src/cusum.rs

__all__ = ["scan"]

Floats = NDArray[np.float64]
Ints = NDArray[np.int64]


def scan(
    values: Floats,
    bank: tuple[Ints, Floats, Floats, Floats],
    min_instances: int,
    state: Floats,
    sums: Floats,
) -> list[tuple[int, float, int]]:
    """(index, statistic, row) of each detection of the bank over ``values``; ``bank`` = the
    watched rows with their signs, allowances and thresholds; ``state`` = [values since the
    last restart, their mean] and ``sums`` = the bank's CUSUMs (allowance * 2 + side), both
    updated in place.

    >>> import numpy as np
    >>> bank = (np.array([0, 1]), np.array([1.0, -1.0]), np.array([0.5, 0.5]), np.array([3.0, 3.0]))
    >>> state, sums = np.zeros(2), np.zeros(2)
    >>> scan(np.array([0.0] * 10 + [2.0] * 5), bank, 1, state, sums)
    [(12, 3.5233..., 0)]
    """
    values = np.ascontiguousarray(values, dtype=np.float64)
    hit_index = np.empty(len(values), dtype=np.int64)
    hit_statistic = np.empty(len(values))
    hit_row = np.empty(len(values), dtype=np.int64)
    rows, signs, allowances, thresholds = bank
    hits = _scan(
        values,
        rows,
        signs,
        allowances,
        thresholds,
        float(min_instances),
        state,
        sums,
        hit_index,
        hit_statistic,
        hit_row,
    )
    return list(
        zip(
            hit_index[:hits].tolist(),
            hit_statistic[:hits].tolist(),
            hit_row[:hits].tolist(),
            strict=True,
        )
    )
