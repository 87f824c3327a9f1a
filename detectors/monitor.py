"""The state of one (model, feature) — or of a model's error stream — and its alert logic.

A monitor summarises every value it sees (exact moments, a quantile sketch) and freezes the
first ``warmup_events`` values as the *reference*. After that, numeric values are standardised
by the reference mean and standard deviation and fed to the change detectors, so thresholds
are in reference sigma units whatever the feature's scale. The first detection opens an
*episode* and is returned; detections in the next ``cooldown_events`` values of the same monitor
only increment ``suppressed``, so one drift raises one alert rather than a storm.

Monitors serialise to msgpack with a format version (no pickle: the state store must not be
able to run code in the worker) and restore with :func:`monitor_from_bytes`.
"""

from __future__ import annotations

import abc
import math
from collections.abc import Sequence, Set
from dataclasses import dataclass
from typing import Annotated, Any, ClassVar, Self

import msgspec
import numpy as np

from detectors.adwin import Adwin, AdwinState
from detectors.base import ChangeDetector
from detectors.config import MonitorParams
from detectors.page_hinkley import PageHinkley, PageHinkleyState
from detectors.sketches import CategoryCounts, CategoryCountsState, QuantileSketch
from detectors.stats import RunningStats, RunningStatsState

__all__ = [
    "FORMAT_VERSION",
    "CategoricalMonitor",
    "Detection",
    "ErrorMonitor",
    "Monitor",
    "NumericMonitor",
    "StateError",
    "merge_summaries",
    "monitor_from_bytes",
    "severity",
]

FORMAT_VERSION = 1
QUANTILES = {
    "p01": 0.01, "p05": 0.05, "p25": 0.25, "p50": 0.5, "p75": 0.75, "p95": 0.95, "p99": 0.99
}
DETECTION_QUANTILES = {key: QUANTILES[key] for key in ("p05", "p50", "p95")}
TOP_CATEGORIES = 10
# Cohen's conventional cut points for a medium and a large standardised effect.
SEVERITY_CUTS = ((0.8, "high"), (0.5, "medium"))

_DETECTORS: dict[str, type[ChangeDetector]] = {cls.name: cls for cls in (Adwin, PageHinkley)}
_DETECTOR_BY_STATE = {cls.state_type: cls for cls in _DETECTORS.values()}
_Count = Annotated[int, msgspec.Meta(ge=0)]


class _StreamState(msgspec.Struct, frozen=True):
    params: MonitorParams
    missing: _Count
    stats: RunningStatsState
    sketch: bytes
    reference: RunningStatsState
    reference_sketch: bytes
    detectors: dict[str, AdwinState | PageHinkleyState]
    evidence_from: dict[str, int | None]
    ewma_mean: float
    ewma_sq: float
    episode_until: _Count
    episodes: _Count
    suppressed: _Count


class _NumericState(_StreamState, frozen=True, tag="numeric"):
    pass


class _ErrorState(_StreamState, frozen=True, tag="error"):
    pass


class _CategoricalState(msgspec.Struct, frozen=True, tag="categorical"):
    params: MonitorParams
    missing: _Count
    counts: CategoryCountsState


class _Envelope(msgspec.Struct, frozen=True):
    version: int
    monitor: _NumericState | _ErrorState | _CategoricalState


class _Header(msgspec.Struct):
    """Read first, so a state of another version is reported as such, not as corrupt."""

    version: int


class StateError(ValueError):
    """Stored monitor state that cannot be restored: corrupt, or another format version."""


def severity(effect_size: float) -> str:
    """``low`` below 0.5, ``medium`` below 0.8, else ``high`` (Cohen's d conventions).

    >>> severity(0.3), severity(0.5), severity(1.2)
    ('low', 'medium', 'high')
    """
    return next((label for cut, label in SEVERITY_CUTS if effect_size >= cut), "low")


