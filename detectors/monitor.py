"""The state of one (model, feature) — or of a model's error stream — and its alert logic.

A monitor summarises every value it sees (exact moments, a quantile sketch) and freezes the
first ``warmup_events`` values as the *reference*. After that, numeric values are standardised
by the reference mean and standard deviation and fed to the change detectors, so thresholds
are in reference sigma units whatever the feature's scale; with ``window`` among the detectors,
the values after the warm-up also feed the window tests (:mod:`detectors.windows`), which
categorical features run as well. Detections go through the series' :class:`Lifecycle`: the
first opens an *episode* and is returned (``event="detected"``), later ones are counted as
suppressed, and the window tests resolve the episode when the series is back near its
reference (``event="resolved"``).

Missing values are NaN (numeric) or None (categorical) in the values passed to ``update``, which
keeps them in stream order for the missing-rate test; :meth:`UnivariateMonitor.update_missing` adds
missing values at the current point instead.

Monitors serialise to msgpack (no pickle: the state store must not be able to run code in the
worker) in an envelope with the format version, the monitor's kind and the versions of river
and numpy that wrote it, and restore with :func:`monitor_from_bytes`, whatever their kind (the
multivariate monitor's included), leniently for states of another river release.
"""

from __future__ import annotations

import abc
import dataclasses
import functools
import math
from collections.abc import Sequence, Set
from dataclasses import dataclass, field
from importlib.metadata import version as _version_of
from types import ModuleType
from typing import Annotated, Any, ClassVar, NamedTuple, Self

import msgspec
import numpy as np
from numpy.typing import NDArray

from streamdrift.detectors import kernels
from streamdrift.detectors.adwin import Adwin, AdwinState
from streamdrift.detectors.baseline import CategoricalProfile, NumericProfile, Profile
from streamdrift.detectors.blocks import Block, Blocks, BlocksState, settled_mean
from streamdrift.detectors.budget import adwin_delta, page_hinkley_threshold, window_alpha
from streamdrift.detectors.config import MonitorParams
from streamdrift.detectors.cusum import Cusum, CusumState
from streamdrift.detectors.lifecycle import Lifecycle, LifecycleState
from streamdrift.detectors.page_hinkley import PageHinkley, PageHinkleyState
from streamdrift.detectors.sketches import CategoryCounts, CategoryCountsState, QuantileSketch
from streamdrift.detectors.stats import LARGE, RunningStats, RunningStatsState, saturate
from streamdrift.detectors.windows import (
    CategoricalPeriod,
    CategoricalWindows,
    CategoricalWindowsState,
    Evaluation,
    NumericPeriod,
    NumericWindows,
    NumericWindowsState,
    Windows,
    distribution,
    severity,
)

__all__ = [
    "FORMAT_VERSION",
    "LIBRARIES",
    "CategoricalMonitor",
    "Detection",
    "ErrorMonitor",
    "Monitor",
    "NumericMonitor",
    "StateError",
    "UnivariateMonitor",
    "merge_summaries",
    "monitor_from_bytes",
    "severity",
]

FORMAT_VERSION = 3
# States this version restores: 2 lacks what 3 added (the event-time watermark's recent event
# times and early count, None for PH's and the CUSUM bank's infinite starting points), which
# default sensibly.
READABLE_VERSIONS = (2, 3)


class Libraries(NamedTuple):
    """Versions of the libraries whose layouts a stored state depends on: river's detector
    states (ADWIN's window is river's own serialisation, Page-Hinkley's its attributes) and
    numpy's (the arrays stored as bytes)."""

    river: str
    numpy: str


LIBRARIES = Libraries(_version_of("river"), np.__version__)  # recorded in every state written
QUANTILES = {
    "p01": 0.01,
    "p05": 0.05,
    "p25": 0.25,
    "p50": 0.5,
    "p75": 0.75,
    "p95": 0.95,
    "p99": 0.99,
}
DETECTION_QUANTILES = {key: QUANTILES[key] for key in ("p05", "p50", "p95")}
TOP_CATEGORIES = 10
EXACT_WARMUP = 4_096  # warm-ups up to this many values calibrate deterministically (~32 KB)
WINDOW = "window"
BLOCK = "block"  # an error stream's block closed (ErrorMonitor): not a detector

# Every concrete monitor class by its kind (registered by Monitor.__init_subclass__).
_MONITOR_BY_KIND: dict[str, type[Monitor]] = {}

# The detectors a monitor can run: those whose states _StreamState can hold.
_Detector = Adwin | PageHinkley | Cusum
_DETECTORS: dict[str, type[_Detector]] = {cls.name: cls for cls in (Adwin, PageHinkley, Cusum)}
_DETECTOR_BY_STATE = {cls.state_type: cls for cls in _DETECTORS.values()}
_Count = Annotated[int, msgspec.Meta(ge=0)]


class _StreamState(msgspec.Struct, frozen=True):
    params: MonitorParams
    missing: _Count
    stats: RunningStatsState
    sketch: bytes
    reference: RunningStatsState
    reference_sketch: bytes
    detectors: dict[str, AdwinState | PageHinkleyState | CusumState]
    evidence_from: dict[str, int | None]
    ewma_mean: float
    ewma_sq: float
    lifecycle: LifecycleState
    windows: NumericWindowsState | None
    reference_source: str | None = None


class _NumericState(_StreamState, frozen=True, tag="numeric"):
    pass


class _ErrorState(_StreamState, frozen=True, tag="error"):
    # Added within format 3: states written before have none (a block starts afresh).
    blocks: BlocksState | None = None


class _CategoricalState(msgspec.Struct, frozen=True, tag="categorical"):
    params: MonitorParams
    missing: _Count
    counts: CategoryCountsState
    lifecycle: LifecycleState
    windows: CategoricalWindowsState | None
    reference_source: str | None = None


class _Envelope(msgspec.Struct, frozen=True):
    version: int
    monitor: _NumericState | _ErrorState | _CategoricalState
    # Added within format 3, optional both ways: states written before have none (None), and a
    # reader from before ignores them. ``kind`` is the monitor's (the state's tag says it too);
    # ``river`` and ``numpy`` the versions that wrote the state (see LIBRARIES).
    kind: str | None = None
    river: str | None = None
    numpy: str | None = None


class _Header(msgspec.Struct):
    """Read first, so a state of another version is reported as such, not as corrupt, and a
    state is restored by the monitor class of its kind (None: a state from before the envelope
    named it; its layout and version tell)."""

    version: int
    kind: str | None = None
    # Univariate states wrap the monitor's own in this field; the multivariate one's does not.
    monitor: msgspec.Raw = msgspec.Raw()


class StateError(ValueError):
    """Stored monitor state that cannot be restored: corrupt, or another format version."""


