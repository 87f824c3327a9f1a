"""Detector parameters and the per-model / per-feature section of the configuration file.

The parameters are frozen dataclasses whose defaults are the calibrated ones; each checks its own
values, so an invalid combination cannot be built in code either. The YAML file (already loaded
into a dict) overrides them in three layers, later ones winning key by key:

.. code-block:: yaml

    defaults: {warmup_events: 500, page_hinkley: {threshold: 60}}
    models:
      fraud:
        task: classification          # auto | classification | regression (the error stream)
        ignore_features: [user_id]
        allow_features: [amount, age]  # optional: monitor only these (and the prediction, errors)
        defaults: {cooldown_events: 10000}
        features:
          amount: {page_hinkley: {threshold: 80}}
        multivariate: {events: 1000}   # the model's PCA monitor, over the top-level section
    multivariate: {reference_events: 5000}

>>> config = {
...     "defaults": {"page_hinkley": {"threshold": 60}},
...     "models": {"fraud": {"ignore_features": ["user_id"],
...                          "features": {"amount": {"page_hinkley": {"threshold": 80}}}}},
... }
>>> resolve(config, "fraud", "amount").page_hinkley.threshold
80.0
>>> resolve(config, "fraud", "age").page_hinkley.threshold
60.0
>>> is_ignored(config, "fraud", "user_id")
True
>>> allowed_features(config, "fraud") is None  # no allowlist: every feature not ignored
True
>>> resolve({"defaults": {"warmup_event": 10}}, "fraud", "amount")  # doctest: +ELLIPSIS
Traceback (most recent call last):
...
ValueError: invalid config at defaults: unknown key 'warmup_event'; valid keys are: ...

"""

from __future__ import annotations

import dataclasses
import functools
import math
import typing
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, ClassVar, Self

from streamdrift.detectors.budget import window_alpha

__all__ = [
    "DEFAULT_DETECTORS",
    "DETECTOR_NAMES",
    "SCOPES",
    "TASKS",
    "AdwinParams",
    "CusumParams",
    "ModelRouting",
    "MonitorParams",
    "MultivariateParams",
    "PageHinkleyParams",
    "WindowParams",
    "allowed_features",
    "ignored_features",
    "is_ignored",
    "model_routing",
    "model_task",
    "multivariate_params",
    "resolve",
    "segment_features",
    "validate_config",
]

DETECTOR_NAMES = ("adwin", "page_hinkley", "cusum", "window")
DEFAULT_DETECTORS = ("adwin", "cusum", "window")  # the CUSUM bank supersedes Page-Hinkley
TASKS = ("auto", "classification", "regression")
SCOPES = ("feature", "model")

# ``inputs`` (the mapped input topics) belongs to the worker (streams.pipeline.mapping checks it)
_TOP_KEYS = ("defaults", "models", "multivariate", "inputs")
_MODEL_KEYS = (
    "task",
    "ignore_features",
    "allow_features",
    "defaults",
    "features",
    "multivariate",
    "owner",
    "runbook_url",
    "priority",
    "segments",
)
SEVERITIES = ("low", "medium", "high")
# resolve() caches each model's defaults by the content of the sections they come from; the
# cache is cleared when it holds this many (a config has a handful of models).
_MODEL_DEFAULTS_CACHE_SIZE = 1024


def _require(ok: bool, name: str, expected: str, value: object) -> None:
    if not ok:
        raise ValueError(f"{name} must be {expected}, got {value!r}")


class _FromMapping:
    """Builds a parameter dataclass from a config section, naming the offending key on error."""

    if typing.TYPE_CHECKING:  # what @dataclass adds to the subclasses, for dataclasses.replace
        __dataclass_fields__: ClassVar[dict[str, dataclasses.Field[Any]]]

    @classmethod
    def from_mapping(
        cls, mapping: Mapping[str, Any] | None, *, base: Self | None = None, where: str = "defaults"
    ) -> Self:
        """Return ``base`` (default: the built-in defaults) with the keys of ``mapping`` applied.

        Nested sections (``adwin``, ``page_hinkley``, ``window``) override key by key as well.
        Unknown keys, wrong types and out-of-range values raise ``ValueError`` naming the config
        path ``where``.
        """
        base = cls() if base is None else base
        mapping = _as_mapping(mapping, where)
        if not mapping:  # frozen: the base itself is the answer
            return base
        # A class object is hashable; mypy checks it against Hashable with the unbound
        # instance method object.__hash__ and disagrees (python/mypy#11470).
        names, hints = _fields_of(cls)  # type: ignore[arg-type]
        changes = {}
        for key, value in mapping.items():
            if key not in names:
                raise ValueError(
                    f"invalid config at {where}: unknown key {key!r}; "
                    f"valid keys are: {', '.join(names)}"
                )
            changes[key] = _coerce(hints[key], value, getattr(base, key), f"{where}.{key}")
        try:
            return dataclasses.replace(base, **changes)
        except ValueError as exc:
            raise ValueError(f"invalid config at {where}: {exc}") from None


