"""The moments of a batch in one call: min, max, mean and the sum of squared deviations, added in
numpy's order (``np.add.reduce`` on a contiguous float64 array sums pairwise: blocks of up to 128
values in eight interleaved partial sums, halved recursively above that), so
:meth:`~detectors.stats.RunningStats.update_many` gives the same bits as its numpy passes."""

from __future__ import annotations

import numpy as np
from numpy.typing import NDArray
from streamdrift_kernels import moments as _moments  # native/src/moments.rs

__all__ = ["moments"]

Floats = NDArray[np.float64]


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