@dataclass(frozen=True)
class Detection:
    """A detection that opened an episode: what fired, where, and how large the change looks.

    detector, statistic, threshold
        Which detector fired, its test statistic and the threshold it crossed (see the
        detector classes for units).
    severity, effect_size
        ``effect_size`` is ``|current mean - reference mean| / reference std`` with the EWMA
        mean as current; :func:`severity` maps it to low/medium/high. The EWMA lags: a shift
        detected after n values shows a fraction ``1 - (1 - ewma_alpha)**n`` of its size.
    position
        The tag (e.g. Kafka offset) of the value that completed the detection.
    evidence_from
        The tag of the first value the detector has seen since it last fired, or since the
        warm-up ended: the statistic summarises the values from there to ``position``.
    events_seen
        Values this monitor had seen, up to and including ``position``.
    reference, current
        Summaries of the frozen reference (count, mean, std, min, max, quantiles p05/p50/p95)
        and of the current EWMA (mean, std, ewma_alpha). Error monitors say ``error_rate``
        instead of ``mean``.
    """

    detector: str
    statistic: float
    threshold: float
    severity: str
    effect_size: float
    position: int
    evidence_from: int
    events_seen: int
    reference: dict[str, Any]
    current: dict[str, Any]


class Monitor(abc.ABC):
    """What every monitor offers: counts, a JSON-able summary and byte serialisation."""

    kind: ClassVar[str]
    state_type: ClassVar[type[msgspec.Struct]]

    def __init__(self, params: MonitorParams | None = None) -> None:
        self.params = params or MonitorParams()
        self.missing = 0

    @property
    @abc.abstractmethod
    def count(self) -> int:
        """Values seen, not counting missing ones."""

    def update_missing(self, n: int = 1) -> None:
        """Record ``n`` events in which the feature was absent or null."""
        if n < 0:
            raise ValueError(f"n must be >= 0, got {n}")
        self.missing += n

    @abc.abstractmethod
    def summary(self) -> dict[str, Any]:
        """JSON-able status of the monitor."""

    def to_bytes(self) -> bytes:
        return _ENCODER.encode(_Envelope(FORMAT_VERSION, self._to_state()))

    @abc.abstractmethod
    def _to_state(self) -> Any: ...

    @classmethod
    @abc.abstractmethod
    def _from_state(cls, state: Any) -> Self: ...

    @classmethod
    @abc.abstractmethod
    def _merged_summary(cls, monitors: Sequence[Self]) -> dict[str, Any]: ...