@functools.cache
def _fields_of(cls: type) -> tuple[tuple[str, ...], dict[str, Any]]:
    """Field names and resolved type hints of a parameter class, computed once per class:
    ``typing.get_type_hints`` evaluates the string annotations anew on every call (~0.3 ms for
    MonitorParams), and a producer inventing feature names would otherwise make each new
    series pay it."""
    return tuple(f.name for f in dataclasses.fields(cls)), typing.get_type_hints(cls)


def _coerce(hint: Any, value: Any, current: Any, path: str) -> Any:
    """Check ``value`` against the field type; YAML gives ints where floats are meant."""
    if isinstance(hint, type) and issubclass(hint, _FromMapping):
        return hint.from_mapping(value, base=current, where=path)
    # bool is an int subclass, but `threshold: true` is a mistake, not 1.
    if hint is int and isinstance(value, int) and not isinstance(value, bool):
        return value
    if hint is float and _is_number(value):
        return float(value)
    if hint is str and isinstance(value, str):
        return value
    if typing.get_origin(hint) is tuple and isinstance(value, list | tuple):
        item = typing.get_args(hint)[0]
        if item is str and all(isinstance(v, str) for v in value):
            return tuple(value)
        if item is float and all(_is_number(v) for v in value):
            return tuple(float(v) for v in value)
    expected = {int: "an integer", float: "a number", str: "a string"}.get(hint)
    if expected is None:
        expected = f"a list of {'strings' if typing.get_args(hint)[0] is str else 'numbers'}"
    raise ValueError(f"invalid config at {path}: expected {expected}, got {value!r}")


def _is_number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


def _as_mapping(section: Any, where: str) -> Mapping[str, Any]:
    # An empty YAML section (`defaults:`) loads as None.
    if section is None:
        return {}
    if not isinstance(section, Mapping):
        raise ValueError(f"invalid config at {where}: expected a mapping, got {section!r}")
    return section


@dataclass(frozen=True)
class AdwinParams(_FromMapping):
    """Parameters of ``river.drift.ADWIN`` (same names, passed through unchanged).

    ``delta=2e-6`` rather than river's 0.002. Measured on standardised, clipped stationary
    streams of 100k values (500-value warm-up, 600 streams each): with delta=0.002, 4.5%
    (normal) to 10% (lognormal) of the streams had a false alarm; 2e-4: 0.17% to 0.5%; 2e-5:
    none. The rate falls ~25x per decade of delta, so 2e-6 should be ~1e-5 per stream. delta
    enters ADWIN's bound through a logarithm, so the delay grows little: median 207 values for
    a 0.5 sigma shift (175 at 2e-5), 79 for 1 sigma (20 seeds, ADWIN alone).
    """

    delta: float = 2e-6
    clock: int = 32
    max_buckets: int = 5
    min_window_length: int = 5
    grace_period: int = 10

    def __post_init__(self) -> None:
        _require(0 < self.delta < 1, "delta", "in (0, 1)", self.delta)
        _require(self.clock >= 1, "clock", ">= 1", self.clock)
        _require(self.max_buckets >= 1, "max_buckets", ">= 1", self.max_buckets)
        _require(self.min_window_length >= 1, "min_window_length", ">= 1", self.min_window_length)
        _require(self.grace_period >= 0, "grace_period", ">= 0", self.grace_period)


@dataclass(frozen=True)
class PageHinkleyParams(_FromMapping):
    """Parameters of ``river.drift.PageHinkley`` (same names), for inputs in reference sigma.

    river's defaults (delta=0.005, alpha=0.9999) fire ~620-690 times per 10^6 stationary values:
    the forgetting factor turns the cumulative sum into an AR(1) process with a standard
    deviation of ~70, above the threshold of 50. ``alpha=1`` gives the classic CUSUM, and
    ``delta=0.25`` is the usual allowance for a 0.5 sigma shift (half of it). Over 1000
    stationary 100k streams per distribution (standardised, clipped at 4 sigma), the largest
    statistic exceeded 30 in 0.1% (uniform) to 3.8% (exponential) of the streams, 35 in at most
    0.6%, 40 in at most 0.1% (lognormal), falling 5-10x per 5 units: ``threshold=50`` leaves a
    margin of ~100x. Median delay (20 seeds, PH alone): 61 values for 1 sigma, 204 for 0.5.
    """

    threshold: float = 50.0
    delta: float = 0.25
    alpha: float = 1.0
    min_instances: int = 30
    mode: str = "both"

    def __post_init__(self) -> None:
        _require(self.threshold > 0, "threshold", "> 0", self.threshold)
        _require(self.delta >= 0, "delta", ">= 0", self.delta)
        _require(0 < self.alpha <= 1, "alpha", "in (0, 1]", self.alpha)
        _require(self.min_instances >= 1, "min_instances", ">= 1", self.min_instances)
        _require(self.mode in ("up", "down", "both"), "mode", "one of up, down, both", self.mode)


