"""The moments of a batch in one call: min, max, mean and the sum of squared deviations, added in
numpy's order (``np.add.reduce`` on a contiguous float64 array sums pairwise: blocks of up to 128
values in eight interleaved partial sums, halved recursively above that), so
:meth:`~detectors.stats.RunningStats.update_many` gives the same bits as its numpy passes."""

from __future__ import annotations

import numpy as np
from numpy.typing import NDArray

from streamdrift.detectors.kernels._jit import jit

__all__ = ["moments", "warm_up"]

Floats = NDArray[np.float64]


@jit
def _term(x: Floats, i: int, mean: float, squared: bool) -> float:
    return float((x[i] - mean) * (x[i] - mean) if squared else x[i])


@jit
def _block_sum(x: Floats, lo: int, n: int, mean: float, squared: bool) -> float:
    """numpy's sum of a block of up to 128 values: eight interleaved partial sums."""
    if n < 8:
        total = 0.0
        for i in range(lo, lo + n):
            total += _term(x, i, mean, squared)
        return total
    r0 = _term(x, lo, mean, squared)
    r1 = _term(x, lo + 1, mean, squared)
    r2 = _term(x, lo + 2, mean, squared)
    r3 = _term(x, lo + 3, mean, squared)
    r4 = _term(x, lo + 4, mean, squared)
    r5 = _term(x, lo + 5, mean, squared)
    r6 = _term(x, lo + 6, mean, squared)
    r7 = _term(x, lo + 7, mean, squared)
    i = lo + 8
    end = lo + n - (n % 8)
    while i < end:
        r0 += _term(x, i, mean, squared)
        r1 += _term(x, i + 1, mean, squared)
        r2 += _term(x, i + 2, mean, squared)
        r3 += _term(x, i + 3, mean, squared)
        r4 += _term(x, i + 4, mean, squared)
        r5 += _term(x, i + 5, mean, squared)
        r6 += _term(x, i + 6, mean, squared)
        r7 += _term(x, i + 7, mean, squared)
        i += 8
    total = ((r0 + r1) + (r2 + r3)) + ((r4 + r5) + (r6 + r7))
    while i < lo + n:
        total += _term(x, i, mean, squared)
        i += 1
    return total


@jit
def _pairwise_sum(x: Floats, n: int, mean: float, squared: bool) -> float:
    """numpy's ``pairwise_sum`` of ``x[:n]`` (or of ``(x - mean) ** 2``): blocks of up to 128
    values, above that the sum of the two halves (the first a multiple of 8 long). Without
    recursion (numba's cache of recursive functions is unreliable): a stack of halves, each
    visited three times — split, then its second half, then adding the two."""
    if n <= 128:
        return _block_sum(x, 0, n, mean, squared)
    starts = np.empty(64, dtype=np.int64)  # 2**64 values would need fewer levels
    lengths = np.empty(64, dtype=np.int64)
    visits = np.zeros(64, dtype=np.int64)
    sums = np.empty(64)
    top = 0
    starts[0] = 0
    lengths[0] = n
    done = 0  # sums of finished halves on their own stack
    while top >= 0:
        lo = starts[top]
        length = lengths[top]
        if length <= 128:
            sums[done] = _block_sum(x, lo, length, mean, squared)
            done += 1
            top -= 1
            continue
        half = length // 2
        half -= half % 8
        visit = visits[top]
        visits[top] += 1
        if visit < 2:  # push the first half, then the second
            child = top + 1
            starts[child] = lo if visit == 0 else lo + half
            lengths[child] = half if visit == 0 else length - half
            visits[child] = 0
            top = child
        else:  # both halves summed: first + second
            done -= 1
            sums[done - 1] = sums[done - 1] + sums[done]
            top -= 1
    return float(sums[0])


@jit
def _moments(x: Floats, large: float, out: Floats) -> bool:
    """``out`` = [min, max, mean, m2] of ``x`` (not empty); False, with only min and max set, if
    a value lies beyond ``+-large`` (the caller's scaled path)."""
    low = x[0]
    high = x[0]
    for i in range(1, x.shape[0]):
        value = x[i]
        if value < low:
            low = value
        if value > high:
            high = value
    out[0] = low
    out[1] = high
    if low < -large or high > large:
        return False
    mean = _pairwise_sum(x, x.shape[0], 0.0, False) / x.shape[0]
    out[2] = mean
    out[3] = _pairwise_sum(x, x.shape[0], mean, True)
    return True


def moments(values: Floats, large: float) -> tuple[float, float, float, float] | None:
    """(min, max, mean, sum of squared deviations) of ``values`` (finite, not empty) as numpy
    computes them, or None if a value lies beyond ``+-large``.

    >>> import numpy as np
    >>> x = np.random.default_rng(3).normal(5.0, 2.0, 1_000)
    >>> low, high, mean, m2 = moments(x, 1e100)
    >>> mean == float(np.add.reduce(x)) / len(x), m2 == float(np.add.reduce((x - mean) ** 2))
    (True, True)
    """
    out = np.empty(4)
    if not _moments(np.ascontiguousarray(values, dtype=np.float64), large, out):
        return None
    low, high, mean, m2 = out.tolist()
    return low, high, mean, m2


def warm_up() -> None:
    """Compile the kernel (or load it from the cache) on both of its paths."""
    moments(np.arange(200.0), 1e100)
    moments(np.array([1e300]), 1e100)
