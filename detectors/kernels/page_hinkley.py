"""Page-Hinkley over a batch: ``river.drift.PageHinkley.update`` (river 0.26, pure Python) line
for line, compiled, with the same floating-point operations in the same order.

State (``float64[7]``): the running mean's weight ``n`` and ``mean`` (river's ``stats.Mean``),
``sum_increase``, ``sum_decrease``, ``min_increase`` (+inf at the start), ``max_decrease`` (-1 at
the start) and the drift flag of the last value (the next update resets first, as river's does).
"""

from __future__ import annotations

import math

import numpy as np
from numpy.typing import NDArray
from streamdrift_kernels import (
    page_hinkley_update_batch as _update_batch,
)  # native/src/page_hinkley.rs

from streamdrift.detectors.config import PageHinkleyParams

__all__ = ["MODES", "PageHinkleyWindow"]

Floats = NDArray[np.float64]
Ints = NDArray[np.int64]
MODES = {"up": 0, "down": 1, "both": 2}
_N, _MEAN, _SUM_INCREASE, _SUM_DECREASE, _MIN_INCREASE, _MAX_DECREASE, _DRIFT = range(7)


def _statistic(state: Floats, mode: int) -> float:
    """What :class:`~detectors.page_hinkley.PageHinkley` reports: the rise over the minimum
    (up), the fall under the maximum (down), or the larger of the two."""
    up = state[2] - state[4]
    down = state[5] - state[3]
    if mode == 0:
        return float(up)
    if mode == 1:
        return float(down)
    return float(max(up, down))


class PageHinkleyWindow:
    """One Page-Hinkley test in an array, updated a batch at a time by the compiled kernel.

    >>> import random
    >>> rng = random.Random(12345)
    >>> test = PageHinkleyWindow(PageHinkleyParams(threshold=50.0, delta=0.005))
    >>> stream = rng.choices([0, 1], k=1000) + rng.choices(range(4, 8), k=1000)
    >>> [(i, round(s, 1)) for i, s in test.update(np.array(stream, dtype=float))]
    [(1006, 51.6)]

    The index of ``river.drift.PageHinkley``'s own example (whose ``alpha`` is 0.9999; 1 here).
    """

    __slots__ = ("mode", "params", "state")

    def __init__(self, params: PageHinkleyParams) -> None:
        self.params = np.array(
            [params.min_instances, params.delta, params.threshold, params.alpha], dtype=np.float64
        )
        self.mode = MODES[params.mode]
        self.state = np.array([0.0, 0.0, 0.0, 0.0, math.inf, -1.0, 0.0])

    def update(self, values: Floats) -> list[tuple[int, float]]:
        values = np.ascontiguousarray(values, dtype=np.float64)
        hit_index = np.empty(len(values), dtype=np.int64)
        hit_statistic = np.empty(len(values))
        hits = _update_batch(values, self.params, self.mode, self.state, hit_index, hit_statistic)
        return list(zip(hit_index[:hits].tolist(), hit_statistic[:hits].tolist(), strict=True))

    def statistic(self) -> float:
        return _statistic(self.state, self.mode)