class _StreamMonitor(Monitor):
    """A numeric stream with a frozen reference, change detectors and episode logic."""

    _mean_key: ClassVar[str] = "mean"

    def __init__(self, params: MonitorParams | None = None) -> None:
        super().__init__(params)
        self.stats = RunningStats()
        self.sketch = QuantileSketch(self.params.kll_k)
        self.reference = RunningStats()
        self.reference_sketch = QuantileSketch(self.params.kll_k)
        # MonitorParams holds each detector's parameters in a field named after it.
        self.detectors: dict[str, ChangeDetector] = {
            name: _DETECTORS[name](getattr(self.params, name)) for name in self._detector_names()
        }
        # None: the detector starts afresh with the next value, whose tag is not known yet.
        self._evidence_from: dict[str, int | None] = dict.fromkeys(self.detectors)
        # EWMA of the values standardised by the reference ("current"), set at warm-up end.
        self._ewma_mean = 0.0
        self._ewma_sq = 0.0
        # Detections up to this count belong to the open episode.
        self._episode_until = 0
        self.episodes = 0
        self.suppressed = 0

    @property
    @abc.abstractmethod
    def warmup_events(self) -> int: ...

    @abc.abstractmethod
    def _detector_names(self) -> Sequence[str]: ...

    @abc.abstractmethod
    def _detector_input(self, standardised: np.ndarray, values: np.ndarray) -> np.ndarray: ...

    @property
    def count(self) -> int:
        return self.stats.count

    @property
    def warmed_up(self) -> bool:
        return self.reference.count >= self.warmup_events

    @property
    def _scale(self) -> float:
        # A feature constant during warm-up has no spread to standardise by; use its own units.
        return self.reference.std or 1.0

    def drift_score(self) -> float:
        """``|EWMA mean - reference mean| / reference std``; 0.0 during warm-up."""
        return abs(self._ewma_mean) if self.warmed_up else 0.0

    def update(self, values: np.ndarray, positions: np.ndarray) -> list[Detection]:
        """Add finite ``values`` in stream order, tagged by ``positions`` (e.g. Kafka offsets).

        Returns the detections that open an episode (at most one per ``cooldown_events``).
        """
        values = np.asarray(values, dtype=np.float64)
        positions = np.asarray(positions, dtype=np.int64)
        if values.ndim != 1 or values.shape != positions.shape:
            raise ValueError("values and positions must be 1-d arrays of the same length")
        seen = self.stats.count
        self.stats.update_many(values)
        self.sketch.update_many(values)
        n_reference = max(min(len(values), self.warmup_events - self.reference.count), 0)
        if n_reference:
            self._add_reference(values[:n_reference])
        if not self.warmed_up:
            return []
        return self._watch(values[n_reference:], positions[n_reference:], seen + n_reference)

    def _add_reference(self, values: np.ndarray) -> None:
        self.reference.update_many(values)
        self.reference_sketch.update_many(values)
        if self.warmed_up:  # "current" starts out as the reference
            self._ewma_sq = (self.reference.std / self._scale) ** 2

    def _watch(self, values: np.ndarray, positions: np.ndarray, seen: int) -> list[Detection]:
        """Run the detectors over post-warm-up values; ``seen`` values came before them."""
        if not len(values):
            return []
        standardised = (values - self.reference.mean) / self._scale
        inputs = self._detector_input(standardised, values).tolist()
        hits = sorted(
            (i, order, name, statistic)
            for order, (name, detector) in enumerate(self.detectors.items())
            for i, statistic in detector.update_many(inputs)
        )
        for name, start in self._evidence_from.items():
            if start is None:
                self._evidence_from[name] = int(positions[0])
        detections = []
        folded = 0  # standardised values already in the EWMA
        for i, _, name, statistic in hits:
            events_seen = seen + i + 1
            if events_seen <= self._episode_until:
                self.suppressed += 1
            else:
                self._fold_ewma(standardised[folded : i + 1])
                folded = i + 1
                detections.append(self._detection(name, statistic, int(positions[i]), events_seen))
                self._episode_until = events_seen + self.params.cooldown_events
                self.episodes += 1
            self._evidence_from[name] = int(positions[i + 1]) if i + 1 < len(positions) else None
        self._fold_ewma(standardised[folded:])
        return detections

    def _fold_ewma(self, standardised: np.ndarray) -> None:
        self._ewma_mean, self._ewma_sq = _ewma(
            self._ewma_mean, self._ewma_sq, self.params.ewma_alpha, standardised
        )

    def _detection(self, name: str, statistic: float, position: int, events_seen: int) -> Detection:
        effect = self.drift_score()
        return Detection(
            detector=name,
            statistic=statistic,
            threshold=self.detectors[name].threshold,
            severity=severity(effect),
            effect_size=effect,
            position=position,
            evidence_from=self._evidence_from[name],  # type: ignore[arg-type]  # set by _watch
            events_seen=events_seen,
            reference=self._reference_summary(DETECTION_QUANTILES),
            current=self._current_summary(),
        )

    def _reference_summary(self, ranks: dict[str, float]) -> dict[str, Any]:
        return _distribution(self.reference, self.reference_sketch, self._mean_key, ranks)

    def _current_summary(self) -> dict[str, Any]:
        variance = max(self._ewma_sq - self._ewma_mean**2, 0.0)
        return {
            self._mean_key: self.reference.mean + self._scale * self._ewma_mean,
            "std": self._scale * math.sqrt(variance),
            "ewma_alpha": self.params.ewma_alpha,
        }

    def _status(self) -> dict[str, Any]:
        return {
            "warmup_remaining": max(self.warmup_events - self.reference.count, 0),
            "drift_score": self.drift_score(),
            "episodes": self.episodes,
            "suppressed": self.suppressed,
            "detectors": {name: detector.describe() for name, detector in self.detectors.items()},
        }

    def summary(self) -> dict[str, Any]:
        return {
            "kind": self.kind,
            "missing": self.missing,
            **_distribution(self.stats, self.sketch, self._mean_key, QUANTILES),
            "reference": self._reference_summary(QUANTILES) if self.warmed_up else None,
            "current": self._current_summary() if self.warmed_up else None,
            **self._status(),
        }

    @classmethod
    def _merged_summary(cls, monitors: Sequence[Self]) -> dict[str, Any]:
        k = monitors[0].params.kll_k
        stats, sketch, reference, reference_sketch = (
            RunningStats(), QuantileSketch(k), RunningStats(), QuantileSketch(k)
        )
        for monitor in monitors:
            stats.merge(monitor.stats)
            sketch.merge(monitor.sketch)
            if monitor.warmed_up:
                reference.merge(monitor.reference)
                reference_sketch.merge(monitor.reference_sketch)
        return {
            "kind": cls.kind,
            "missing": sum(monitor.missing for monitor in monitors),
            **_distribution(stats, sketch, cls._mean_key, QUANTILES),
            "reference": (
                _distribution(reference, reference_sketch, cls._mean_key, QUANTILES)
                if reference.count else None
            ),
            "drift_score": max(monitor.drift_score() for monitor in monitors),
            "partitions": [
                {"count": monitor.count, "missing": monitor.missing, **monitor._status()}
                for monitor in monitors
            ],
        }

    def _to_state(self) -> _StreamState:
        return self.state_type(
            params=self.params,
            missing=self.missing,
            stats=self.stats.to_state(),
            sketch=self.sketch.to_bytes(),
            reference=self.reference.to_state(),
            reference_sketch=self.reference_sketch.to_bytes(),
            detectors={name: detector.to_state() for name, detector in self.detectors.items()},
            evidence_from=dict(self._evidence_from),
            ewma_mean=self._ewma_mean,
            ewma_sq=self._ewma_sq,
            episode_until=self._episode_until,
            episodes=self.episodes,
            suppressed=self.suppressed,
        )

    @classmethod
    def _from_state(cls, state: _StreamState) -> Self:
        monitor = cls(state.params)
        names = list(monitor.detectors)
        stored = [_DETECTOR_BY_STATE[type(s)].name for s in state.detectors.values()]
        if list(state.detectors) != names or stored != names or list(state.evidence_from) != names:
            raise ValueError(f"stored detectors {list(state.detectors)} do not match {names}")
        monitor.missing = state.missing
        monitor.stats = RunningStats.from_state(state.stats)
        monitor.sketch = QuantileSketch.from_bytes(state.sketch)
        monitor.reference = RunningStats.from_state(state.reference)
        monitor.reference_sketch = QuantileSketch.from_bytes(state.reference_sketch)
        monitor.detectors = {
            name: _DETECTOR_BY_STATE[type(s)].from_state(s) for name, s in state.detectors.items()
        }
        monitor._evidence_from = dict(state.evidence_from)
        monitor._ewma_mean, monitor._ewma_sq = state.ewma_mean, state.ewma_sq
        monitor._episode_until = state.episode_until
        monitor.episodes, monitor.suppressed = state.episodes, state.suppressed
        return monitor