@dataclass(frozen=True)
class CusumParams(_FromMapping):
    """A bank of two-sided CUSUMs (:class:`detectors.cusum.Cusum`), for inputs in reference sigma.

    allowances
        The reference values ``k``, in reference standard deviations: each CUSUM is quickest
        for a mean shift of ``2k``.
    false_alarm_interval
        Values between false alarms of the whole bank when the monitor has no
        ``target_false_alarm_interval`` (with one, the detector's share of it replaces this).
        The thresholds are solved from the reference distribution at warm-up end (see
        :mod:`detectors.budget`).
    min_instances
        Values after each restart before the bank may fire.
    mode
        ``up``, ``down`` or ``both`` sides (error streams watch ``up`` only: see ``ErrorMonitor``).
    """

    allowances: tuple[float, ...] = (0.125, 0.25, 0.5)
    false_alarm_interval: float = 2e6
    min_instances: int = 30
    mode: str = "both"

    def __post_init__(self) -> None:
        _require(
            len(self.allowances) >= 1 and all(k > 0 for k in self.allowances),
            "allowances",
            "a non-empty list of numbers > 0",
            list(self.allowances),
        )
        _require(
            1 <= self.false_alarm_interval < math.inf,
            "false_alarm_interval",
            "finite, >= 1",
            self.false_alarm_interval,
        )
        _require(self.min_instances >= 1, "min_instances", ">= 1", self.min_instances)
        _require(self.mode in ("up", "down", "both"), "mode", "one of up, down, both", self.mode)


@dataclass(frozen=True)
class WindowParams(_FromMapping):
    """Window tests (:mod:`detectors.windows`): tumbling windows compared with a reference period.

    A window's tests alert only when both gates pass: the p-value is below ``alpha`` (or the
    alpha derived from ``target_false_alarm_interval``) and the effect size reaches its floor,
    so that huge windows do not alert on trivial shifts.

    events
        Window size in events (values and missing values); the tests run when a window closes.
        With event-time windows, the expected events per window (alpha is derived from it).
    seconds
        0 (default): count-based windows of ``events``. Above 0: tumbling windows of this many
        seconds of *event time* (the events' ``timestamp``), closed by a watermark — the newest
        (trusted) event time the series has seen minus ``allowed_lateness_s``; events for a
        window that is already closed are counted as late and tested in no window.
    allowed_lateness_s
        How far behind the newest event time an event may be and still join its window.
    watermark_events, watermark_horizon
        An event time more than the horizon — ``watermark_horizon`` windows plus
        ``allowed_lateness_s`` — ahead of the oldest of the last ``watermark_events`` event
        times (and of the watermark) is not trusted: it neither moves the watermark nor joins a
        window (counted as ``early``) until that many events corroborate it. One outlier (a
        clock off by an hour) then cannot close the open windows and make every later event
        late. 3 tolerates an outlier and its retry; a genuine jump of the stream costs its
        first two events and delays the watermark by as many. Streams whose events come
        within the horizon of each other (any stream that fills its windows) close windows
        exactly as with ``watermark_events: 1``, the newest event time alone.
    reference_events
        Values forming the reference the windows are compared with: those right after the
        warm-up for numeric features (the bins are the warm-up's quantiles), the first ones for
        categorical features. A reference 10x the window keeps each feature's own false-alarm
        rate within ~3x of the average (the reference's sampling error is shared by all windows).
    bins
        Equiprobable bins (warm-up quantiles) of the numeric chi-square test and of PSI.
    alpha
        Significance level of each test when no target is set. 1e-6 with the three numeric
        tests and 500-value windows is one false alarm per ~1.7 x 10^8 events at most.
    psi_floor
        Smallest PSI (chi-square tests; numeric bins and categories) that alerts.
    wasserstein_floor
        Smallest Wasserstein-1 distance, in reference standard deviations, that alerts (KS).
    missing_floor
        Smallest Cohen's h between the missing rates that alerts (0.2: e.g. 1% -> 4%).
    resolve_windows
        An episode is resolved after this many consecutive windows, with no detection in
        between, in which every test is settled: p-value at least ``resolve_alpha`` (and
        ``alpha``), or effect below half its floor.
    resolve_alpha
        The p-value a test must reach to count as settled: looser than ``alpha``, so that a
        change the window tests cannot confirm (e.g. 0.25 sigma, found by the CUSUM bank)
        is not resolved while it lasts. Under no change all three numeric tests reach 0.05
        in ~90% of the windows, so resolving takes a few windows.
    """

    events: int = 500
    seconds: float = 0.0
    allowed_lateness_s: float = 0.0
    watermark_events: int = 3
    watermark_horizon: float = 2.0
    reference_events: int = 5000
    bins: int = 10
    alpha: float = 1e-6
    psi_floor: float = 0.1
    wasserstein_floor: float = 0.1
    missing_floor: float = 0.2
    resolve_windows: int = 3
    resolve_alpha: float = 0.05

    def __post_init__(self) -> None:
        # The window's sketch keeps all its values: datasketches' largest k.
        _require(10 <= self.events <= 65535, "events", "in [10, 65535]", self.events)
        _require(self.reference_events >= 10, "reference_events", ">= 10", self.reference_events)
        _require(self.seconds >= 0, "seconds", ">= 0", self.seconds)
        _require(
            self.allowed_lateness_s >= 0, "allowed_lateness_s", ">= 0", self.allowed_lateness_s
        )
        _require(self.watermark_events >= 1, "watermark_events", ">= 1", self.watermark_events)
        _require(
            0 <= self.watermark_horizon < math.inf,
            "watermark_horizon",
            "finite, >= 0",
            self.watermark_horizon,
        )
        _require(2 <= self.bins <= 100, "bins", "in [2, 100]", self.bins)
        _require(0 < self.alpha < 1, "alpha", "in (0, 1)", self.alpha)
        for name in ("psi_floor", "wasserstein_floor", "missing_floor"):
            _require(getattr(self, name) >= 0, name, ">= 0", getattr(self, name))
        _require(self.resolve_windows >= 1, "resolve_windows", ">= 1", self.resolve_windows)
        _require(0 < self.resolve_alpha < 1, "resolve_alpha", "in (0, 1)", self.resolve_alpha)