@dataclass(frozen=True)
class Detection:
    """A change of a series' lifecycle: an episode opened (``detected``) or ``resolved``.

    detector, statistic, threshold
        Which detector fired, its test statistic and the threshold it was judged against (see
        the detector classes for units). For ``window``: the statistic of the test named by
        ``test`` (KS D, chi-square, or the two-proportion z of the missing rates) and the
        significance level its ``p_value`` was compared with.
    severity, effect_size
        For ADWIN and Page-Hinkley, ``effect_size`` is ``|current mean - reference mean| /
        reference std`` with the EWMA mean as current, and :func:`severity` maps it to
        low/medium/high. The EWMA lags: a shift detected after n values shows a fraction
        ``1 - (1 - ewma_alpha)**n`` of its size. For ``window``: the effect of ``test``
        (``details["tests"][test]["effect"]`` names it: Wasserstein-1 in reference sigma, PSI,
        or Cohen's h) and its own severity scale.
    position
        The tag (e.g. Kafka offset) of the value that completed the detection (for ``window``:
        the last event of the window).
    evidence_from
        The tag of the first value the detector has seen since it last fired, or since the
        warm-up ended: the statistic summarises the values from there to ``position`` (for
        ``window``: the window's first event).
    events_seen
        Values this monitor had seen, up to and including ``position``.
    reference, current
        Summaries of the frozen reference (count, mean, std, min, max, quantiles p05/p50/p95)
        and of the current EWMA (mean, std, ewma_alpha). Error monitors say ``error_rate``
        instead of ``mean``. For ``window``: the window tests' reference and the window
        (with ``missing_rate``; categorical: the top categories' shares).
    event
        ``detected`` (opens an episode) or ``resolved`` (the window tests found the series back
        near its reference for ``window.resolve_windows`` windows in a row).
    test, p_value
        The window test that decided (the smallest p-value among those that drifted, or among
        all for ``resolved``); None for the other detectors.
    details
        Window detections: alpha, every test's numbers, the distances (PSI, Jensen-Shannon,
        Hellinger, Wasserstein, new-category rate) and the top contributing bins or categories
        (largest PSI terms). ``resolved`` adds ``opened_by`` and ``opened_at``: the detector
        and position of the detection that opened the episode.
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
    event: str = "detected"
    test: str | None = None
    p_value: float | None = None
    details: dict[str, Any] = field(default_factory=dict)


class Monitor(abc.ABC):
    """What every monitor offers, the univariate ones (:class:`UnivariateMonitor`) and the
    multivariate one (:class:`~detectors.multivariate.PCAReconstructionMonitor`): ``update``
    returning :class:`Detection` objects, counts, the alert lifecycle, a drift score, a JSON-able
    summary (and one merged over partitions: :func:`merge_summaries`), and byte serialisation
    (:meth:`to_bytes`, restored by :func:`monitor_from_bytes` whatever the kind, or by
    :meth:`from_bytes` of the kind expected).

    A monitor restored from bytes says what the state was written with in :attr:`restored_from`
    (format version, river's and numpy's versions; None where the state did not record them),
    and in :attr:`rewarmed` which change detectors it had to start afresh because their state,
    written by another river release, could not be restored (see :func:`monitor_from_bytes`).
    """

    kind: ClassVar[str]
    # Format versions of this kind's states written before the envelope named the kind (their
    # kind is told by the version; see monitor_from_bytes).
    untagged_versions: ClassVar[tuple[int, ...]] = ()
    lifecycle: Lifecycle

    def __init__(self) -> None:
        self.missing = 0
        # Where the reference came from: None while it is the stream's own warm-up, else the
        # label of the stored baseline it was seeded with.
        self.reference_source: str | None = None
        self.restored_from: dict[str, int | str | None] = {}  # empty: not restored from bytes
        self.rewarmed: tuple[str, ...] = ()

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        if "kind" in cls.__dict__:  # a concrete kind: its states name it
            _MONITOR_BY_KIND[cls.kind] = cls

    @property
    @abc.abstractmethod
    def count(self) -> int:
        """Values (rows, for the multivariate monitor) seen, not counting missing ones."""

    @property
    def episodes(self) -> int:
        return self.lifecycle.episodes

    @property
    def suppressed(self) -> int:
        return self.lifecycle.suppressed

    @abc.abstractmethod
    def update(
        self, values: Any, positions: Any, times: NDArray[np.float64] | None = None
    ) -> list[Detection]:
        """Add ``values`` in stream order, tagged by ``positions`` (e.g. Kafka offsets), with
        their event times if known; return the lifecycle changes."""

    @abc.abstractmethod
    def drift_score(self) -> float:
        """The monitor's current drift score (0.0 before it can tell)."""

    @abc.abstractmethod
    def false_alarms(self) -> dict[str, Any]:
        """Configured false-alarm rates next to the counts to measure them, per detector."""

    @abc.abstractmethod
    def summary(self) -> dict[str, Any]:
        """JSON-able status of the monitor."""

    @classmethod
    @abc.abstractmethod
    def _merged_summary(cls, monitors: Sequence[Self]) -> dict[str, Any]: ...

    def to_bytes(self) -> bytes:
        """The state as msgpack: an envelope with the format version, the kind and the versions
        of river and numpy, around the kind's own state."""
        return _ENCODER.encode(self._to_envelope())

    @abc.abstractmethod
    def _to_envelope(self) -> msgspec.Struct: ...

    @classmethod
    def from_bytes(cls, data: bytes) -> Self:
        """Restore a monitor of this class saved with :meth:`to_bytes`; :class:`StateError` if
        impossible (or if the state is of another kind)."""
        monitor = monitor_from_bytes(data)
        if not isinstance(monitor, cls):
            raise StateError(f"the state is a {monitor.kind} monitor's, not a {cls.__name__}")
        return monitor

    @classmethod
    @abc.abstractmethod
    def _read(cls, data: bytes, version: int) -> Monitor:
        """Restore a state of this kind and format ``version`` (its header already read);
        :class:`StateError` if impossible."""