class NumericMonitor(_StreamMonitor):
    """Drift monitor of one numeric feature.

    Detectors (``params.detectors``) see the values standardised by the reference and clipped
    to ``+-params.clip_sigma``, so one outlier of a heavy-tailed feature cannot fire them.

    >>> import numpy as np
    >>> rng = np.random.default_rng(7)
    >>> values = np.concatenate([rng.normal(100, 15, 3000), rng.normal(115, 15, 1000)])
    >>> monitor = NumericMonitor()
    >>> detections = []
    >>> for start in range(0, len(values), 500):  # batches tagged with their offsets
    ...     batch = values[start : start + 500]
    ...     detections += monitor.update(batch, np.arange(start, start + len(batch)))
    >>> [(d.detector, d.position, d.evidence_from, d.severity) for d in detections]
    [('page_hinkley', 3062, 500, 'high')]
    >>> monitor.suppressed  # ADWIN confirmed the change within the cool-down
    1

    """

    kind = "numeric"
    state_type = _NumericState

    @property
    def warmup_events(self) -> int:
        return self.params.warmup_events

    def _detector_names(self) -> Sequence[str]:
        return self.params.detectors

    def _detector_input(self, standardised: np.ndarray, values: np.ndarray) -> np.ndarray:
        return np.clip(standardised, -self.params.clip_sigma, self.params.clip_sigma)