@dataclass(frozen=True)
class MonitorParams(_FromMapping):
    """Everything a monitor of one (model, feature) needs.

    The defaults run ADWIN, the CUSUM bank and the window tests. The bank is calibrated for
    one false alarm per ``cusum.false_alarm_interval`` = 2 x 10^6 values; on 10^8 stationary
    values per distribution (standardised, clipped; thresholds from each stream's own 500-value
    warm-up) it fired 0.2-1.0 times its target at 10^7 and 0.3-0.6 times at 10^6. ADWIN at
    ``delta=2e-6`` and the window tests (one false alarm per ~1.7 x 10^8 events at most) add
    little. ``make quality`` compares the delays with river's detectors (README).

    warmup_events
        Values forming the frozen reference; detectors start after them.
    cooldown_events
        After a detection opens an episode, further detections within this many values of the
        same feature are counted as suppressed instead of alerting again.
    cooldown_s
        In event time: a detection less than this many seconds after the last episode of the
        series opened does not open another, however many values came in between (0: no time
        cool-down): at most one alert per ``cooldown_s`` for a series that resolves and shifts
        again (fast labels, a borderline change). An episode that can be resolved lasts as
        long as the shift in any case.
    detectors
        Detectors run on numeric features (subset of ``adwin``, ``page_hinkley``, ``cusum``,
        ``window``); categorical features run ``window`` if listed, error streams ``adwin`` and
        ``cusum`` if listed (``adwin`` if neither is).
    ewma_alpha
        Weight of the newest value in the "current" mean/std (memory ~2/alpha - 1 = 39 values);
        also the speed of ``drift_score``.
    clip_sigma
        Standardised values are clipped to +-clip_sigma before the detectors. Without it one
        lognormal outlier (>80 sigma in 10^7 values) exceeds any usable PH threshold: 43% of
        stationary lognormal 100k streams alerted. A 1 sigma shift of a normal feature moves
        0.1% of values past 4 sigma, so detection is unaffected. The clip range is relative to
        the reference: once a feature sits beyond it, further moves away are not seen.
    kll_k
        Size parameter of the quantile sketches (rank error 1.33% at 200).
    max_categories
        Distinct values kept per categorical feature.
    error_warmup_events
        Warm-up of the model's error stream (the reference error rate).
    target_false_alarm_interval
        Events between false alarms that the monitor is calibrated for (e.g. 1e6); 0 keeps the
        raw thresholds (``adwin.delta``, ``page_hinkley.threshold``, ``window.alpha``). When set,
        it replaces them: see :mod:`detectors.budget`.
    false_alarm_scope
        ``feature``: the target holds for each feature; ``model``: for the whole model, whose
        budget is split evenly (Bonferroni) over ``model_features`` features.
    model_features
        Number of monitored features (prediction and error stream included) a ``model`` scope
        is split over.
    """

    warmup_events: int = 500
    cooldown_events: int = 5000
    cooldown_s: float = 0.0
    detectors: tuple[str, ...] = DEFAULT_DETECTORS
    ewma_alpha: float = 0.05
    clip_sigma: float = 4.0
    kll_k: int = 200
    max_categories: int = 200
    error_warmup_events: int = 200
    target_false_alarm_interval: float = 0.0
    false_alarm_scope: str = "feature"
    model_features: int = 1
    adwin: AdwinParams = AdwinParams()
    page_hinkley: PageHinkleyParams = PageHinkleyParams()
    cusum: CusumParams = CusumParams()
    window: WindowParams = WindowParams()

    @property
    def false_alarm_interval(self) -> float:
        """Events between false alarms of this series (0.0: raw thresholds, no target).

        >>> MonitorParams(target_false_alarm_interval=1e6).false_alarm_interval
        1000000.0
        >>> MonitorParams(target_false_alarm_interval=1e6, false_alarm_scope="model",
        ...               model_features=20).false_alarm_interval
        20000000.0
        """
        share = self.model_features if self.false_alarm_scope == "model" else 1
        return self.target_false_alarm_interval * share

    @property
    def false_alarm_rate(self) -> float:
        """False alarms per event this series may raise (0.0: raw thresholds, no target)."""
        interval = self.false_alarm_interval
        return 1.0 / interval if interval else 0.0

    def __post_init__(self) -> None:
        _require(self.warmup_events >= 2, "warmup_events", ">= 2", self.warmup_events)
        _require(self.cooldown_events >= 0, "cooldown_events", ">= 0", self.cooldown_events)
        _require(0 <= self.cooldown_s < math.inf, "cooldown_s", "finite, >= 0", self.cooldown_s)
        _require(
            set(self.detectors) <= set(DETECTOR_NAMES)
            and len(set(self.detectors)) == len(self.detectors),
            "detectors",
            f"distinct names among {', '.join(DETECTOR_NAMES)}",
            list(self.detectors),
        )
        _require(0 < self.ewma_alpha <= 1, "ewma_alpha", "in (0, 1]", self.ewma_alpha)
        _require(self.clip_sigma > 0, "clip_sigma", "> 0 (.inf disables clipping)", self.clip_sigma)
        # datasketches' own limits for k
        _require(8 <= self.kll_k <= 65535, "kll_k", "in [8, 65535]", self.kll_k)
        _require(self.max_categories >= 1, "max_categories", ">= 1", self.max_categories)
        _require(
            self.error_warmup_events >= 2, "error_warmup_events", ">= 2", self.error_warmup_events
        )
        _require(
            self.target_false_alarm_interval >= 0,
            "target_false_alarm_interval",
            ">= 0 (0: raw thresholds)",
            self.target_false_alarm_interval,
        )
        _require(
            self.false_alarm_scope in SCOPES,
            "false_alarm_scope",
            f"one of {', '.join(SCOPES)}",
            self.false_alarm_scope,
        )
        _require(self.model_features >= 1, "model_features", ">= 1", self.model_features)