class UnivariateMonitor(Monitor):
    """What the monitors of one stream of values share (a feature, the prediction, the error
    stream): parameters from the detector configuration, missing values, the window tests and
    their lifecycle, baselines (:meth:`seed`), and the envelope of :data:`FORMAT_VERSION`."""

    state_type: ClassVar[type[msgspec.Struct]]
    untagged_versions = READABLE_VERSIONS

    def __init__(self, params: MonitorParams | None = None) -> None:
        super().__init__()
        self.params = params or MonitorParams()
        self.lifecycle = self._new_lifecycle()
        self.windows: Windows[Any] | None = None

    @property
    def resolvable(self) -> bool:
        """Whether an episode can be resolved (else it ends ``cooldown_events`` values after its
        last detection): by the window tests, where the series has them."""
        return self.windowed

    def _new_lifecycle(self) -> Lifecycle:
        return Lifecycle(
            self.params.cooldown_events,
            self.params.window.resolve_windows,
            self.resolvable,
            self.params.cooldown_s,
        )

    @abc.abstractmethod
    def seed(self, profile: Profile, source: str) -> None:
        """Take a stored baseline's ``profile`` as the reference, labelled ``source``: the
        warm-up is over, the detectors and the episode start afresh against it (an episode
        open against the old reference ends without a ``resolved``), and the counts and
        summaries of the values seen so far stay. ``ValueError`` if the profile is of another
        kind or empty."""

    @property
    def windowed(self) -> bool:
        """Whether this monitor runs the window tests."""
        return WINDOW in self.params.detectors

    @abc.abstractmethod
    def _detector_names(self) -> Sequence[str]:
        """The sequential change detectors run on each value."""

    @property
    def detector_rate(self) -> float:
        """False alarms per event each detector may raise: the series' budget split evenly
        over its detectors (0.0: raw thresholds)."""
        parts = len(self._detector_names()) + self.windowed
        return self.params.false_alarm_rate / max(parts, 1)

    def _window_alpha(self, tests: int) -> float:
        window = self.params.window
        if not self.params.false_alarm_rate:
            return window.alpha
        return window_alpha(self.detector_rate, window.events, tests)

    def update_missing(self, n: int = 1, position: int | None = None) -> list[Detection]:
        """Record ``n`` events in which the feature was absent or null, at the current point of
        the stream (``position``: the tag of the last of them, if known).

        Returns what the windows they closed found (see :meth:`update`).
        """
        if n < 0:
            raise ValueError(f"n must be >= 0, got {n}")
        self.missing += n
        if self.windows is None:
            return []
        closed = self.windows.update_missing(n, position)
        return [found for e in closed if (found := self._judge(e, self.count)) is not None]

    def _settled(self, evaluation: Evaluation) -> bool:
        """Whether a window looks like the reference again: every test quiet at the looser
        ``window.resolve_alpha`` (the lifecycle's hysteresis band)."""
        return all(
            result.settled(self.params.window.resolve_alpha) for result in evaluation.results
        )

    def _judge(
        self, evaluation: Evaluation, events_seen: int, at: float | None = None
    ) -> Detection | None:
        """Resolve the open episode, or open one, from a window evaluation (whose last event
        has the event time ``at``, if known)."""
        if self.lifecycle.observe(self._settled(evaluation)):
            opened = {"opened_by": self.lifecycle.opened_by, "opened_at": self.lifecycle.opened_at}
            return _window_detection(evaluation, events_seen, "resolved", opened)
        if evaluation.drifted and self.lifecycle.fire(events_seen, WINDOW, evaluation.position, at):
            return _window_detection(evaluation, events_seen, "detected", {})
        return None

    def false_alarms(self) -> dict[str, Any]:
        """Configured false-alarm rates next to the counts to measure them, per detector.

        ``target_interval``: events between false alarms the series is calibrated for (None:
        raw thresholds). Per detector: ``evaluations`` (values fed, or windows tested),
        ``firings`` (detections, suppressed ones included) and ``rate``, the false alarms per
        evaluation it is configured for (None for a raw ADWIN or Page-Hinkley threshold, whose
        rate is only measured: see :mod:`detectors.budget`). On a stationary series
        ``firings / evaluations`` should stay below ``rate``.
        """
        interval = self.params.false_alarm_interval
        detectors = {}
        if self.windows is not None:
            windows = self.windows
            detectors[WINDOW] = {
                "evaluations": windows.evaluated,
                "firings": windows.drifted,
                "rate": min(windows.alpha * len(windows.tests), 1.0),
            }
        return {"target_interval": interval or None, "detectors": detectors}

    def _window_status(self) -> dict[str, Any] | None:
        if self.windows is None:
            return None
        windows = self.windows
        reference_events = self.params.window.reference_events
        return {
            "reference_remaining": 0
            if windows.ready
            else reference_events - windows.reference.count,
            "evaluated": windows.evaluated,
            "drifted": windows.drifted,
            "alpha": windows.alpha,
            "psi": windows.score,
            **(
                {
                    "open": len(windows.open),
                    "late": windows.late,
                    "early": windows.early,
                    "watermark": windows.max_time - windows.params.allowed_lateness_s,
                }
                if windows.by_time and windows.max_time > -math.inf
                else {}
            ),
        }

    def _lifecycle_status(self) -> dict[str, Any]:
        lifecycle = self.lifecycle
        return {
            "episodes": lifecycle.episodes,
            "suppressed": lifecycle.suppressed,
            "resolved": lifecycle.resolved,
            "episode_open": lifecycle.is_open,
        }

    def _to_envelope(self) -> _Envelope:
        return _Envelope(FORMAT_VERSION, self._to_state(), self.kind, *LIBRARIES)

    @abc.abstractmethod
    def _to_state(self) -> Any: ...

    @classmethod
    @abc.abstractmethod
    def _from_state(cls, state: Any, river_changed: bool = False) -> Self:
        """The monitor of ``state``; ``river_changed``: the state was written by another river
        release (or one not recorded), whose detector states may be restored afresh."""

    @classmethod
    def _read(cls, data: bytes, version: int) -> Monitor:
        if version not in READABLE_VERSIONS:
            raise _version_error("monitor", version, READABLE_VERSIONS)
        try:
            envelope = _DECODER.decode(data)
            kind = _MONITOR_BY_STATE[type(envelope.monitor)]
            if envelope.kind is not None and envelope.kind != kind.kind:
                raise ValueError(f"the envelope says {envelope.kind!r}, the state {kind.kind!r}")
            monitor = kind._from_state(envelope.monitor, envelope.river != LIBRARIES.river)
        except Exception as exc:
            # Anything at all: a state that cannot be restored must not stop the worker.
            raise StateError(f"corrupt monitor state ({exc})") from None
        monitor.restored_from = {
            "format": version,
            "river": envelope.river,
            "numpy": envelope.numpy,
        }
        return monitor

    def _restore(self, state: LifecycleState, windows: Windows[Any] | None, expected: bool) -> None:
        """Restore the lifecycle and the window tests, which the parameters say to ``expect``."""
        if (windows is not None) != expected:
            raise ValueError("stored window tests do not match the parameters")
        self.lifecycle = Lifecycle.from_state(
            state,
            self.params.cooldown_events,
            self.params.window.resolve_windows,
            self.resolvable,
            self.params.cooldown_s,
        )
        self.windows = windows


