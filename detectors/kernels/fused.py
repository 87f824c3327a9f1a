"""One numeric series' batch in few compiled calls: the steps the monitor and its window tests
ran as a dozen numpy calls and three kernel calls per series and batch, fused.

Each does the floating-point operations of the code it replaces in the same order, so the
detections and the checkpointed state are bit-identical (``tests/detectors/test_fused.py``
checks that against the reference backend on random streams): the present values and their
moments (:func:`split_moments`, for :meth:`~detectors.monitor.NumericMonitor.update`), a
window's stretch into its moments and bins (:func:`fill_period`, for
:class:`~detectors.windows.NumericPeriod`), and the standardised, clipped values through ADWIN
and the CUSUM bank (:func:`detect`, for :class:`~detectors.monitor.NumericMonitor`).
"""

from __future__ import annotations

import numpy as np
from numpy.typing import NDArray
from streamdrift_kernels import (  # native/src/fused.rs
    fill_period as _fill_period,
)
from streamdrift_kernels import (
    numeric_detect as _numeric_detect,
)
from streamdrift_kernels import (
    split_moments as _split_moments,
)

from streamdrift.detectors.kernels.adwin import AdwinWindow

__all__ = ["Moments", "detect", "fill_period", "split_moments"]

Floats = NDArray[np.float64]
Ints = NDArray[np.int64]
Moments = tuple[float, float, float, float] | None  # min, max, mean, m2; None: numpy's path


def _moments(out: Floats, computed: bool) -> Moments:
    if not computed:
        return None
    low, high, mean, m2 = out.tolist()
    return low, high, mean, m2


def split_moments(values: Floats, large: float) -> tuple[Floats, Ints, Moments]:
    """The values that are not NaN, their indices, and their (min, max, mean, m2) as
    :func:`~detectors.kernels.moments.moments` gives them (None if there are none, or one lies
    beyond ``+-large``).

    >>> split_moments(np.array([1.0, np.nan, 3.0]), 1e100)
    (array([1., 3.]), array([0, 2]), (1.0, 3.0, 2.0, 2.0))
    """
    out = np.empty(4)
    present, index, computed = _split_moments(np.ascontiguousarray(values), large, out)
    return present, index, _moments(out, computed)


def fill_period(
    values: Floats, missing: NDArray[np.bool_], cuts: Floats, bins: Ints, large: float
) -> tuple[Floats, Moments]:
    """The values not flagged ``missing``, counted into ``bins`` (in place) at ``cuts``, and
    their moments (see :func:`split_moments`).

    >>> bins = np.zeros(3, dtype=np.int64)
    >>> fill_period(np.array([0.5, 9.0, 2.0]), np.array([False, True, False]),
    ...             np.array([1.0, 2.0]), bins, 1e100)
    (array([0.5, 2. ]), (0.5, 2.0, 1.25, 1.125))
    >>> bins
    array([1, 1, 0])
    """
    out = np.empty(4)
    present, computed = _fill_period(
        np.ascontiguousarray(values), np.ascontiguousarray(missing), cuts, bins, large, out
    )
    return present, _moments(out, computed)


def detect(
    values: Floats,
    standardise: tuple[float, float, bool, float],
    clip_sigma: float,
    window: AdwinWindow,
    bank: tuple[Ints, Floats, Floats, Floats],
    min_instances: int,
    bank_state: tuple[int, float],
    bank_sums: Floats,
) -> tuple[Floats, list[tuple[int, float]], list[tuple[int, float, int]], int, float]:
    """Standardise ``values`` (``standardise`` = reference mean, scale, whether the values are
    known to stay within ``+-large`` sigma, ``large``), clip them to ``+-clip_sigma``, and run
    ADWIN's ``window`` and the CUSUM bank (its watched rows with their signs, allowances and
    thresholds; ``bank_state`` = values since its last restart and their mean; ``bank_sums``,
    written in place) over them.

    Returns the standardised values, ADWIN's detections (index, statistic), the bank's
    (index, statistic, row), and the bank's new state.
    """
    mean, scale, bounded, large = standardise
    rows, signs, allowances, thresholds = bank
    standardised, adwin_hits, bank_hits, n, bank_mean = _numeric_detect(
        np.ascontiguousarray(values, dtype=np.float64),
        mean,
        scale,
        bounded,
        large,
        clip_sigma,
        window.params,
        window.sums,
        window.counts,
        window.totals,
        window.variances,
        window.used,
        rows,
        signs,
        allowances,
        thresholds,
        float(min_instances),
        float(bank_state[0]),
        bank_state[1],
        bank_sums,
    )
    return standardised, adwin_hits, bank_hits, int(n), bank_mean