@dataclass(frozen=True)
class MultivariateParams(_FromMapping):
    """Parameters of :class:`~detectors.multivariate.PCAReconstructionMonitor`, set by the
    ``multivariate`` sections of the configuration (see :func:`multivariate_params`).

    reference_events
        Rows whose moments the PCA is fitted on (unless a stored profile is supplied).
    calibration_events
        Rows after the fit that give the reference mean and std of the reconstruction error.
    events
        Window size in rows; a window is tested when it closes.
    variance
        Share of the reference variance the kept components must exceed (NannyML: 0.65).
    effect_floor
        Smallest relative increase of the window's mean error over the reference's that alerts.
    clip_sigma
        Standardised values are clipped to +-clip_sigma before the projection (``inf``: never).
    target_false_alarm_interval
        Rows between false alarms the test is calibrated for: ``alpha = events / interval``.
    cooldown_events, cooldown_s, resolve_windows
        The alert lifecycle (:mod:`detectors.lifecycle`), in rows, in seconds of event time
        (0: off) and in quiet windows.
    """

    reference_events: int = 5000
    calibration_events: int = 5000
    events: int = 500
    variance: float = 0.65
    effect_floor: float = 0.1
    clip_sigma: float = 4.0
    target_false_alarm_interval: float = 1e6
    cooldown_events: int = 5000
    cooldown_s: float = 0.0
    resolve_windows: int = 3

    def __post_init__(self) -> None:
        _require(self.reference_events >= 2, "reference_events", ">= 2", self.reference_events)
        _require(
            self.calibration_events >= 2, "calibration_events", ">= 2", self.calibration_events
        )
        _require(self.events >= 2, "events", ">= 2", self.events)
        _require(0 < self.variance < 1, "variance", "in (0, 1)", self.variance)
        _require(self.effect_floor >= 0, "effect_floor", ">= 0", self.effect_floor)
        _require(self.clip_sigma > 0, "clip_sigma", "> 0 (.inf: no clipping)", self.clip_sigma)
        _require(
            self.target_false_alarm_interval >= self.events,
            "target_false_alarm_interval",
            f">= events ({self.events})",
            self.target_false_alarm_interval,
        )
        _require(self.cooldown_events >= 0, "cooldown_events", ">= 0", self.cooldown_events)
        _require(0 <= self.cooldown_s < math.inf, "cooldown_s", "finite, >= 0", self.cooldown_s)
        _require(self.resolve_windows >= 1, "resolve_windows", ">= 1", self.resolve_windows)

    @property
    def alpha(self) -> float:
        """Significance level of each window's test (see :mod:`detectors.budget`).

        >>> MultivariateParams().alpha
        0.0005
        """
        return window_alpha(1.0 / self.target_false_alarm_interval, self.events, tests=1)


