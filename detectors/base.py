"""The interface shared by the change detectors."""

from __future__ import annotations

import abc
from collections.abc import Iterable
from typing import Any, ClassVar

import msgspec
import numpy as np

__all__ = ["ChangeDetector", "DetectorState", "as_floats"]


class DetectorState(msgspec.Struct, frozen=True):
    """Fields every detector saves; subclasses are tagged so a union of them decodes."""

    n_detections: int
    statistic: float | None
    drift_detected: bool


class ChangeDetector(abc.ABC):
    """A detector of changes in the mean of a stream of floats.

    Feed values in order with :meth:`update`; it returns (and :attr:`drift_detected` holds)
    whether that value completed a detection. After a detection the detector starts afresh on
    the next value, as river's detectors do. :attr:`statistic` is the test statistic of the
    last detection and :attr:`threshold` what it is compared with, for alert explanations.

    State is saved as plain numbers and bytes (:meth:`to_state`), never pickled: the state
    store must not be able to run code in the worker.
    """

    name: ClassVar[str]
    state_type: ClassVar[type[DetectorState]]

    def __init__(self) -> None:
        self._drift_detected = False
        self.n_detections = 0
        self.statistic: float | None = None

    @property
    def drift_detected(self) -> bool:
        return self._drift_detected

    @property
    @abc.abstractmethod
    def threshold(self) -> float:
        """The parameter :attr:`statistic` is judged against."""

    def update(self, x: float) -> bool:
        return self._step(x) is not None

    def update_many(self, values: Iterable[float]) -> list[tuple[int, float]]:
        """Feed ``values`` in order; return ``(index, statistic)`` of each detection."""
        hits = []
        for i, x in enumerate(as_floats(values)):
            statistic = self._step(x)
            if statistic is not None:
                hits.append((i, statistic))
        return hits

    def _step(self, x: float) -> float | None:
        statistic = self._update(x)
        self._drift_detected = statistic is not None
        if statistic is not None:
            self.statistic = statistic
            self.n_detections += 1
        return statistic

    def describe(self) -> dict[str, Any]:
        """JSON-able view of the detector for status pages."""
        return {
            "n_detections": self.n_detections,
            "statistic": self.statistic,
            "threshold": self.threshold,
            **self._describe(),
        }

    @abc.abstractmethod
    def _update(self, x: float) -> float | None:
        """Feed one value; return the test statistic if it completed a detection, else None."""

    @abc.abstractmethod
    def _describe(self) -> dict[str, Any]:
        """Detector-specific fields of :meth:`describe`."""

    @abc.abstractmethod
    def to_state(self) -> DetectorState: ...

    @classmethod
    @abc.abstractmethod
    def from_state(cls, state: Any) -> ChangeDetector:
        """Inverse of :meth:`to_state`; ``ValueError`` if the state is inconsistent."""

    def _restore_common(self, state: DetectorState) -> None:
        self._drift_detected = state.drift_detected
        self.n_detections = state.n_detections
        self.statistic = state.statistic


def as_floats(values: Iterable[float]) -> Iterable[float]:
    """Python floats for a per-value loop: river is markedly slower on numpy scalars."""
    return values.tolist() if isinstance(values, np.ndarray) else values