class ErrorMonitor(_StreamMonitor):
    """Drift monitor of a model's error stream: 0/1 misclassifications or absolute errors.

    The errors go to ADWIN unstandardised (0/1 errors already lie in the [0, 1] range its bound
    assumes); the reference is the first ``error_warmup_events`` errors, and summaries say
    ``error_rate`` for the mean (the mean absolute error of a regression model).

    >>> import numpy as np
    >>> rng = np.random.default_rng(3)
    >>> errors = np.concatenate([rng.random(3000) < 0.1, rng.random(2000) < 0.3]).astype(float)
    >>> monitor = ErrorMonitor()
    >>> [d.position for d in monitor.update(errors, np.arange(len(errors)))]
    [3271]
    >>> round(monitor.summary()["reference"]["error_rate"], 3)
    0.075

    """

    kind = "error"
    state_type = _ErrorState
    _mean_key = "error_rate"

    @property
    def warmup_events(self) -> int:
        return self.params.error_warmup_events

    def _detector_names(self) -> Sequence[str]:
        return (Adwin.name,)

    def _detector_input(self, standardised: np.ndarray, values: np.ndarray) -> np.ndarray:
        return values


class CategoricalMonitor(Monitor):
    """Counts of one categorical feature, bounded to ``params.max_categories`` values.

    There is no categorical change detector yet: :meth:`update` never detects anything.

    >>> monitor = CategoricalMonitor()
    >>> monitor.update(["card", "cash", "card"], [10, 11, 12])
    []
    >>> monitor.summary()["top"]
    [{'value': 'card', 'count': 2}, {'value': 'cash', 'count': 1}]

    """

    kind = "categorical"
    state_type = _CategoricalState

    def __init__(self, params: MonitorParams | None = None) -> None:
        super().__init__(params)
        self.counts = CategoryCounts(self.params.max_categories)

    @property
    def count(self) -> int:
        return self.counts.total

    @property
    def distinct(self) -> int:
        """Distinct values counted so far."""
        return len(self.counts.counts)

    def knows(self, value: str) -> bool:
        """Whether ``value`` has been counted before."""
        return value in self.counts.counts

    def accepts(self, value: str, pending_new: Set[str] = frozenset()) -> bool:
        """See :meth:`CategoryCounts.accepts`: check before updating anything."""
        return self.counts.accepts(value, pending_new)

    def update(self, values: Sequence[str], positions: Sequence[int]) -> list[Detection]:
        """Count ``values``; ``positions`` tag them like for the other monitors."""
        if len(values) != len(positions):
            raise ValueError("values and positions must have the same length")
        self.counts.update_many(values)
        return []

    def summary(self) -> dict[str, Any]:
        return {"kind": self.kind, "missing": self.missing, **_categories(self.counts)}

    @classmethod
    def _merged_summary(cls, monitors: Sequence[Self]) -> dict[str, Any]:
        # Partitions may each hold different categories; the union is bounded by their sum.
        merged = CategoryCounts(sum(monitor.counts.max_categories for monitor in monitors))
        for monitor in monitors:
            merged.merge(monitor.counts)
        return {
            "kind": cls.kind,
            "missing": sum(monitor.missing for monitor in monitors),
            **_categories(merged),
            "partitions": [{"count": m.count, "missing": m.missing} for m in monitors],
        }

    def _to_state(self) -> _CategoricalState:
        return _CategoricalState(self.params, self.missing, self.counts.to_state())

    @classmethod
    def _from_state(cls, state: _CategoricalState) -> Self:
        monitor = cls(state.params)
        monitor.missing = state.missing
        monitor.counts = CategoryCounts.from_state(state.counts)
        return monitor


