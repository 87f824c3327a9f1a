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

from streamdrift.detectors.kernels._jit import jit

__all__ = ["scan", "warm_up"]

Floats = NDArray[np.float64]
Ints = NDArray[np.int64]


@jit
def _scan(
    values: Floats,
    rows: Ints,
    signs: Floats,
    allowances: Floats,
    thresholds: Floats,
    min_instances: float,
    state: Floats,
    sums: Floats,
    hit_index: Ints,
    hit_statistic: Floats,
    hit_row: Ints,
) -> int:
    """Run the bank over ``values``, restarting after each detection; returns the number of
    detections, whose value index, statistic and row (into ``sums``) go to the ``hit_`` arrays.
    ``state`` = [values since the restart, their mean]; ``sums`` = the bank's CUSUMs (allowance
    * 2 + side), both updated in place."""
    length = values.shape[0]
    if length == 0:
        return 0
    watched = rows.shape[0]
    climbed = np.empty(watched)
    lowest = np.empty(watched)
    start = np.empty(watched)
    for j in range(watched):
        start[j] = -sums[rows[j]]
    n0 = state[0]
    mean0 = state[1]
    first = 0  # index of the first value since the last restart
    deviations = 0.0
    mean = mean0
    hits = 0
    for t in range(length):
        step = t - first + 1
        n = n0 + step
        if step == 1:
            deviations = values[t] - mean0
        else:
            deviations += values[t] - mean0
        mean = mean0 + deviations / n
        deviation = values[t] - mean
        eligible = n >= min_instances
        fired = -1
        for j in range(watched):
            increment = signs[j] * deviation - allowances[j]
            if step == 1:
                climbed[j] = increment
                lowest[j] = increment
            else:
                climbed[j] += increment
                lowest[j] = min(lowest[j], climbed[j])
            statistic = climbed[j] - min(lowest[j], start[j])
            if fired < 0 and eligible and statistic > thresholds[j]:
                fired = j
                hit_statistic[hits] = statistic
        if fired >= 0:
            hit_index[hits] = t
            hit_row[hits] = rows[fired]
            hits += 1
            n0 = 0.0
            mean0 = 0.0
            for j in range(watched):
                start[j] = -0.0
            first = t + 1
    for i in range(sums.shape[0]):
        sums[i] = 0.0
    if first < length:
        state[0] = n0 + (length - first)
        state[1] = mean
        for j in range(watched):
            sums[rows[j]] = climbed[j] - min(lowest[j], start[j])
    else:
        state[0] = 0.0
        state[1] = 0.0
    return hits


def scan(
    values: Floats,
    bank: tuple[Ints, Floats, Floats, Floats],
    min_instances: int,
    state: Floats,
    sums: Floats,
) -> list[tuple[int, float, int]]:
    """(index, statistic, row) of each detection of the bank over ``values``; ``bank`` = the
    watched rows with their signs, allowances and thresholds; ``state`` and ``sums`` as in
    :func:`_scan`, updated in place.

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


def warm_up() -> None:
    """Compile the kernel (or load it from the cache) on a two-value batch."""
    bank = (np.array([0]), np.ones(1), np.ones(1), np.full(1, np.inf))
    scan(np.zeros(2), bank, 1, np.zeros(2), np.zeros(2))
