"""Exact running moments of a numeric stream, mergeable across batches and partitions."""

from __future__ import annotations

import math
from typing import Annotated

import msgspec
import numpy as np

__all__ = ["RunningStats", "RunningStatsState"]


class RunningStatsState(msgspec.Struct, frozen=True):
    """Serialisable form of :class:`RunningStats`; msgspec checks the constraints on decode."""

    count: Annotated[int, msgspec.Meta(ge=0)]
    mean: float
    m2: Annotated[float, msgspec.Meta(ge=0)]
    min: float
    max: float


class RunningStats:
    """Count, mean, variance, min and max of a stream of floats.

    The sum of squared deviations ``m2`` is kept instead of a sum of squares, and each batch or
    other instance is folded in with Chan et al.'s pairwise formula, so there is no catastrophic
    cancellation on values with a large mean, and merging the statistics of several partitions
    equals one pass over all their values up to rounding.

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

    """

    def __init__(self) -> None:
        self.count = 0
        self.mean = 0.0
        self.m2 = 0.0
        self.min = math.inf
        self.max = -math.inf

    @property
    def variance(self) -> float:
        """Sample variance (``ddof=1``); 0.0 with fewer than two values."""
        return self.m2 / (self.count - 1) if self.count > 1 else 0.0

    @property
    def std(self) -> float:
        return math.sqrt(self.variance)

    def update_many(self, values: np.ndarray) -> None:
        """Add a batch of finite values (one vectorised pass, then Chan's combine)."""
        if len(values) == 0:
            return
        # ufunc reductions: ndarray.mean() and friends add microseconds of Python per call,
        # and this runs for every series of every batch.
        mean = float(np.add.reduce(values)) / len(values)
        deviations = values - mean
        m2 = float(np.add.reduce(deviations * deviations))
        self._combine(len(values), mean, m2, float(np.minimum.reduce(values)), float(np.maximum.reduce(values)))

    def merge(self, other: RunningStats) -> None:
        """Fold in the statistics of values seen elsewhere (e.g. another partition)."""
        if other.count:
            self._combine(other.count, other.mean, other.m2, other.min, other.max)

    def _combine(self, count: int, mean: float, m2: float, min_: float, max_: float) -> None:
        total = self.count + count
        delta = mean - self.mean
        self.mean += delta * count / total
        self.m2 += m2 + delta * delta * self.count * count / total
        self.count = total
        self.min = min(self.min, min_)
        self.max = max(self.max, max_)

    def to_state(self) -> RunningStatsState:
        return RunningStatsState(self.count, self.mean, self.m2, self.min, self.max)

    @classmethod
    def from_state(cls, state: RunningStatsState) -> RunningStats:
        stats = cls()
        stats.count, stats.mean, stats.m2 = state.count, state.mean, state.m2
        stats.min, stats.max = state.min, state.max
        return stats
