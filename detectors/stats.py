"""Exact running moments of a numeric stream, mergeable across batches and partitions.

Also the float-range guards the other modules share. Producers may send any finite float64,
up to ±1.8e308, whose square or difference overflows; a moment that became inf or NaN would
stay so for the life of the series (and the worker drops a series whose monitor misbehaves).
So magnitudes beyond :data:`LARGE` take a scaled path wherever they would be squared or
summed (:class:`RunningStats` keeps its sum of squares with a binary exponent, so the standard
deviation of ±1e308 is still exact), and what cannot be represented whatever the care (that
variance, ~1e616) saturates at :data:`FLOAT_MAX` where it is read.
"""

from __future__ import annotations

import functools
import math
import sys
from collections.abc import Callable
from typing import Annotated

import msgspec
import numpy as np
from numpy.typing import NDArray

from streamdrift.detectors import kernels

__all__ = ["FLOAT_MAX", "LARGE", "RunningStats", "RunningStatsState", "saturate"]

FLOAT_MAX = sys.float_info.max
# Values within +-LARGE can be squared and summed a billion billion times over without leaving
# the float range (1e200 * 1e18 < 1.8e308), so they keep the plain arithmetic (bit-identical to
# what it always was); nothing a real feature measures comes near it.
LARGE = 1e100


def saturate(value: float) -> float:
    """``value`` clamped to the finite floats (+-inf become +-FLOAT_MAX, NaN stays NaN).

    >>> saturate(1e308 * 10), saturate(-math.inf), saturate(2.5)
    (1.7976931348623157e+308, -1.7976931348623157e+308, 2.5)
    """
    return min(max(value, -FLOAT_MAX), FLOAT_MAX)


class RunningStatsState(msgspec.Struct, frozen=True):
    """Serialisable form of :class:`RunningStats`; msgspec checks the constraints on decode.

    The sum of squared deviations is ``m2 * 2**m2_exponent`` (``m2_exponent`` is 0 unless the
    values spread beyond the float range).
    """

    count: Annotated[int, msgspec.Meta(ge=0)]
    mean: float
    m2: Annotated[float, msgspec.Meta(ge=0)]
    min: float
    max: float
    m2_exponent: Annotated[int, msgspec.Meta(ge=0, le=4096)] = 0


