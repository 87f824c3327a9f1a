"""Page-Hinkley, river's cumulative-sum change detector, with pickle-free state."""

from __future__ import annotations

import dataclasses
import math
from typing import Any

from river import drift

from streamdrift.detectors.base import ChangeDetector, DetectorState
from streamdrift.detectors.config import PageHinkleyParams

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
    """The Page-Hinkley test (Page, 1954) wrapping ``river.drift.PageHinkley``.

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
        self._ph = drift.PageHinkley(**dataclasses.asdict(self.params))

    @property
    def threshold(self) -> float:
        return self.params.threshold

    def _update(self, x: float) -> float | None:
        self._ph.update(x)
        return self._test_statistic() if self._ph.drift_detected else None

    def _test_statistic(self) -> float:
        ph = self._ph
        up = ph._sum_increase - ph._min_increase
        down = ph._max_decrease - ph._sum_decrease
        return {"up": up, "down": down}.get(self.params.mode, max(up, down))

    def _describe(self) -> dict[str, Any]:
        mean = self._ph._x_mean
        # Before the first value the sums are at their +-inf / -1 starting points.
        score = max(self._test_statistic(), 0.0)
        return {"n": int(mean.n), "estimation": mean.get(), "score": score}

    def to_state(self) -> PageHinkleyState:
        ph = self._ph
        return PageHinkleyState(
            n_detections=self.n_detections,
            statistic=self.statistic,
            drift_detected=self.drift_detected,
            params=self.params,
            mean_n=ph._x_mean.n,
            mean=ph._x_mean._mean,
            sum_increase=ph._sum_increase,
            sum_decrease=ph._sum_decrease,
            min_increase=ph._min_increase if math.isfinite(ph._min_increase) else None,
            max_decrease=float(ph._max_decrease),
        )

    @classmethod
    def from_state(cls, state: PageHinkleyState) -> PageHinkley:
        detector = cls(state.params)
        ph = detector._ph
        # The state is river's attributes: if a river release renamed one, setting it would
        # go unnoticed (a new attribute river never reads).
        absent = [name for name in _RIVER_ATTRIBUTES if not hasattr(ph, name)]
        absent += [f"_x_mean.{name}" for name in ("n", "_mean") if not hasattr(ph._x_mean, name)]
        if absent:
            raise ValueError(f"river's PageHinkley has no {', '.join(absent)}: its layout changed")
        ph._x_mean.n, ph._x_mean._mean = state.mean_n, state.mean
        ph._sum_increase, ph._sum_decrease = state.sum_increase, state.sum_decrease
        values = (
            state.mean_n,
            state.mean,
            state.sum_increase,
            state.sum_decrease,
            state.max_decrease,
        )
        if not all(math.isfinite(value) for value in values):
            raise ValueError("Page-Hinkley state is not finite")
        min_increase = math.inf if state.min_increase is None else state.min_increase
        # river starts _max_decrease at the int -1 (so typed int) and keeps floats in it after.
        ph._min_increase, ph._max_decrease = min_increase, state.max_decrease  # type: ignore[assignment]
        ph._drift_detected = state.drift_detected
        detector._restore_common(state)
        return detector

    @classmethod
    def afresh(cls, state: PageHinkleyState) -> PageHinkley:
        """A detector with the parameters of ``state`` (a calibrated threshold included)
        starting afresh, as after a detection, with its detection count and last statistic:
        for a state river cannot take back (one written by another river release)."""
        detector = cls(state.params)
        detector.n_detections, detector.statistic = state.n_detections, state.statistic
        return detector


# river's attributes that a state sets (river.drift.PageHinkley's layout as of river 0.26).
_RIVER_ATTRIBUTES = (
    "_x_mean",
    "_sum_increase",
    "_sum_decrease",
    "_min_increase",
    "_max_decrease",
    "_drift_detected",
)