def merge_summaries(monitors: Sequence[Monitor]) -> dict[str, Any]:
    """One status view of the same feature's monitors from several partitions.

    Counts and missing are summed; mean, std, min and max are exact (moments merged with Chan's
    formula), quantiles come from the merged sketches, and per-monitor details (detectors,
    drift scores) are listed under ``partitions`` in the order given. ``drift_score`` is the
    largest of the partitions'.
    """
    if not monitors:
        raise ValueError("no monitors to merge")
    kinds = sorted({monitor.kind for monitor in monitors})
    if len(kinds) > 1:
        raise ValueError(f"cannot merge monitors of different kinds: {kinds}")
    return type(monitors[0])._merged_summary(monitors)


def monitor_from_bytes(data: bytes) -> Monitor:
    """Restore a monitor saved with :meth:`Monitor.to_bytes`; :class:`StateError` if impossible."""
    try:
        version = _HEADER_DECODER.decode(data).version
    except msgspec.MsgspecError as exc:
        raise StateError(f"not a streamdrift monitor state ({exc})") from None
    if version != FORMAT_VERSION:
        raise StateError(
            f"monitor state has format version {version} but this streamdrift reads version "
            f"{FORMAT_VERSION}; discard the state to rebuild the monitor from new events"
        )
    try:
        state = _DECODER.decode(data).monitor
        return _MONITOR_BY_STATE[type(state)]._from_state(state)
    except (msgspec.MsgspecError, ValueError) as exc:
        raise StateError(f"corrupt monitor state ({exc})") from None


def _ewma(mean: float, sq: float, alpha: float, values: np.ndarray) -> tuple[float, float]:
    """Fold ``values`` into an exponentially weighted mean and mean square, vectorised.

    Equals ``m = (1 - alpha) * m + alpha * x`` applied value by value (and to ``x**2``), up to
    rounding.

    >>> _ewma(0.0, 0.0, 0.5, np.array([2.0, 4.0]))
    (2.5, 9.0)
    """
    if not len(values):
        return mean, sq
    decay = 1.0 - alpha
    weights = alpha * decay ** np.arange(len(values) - 1, -1, -1)
    carry = decay ** len(values)
    return carry * mean + float(weights @ values), carry * sq + float(weights @ values**2)


def _distribution(
    stats: RunningStats, sketch: QuantileSketch, mean_key: str, ranks: dict[str, float]
) -> dict[str, Any]:
    if not stats.count:
        return {"count": 0, **dict.fromkeys((mean_key, "std", "min", "max", "quantiles"))}
    return {
        "count": stats.count,
        mean_key: stats.mean,
        "std": stats.std,
        "min": stats.min,
        "max": stats.max,
        "quantiles": dict(zip(ranks, sketch.quantiles(list(ranks.values())), strict=True)),
    }


def _categories(counts: CategoryCounts) -> dict[str, Any]:
    return {
        "count": counts.total,
        "distinct": len(counts.counts),
        "max_categories": counts.max_categories,
        "top": [{"value": value, "count": n} for value, n in counts.top(TOP_CATEGORIES)],
    }


_MONITOR_BY_STATE: dict[type, type[Monitor]] = {
    cls.state_type: cls for cls in (NumericMonitor, ErrorMonitor, CategoricalMonitor)
}
_ENCODER = msgspec.msgpack.Encoder()
_DECODER = msgspec.msgpack.Decoder(_Envelope)
_HEADER_DECODER = msgspec.msgpack.Decoder(_Header)
