"""The detector columns of the table: each turns a series into the indices of its alarms.

Every column sees the same values. streamdrift is run through its monitors exactly as the worker
runs it (values in batches, tagged with positions; the returned ``Detection`` objects are the
alerts), so whatever the monitors grow — new tests, calibration, alert lifecycle — shows up here
without touching the benchmark. Its configuration lives in :func:`streamdrift_column` only.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any, Protocol

import numpy as np

from bench.scenarios import Series
from streamdrift.detectors import CategoricalMonitor, ErrorMonitor, MonitorParams, NumericMonitor

__all__ = [
    "Column",
    "RiverColumn",
    "StreamdriftColumn",
    "WindowTestColumn",
    "default_columns",
    "streamdrift_column",
]


class Column(Protocol):
    # Read-only: the columns are frozen dataclasses.
    @property
    def name(self) -> str: ...
    @property
    def description(self) -> str: ...

    def alarms(self, series: Series) -> np.ndarray | None:
        """Sorted indices of the values at which the column alarmed; None if not applicable."""


@dataclass(frozen=True)
class StreamdriftColumn:
    """streamdrift's monitors: ``NumericMonitor``, ``CategoricalMonitor`` or ``ErrorMonitor``.

    The alarms are the positions of the ``detected`` lifecycle changes ``update`` returns (the
    alerts a user gets); ``resolved`` ones are not alarms. Its lifecycle changes (both kinds)
    also make the trial's incidents (:func:`bench.scoring.incidents_of`).
    """

    params: MonitorParams = field(default_factory=MonitorParams)
    batch: int = 1_000
    name: str = "streamdrift"
    description: str = "streamdrift monitors (calibrated defaults), batches of 1000 values"

    def alarms(self, series: Series) -> np.ndarray:
        found = [position for position, event in self.lifecycle(series) if event == "detected"]
        return np.asarray(sorted(found), dtype=np.int64)

    def lifecycle(self, series: Series) -> list[tuple[int, str]]:
        """The series' lifecycle changes: (position, ``detected`` or ``resolved``), in order."""
        monitor: Any
        if series.kind == "numeric":
            monitor = NumericMonitor(self.params)
        elif series.kind == "error":
            monitor = ErrorMonitor(self.params)
        else:
            monitor = CategoricalMonitor(self.params)
        positions = np.arange(len(series.values), dtype=np.int64)
        changes: list[tuple[int, str]] = []
        for start in range(0, len(series.values), self.batch):
            chunk = slice(start, start + self.batch)
            values: np.ndarray | list[str] = series.values[chunk]
            if series.kind == "categorical":
                values = [str(v) for v in values]
            changes += [(d.position, d.event) for d in monitor.update(values, positions[chunk])]
        return changes


def streamdrift_column(params: MonitorParams | None = None) -> StreamdriftColumn:
    """The streamdrift column: the built-in calibrated defaults unless ``params`` are given."""
    if params is None:
        return StreamdriftColumn(MonitorParams())
    return StreamdriftColumn(
        params,
        description="streamdrift monitors (parameters from --config), batches of 1000 values",
    )


def _river_hits(detector: Any, values: Iterable[float]) -> list[int]:
    hits = []
    for i, x in enumerate(values):
        detector.update(x)
        if detector.drift_detected:
            hits.append(i)
    return hits


@dataclass(frozen=True)
class RiverColumn:
    """A river drift detector at its default settings, fed the raw values one at a time.

    0/1 errors are fed as they are. A categorical series is one-hot encoded, one detector per
    category; an alarm of any of them is an alarm of the series.
    """

    name: str
    factory: Callable[[], Any]
    description: str = ""

    def alarms(self, series: Series) -> np.ndarray:
        if series.kind != "categorical":
            return np.asarray(_river_hits(self.factory(), series.values.tolist()), dtype=np.int64)
        hits: set[int] = set()
        for category in np.unique(series.values):
            indicator = (series.values == category).astype(np.float64).tolist()
            hits.update(_river_hits(self.factory(), indicator))
        return np.asarray(sorted(hits), dtype=np.int64)


@dataclass(frozen=True)
class WindowTestColumn:
    """The tutorial check: each non-overlapping window against the first one, alarm at p < alpha.

    Numeric series: two-sample Kolmogorov-Smirnov test (``scipy.stats.ks_2samp``). Categorical
    series and 0/1 errors: chi-square test of the 2 x k table of counts
    (``scipy.stats.chi2_contingency``; KS does not apply to categories). The reference stays the
    first window, so a persistent change alarms at every window after it; an alarm is placed at
    the last value of its window.
    """

    window: int = 500
    alpha: float = 0.05
    name: str = "KS/χ² window"
    description: str = ""

    def alarms(self, series: Series) -> np.ndarray:
        from scipy import stats

        values = series.values
        windows = len(values) // self.window
        if windows < 2:
            return np.asarray([], dtype=np.int64)
        reference = values[: self.window]
        hits = []
        for k in range(1, windows):
            current = values[k * self.window : (k + 1) * self.window]
            if series.kind == "numeric":
                p = stats.ks_2samp(reference, current).pvalue
            else:
                p = _chi2_pvalue(reference, current)
            if p < self.alpha:
                hits.append((k + 1) * self.window - 1)
        return np.asarray(hits, dtype=np.int64)


def _chi2_pvalue(reference: np.ndarray, current: np.ndarray) -> float:
    from scipy import stats

    categories = np.union1d(reference, current)
    table = np.array([[np.sum(w == c) for c in categories] for w in (reference, current)])
    if table.shape[1] < 2:
        return 1.0
    return float(stats.chi2_contingency(table).pvalue)


def default_columns(params: MonitorParams | None = None) -> list[Column]:
    from river import drift

    return [
        streamdrift_column(params),
        RiverColumn(
            "ADWIN",
            drift.ADWIN,
            "river.drift.ADWIN() at defaults (delta=0.002), raw values; one-hot for categories",
        ),
        RiverColumn(
            "PageHinkley",
            drift.PageHinkley,
            "river.drift.PageHinkley() at defaults (threshold 50, delta 0.005, alpha 0.9999), "
            "raw values; one-hot for categories",
        ),
        WindowTestColumn(
            description="windows of 500 vs the first window, p < 0.05: scipy ks_2samp for "
            "numeric values, chi2_contingency for categories and 0/1 errors",
        ),
    ]