def validate_config(config: Mapping[str, Any] | None) -> None:
    """Check the whole config section at start-up; raise ``ValueError`` naming the bad key.

    >>> validate_config({"models": {"fraud": {"task": "clasification"}}})  # doctest: +ELLIPSIS
    Traceback (most recent call last):
    ...
    ValueError: invalid config at models.fraud.task: expected one of auto, ..., got 'clasification'
    """
    config = _top(config)
    MonitorParams.from_mapping(config.get("defaults"), where="defaults")  # even without models
    MultivariateParams.from_mapping(config.get("multivariate"), where="multivariate")
    for model in _as_mapping(config.get("models"), "models"):
        model_task(config, model)
        model_routing(config, model)
        segment_features(config, model)
        multivariate_params(config, model)
        _ignored(config, model)
        _allowed(config, model)
        model_defaults = _model_defaults(config, model)
        for feature in _features(config, model):
            _feature_params(config, model, feature, model_defaults)


def resolve(config: Mapping[str, Any] | None, model: str, feature: str) -> MonitorParams:
    """Parameters of (model, feature), later layers winning: built-in defaults, ``defaults``,
    ``models.<model>.defaults``, ``models.<model>.features.<feature>``.

    A feature without a section of its own costs a few microseconds: the model's layers are
    built once per content of the sections they come from (see :func:`_model_defaults`), and
    the result is shared (the parameters are frozen).
    """
    config = _top(config)
    return _feature_params(config, model, feature, _model_defaults(config, model))


def multivariate_params(
    config: Mapping[str, Any] | None, model: str, base: MultivariateParams | None = None
) -> MultivariateParams:
    """Parameters of ``model``'s multivariate (PCA) monitor, later layers winning key by key:
    ``base`` (default: the built-in defaults), the top-level ``multivariate`` section,
    ``models.<model>.multivariate``.

    >>> config = {"multivariate": {"events": 1000, "variance": 0.8},
    ...           "models": {"fraud": {"multivariate": {"events": 2000}}}}
    >>> params = multivariate_params(config, "fraud")
    >>> params.events, params.variance, params.reference_events
    (2000, 0.8, 5000)
    >>> multivariate_params(config, "churn").events
    1000
    >>> multivariate_params({"multivariate": {"window": 500}}, "fraud")  # doctest: +ELLIPSIS
    Traceback (most recent call last):
    ...
    ValueError: invalid config at multivariate: unknown key 'window'; valid keys are: ...
    """
    config = _top(config)
    params = MultivariateParams.from_mapping(
        config.get("multivariate"), base=base, where="multivariate"
    )
    return MultivariateParams.from_mapping(
        _model(config, model).get("multivariate"), base=params, where=f"models.{model}.multivariate"
    )


def is_ignored(config: Mapping[str, Any] | None, model: str, feature: str) -> bool:
    """Whether ``feature`` is listed in ``models.<model>.ignore_features``."""
    return feature in ignored_features(config, model)


def ignored_features(config: Mapping[str, Any] | None, model: str) -> frozenset[str]:
    """``models.<model>.ignore_features`` as a set (resolve once per model on hot paths).

    >>> sorted(ignored_features({"models": {"m": {"ignore_features": ["id", "ts"]}}}, "m"))
    ['id', 'ts']
    """
    return frozenset(_ignored(_top(config), model))