class RunningStats:
    """Count, mean, variance, min and max of a stream of floats.

    The sum of squared deviations ``m2`` is kept instead of a sum of squares, and each batch or
    other instance is folded in with Chan et al.'s pairwise formula, so there is no catastrophic
    cancellation on values with a large mean, and merging the statistics of several partitions
    equals one pass over all their values up to rounding.

    Any finite values are taken. A batch with magnitudes beyond :data:`LARGE` is summarised
    scaled by a power of two (exact); the mean stays finite (it lies between the min and the
    max); and a sum of squared deviations beyond the float range is kept as ``m2 *
    2**m2_exponent``, so :attr:`std` is exact up to ~1e308 (:attr:`variance` saturates).

    >>> import numpy as np
    >>> stats = RunningStats()
    >>> stats.update_many(np.array([1.0, 2.0, 3.0]))
    >>> other = RunningStats()
    >>> other.update_many(np.array([4.0, 10.0]))
    >>> stats.merge(other)
    >>> stats.count, stats.mean, stats.min, stats.max
    (5, 4.0, 1.0, 10.0)
    >>> stats.variance  # sample variance, as np.var(ddof=1)
    12.5
    >>> extreme = RunningStats()
    >>> extreme.update_many(np.array([1.5e308, -1.5e308, 1.5e308, -1.5e308]))
    >>> extreme.mean, f"{extreme.std:.4e}", extreme.variance == FLOAT_MAX
    (0.0, '1.7321e+308', True)

    """

    def __init__(self) -> None:
        self.count = 0
        self.mean = 0.0
        self.m2 = 0.0
        self.m2_exponent = 0  # even: the sum of squared deviations is m2 * 2**m2_exponent
        self.min = math.inf
        self.max = -math.inf

    @property
    def variance(self) -> float:
        """Sample variance (``ddof=1``); 0.0 with fewer than two values; saturated at
        FLOAT_MAX."""
        if self.count < 2:
            return 0.0
        return _ldexp_saturated(self.m2 / (self.count - 1), self.m2_exponent)

    @property
    def std(self) -> float:
        if not self.m2_exponent:
            return math.sqrt(self.variance)
        return _ldexp_saturated(math.sqrt(self.m2 / (self.count - 1)), self.m2_exponent // 2)

    def update_many(self, values: NDArray[np.float64]) -> None:
        """Add a batch of finite values (one vectorised pass, then Chan's combine)."""
        if len(values) == 0:
            return
        if kernels.compiled():
            found = _moments_kernel()(values, LARGE)
            if found is not None:  # the same bits as the numpy passes below
                low, high, mean, m2 = found
                self._combine(len(values), mean, m2, 0, low, high)
                return
        self._update_numpy(values)

    def update_summarised(
        self, values: NDArray[np.float64], moments: tuple[float, float, float, float] | None
    ) -> None:
        """:meth:`update_many` with the batch's ``moments`` (min, max, mean, sum of squared
        deviations) already computed by a compiled kernel that read the values anyway (see
        :mod:`detectors.kernels.fused`); None where it did not (values beyond +-LARGE)."""
        if len(values) == 0:
            return
        if moments is None:
            self._update_numpy(values)
            return
        low, high, mean, m2 = moments
        self._combine(len(values), mean, m2, 0, low, high)

    def _update_numpy(self, values: NDArray[np.float64]) -> None:
        # ufunc reductions: ndarray.mean() and friends add microseconds of Python per call,
        # and this runs for every series of every batch.
        low, high = float(np.minimum.reduce(values)), float(np.maximum.reduce(values))
        if -LARGE <= low and high <= LARGE:
            mean = float(np.add.reduce(values)) / len(values)
            deviations = values - mean
            m2 = float(np.add.reduce(deviations * deviations))
            self._combine(len(values), mean, m2, 0, low, high)
        else:
            self._combine(len(values), *_scaled_moments(values, low, high), low, high)

    def merge(self, other: RunningStats) -> None:
        """Fold in the statistics of values seen elsewhere (e.g. another partition)."""
        if other.count:
            self._combine(
                other.count, other.mean, other.m2, other.m2_exponent, other.min, other.max
            )

    def _combine(
        self, count: int, mean: float, m2: float, m2_exponent: int, min_: float, max_: float
    ) -> None:
        total = self.count + count
        self.min = min(self.min, min_)
        self.max = max(self.max, max_)
        # Python floats: an overflow gives inf (no warning), caught below.
        delta = mean - self.mean
        combined_mean = self.mean + delta * count / total
        if not (self.m2_exponent or m2_exponent):
            combined_m2 = self.m2 + (m2 + delta * delta * self.count * count / total)
            if math.isfinite(combined_m2) and math.isfinite(combined_mean):
                # Rounding can put the mean of near-equal values an ulp outside them: clamp.
                self.mean = min(max(combined_mean, self.min), self.max)
                self.count, self.m2 = total, combined_m2
                return
        if not math.isfinite(combined_mean):  # means more than the float range apart
            combined_mean = self.mean * (self.count / total) + mean * (count / total)
        # delta**2 * n * m / total in the scaled form: delta = fraction * 2**e.
        fraction, exponent = math.frexp(mean / 2 - self.mean / 2)  # halves: always finite
        between = fraction * fraction * 4 * self.count * count / total
        self.m2, self.m2_exponent = _scaled_sum(
            (self.m2, self.m2_exponent), (m2, m2_exponent), (between, 2 * exponent)
        )
        self.count = total
        self.mean = min(max(combined_mean, self.min), self.max)  # rounding stays within them

    def to_state(self) -> RunningStatsState:
        # Without values min and max are +-inf; stored as 0.0 so a state holds finite floats only.
        if not self.count:
            return RunningStatsState(0, 0.0, 0.0, 0.0, 0.0)
        return RunningStatsState(
            self.count, self.mean, self.m2, self.min, self.max, self.m2_exponent
        )

    @classmethod
    def from_state(cls, state: RunningStatsState) -> RunningStats:
        """Inverse of :meth:`to_state`; ``ValueError`` if the moments are not finite (a state
        written before the float-range guards may hold an overflow)."""
        stats = cls()
        if not state.count:
            return stats
        moments = (state.mean, state.m2, state.min, state.max)
        if not all(math.isfinite(value) for value in moments) or not state.min <= state.max:
            raise ValueError(f"running moments are not finite or min > max: {moments}")
        if state.m2_exponent % 2:
            raise ValueError(f"odd exponent of the squared deviations: {state.m2_exponent}")
        stats.count, stats.mean, stats.m2 = state.count, state.mean, state.m2
        stats.min, stats.max, stats.m2_exponent = state.min, state.max, state.m2_exponent
        return stats


@functools.cache
def _moments_kernel() -> Callable[[NDArray[np.float64], float], tuple[float, ...] | None]:
    """The compiled moments, imported on first use (the extension need not be
    installed for the reference backend; an import statement per call would cost ~1 µs)."""
    from streamdrift.detectors.kernels.moments import moments

    return moments


def _scaled_moments(
    values: NDArray[np.float64], low: float, high: float
) -> tuple[float, float, int]:
    """Mean and sum of squared deviations (as ``m2, exponent``) of values beyond +-LARGE,
    computed on the values scaled by a power of two into (-1, 1): exact but for subnormals,
    which vanish next to such magnitudes anyway."""
    exponent = math.frexp(max(-low, high))[1]
    scaled = np.ldexp(values, -exponent)
    mean = float(np.add.reduce(scaled)) / len(values)
    # Rounding may put the mean an ulp outside the values; it must stay within them.
    mean = min(max(mean, math.ldexp(low, -exponent)), math.ldexp(high, -exponent))
    deviations = scaled - mean
    m2 = float(np.add.reduce(deviations * deviations))
    return (math.ldexp(mean, exponent), *_scaled_sum((m2, 2 * exponent)))


# A scaled sum keeps its value below 2**_HEADROOM, far from overflow when it is added to.
_HEADROOM = 960


def _scaled_sum(*terms: tuple[float, int]) -> tuple[float, int]:
    """The sum of non-negative ``value * 2**exponent`` terms as ``(value, even exponent)``, the
    exponent 0 whenever the sum fits below 2**_HEADROOM."""
    top = max((math.frexp(value)[1] + exponent for value, exponent in terms if value), default=0)
    shift = max(top - _HEADROOM, 0)
    shift += shift % 2  # even, so that the standard deviation scales by 2**(shift // 2)
    return sum(math.ldexp(value, exponent - shift) for value, exponent in terms), shift


def _ldexp_saturated(value: float, exponent: int) -> float:
    try:
        return math.ldexp(value, exponent)
    except OverflowError:
        return math.copysign(FLOAT_MAX, value)
