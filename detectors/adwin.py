"""ADWIN, river's adaptive-window change detector (compiled or river's own), with pickle-free
state."""

from __future__ import annotations

import dataclasses
from collections.abc import Iterable
from typing import TYPE_CHECKING, Any

import numpy as np
from river import drift

from streamdrift.detectors import kernels
from streamdrift.detectors.base import ChangeDetector, DetectorState, as_floats
from streamdrift.detectors.config import AdwinParams

if TYPE_CHECKING:
    from streamdrift.detectors.kernels.adwin import AdwinWindow

__all__ = ["Adwin", "AdwinState"]


class AdwinState(DetectorState, frozen=True, tag="adwin"):
    params: AdwinParams
    window: bytes  # river's own serialisation of its Rust window (bincode, not pickle)
    width: int
    total: float


class Adwin(ChangeDetector):
    """ADWIN (Bifet & Gavaldà, 2007): river's ``drift.ADWIN``, compiled over batches.

    With the compiled backend (the default where installed, :mod:`detectors.kernels`) a batch
    of values runs through :class:`~detectors.kernels.adwin.AdwinWindow`, river's algorithm line
    for line; with the reference backend through ``river.drift.ADWIN`` itself. Both give the same
    detections and statistics and the same state bytes (river's own serialisation).

    ADWIN keeps a window of values with no detected change and cuts its older part when the
    means of the two sub-windows differ by more than a bound set by ``delta``, the sub-window
    sizes and the window variance.

    statistic
        ``|mean of the values kept - mean of the values dropped|`` at the cut that fired, in
        input units (reference standard deviations when fed by ``NumericMonitor``). Cuts fall on
        bucket boundaries (buckets of 2^i values), so the kept part may still hold many values
        from before the change and the statistic then understates its size; the monitor's
        ``effect_size`` is the better measure of size.
    threshold
        ``delta``, the confidence parameter. It is not in the statistic's units: the cut bound
        depends on the window as described above.

    >>> import random
    >>> rng = random.Random(12345)
    >>> adwin = Adwin(AdwinParams(delta=0.002))
    >>> stream = rng.choices([0, 1], k=1000) + rng.choices(range(4, 8), k=1000)
    >>> [i for i, x in enumerate(stream) if adwin.update(x)]
    [1023]
    >>> round(adwin.statistic, 2), adwin.threshold
    (4.01, 0.002)

    The same index as ``river.drift.ADWIN``'s own example.
    """

    name = "adwin"
    state_type = AdwinState

    def __init__(self, params: AdwinParams | None = None) -> None:
        super().__init__()
        self.params = params or AdwinParams()
        # One of the two, by the backend active when the detector is made (detectors.kernels).
        self._window: AdwinWindow | None = None
        self._adwin: drift.ADWIN | None = None
        if kernels.compiled():
            # Imported here: the extension need not be installed for the reference backend.
            from streamdrift.detectors.kernels.adwin import AdwinWindow

            self._window = AdwinWindow(self.params)
        else:
            self._adwin = drift.ADWIN(**dataclasses.asdict(self.params))

    @property
    def threshold(self) -> float:
        return self.params.delta

    def _update(self, x: float) -> float | None:
        hits = self._window.update(np.array([x])) if self._window is not None else self._run([x])
        return hits[0][1] if hits else None

    @property
    def window(self) -> AdwinWindow | None:
        """The compiled backend's window (None with the reference backend), for a kernel that
        runs it with other steps in one call (:mod:`detectors.kernels.fused`), after which
        :meth:`record` takes what it found."""
        return self._window

    def update_many(self, values: Iterable[float]) -> list[tuple[int, float]]:
        if self._window is not None:
            array = values if isinstance(values, np.ndarray) else np.fromiter(values, np.float64)
            return self.record(self._window.update(array))
        hits = self._run(values)
        # What ``_step`` records per value, once for the run.
        self._drift_detected = self._river.drift_detected
        self._count(hits)
        return hits

    def record(self, hits: list[tuple[int, float]]) -> list[tuple[int, float]]:
        """Take the detections (index, statistic) of a batch the compiled :attr:`window` ran;
        returns them."""
        assert self._window is not None, "a detector of the compiled backend"
        self._drift_detected = self._window.drift_detected
        self._count(hits)
        return hits

    def _count(self, hits: list[tuple[int, float]]) -> None:
        if hits:
            self.statistic = hits[-1][1]
            self.n_detections += len(hits)

    @property
    def _river(self) -> drift.ADWIN:
        assert self._adwin is not None, "a detector of the compiled backend"
        return self._adwin

    def _run(self, values: Iterable[float]) -> list[tuple[int, float]]:
        """Feed ``values`` to river's ADWIN (the reference backend); (index, statistic) of each
        detection.

        river's ``ADWIN.update`` inlined (reset on the update after a detection, then the Rust
        window's update).
        """
        adwin = self._river
        hits = []
        helper = adwin._helper
        # The window is every value since the last reset (a cut is a detection, and the update
        # after one resets), so its width and total before each value are counted here rather
        # than asked of the Rust window twice per value; what a cut dropped follows from them.
        width, total = helper.get_width(), helper.get_total()
        for i, x in enumerate(as_floats(values)):
            if adwin._drift_detected:
                adwin._reset()
                helper, width, total = adwin._helper, 0, 0.0
            adwin._drift_detected = helper.update(x)
            if adwin._drift_detected:
                kept, kept_total = helper.get_width(), helper.get_total()
                hits.append(
                    (i, abs(kept_total / kept - (total + x - kept_total) / (width + 1 - kept)))
                )
            width += 1
            total += x
        return hits

    def _describe(self) -> dict[str, Any]:
        if self._window is not None:
            return {"width": self._window.width, "estimation": self._window.estimation}
        return {"width": int(self._river.width), "estimation": self._river.estimation}

    def to_state(self) -> AdwinState:
        if self._window is not None:
            window, width, total = self._window.to_bytes(), self._window.width, self._window.total
        else:
            helper = self._river._helper
            window, width, total = (
                helper.__getstate__(),
                int(helper.get_width()),
                helper.get_total(),
            )
        return AdwinState(
            n_detections=self.n_detections,
            statistic=self.statistic,
            drift_detected=self.drift_detected,
            params=self.params,
            window=window,
            width=width,
            total=total,
        )

    @classmethod
    def from_state(cls, state: AdwinState) -> Adwin:
        detector = cls(state.params)
        if detector._window is not None:
            detector._window = type(detector._window).from_bytes(state.window, state.params)
            restored = (detector._window.width, detector._window.total)
            if restored != (state.width, state.total):
                raise ValueError("ADWIN window does not match its recorded width and total")
            detector._window.drift_detected = state.drift_detected
        else:
            detector._restore_river(state)
        detector._restore_common(state)
        return detector

    def _restore_river(self, state: AdwinState) -> None:
        helper = self._river._helper
        try:
            helper.__setstate__(state.window)
        except BaseException as exc:
            # A Rust panic on malformed bytes surfaces as pyo3's PanicException, which derives
            # from BaseException; anything else that is not an Exception must propagate.
            if not isinstance(exc, Exception) and type(exc).__name__ != "PanicException":
                raise
            raise ValueError(f"malformed ADWIN window: {exc}") from None
        # The Rust decoder accepts some garbage (zeroed bytes decode to an empty window), so
        # cross-check against what was recorded next to it.
        params = dataclasses.astuple(state.params)  # river's constructor order
        restored = (helper.get_width(), helper.get_total(), tuple(helper.__reduce_ex__(2)[1][1:]))
        if restored != (state.width, state.total, params):
            raise ValueError("ADWIN window does not match its recorded width, total and parameters")
        self._river._drift_detected = state.drift_detected

    @classmethod
    def afresh(cls, state: AdwinState) -> Adwin:
        """A detector with the parameters of ``state`` starting afresh, as after a detection,
        with its detection count and last statistic: for a window river cannot take back (one
        written by another river release)."""
        detector = cls(state.params)
        detector.n_detections, detector.statistic = state.n_detections, state.statistic
        return detector