def allowed_features(config: Mapping[str, Any] | None, model: str) -> frozenset[str] | None:
    """``models.<model>.allow_features`` as a set, or None when the model has no allowlist.

    With an allowlist only the features listed are monitored (besides the prediction and the
    error stream, which are always): the others are dropped like ``ignore_features`` before
    they reach a monitor, and a feature listed in both is ignored. Resolve once per model on
    hot paths.

    >>> config = {"models": {"fraud": {"allow_features": ["amount", "age"]}}}
    >>> sorted(allowed_features(config, "fraud"))
    ['age', 'amount']
    >>> allowed_features(config, "churn") is None
    True
    >>> allowed_features({"models": {"m": {"allow_features": "amount"}}}, "m")
    Traceback (most recent call last):
    ...
    ValueError: invalid config at models.m.allow_features: expected a list of feature names, got 'amount'
    """  # noqa: E501 (a doctest's expected output, one line)
    allowed = _allowed(_top(config), model)
    return None if allowed is None else frozenset(allowed)


def model_task(config: Mapping[str, Any] | None, model: str) -> str:
    """``models.<model>.task``: how to turn predictions and labels into the error stream.

    >>> model_task({}, "fraud")
    'auto'
    """
    task: object = _model(_top(config), model).get("task", "auto")
    if not isinstance(task, str) or task not in TASKS:
        raise ValueError(
            f"invalid config at models.{model}.task: "
            f"expected one of {', '.join(TASKS)}, got {task!r}"
        )
    return task


@dataclass(frozen=True)
class ModelRouting:
    """Who answers for a model's drift and how loudly: ``models.<model>.owner``, ``runbook_url``
    and ``priority`` (the severity policy: a detection's severity — low, medium, high — to the
    priority its alerts and incidents carry; a severity not listed carries none).

    >>> model_routing({"models": {"fraud": {"owner": "payments-ml",
    ...     "priority": {"high": "page", "medium": "ticket"}}}}, "fraud").priority_of("high")
    'page'
    >>> model_routing({}, "fraud")
    ModelRouting(owner=None, runbook_url=None, priority=())
    >>> model_routing({"models": {"m": {"runbook_url": "wiki/m"}}}, "m")  # doctest: +ELLIPSIS
    Traceback (most recent call last):
    ...
    ValueError: invalid config at models.m.runbook_url: expected an http(s) URL ..., got 'wiki/m'
    """

    owner: str | None = None
    runbook_url: str | None = None
    priority: tuple[tuple[str, str], ...] = ()  # (severity, priority), in SEVERITIES order

    def priority_of(self, severity: str) -> str | None:
        return dict(self.priority).get(severity)

    @property
    def configured(self) -> bool:
        return bool(self.owner or self.runbook_url or self.priority)


_MAX_ROUTING_NAME = 128
_MAX_URL = 2048


def model_routing(config: Mapping[str, Any] | None, model: str) -> ModelRouting:
    """``models.<model>``'s routing (:class:`ModelRouting`), checked: names of 1..128 printable
    characters, an http(s) URL of at most 2,048."""
    section = _model(_top(config), model)
    where = f"models.{model}"
    owner = section.get("owner")
    if owner is not None and not _routing_name(owner):
        raise ValueError(
            f"invalid config at {where}.owner: expected 1..{_MAX_ROUTING_NAME} printable "
            f"characters, got {owner!r}"
        )
    url = section.get("runbook_url")
    if url is not None and not (
        isinstance(url, str)
        and url.startswith(("https://", "http://"))
        and len(url) <= _MAX_URL
        and url.isprintable()
        and " " not in url
    ):
        raise ValueError(
            f"invalid config at {where}.runbook_url: expected an http(s) URL of at most "
            f"{_MAX_URL} characters, got {url!r}"
        )
    policy = _as_mapping(section.get("priority"), f"{where}.priority")
    _known_keys(policy, SEVERITIES, f"{where}.priority")
    for severity, priority in policy.items():
        if not _routing_name(priority):
            raise ValueError(
                f"invalid config at {where}.priority.{severity}: expected 1..{_MAX_ROUTING_NAME} "
                f"printable characters, got {priority!r}"
            )
    ordered = tuple((s, policy[s]) for s in SEVERITIES if s in policy)
    return ModelRouting(owner, url, ordered)


MAX_SEGMENT_FEATURES = 4


def segment_features(config: Mapping[str, Any] | None, model: str) -> tuple[str, ...]:
    """``models.<model>.segments``: the categorical features (at most 4) whose values the
    incident triage tells apart — which values of, say, ``country`` carry a shift.

    >>> segment_features({"models": {"fraud": {"segments": ["country", "channel"]}}}, "fraud")
    ('country', 'channel')
    >>> segment_features({}, "fraud")
    ()
    >>> segment_features({"models": {"m": {"segments": "country"}}}, "m")  # doctest: +ELLIPSIS
    Traceback (most recent call last):
    ...
    ValueError: invalid config at models.m.segments: expected a list of at most 4 distinct ...
    """
    segments = _model(_top(config), model).get("segments")
    if segments is None:
        return ()
    if not (
        isinstance(segments, list)
        and len(segments) <= MAX_SEGMENT_FEATURES
        and all(_routing_name(name) for name in segments)
        and len(set(segments)) == len(segments)
    ):
        raise ValueError(
            f"invalid config at models.{model}.segments: expected a list of at most "
            f"{MAX_SEGMENT_FEATURES} distinct feature names, got {segments!r}"
        )
    return tuple(segments)


