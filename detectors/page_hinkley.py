"""Page-Hinkley, river's cumulative-sum change detector (compiled or river's own), with
pickle-free state."""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Iterable
from typing import TYPE_CHECKING, Any

import numpy as np
from river import drift

from streamdrift.detectors import kernels
from streamdrift.detectors.base import ChangeDetector, DetectorState
from streamdrift.detectors.config import PageHinkleyParams

if TYPE_CHECKING:
    from streamdrift.detectors.kernels.page_hinkley import PageHinkleyWindow

__all__ = ["PageHinkley", "PageHinkleyState"]


class PageHinkleyState(DetectorState, frozen=True, tag="page_hinkley"):
    params: PageHinkleyParams
    mean_n: float
    mean: float
    sum_increase: float
    sum_decrease: float
    min_increase: float | None  # None: river's +inf starting point (a state holds finite floats)
    max_decrease: float


class PageHinkley(ChangeDetector):
    """The Page-Hinkley test (Page, 1954): ``river.drift.PageHinkley``, compiled over batches.

    With the compiled backend (the default where installed, :mod:`detectors.kernels`) a batch
    runs through :class:`~detectors.kernels.page_hinkley.PageHinkleyWindow`, river's update line
    for line; with the reference backend through river's own class. Same detections, statistics
    and state.

    It accumulates the deviations of each value from the running mean, minus an allowance
    ``delta``, and fires when the cumulative sum rises more than ``threshold`` above its
    minimum (or falls below its maximum, for decreases).

    statistic
        That rise (or fall) at the detection, read before river resets the sums; in input units
        (reference standard deviations when fed by ``NumericMonitor``).
    threshold
        ``threshold``, in the same units.

    >>> import random
    >>> rng = random.Random(12345)
    >>> ph = PageHinkley(PageHinkleyParams(threshold=50.0, delta=0.005, alpha=1 - 0.0001))
    >>> stream = rng.choices([0, 1], k=1000) + rng.choices(range(4, 8), k=1000)
    >>> [i for i, x in enumerate(stream) if ph.update(x)]
    [1006]
    >>> round(ph.statistic, 1), ph.threshold
    (51.0, 50.0)

    The same index as ``river.drift.PageHinkley``'s own example (river's default parameters).
    """

    name = "page_hinkley"
    state_type = PageHinkleyState

    def __init__(self, params: PageHinkleyParams | None = None) -> None:
        super().__init__()
        self.params = params or PageHinkleyParams()
        # One of the two, by the backend active when the detector is made (detectors.kernels).
        self._window: PageHinkleyWindow | None = None
        self._river: drift.PageHinkley | None = None
        if kernels.compiled():
            # Imported here: the extension need not be installed for the reference backend.
            from streamdrift.detectors.kernels.page_hinkley import PageHinkleyWindow

            self._window = PageHinkleyWindow(self.params)
        else:
            self._river = drift.PageHinkley(**dataclasses.asdict(self.params))

    @property
    def threshold(self) -> float:
        return self.params.threshold

    @property
    def _ph(self) -> drift.PageHinkley:
        assert self._river is not None, "a detector of the compiled backend"
        return self._river

    def update_many(self, values: Iterable[float]) -> list[tuple[int, float]]:
        if self._window is None:
            return super().update_many(values)
        array = values if isinstance(values, np.ndarray) else np.fromiter(values, np.float64)
        hits = self._window.update(array)
        self._drift_detected = bool(self._window.state[-1])
        if hits:
            self.statistic = hits[-1][1]
            self.n_detections += len(hits)
        return hits

    def _update(self, x: float) -> float | None:
        if self._window is not None:
            hits = self._window.update(np.array([x]))
            return hits[0][1] if hits else None
        self._ph.update(x)
        return self._test_statistic() if self._ph.drift_detected else None

    def _test_statistic(self) -> float:
        if self._window is not None:
            return self._window.statistic()
        ph = self._ph
        up = ph._sum_increase - ph._min_increase
        down = ph._max_decrease - ph._sum_decrease
        return {"up": up, "down": down}.get(self.params.mode, max(up, down))

    def _describe(self) -> dict[str, Any]:
        n, mean = self._sums()[:2]
        # Before the first value the sums are at their +-inf / -1 starting points.
        score = max(self._test_statistic(), 0.0)
        return {"n": int(n), "estimation": mean, "score": score}

    def _sums(self) -> tuple[float, float, float, float, float, float]:
        """n, mean, sum_increase, sum_decrease, min_increase, max_decrease."""
        if self._window is not None:
            n, mean, up, down, low, high = self._window.state[:6].tolist()
            return n, mean, up, down, low, high
        ph = self._ph
        mean = ph._x_mean
        return (
            mean.n,
            mean._mean,
            ph._sum_increase,
            ph._sum_decrease,
            ph._min_increase,
            float(ph._max_decrease),
        )

    def to_state(self) -> PageHinkleyState:
        n, mean, sum_increase, sum_decrease, min_increase, max_decrease = self._sums()
        return PageHinkleyState(
            n_detections=self.n_detections,
            statistic=self.statistic,
            drift_detected=self.drift_detected,
            params=self.params,
            mean_n=n,
            mean=mean,
            sum_increase=sum_increase,
            sum_decrease=sum_decrease,
            min_increase=min_increase if math.isfinite(min_increase) else None,
            max_decrease=max_decrease,
        )

    @classmethod
    def from_state(cls, state: PageHinkleyState) -> PageHinkley:
        detector = cls(state.params)
        if detector._window is not None:
            detector._restore_window(detector._window, state)
            detector._restore_common(state)
            return detector
        ph = detector._ph
        # The state is river's attributes: if a river release renamed one, setting it would
        # go unnoticed (a new attribute river never reads).
        absent = [name for name in _RIVER_ATTRIBUTES if not hasattr(ph, name)]
        absent += [f"_x_mean.{name}" for name in ("n", "_mean") if not hasattr(ph._x_mean, name)]
        if absent:
            raise ValueError(f"river's PageHinkley has no {', '.join(absent)}: its layout changed")
        min_increase = _checked_min_increase(state)
        ph._x_mean.n, ph._x_mean._mean = state.mean_n, state.mean
        ph._sum_increase, ph._sum_decrease = state.sum_increase, state.sum_decrease
        # river starts _max_decrease at the int -1 (so typed int) and keeps floats in it after.
        ph._min_increase, ph._max_decrease = min_increase, state.max_decrease  # type: ignore[assignment]
        ph._drift_detected = state.drift_detected
        detector._restore_common(state)
        return detector

    @staticmethod
    def _restore_window(window: PageHinkleyWindow, state: PageHinkleyState) -> None:
        min_increase = _checked_min_increase(state)
        window.state[:] = (
            state.mean_n,
            state.mean,
            state.sum_increase,
            state.sum_decrease,
            min_increase,
            state.max_decrease,
            float(state.drift_detected),
        )

    @classmethod
    def afresh(cls, state: PageHinkleyState) -> PageHinkley:
        """A detector with the parameters of ``state`` (a calibrated threshold included)
        starting afresh, as after a detection, with its detection count and last statistic:
        for a state river cannot take back (one written by another river release)."""
        detector = cls(state.params)
        detector.n_detections, detector.statistic = state.n_detections, state.statistic
        return detector


def _checked_min_increase(state: PageHinkleyState) -> float:
    """The state's ``min_increase`` (+inf before the first value); ``ValueError`` unless its
    numbers are finite."""
    values = (state.mean_n, state.mean, state.sum_increase, state.sum_decrease, state.max_decrease)
    if not all(math.isfinite(value) for value in values):
        raise ValueError("Page-Hinkley state is not finite")
    return math.inf if state.min_increase is None else state.min_increase


# river's attributes that a state sets (river.drift.PageHinkley's layout as of river 0.26).
_RIVER_ATTRIBUTES = (
    "_x_mean",
    "_sum_increase",
    "_sum_decrease",
    "_min_increase",
    "_max_decrease",
    "_drift_detected",
)