class _StreamMonitor(UnivariateMonitor):
    """A numeric stream with a frozen reference, change detectors and episode logic."""

    state_type: ClassVar[type[_StreamState]]
    windows: NumericWindows | None
    _mean_key: ClassVar[str] = "mean"

    def __init__(self, params: MonitorParams | None = None) -> None:
        super().__init__(params)
        self.stats = RunningStats()
        self.sketch = QuantileSketch(self.params.kll_k)
        self.reference = RunningStats()
        # The detectors' thresholds are calibrated on this sketch at warm-up end. Holding every
        # warm-up value (up to EXACT_WARMUP of them) keeps it exact: KLL compaction is randomised
        # and unseedable, and a replay (another process) must calibrate the same thresholds.
        k = max(self.params.kll_k, min(self.warmup_events, EXACT_WARMUP))
        self.reference_sketch = QuantileSketch(k)
        self.detectors: dict[str, _Detector] = {
            name: _DETECTORS[name](self._detector_params(name)) for name in self._detector_names()
        }
        # None: the detector starts afresh with the next value, whose tag is not known yet.
        self._evidence_from: dict[str, int | None] = dict.fromkeys(self.detectors)
        # EWMA of the values standardised by the reference ("current"), set at warm-up end.
        self._ewma_mean = 0.0
        self._ewma_sq = 0.0

    @property
    @abc.abstractmethod
    def warmup_events(self) -> int: ...

    @abc.abstractmethod
    def _detector_input(
        self, standardised: NDArray[np.float64], values: NDArray[np.float64]
    ) -> NDArray[np.float64]: ...

    def _detector_params(self, name: str) -> Any:
        # MonitorParams holds each detector's parameters in a field named after it.
        params = getattr(self.params, name)
        if name == Adwin.name and self.params.false_alarm_rate:
            return dataclasses.replace(params, delta=adwin_delta(self.detector_rate))
        return params  # Page-Hinkley's threshold waits for the reference: _calibrate

    @property
    def count(self) -> int:
        return self.stats.count

    @property
    def warmed_up(self) -> bool:
        return self.reference_source is not None or self.reference.count >= self.warmup_events

    def seed(self, profile: Profile, source: str) -> None:
        if not isinstance(profile, NumericProfile) or not profile.stats.count:
            raise ValueError(f"a {self.kind} monitor needs a numeric profile with values")
        self.reference = RunningStats.from_state(profile.stats)
        self.reference_sketch = QuantileSketch.from_bytes(profile.sketch)
        self.reference_source = source
        self.detectors = {
            name: _DETECTORS[name](self._detector_params(name)) for name in self.detectors
        }
        self._evidence_from = dict.fromkeys(self.detectors)
        self._ewma_mean, self._ewma_sq = 0.0, (self.reference.std / self._scale) ** 2
        self.lifecycle = self._new_lifecycle()
        self._calibrate()
        if isinstance(self.windows, NumericWindows):
            period = NumericPeriod.of_summaries(
                self.windows.cuts,
                RunningStats.from_state(profile.stats),
                QuantileSketch.from_bytes(profile.sketch),
                profile.missing,
            )
            self.windows.seed(period)

    @property
    def _scale(self) -> float:
        # A feature constant during warm-up has no spread to standardise by; use its own units.
        return self.reference.std or 1.0

    def drift_score(self) -> float:
        """``|EWMA mean - reference mean| / reference std``; 0.0 during warm-up. At most
        :data:`~detectors.stats.LARGE` (see :meth:`_standardise`)."""
        return abs(self._ewma_mean) if self.warmed_up else 0.0

    def _standardise(
        self, values: NDArray[np.float64], within_stats: bool = True
    ) -> NDArray[np.float64]:
        """``(values - reference mean) / reference std``, within ``+-LARGE``.

        Any finite value is accepted, but a difference of two (or a division by a tiny std)
        can overflow, and the EWMA squares what comes out of here: beyond ``LARGE`` sigma the
        value is clipped, which no real measurement reaches. Values ``within_stats`` lie within
        the monitor's own min and max (those of ``update``), which tell without a pass over
        them whether anything can overflow.
        """
        mean, scale = self.reference.mean, self._scale
        # Python floats: an overflow gives inf here, not a warning.
        if within_stats and max(self.stats.max - mean, mean - self.stats.min) / scale <= LARGE:
            return (values - mean) / scale
        with np.errstate(over="ignore"):
            standardised = (values - mean) / scale
        return np.clip(standardised, -LARGE, LARGE, out=standardised)

    def update(
        self,
        values: NDArray[np.float64],
        positions: NDArray[np.integer[Any]],
        times: NDArray[np.float64] | None = None,
    ) -> list[Detection]:
        """Add ``values`` in stream order, tagged by ``positions`` (e.g. Kafka offsets); NaN
        marks a missing value. ``times`` (event times, epoch seconds) are needed by event-time
        windows (``window.seconds``) only.

        Returns the lifecycle changes: detections that open an episode (at most one per
        ``cooldown_events``) and resolutions of it, in stream order.
        """
        values = np.asarray(values, dtype=np.float64)
        positions = np.asarray(positions, dtype=np.int64)
        if values.ndim != 1 or values.shape != positions.shape:
            raise ValueError("values and positions must be 1-d arrays of the same length")
        _check_times(times, len(values))
        missing = np.isnan(values)
        seen = self.stats.count
        if kernels.compiled():
            # One pass: the present values, their indices and their moments.
            present, indices, moments = _fused().split_moments(values, LARGE)
            self.stats.update_summarised(present, moments)
        else:
            present, indices = values[~missing], None
            self.stats.update_many(present)
        self.missing += len(values) - len(present)
        self.sketch.update_many(present)
        wanted = (
            0 if self.reference_source is not None else self.warmup_events - self.reference.count
        )
        n_reference = max(min(len(present), wanted), 0)
        if n_reference:
            self._add_reference(present[:n_reference])
        if not self.warmed_up:
            return []
        # Events after the warm-up's last value go to the detectors and the window tests.
        if indices is None:
            indices = np.flatnonzero(~missing)
        start = int(indices[n_reference - 1]) + 1 if n_reference else 0
        later = None if times is None else np.asarray(times, dtype=np.float64)[start:]
        split = (indices[n_reference:] - start, present[n_reference:])
        return self._watch(
            values[start:], missing[start:], positions[start:], seen + n_reference, later, split
        )

    def _add_reference(self, values: NDArray[np.float64]) -> None:
        self.reference.update_many(values)
        self.reference_sketch.update_many(values)
        if self.warmed_up:
            self._ewma_sq = (self.reference.std / self._scale) ** 2  # "current" starts as reference
            self._calibrate()

    def _calibrate(self) -> None:
        """At warm-up end: derive the CUSUM bank's thresholds (and Page-Hinkley's, with a
        target) from the reference as the detectors see it, and set the window tests up, binned
        at the reference's quantiles."""
        values, weights = self.reference_sketch.items()
        # A no-op on ordinary values; keeps the calibration's arithmetic in the float range.
        values = np.clip(values, -LARGE, LARGE)
        inputs = self._detector_input(self._standardise(values, within_stats=False), values)
        name = PageHinkley.name
        if name in self.detectors and self.params.false_alarm_rate:
            params = self.params.page_hinkley
            threshold = page_hinkley_threshold(
                inputs, weights, params.delta, self.detector_rate, params.mode
            )
            self.detectors[name] = PageHinkley(dataclasses.replace(params, threshold=threshold))
        if Cusum.name in self.detectors:
            # One pseudo-value at each end of what the detector can see (the clip range; the
            # reference's extremes for errors): a few hundred reference values miss rare tails
            # (measured: the Shuttle data fired 2.4 times per 10^6 without them).
            ends = self._detector_input(
                np.array([-np.inf, np.inf]),
                np.clip([self.reference.min, self.reference.max], -LARGE, LARGE),
            )
            ends = ends[np.isfinite(ends)]
            params = self._detector_params(Cusum.name)
            rate = self.detector_rate or 1.0 / params.false_alarm_interval
            self.detectors[Cusum.name] = Cusum.calibrated(
                params, np.append(inputs, ends), np.append(weights, np.ones(len(ends))), rate
            )
        if self.windowed:
            cuts = NumericWindows.cuts_of_sketch(self.reference_sketch, self.params.window.bins)
            alpha = self._window_alpha(len(NumericWindows.test_types))
            self.windows = NumericWindows(self.params.window, alpha, cuts, self.params.kll_k)

    def _watch(
        self,
        values: NDArray[np.float64],
        missing: NDArray[np.bool_],
        positions: NDArray[np.integer[Any]],
        seen: int,
        times: NDArray[np.float64] | None = None,
        split: tuple[NDArray[np.intp], NDArray[np.float64]] | None = None,
    ) -> list[Detection]:
        """Run the detectors and window tests over post-warm-up events; ``seen`` values came
        before them. ``split``: the indices of the present values and the values, if known."""
        present, present_values = (
            split if split is not None else (np.flatnonzero(~missing), values[~missing])
        )
        value_positions = positions[present]
        standardised, hits, blocks = self._detect(present_values, value_positions)
        # (event index, order, value index, detector, statistic or evaluation), in stream order
        timeline: list[tuple[int, int, int, str, Any]] = [
            (int(present[i]), order, i, name, statistic) for i, order, name, statistic in hits
        ]
        if self.windows is not None:
            closed = self.windows.update(values, missing, positions, times)
            timeline += [(e.index, len(self.detectors), -1, WINDOW, e) for e in closed]
        for block in blocks:
            timeline.append((int(present[block.index]), len(self.detectors), -1, BLOCK, block))
        timeline.sort(key=lambda step: step[:3])
        if len(present):
            for name, start in self._evidence_from.items():
                if start is None:
                    self._evidence_from[name] = int(value_positions[0])
        detections = []
        folded = 0  # standardised values already in the EWMA
        for index, _, i, name, found in timeline:
            at = None if times is None else float(times[index])
            if name == WINDOW:
                after = int(np.searchsorted(present, index, side="right"))
                detection = self._judge(found, seen + after, at)
            elif name == BLOCK:
                detection = self._judge_block(found, seen + found.index + 1)
            else:
                if self.lifecycle.fire(seen + i + 1, name, int(value_positions[i]), at):
                    self._fold_ewma(standardised[folded : i + 1])
                    folded = i + 1
                    detection = self._detection(name, found, int(value_positions[i]), seen + i + 1)
                else:
                    detection = None
                following = i + 1 < len(value_positions)
                self._evidence_from[name] = int(value_positions[i + 1]) if following else None
            if detection is not None:
                detections.append(detection)
        self._fold_ewma(standardised[folded:])
        return detections

    def _detect(
        self, values: NDArray[np.float64], positions: NDArray[np.integer[Any]]
    ) -> tuple[NDArray[np.float64], list[tuple[int, int, str, float]], list[Block]]:
        """Run the change detectors over the present ``values`` (tagged ``positions``): the
        values standardised, each detection as (value index, the detector's order, its name,
        statistic), and the blocks that closed."""
        standardised = self._standardise(values)
        inputs = self._detector_input(standardised, values)
        hits = [
            (i, order, name, statistic)
            for order, (name, detector) in enumerate(self.detectors.items())
            for i, statistic in detector.update_many(inputs)
        ]
        return standardised, hits, self._blocks_closed(inputs, positions)

    def _blocks_closed(
        self, inputs: NDArray[np.float64], positions: NDArray[np.integer[Any]]
    ) -> list[Block]:
        """Blocks of the detectors' inputs that closed (error streams only: see
        :class:`ErrorMonitor`)."""
        return []

    def _judge_block(self, block: Block, events_seen: int) -> Detection | None:
        return None

    def _fold_ewma(self, standardised: NDArray[np.float64]) -> None:
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
        return distribution(self.reference, self.reference_sketch, self._mean_key, ranks)

    def _current_summary(self) -> dict[str, Any]:
        variance = max(self._ewma_sq - self._ewma_mean**2, 0.0)
        # Back in the feature's units an EWMA of clipped extremes may leave the float range.
        return {
            self._mean_key: saturate(self.reference.mean + self._scale * self._ewma_mean),
            "std": saturate(self._scale * math.sqrt(variance)),
            "ewma_alpha": self.params.ewma_alpha,
        }

    def false_alarms(self) -> dict[str, Any]:
        found = super().false_alarms()
        fed = self.stats.count - self.reference.count
        rate = self.detector_rate or None
        for name, detector in self.detectors.items():
            found["detectors"][name] = {
                "evaluations": fed,
                "firings": detector.n_detections,
                "rate": rate,
            }
        return found

    def _status(self) -> dict[str, Any]:
        return {
            "warmup_remaining": 0 if self.warmed_up else self.warmup_events - self.reference.count,
            "reference_source": self.reference_source,
            "drift_score": self.drift_score(),
            **self._lifecycle_status(),
            "detectors": {name: detector.describe() for name, detector in self.detectors.items()},
            "windows": self._window_status(),
            "false_alarms": self.false_alarms(),
        }

    def summary(self) -> dict[str, Any]:
        return {
            "kind": self.kind,
            "missing": self.missing,
            **distribution(self.stats, self.sketch, self._mean_key, QUANTILES),
            "reference": self._reference_summary(QUANTILES) if self.warmed_up else None,
            "current": self._current_summary() if self.warmed_up else None,
            **self._status(),
        }

    @classmethod
    def _merged_summary(cls, monitors: Sequence[Self]) -> dict[str, Any]:
        k = monitors[0].params.kll_k
        stats, sketch, reference, reference_sketch = (
            RunningStats(),
            QuantileSketch(k),
            RunningStats(),
            QuantileSketch(k),
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
            **distribution(stats, sketch, cls._mean_key, QUANTILES),
            "reference": (
                distribution(reference, reference_sketch, cls._mean_key, QUANTILES)
                if reference.count
                else None
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
            lifecycle=self.lifecycle.to_state(),
            windows=self.windows.to_state() if self.windows is not None else None,
            reference_source=self.reference_source,
            **self._extra_state(),
        )

    def _extra_state(self) -> dict[str, Any]:
        return {}

    @classmethod
    def _from_state(cls, state: _StreamState, river_changed: bool = False) -> Self:
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
        monitor._evidence_from = dict(state.evidence_from)
        monitor.detectors = {}
        rewarmed = []
        for name, saved in state.detectors.items():
            monitor.detectors[name], afresh = _detector_from_state(saved, river_changed)
            if afresh:
                rewarmed.append(name)
                monitor._evidence_from[name] = None  # it starts with the next value
        monitor.rewarmed = tuple(rewarmed)
        if not (math.isfinite(state.ewma_mean) and math.isfinite(state.ewma_sq)):
            raise ValueError("the EWMA is not finite")
        # States written before the standardised values were bounded may exceed the bound.
        monitor._ewma_mean = min(max(state.ewma_mean, -LARGE), LARGE)
        monitor._ewma_sq = min(max(state.ewma_sq, 0.0), LARGE * LARGE)
        monitor.reference_source = state.reference_source
        windows = None
        if state.windows is not None:
            alpha = monitor._window_alpha(len(NumericWindows.test_types))
            windows = NumericWindows.from_state(
                state.windows, monitor.params.window, alpha, monitor.params.kll_k
            )
        monitor._restore(state.lifecycle, windows, monitor.windowed and monitor.warmed_up)
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
    >>> [(d.detector, d.evidence_from, d.severity) for d in detections]
    [('cusum', 500, 'high')]
    >>> 3000 < detections[0].position < 3060  # a 1 sigma shift at 3000
    True

    The CUSUM bank's thresholds are solved from the reference's quantile sketch, whose
    randomised compaction makes them vary by ~1% from run to run (and so, rarely, the position
    of a detection by a value or two).

    """

    kind = "numeric"
    state_type = _NumericState

    @property
    def warmup_events(self) -> int:
        return self.params.warmup_events

    def _detector_names(self) -> Sequence[str]:
        return [name for name in self.params.detectors if name in _DETECTORS]

    def _detector_input(
        self, standardised: NDArray[np.float64], values: NDArray[np.float64]
    ) -> NDArray[np.float64]:
        return np.clip(standardised, -self.params.clip_sigma, self.params.clip_sigma)

    def _detect(
        self, values: NDArray[np.float64], positions: NDArray[np.integer[Any]]
    ) -> tuple[NDArray[np.float64], list[tuple[int, int, str, float]], list[Block]]:
        # The default detectors with the compiled backend: standardised, clipped and run
        # through ADWIN and the CUSUM bank in one kernel call (the same steps in the same
        # order as the generic path).
        adwin, cusum = self.detectors.get(Adwin.name), self.detectors.get(Cusum.name)
        if len(self.detectors) != 2 or not (isinstance(adwin, Adwin) and isinstance(cusum, Cusum)):
            return super()._detect(values, positions)
        window, bank = adwin.window, cusum.compiled_bank
        if window is None or bank is None:  # detectors of the reference backend
            return super()._detect(values, positions)
        mean, scale = self.reference.mean, self._scale
        bounded = max(self.stats.max - mean, mean - self.stats.min) / scale <= LARGE
        standardised, adwin_hits, bank_hits, n, bank_mean = _fused().detect(
            values,
            (mean, scale, bounded, LARGE),
            self.params.clip_sigma,
            window,
            bank[0],
            cusum.params.min_instances,
            (cusum.n, cusum.mean),
            bank[1],
        )
        order = 0 if next(iter(self.detectors)) == Adwin.name else 1  # ADWIN's; the bank's 1 - it
        hits = [(i, order, Adwin.name, statistic) for i, statistic in adwin.record(adwin_hits)]
        found = cusum.record(bank_hits, len(values), n, bank_mean)
        hits += [(i, 1 - order, Cusum.name, statistic) for i, statistic in found]
        return standardised, hits, []


class ErrorMonitor(_StreamMonitor):
    """Drift monitor of a model's error stream: 0/1 misclassifications or absolute errors.

    The errors go to ADWIN and the CUSUM bank unstandardised (0/1 errors already lie in the
    [0, 1] range ADWIN's bound assumes; the bank's allowances are scaled by the reference's
    standard deviation and it watches increases only); the reference is the first
    ``error_warmup_events`` errors, and summaries say ``error_rate`` for the mean (the mean
    absolute error of a regression model). A reference without a single error has no spread to
    scale the bank by: ADWIN alone then watches the stream.

    An episode lasts as long as the error rate stays off its reference, however fast labels
    arrive: there are no window tests, but the errors are cut into blocks of ``window.events``
    values, and once ``window.resolve_windows`` consecutive blocks in a row have a mean that
    looks like the reference's (:func:`~detectors.blocks.settled_mean`: effect below half
    ``window.wasserstein_floor`` reference standard deviations, or the z-test of the mean not
    significant at ``window.resolve_alpha``) with no detection in between, the episode is
    resolved (a ``resolved`` detection, test ``error_rate``). Detections while it is open are
    counted as suppressed, not alerted.

    >>> import numpy as np
    >>> rng = np.random.default_rng(3)
    >>> errors = np.concatenate([rng.random(3000) < 0.1, rng.random(2000) < 0.3]).astype(float)
    >>> monitor = ErrorMonitor()
    >>> [d.position for d in monitor.update(errors, np.arange(len(errors)))]
    [3100]
    >>> round(monitor.summary()["reference"]["error_rate"], 3)
    0.075
    >>> back = (rng.random(2000) < 0.1).astype(float)  # the rate comes back: one resolution
    >>> [(d.event, d.test) for d in monitor.update(back, np.arange(5000, 7000))]
    [('resolved', 'error_rate')]

    """

    kind = "error"
    state_type = _ErrorState
    _mean_key = "error_rate"

    def __init__(self, params: MonitorParams | None = None) -> None:
        super().__init__(params)
        self.blocks = Blocks(self.params.window.events)

    @property
    def resolvable(self) -> bool:
        return True

    def _blocks_closed(
        self, inputs: NDArray[np.float64], positions: NDArray[np.integer[Any]]
    ) -> list[Block]:
        return self.blocks.update(inputs, positions)

    def _judge_block(self, block: Block, events_seen: int) -> Detection | None:
        """Resolve the open episode once enough blocks in a row look like the reference."""
        window = self.params.window
        alpha = max(window.alpha, window.resolve_alpha)
        reference = (self.reference.mean, self._scale, self.reference.count)
        settled, z, p_value, effect = settled_mean(
            block.mean, block.size, reference, window.wasserstein_floor, alpha
        )
        if not self.lifecycle.observe(settled):
            return None
        return Detection(
            detector=WINDOW,
            statistic=z,
            threshold=alpha,
            severity=severity(effect),
            effect_size=effect,
            position=block.position,
            evidence_from=block.evidence_from,
            events_seen=events_seen,
            reference=self._reference_summary(DETECTION_QUANTILES),
            current={self._mean_key: block.mean, "events": block.size},
            event="resolved",
            test="error_rate",
            p_value=p_value,
            details={"opened_by": self.lifecycle.opened_by, "opened_at": self.lifecycle.opened_at},
        )

    def _extra_state(self) -> dict[str, Any]:
        return {"blocks": self.blocks.to_state()}

    @classmethod
    def _from_state(cls, state: _StreamState, river_changed: bool = False) -> Self:
        monitor = super()._from_state(state, river_changed)
        if isinstance(state, _ErrorState) and state.blocks is not None:
            monitor.blocks = Blocks.from_state(state.blocks, monitor.params.window.events)
        return monitor

    @property
    def warmup_events(self) -> int:
        return self.params.error_warmup_events

    @property
    def windowed(self) -> bool:
        return False

    def _detector_names(self) -> Sequence[str]:
        listed = [name for name in self.params.detectors if name in (Adwin.name, Cusum.name)]
        return listed or [Adwin.name]

    def _detector_params(self, name: str) -> Any:
        params = super()._detector_params(name)
        if name != Cusum.name:
            return params
        # Errors are not standardised: allowances in reference standard deviations of the
        # errors (the reference is complete when _calibrate asks). A model getting better is
        # not an alert: increases only.
        allowances = tuple(k * self._scale for k in params.allowances)
        return dataclasses.replace(params, allowances=allowances, mode="up")

    def _detector_input(
        self, standardised: NDArray[np.float64], values: NDArray[np.float64]
    ) -> NDArray[np.float64]:
        # Absolute errors can be any finite float: beyond +-LARGE they are clipped, so that
        # ADWIN's and the bank's sums (and the calibration) stay in the float range. The
        # monitor's own min and max tell whether any is (values are among them, or clipped).
        if -LARGE <= self.stats.min and self.stats.max <= LARGE:
            return values
        return np.clip(values, -LARGE, LARGE)


class CategoricalMonitor(UnivariateMonitor):
    """Drift monitor of one categorical feature, its counts bounded to ``params.max_categories``
    values. With ``window`` among the detectors (the default), the window tests compare windows
    with the first ``window.reference_events`` values; ``drift_score`` is the last window's PSI.

    >>> import numpy as np
    >>> monitor = CategoricalMonitor()
    >>> monitor.update(["card", "cash", "card"], [10, 11, 12])
    []
    >>> monitor.summary()["top"]
    [{'value': 'card', 'count': 2}, {'value': 'cash', 'count': 1}]
    >>> rng = np.random.default_rng(5)
    >>> values = [str(v) for v in rng.choice(["card", "cash"], 7_000, p=[0.7, 0.3])]
    >>> values += [str(v) for v in rng.choice(["card", "cash"], 1_000, p=[0.4, 0.6])]
    >>> found = monitor.update(values, range(13, 13 + len(values)))
    >>> [(d.detector, d.test, d.position, d.severity) for d in found]
    [('window', 'chi2', 7509, 'medium')]
    >>> found[0].details["top_contributors"][0]["bin"]
    'cash'

    """

    kind = "categorical"
    state_type = _CategoricalState
    windows: CategoricalWindows | None

    def __init__(self, params: MonitorParams | None = None) -> None:
        super().__init__(params)
        self.counts = CategoryCounts(self.params.max_categories)
        if self.windowed:
            alpha = self._window_alpha(len(CategoricalWindows.test_types))
            self.windows = CategoricalWindows(self.params.window, alpha, self.params.max_categories)

    @property
    def count(self) -> int:
        return self.counts.total

    @property
    def distinct(self) -> int:
        """Distinct values counted so far."""
        return len(self.counts.counts)

    def _detector_names(self) -> Sequence[str]:
        return ()

    def knows(self, value: str) -> bool:
        """Whether ``value`` has been counted before."""
        return value in self.counts.counts

    def accepts(self, value: str, pending_new: Set[str] = frozenset()) -> bool:
        """See :meth:`CategoryCounts.accepts`: check before updating anything."""
        return self.counts.accepts(value, pending_new)

    def drift_score(self) -> float:
        """PSI of the last window against the reference; 0.0 before the first window."""
        return self.windows.score if self.windows is not None else 0.0

    def seed(self, profile: Profile, source: str) -> None:
        if not isinstance(profile, CategoricalProfile) or not profile.counts.counts:
            raise ValueError("a categorical monitor needs a categorical profile with values")
        self.reference_source = source
        self.lifecycle = self._new_lifecycle()
        if self.windows is not None:
            period = CategoricalPeriod(max(self.params.max_categories, len(profile.counts.counts)))
            period.counts = CategoryCounts.from_state(profile.counts)
            period.missing = profile.missing
            self.windows.seed(period)

    def update(
        self,
        values: Sequence[str | None],
        positions: Sequence[int] | NDArray[np.integer[Any]],
        times: NDArray[np.float64] | None = None,
    ) -> list[Detection]:
        """Count ``values`` (None: missing); ``positions`` (and ``times``) tag them like for the
        other monitors.

        Returns the lifecycle changes, like :meth:`NumericMonitor.update`.
        """
        if len(values) != len(positions):
            raise ValueError("values and positions must have the same length")
        _check_times(times, len(values))
        missing = np.array([value is None for value in values], dtype=bool)
        seen = self.count
        self.counts.update_many([value for value in values if value is not None])
        self.missing += int(missing.sum())
        if self.windows is None:
            return []
        closed = self.windows.update(values, missing, np.asarray(positions, dtype=np.int64), times)
        present = np.flatnonzero(~missing)
        judged = (
            self._judge(
                e,
                seen + int(np.searchsorted(present, e.index, side="right")),
                None if times is None else float(times[e.index]),
            )
            for e in closed
        )
        return [found for found in judged if found is not None]

    def summary(self) -> dict[str, Any]:
        return {
            "kind": self.kind,
            "missing": self.missing,
            **_categories(self.counts),
            **self._status(),
        }

    def _status(self) -> dict[str, Any]:
        return {
            "reference_source": self.reference_source,
            "drift_score": self.drift_score(),
            **self._lifecycle_status(),
            "windows": self._window_status(),
            "false_alarms": self.false_alarms(),
        }

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
            "drift_score": max(monitor.drift_score() for monitor in monitors),
            "partitions": [
                {"count": m.count, "missing": m.missing, **m._status()} for m in monitors
            ],
        }

    def _to_state(self) -> _CategoricalState:
        windows = self.windows.to_state() if self.windows is not None else None
        return _CategoricalState(
            self.params,
            self.missing,
            self.counts.to_state(),
            self.lifecycle.to_state(),
            windows,
            self.reference_source,
        )

    @classmethod
    def _from_state(cls, state: _CategoricalState, river_changed: bool = False) -> Self:
        monitor = cls(state.params)
        monitor.missing = state.missing
        monitor.counts = CategoryCounts.from_state(state.counts)
        monitor.reference_source = state.reference_source
        windows = None
        if state.windows is not None:
            alpha = monitor._window_alpha(len(CategoricalWindows.test_types))
            windows = CategoricalWindows.from_state(state.windows, monitor.params.window, alpha)
        monitor._restore(state.lifecycle, windows, monitor.windowed)
        return monitor


def _detector_from_state(
    state: AdwinState | PageHinkleyState | CusumState, river_changed: bool = False
) -> tuple[_Detector, bool]:
    """The detector of a stored state (of the tagged union in :class:`_StreamState`), and
    whether it had to start afresh.

    ``river_changed``: the state was written by another river release, or by one not recorded.
    Then a river-backed detector must also give its state back unchanged (river's layout as
    this code knows it), and if river cannot take the state at all (any error) or the check
    fails, it starts afresh with its stored parameters, as after a detection. Otherwise any
    failure propagates (the state is corrupt). The CUSUM bank is streamdrift's own.
    """
    if isinstance(state, CusumState):
        return Cusum.from_state(state), False
    try:
        detector: Adwin | PageHinkley = (
            Adwin.from_state(state)
            if isinstance(state, AdwinState)
            else PageHinkley.from_state(state)
        )
        if river_changed and detector.to_state() != state:
            raise ValueError(f"river's {detector.name} does not give its stored state back")
    except Exception:
        if not river_changed:
            raise
        afresh = Adwin.afresh(state) if isinstance(state, AdwinState) else PageHinkley.afresh(state)
        return afresh, True
    return detector, False


def _window_detection(
    evaluation: Evaluation, events_seen: int, event: str, extra: dict[str, Any]
) -> Detection:
    result = evaluation.strongest()
    # Tagged values came first: a window that closes has the tag of its last event.
    position: int = evaluation.position  # type: ignore[assignment]
    return Detection(
        detector=WINDOW,
        statistic=result.statistic,
        threshold=result.alpha,
        severity=result.severity,
        effect_size=result.effect_size,
        position=position,
        evidence_from=(
            evaluation.evidence_from
            if evaluation.evidence_from is not None
            else position  # a window of missing values only
        ),
        events_seen=events_seen,
        reference=evaluation.reference,
        current=evaluation.current,
        event=event,
        test=result.test,
        p_value=result.p_value,
        details={**evaluation.details, **extra},
    )


def merge_summaries(monitors: Sequence[Monitor]) -> dict[str, Any]:
    """One status view of the same feature's monitors from several partitions.

    Counts and missing are summed; mean, std, min and max are exact (moments merged with Chan's
    formula), quantiles come from the merged sketches, and per-monitor details (detectors,
    drift scores, episodes, window tests) are listed under ``partitions`` in the order given.
    ``drift_score`` is the largest of the partitions'.
    """
    if not monitors:
        raise ValueError("no monitors to merge")
    kinds = sorted({monitor.kind for monitor in monitors})
    if len(kinds) > 1:
        raise ValueError(f"cannot merge monitors of different kinds: {kinds}")
    return type(monitors[0])._merged_summary(monitors)


def _read_header(data: bytes, what: str) -> _Header:
    try:
        return _HEADER_DECODER.decode(data)
    except msgspec.MsgspecError as exc:
        raise StateError(f"not a streamdrift {what} state ({exc})") from None


def _version_error(what: str, version: int, readable: tuple[int, ...]) -> StateError:
    versions = " or ".join(str(v) for v in readable)
    return StateError(
        f"{what} state has format version {version} but this streamdrift reads version "
        f"{versions}; discard the state to rebuild the monitor from new events"
    )


def check_state_version(data: bytes, expected: int | tuple[int, ...], what: str) -> None:
    """:class:`StateError` unless ``data`` is a stored state of format version ``expected``
    (or one of them; read first, so a state of another version is reported as such, not as
    corrupt)."""
    readable = expected if isinstance(expected, tuple) else (expected,)
    version = _read_header(data, what).version
    if version not in readable:
        raise _version_error(what, version, readable)


def monitor_from_bytes(data: bytes) -> Monitor:
    """Restore a monitor of any kind saved with :meth:`Monitor.to_bytes`; :class:`StateError`
    if impossible.

    The envelope's ``kind`` picks the monitor class (states written before it had one are told
    by their layout and format version: univariate states, 2 or 3, wrap theirs in a ``monitor``
    field; the multivariate one's, 1, does not). States of another river
    release than the one installed, or of one not recorded (written before the envelope
    recorded it), are restored leniently: a river-backed detector (ADWIN, Page-Hinkley) whose
    state river cannot take back (any error, or a layout check failing) restarts afresh with its
    stored parameters, as after a detection, and the rest of the monitor — reference, sketches,
    window tests, lifecycle, the CUSUM bank — is kept; :attr:`Monitor.rewarmed` names those
    detectors. With the same river release such a failure is corruption: :class:`StateError`.
    """
    header = _read_header(data, "monitor")
    if header.kind is None and not len(header.monitor):
        untagged = (c for c in _MONITOR_BY_KIND.values() if header.version in c.untagged_versions)
        kind: type[Monitor] = next(untagged, NumericMonitor)
    elif header.kind is None:
        kind = NumericMonitor  # any univariate class reads the three kinds
    elif header.kind in _MONITOR_BY_KIND:
        kind = _MONITOR_BY_KIND[header.kind]
    else:
        raise StateError(
            f"monitor state of unknown kind {header.kind!r}; discard the state to rebuild the "
            "monitor from new events"
        )
    return kind._read(data, header.version)


def _ewma(mean: float, sq: float, alpha: float, values: NDArray[np.float64]) -> tuple[float, float]:
    """Fold ``values`` into an exponentially weighted mean and mean square, vectorised.

    Equals ``m = (1 - alpha) * m + alpha * x`` applied value by value (and to ``x**2``), up to
    rounding.

    >>> _ewma(0.0, 0.0, 0.5, np.array([2.0, 4.0]))
    (2.5, 9.0)
    """
    if not len(values):
        return mean, sq
    decay = 1.0 - alpha
    weights = _ewma_weights(alpha, len(values))
    carry = decay ** len(values)
    return carry * mean + float(weights @ values), carry * sq + float(weights @ values**2)


_EWMA_WEIGHTS: dict[float, NDArray[np.float64]] = {}


def _ewma_weights(alpha: float, n: int) -> NDArray[np.float64]:
    """``alpha * (1 - alpha) ** [n - 1, ..., 1, 0]``: the tail of one cached vector per
    ``alpha`` (the same elementwise powers, so the same bits), grown when a batch is longer."""
    weights = _EWMA_WEIGHTS.get(alpha)
    if weights is None or len(weights) < n:
        size = max(n, 4096, 0 if weights is None else 2 * len(weights))
        grown = np.asarray(alpha * (1.0 - alpha) ** np.arange(size - 1, -1, -1), np.float64)
        grown.flags.writeable = False
        if len(_EWMA_WEIGHTS) < 64:  # alphas are configuration: a handful per process
            _EWMA_WEIGHTS[alpha] = grown
        weights = grown
    return weights[len(weights) - n :]


@functools.cache
def _fused() -> ModuleType:
    """The fused kernels, imported on first use (the extension need not be installed for the
    reference backend)."""
    from streamdrift.detectors.kernels import fused

    return fused


def _check_times(times: NDArray[np.float64] | None, n: int) -> None:
    """``ValueError`` before anything is updated unless ``times`` (if given) are ``n`` finite
    event times (any finite value is taken: the windows cope with outliers)."""
    if times is None:
        return
    if len(times) != n:
        raise ValueError("times must have one event time per value")
    if not np.isfinite(np.asarray(times, dtype=np.float64)).all():
        raise ValueError("event times must be finite")


def _categories(counts: CategoryCounts) -> dict[str, Any]:
    return {
        "count": counts.total,
        "distinct": len(counts.counts),
        "max_categories": counts.max_categories,
        "top": [{"value": value, "count": n} for value, n in counts.top(TOP_CATEGORIES)],
    }


_MONITOR_BY_STATE: dict[type, type[UnivariateMonitor]] = {
    cls.state_type: cls for cls in (NumericMonitor, ErrorMonitor, CategoricalMonitor)
}
_ENCODER = msgspec.msgpack.Encoder()
_DECODER = msgspec.msgpack.Decoder(_Envelope)
_HEADER_DECODER = msgspec.msgpack.Decoder(_Header)