def _routing_name(value: object) -> bool:
    return isinstance(value, str) and 0 < len(value) <= _MAX_ROUTING_NAME and value.isprintable()


def _top(config: Mapping[str, Any] | None) -> Mapping[str, Any]:
    config = _as_mapping(config, "top level")
    _known_keys(config, _TOP_KEYS, "top level")
    return config


def _model(config: Mapping[str, Any], model: str) -> Mapping[str, Any]:
    models = _as_mapping(config.get("models"), "models")
    section = _as_mapping(models.get(model), f"models.{model}")
    _known_keys(section, _MODEL_KEYS, f"models.{model}")
    return section


def _model_defaults(config: Mapping[str, Any], model: str) -> MonitorParams:
    """The built-in defaults, ``defaults`` and ``models.<model>.defaults``, layered.

    Cached by the *content* of the two sections (frozen into hashable tuples, a microsecond or
    two for a usual section), not by the config's identity: a config edited in place, or a new
    dict at a recycled address, cannot be answered with stale parameters.
    """
    section = _model(config, model).get("defaults")
    key = (model, _frozen(config.get("defaults")), _frozen(section))
    if key[1] is _UNHASHABLE or key[2] is _UNHASHABLE:
        return _layer_model_defaults(config.get("defaults"), section, model)
    found = _MODEL_DEFAULTS.get(key)
    if found is None:
        found = _layer_model_defaults(config.get("defaults"), section, model)
        if len(_MODEL_DEFAULTS) >= _MODEL_DEFAULTS_CACHE_SIZE:
            _MODEL_DEFAULTS.clear()
        _MODEL_DEFAULTS[key] = found
    return found


def _layer_model_defaults(defaults: Any, section: Any, model: str) -> MonitorParams:
    params = MonitorParams.from_mapping(defaults, where="defaults")
    return MonitorParams.from_mapping(section, base=params, where=f"models.{model}.defaults")


_MODEL_DEFAULTS: dict[tuple[Any, ...], MonitorParams] = {}
_UNHASHABLE = object()


def _frozen(section: Any) -> Any:
    """A hashable stand-in equal for equal config sections (mappings and lists nested), or
    ``_UNHASHABLE``. Types are kept (``1`` and ``1.0`` and ``True`` differ: the coercion
    treats them differently)."""
    if section is None or isinstance(section, str | int | float | bool):
        return (type(section), section)
    if isinstance(section, Mapping):
        items = tuple((key, _frozen(value)) for key, value in section.items())
        unhashable = any(value is _UNHASHABLE for _, value in items)
        return _UNHASHABLE if unhashable else (dict, items)
    if isinstance(section, list | tuple):
        values = tuple(_frozen(value) for value in section)
        return _UNHASHABLE if any(v is _UNHASHABLE for v in values) else (list, values)
    return _UNHASHABLE


def _feature_params(
    config: Mapping[str, Any], model: str, feature: str, base: MonitorParams
) -> MonitorParams:
    return MonitorParams.from_mapping(
        _features(config, model).get(feature), base=base, where=f"models.{model}.features.{feature}"
    )


def _features(config: Mapping[str, Any], model: str) -> Mapping[str, Any]:
    return _as_mapping(_model(config, model).get("features"), f"models.{model}.features")


def _ignored(config: Mapping[str, Any], model: str) -> tuple[str, ...]:
    ignored = _model(config, model).get("ignore_features") or ()
    if not isinstance(ignored, list | tuple) or not all(isinstance(f, str) for f in ignored):
        raise ValueError(
            f"invalid config at models.{model}.ignore_features: "
            f"expected a list of feature names, got {ignored!r}"
        )
    return tuple(ignored)


def _allowed(config: Mapping[str, Any], model: str) -> tuple[str, ...] | None:
    allowed = _model(config, model).get("allow_features")
    if allowed is None:
        return None
    if not isinstance(allowed, list | tuple) or not all(isinstance(f, str) for f in allowed):
        raise ValueError(
            f"invalid config at models.{model}.allow_features: "
            f"expected a list of feature names, got {allowed!r}"
        )
    return tuple(allowed)


def _known_keys(section: Mapping[str, Any], keys: tuple[str, ...], where: str) -> None:
    unknown = [key for key in section if key not in keys]
    if unknown:
        raise ValueError(
            f"invalid config at {where}: unknown key {unknown[0]!r}; "
            f"valid keys are: {', '.join(keys)}"
        )
