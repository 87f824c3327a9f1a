"""Window tests: a series' recent values, in tumbling count-based windows, against a reference.

After a reference period of ``reference_events`` values, the series is cut into windows of
``events`` events (values and missing values). When a window closes, each test compares it with
the reference and the window starts afresh. A test *drifts* when both gates pass — its p-value
is below ``alpha`` and its effect size reaches its floor — and is *quiet* when its p-value is at
least ``alpha`` or its effect is below half the floor (the hysteresis band of
:mod:`detectors.lifecycle`).

=====================  ==========================================  =========================
test                   p-value                                     effect (floor)
=====================  ==========================================  =========================
``ks`` (numeric)       two-sample Kolmogorov-Smirnov               Wasserstein-1 in reference
                                                                   std (``wasserstein_floor``)
``chi2``               chi-square on the bins: ``bins``            PSI (``psi_floor``)
                       equiprobable bins of the warm-up (numeric),
                       the reference's categories plus ``(new)``
                       (categorical); bins expected to hold fewer
                       than 5 values are pooled into ``(other)``
``missing``            Fisher's exact test of the missing rates    Cohen's h (``missing_floor``)
=====================  ==========================================  =========================

The distribution tests need at least ``MIN_VALUES`` values in the window; a window of mostly
missing values runs only the missing-rate test. See :mod:`detectors.distances` for the measures
and their error bounds.

Memory per series: a numeric series holds the reference's KLL sketch (``kll_k``: ~4 KB at
k = 200), the window's values in a sketch that keeps them all (k = max(``kll_k``, ``events``):
8 bytes per event, 4 KB at 500), two vectors of ``bins`` counts and two sets of moments; a
categorical series two :class:`~detectors.sketches.CategoryCounts` of at most ``max_categories``
entries. The window being exact, the KS and Wasserstein errors come from the reference sketch
alone, and the tests of a window replayed after a restore give the same numbers.
"""

from __future__ import annotations

import abc
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from functools import cache, cached_property, partial
from itertools import pairwise
from types import ModuleType
from typing import Annotated, Any, ClassVar, Generic, Self, TypeVar

import msgspec
import numpy as np
from numpy.typing import NDArray

from streamdrift.detectors import kernels
from streamdrift.detectors.config import WindowParams
from streamdrift.detectors.distances import (
    _window_kernels,
    cdf_distances_of,
    chi_square_p_value,
    chi_square_statistic,
    cohens_h,
    hellinger,
    jensen_shannon,
    ks_p_value,
    ks_significant,
    missing_rate_p_value,
    missing_rate_z,
    pool_small,
    psi,
    psi_terms,
)
from streamdrift.detectors.sketches import CategoryCounts, CategoryCountsState, QuantileSketch
from streamdrift.detectors.stats import LARGE, RunningStats, RunningStatsState, saturate

__all__ = [
    "MIN_VALUES",
    "CategoricalPeriod",
    "CategoricalWindows",
    "ChiSquareTest",
    "Evaluation",
    "Histogram",
    "KolmogorovSmirnovTest",
    "MissingRateTest",
    "NumericPeriod",
    "NumericWindows",
    "WindowTest",
    "WindowTestResult",
    "Windows",
    "distribution",
    "severity",
]

MIN_VALUES = 30
TOP_CONTRIBUTORS = 5
SUMMARY_QUANTILES = {"p05": 0.05, "p50": 0.5, "p95": 0.95}
NEW, OTHER = "(new)", "(other)"
# Cohen's conventional cut points for a medium and a large standardised effect (d and h).
SEVERITY_CUTS = ((0.8, "high"), (0.5, "medium"))
# PSI: above 0.25 is the usual "significant change"; twice that is high.
PSI_SEVERITY_CUTS = ((0.5, "high"), (0.25, "medium"))

_Count = Annotated[int, msgspec.Meta(ge=0)]


def severity(effect_size: float, cuts: tuple[tuple[float, str], ...] = SEVERITY_CUTS) -> str:
    """``low`` below 0.5, ``medium`` below 0.8, else ``high`` (Cohen's d conventions).

    >>> severity(0.3), severity(0.5), severity(1.2)
    ('low', 'medium', 'high')
    """
    return next((label for cut, label in cuts if effect_size >= cut), "low")


def distribution(
    stats: RunningStats, sketch: QuantileSketch, mean_key: str, ranks: dict[str, float]
) -> dict[str, Any]:
    """JSON-able count, mean, std, min, max and quantiles of a numeric summary."""
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


@dataclass(frozen=True)
class Histogram:
    """Counts of the reference and of the window over the same labelled bins."""

    labels: list[str]
    reference: NDArray[np.int64]
    current: NDArray[np.int64]

    @cached_property
    def psi(self) -> float:
        """:func:`~detectors.distances.psi` of the two count vectors (the chi-square test's
        effect, the distances' and the series' score: computed once)."""
        return psi(self.reference, self.current)

    def pooled(self) -> Histogram:
        """Bins expected to hold fewer than 5 values merged into one ``(other)`` bin."""
        small = pool_small(self.reference, self.current)
        if np.count_nonzero(small) < 2:
            return self
        labels = [
            label for label, pooled in zip(self.labels, small.tolist(), strict=True) if not pooled
        ]
        if (
            kernels.compiled()
            and self.reference.dtype == np.int64
            and self.current.dtype == np.int64
            and self.reference.ndim == 1
            and len(self.reference) == len(self.current) == len(small)
        ):
            reference, current = _window_kernels().pool_counts(
                *map(np.ascontiguousarray, (self.reference, self.current, small))
            )
            return Histogram([*labels, OTHER], reference, current)
        keep = ~small
        return Histogram(
            [*labels, OTHER],
            np.append(self.reference[keep], self.reference[small].sum()),
            np.append(self.current[keep], self.current[small].sum()),
        )

    def top_contributors(self) -> list[dict[str, Any]]:
        """The bins with the largest PSI terms, largest first."""
        terms = psi_terms(self.reference, self.current)
        ref_shares = self.reference / max(self.reference.sum(), 1)
        cur_shares = self.current / max(self.current.sum(), 1)
        order = np.argsort(-terms, kind="stable")[:TOP_CONTRIBUTORS]
        return [
            {
                "bin": self.labels[i],
                "reference": float(ref_shares[i]),
                "current": float(cur_shares[i]),
                "psi": float(terms[i]),
            }
            for i in order
        ]


class _Period(abc.ABC):
    """Summary of the values and missing values of the reference period or of one window."""

    def __init__(self) -> None:
        self.missing = 0

    @property
    @abc.abstractmethod
    def count(self) -> int:
        """Values summarised, missing ones not counted."""

    @property
    def events(self) -> int:
        return self.count + self.missing

    @property
    def missing_rate(self) -> float:
        return self.missing / self.events if self.events else 0.0

    def add(self, values: Any, missing: NDArray[np.bool_]) -> None:
        """Add a stretch of events: ``values[i]`` is missing where ``missing[i]``."""
        self.missing += int(missing.sum())
        self._add_present(values, missing)

    @abc.abstractmethod
    def _add_present(self, values: Any, missing: NDArray[np.bool_]) -> None: ...

    @abc.abstractmethod
    def histogram(self, current: Self) -> Histogram:
        """This period (the reference) and ``current`` over the same bins, unpooled."""

    @abc.abstractmethod
    def summary(self) -> dict[str, Any]: ...

    @abc.abstractmethod
    def to_state(self) -> msgspec.Struct: ...


class NumericPeriodState(msgspec.Struct, frozen=True):
    stats: RunningStatsState
    sketch: bytes
    bins: list[_Count]
    missing: _Count


class NumericPeriod(_Period):
    """Moments, a quantile sketch and bin counts (bins right-closed at ``cuts``)."""

    def __init__(self, cuts: NDArray[np.float64], k: int) -> None:
        super().__init__()
        self.cuts = cuts
        self.stats = RunningStats()
        self.sketch = QuantileSketch(k)
        self.bins = np.zeros(len(cuts) + 1, dtype=np.int64)
        self._labels: tuple[NDArray[np.float64], list[str]] | None = None  # the bins' labels

    @property
    def count(self) -> int:
        return self.stats.count

    @property
    def scale(self) -> float:
        """The standard deviation (1.0 for a constant period: its own units)."""
        return self.stats.std or 1.0

    def add(self, values: NDArray[np.float64], missing: NDArray[np.bool_]) -> None:
        if (
            kernels.compiled()
            and self._binnable
            and values.dtype == np.float64
            and missing.dtype == np.bool_
            and values.ndim == missing.ndim == 1
        ):
            # One pass over the stretch: the values, their moments and bins.
            present, moments = _fused().fill_period(values, missing, self.cuts, self.bins, LARGE)
            self.missing += len(values) - len(present)
            if len(present):
                self.stats.update_summarised(present, moments)
                self.sketch.update_many(present)
            return
        super().add(values, missing)

    @property
    def _binnable(self) -> bool:
        """Whether the bins can be counted in place by a compiled kernel."""
        return (
            len(self.bins) == len(self.cuts) + 1
            and self.bins.dtype == np.int64
            and self.bins.flags.c_contiguous  # counted in place
            and self.bins.flags.writeable
            and self.cuts.dtype == np.float64
            and self.cuts.flags.c_contiguous
        )

    def _add_present(self, values: NDArray[np.float64], missing: NDArray[np.bool_]) -> None:
        present = values[~missing]
        if not len(present):
            return
        self.stats.update_many(present)
        self.sketch.update_many(present)
        if (
            kernels.compiled()
            and len(self.bins) == len(self.cuts) + 1
            and self.bins.dtype == np.int64
            and self.bins.flags.c_contiguous  # counted in place
            and self.bins.flags.writeable
            and present.dtype == np.float64
            and self.cuts.dtype == np.float64
        ):
            _window_kernels().add_to_bins(self.bins, np.ascontiguousarray(self.cuts), present)
        else:
            self.bins += np.bincount(np.searchsorted(self.cuts, present), minlength=len(self.bins))

    def histogram(self, current: NumericPeriod) -> Histogram:
        if self._labels is None or self._labels[0] is not self.cuts:  # the same for every window
            edges = [None, *self.cuts.tolist(), None]
            labels = [
                f"({_edge(low, '-inf')}, {_edge(high, 'inf')}]" for low, high in pairwise(edges)
            ]
            self._labels = (self.cuts, labels)
        return Histogram(list(self._labels[1]), self.bins, current.bins)

    def summary(self) -> dict[str, Any]:
        described = distribution(self.stats, self.sketch, "mean", SUMMARY_QUANTILES)
        return {**described, "missing_rate": self.missing_rate}

    def to_state(self) -> NumericPeriodState:
        return NumericPeriodState(
            self.stats.to_state(), self.sketch.to_bytes(), self.bins.tolist(), self.missing
        )

    @classmethod
    def of_summaries(
        cls, cuts: NDArray[np.float64], stats: RunningStats, sketch: QuantileSketch, missing: int
    ) -> NumericPeriod:
        """A period known only by its summaries (a stored baseline): the bin counts are the
        sketch's weights per bin, exact while the sketch is."""
        period = cls(cuts, sketch.k)
        period.stats, period.sketch, period.missing = stats, sketch, missing
        values, weights = sketch.items(keep=True)  # a seeded reference: kept for the KS test
        binned = np.bincount(np.searchsorted(cuts, values), weights, minlength=len(cuts) + 1)
        period.bins = np.rint(binned).astype(np.int64)
        return period

    @classmethod
    def from_state(cls, state: NumericPeriodState, cuts: NDArray[np.float64]) -> NumericPeriod:
        if len(state.bins) != len(cuts) + 1:
            raise ValueError(f"{len(state.bins)} bin counts for {len(cuts) + 1} bins")
        sketch = QuantileSketch.from_bytes(state.sketch)
        period = cls(cuts, sketch.k)
        period.sketch = sketch
        period.stats = RunningStats.from_state(state.stats)
        period.bins = np.array(state.bins, dtype=np.int64)
        period.missing = state.missing
        return period


class CategoricalPeriodState(msgspec.Struct, frozen=True):
    counts: CategoryCountsState
    missing: _Count


class CategoricalPeriod(_Period):
    """Category counts."""

    def __init__(self, max_categories: int) -> None:
        super().__init__()
        self.counts = CategoryCounts(max_categories)
        # The histogram's side of this period: (counts, total) it was made of, the categories
        # by count, their counts (see histogram).
        self._known: tuple[dict[str, int], int, list[str], NDArray[np.int64]] | None = None

    @property
    def count(self) -> int:
        return self.counts.total

    def _add_present(self, values: Sequence[str | None], missing: NDArray[np.bool_]) -> None:
        present = [
            value for value, absent in zip(values, missing.tolist(), strict=True) if not absent
        ]
        # The values not marked missing are the strings (the monitor marks the Nones).
        self.counts.update_many(present)  # type: ignore[arg-type]

    def histogram(self, current: CategoricalPeriod) -> Histogram:
        # This period's side (a reference's, which no longer changes) is kept until its counts
        # change: any count added raises the total.
        kept = self._known
        if kept is None or kept[0] is not self.counts.counts or kept[1] != self.counts.total:
            known = [value for value, _ in self.counts.top(len(self.counts.counts))]
            counted = np.array([self.counts.counts[value] for value in known] + [0], np.int64)
            kept = self._known = (self.counts.counts, self.counts.total, known, counted)
        known, counted = kept[2], kept[3]
        counts = current.counts.counts
        seen = [counts.get(value, 0) for value in known]
        return Histogram(
            [*known, NEW],
            counted.copy(),
            np.array([*seen, current.count - sum(seen)], dtype=np.int64),
        )

    def summary(self) -> dict[str, Any]:
        top = [
            {"value": value, "share": n / self.count}
            for value, n in self.counts.top(TOP_CONTRIBUTORS)
        ]
        return {"count": self.count, "missing_rate": self.missing_rate, "top": top}

    def to_state(self) -> CategoricalPeriodState:
        return CategoricalPeriodState(self.counts.to_state(), self.missing)

    @classmethod
    def from_state(cls, state: CategoricalPeriodState) -> CategoricalPeriod:
        period = cls(state.counts.max_categories)
        period.counts = CategoryCounts.from_state(state.counts)
        period.missing = state.missing
        return period


P = TypeVar("P", bound=_Period)


@dataclass(frozen=True)
class WindowTestResult:
    """One test of one window: its statistic, p-value and effect size against both gates.

    The p-value is computed on first use (``p_of``): an exact KS or Fisher p-value costs about
    0.25 ms and the gates rarely need it — the effect size settles most windows, and a test
    that knows its critical values compares its statistic instead (``below``).
    """

    test: str
    statistic: float
    p_of: Callable[[], float] = field(repr=False, compare=False)
    alpha: float
    effect: str
    effect_size: float
    floor: float
    severity: str
    below: Callable[[float], bool] | None = field(default=None, repr=False, compare=False)

    @cached_property
    def p_value(self) -> float:
        return self.p_of()

    def p_below(self, level: float) -> bool:
        return self.below(level) if self.below is not None else self.p_value < level

    @property
    def drifted(self) -> bool:
        return self.effect_size >= self.floor and self.p_below(self.alpha)

    @property
    def quiet(self) -> bool:
        return self.effect_size < self.floor / 2 or not self.p_below(self.alpha)

    def settled(self, resolve_alpha: float) -> bool:
        """Quiet at the looser ``resolve_alpha`` too (the lifecycle's hysteresis band)."""
        return self.effect_size < self.floor / 2 or not self.p_below(max(self.alpha, resolve_alpha))

    def describe(self) -> dict[str, Any]:
        return {
            "statistic": self.statistic,
            "p_value": self.p_value,
            "effect": self.effect,
            "effect_size": self.effect_size,
            "floor": self.floor,
            "drifted": self.drifted,
        }


@dataclass(frozen=True)
class _Pair(Generic[P]):
    reference: P
    current: P
    histogram: Histogram  # pooled


class WindowTest(abc.ABC, Generic[P]):
    """A two-sample test of a window against the reference, with an effect size and its floor."""

    name: ClassVar[str]
    effect: ClassVar[str]
    floor_param: ClassVar[str]  # the WindowParams field holding the floor
    severity_cuts: ClassVar[tuple[tuple[float, str], ...]] = SEVERITY_CUTS

    def __init__(self, alpha: float, params: WindowParams) -> None:
        self.alpha = alpha
        self.floor: float = getattr(params, self.floor_param)

    def run(self, pair: _Pair[P]) -> WindowTestResult | None:
        """The result, or None if the window has too few values for this test."""
        measured = self._measure(pair)
        if measured is None:
            return None
        statistic, p_of, effect = measured
        return WindowTestResult(
            self.name,
            statistic,
            p_of,
            self.alpha,
            self.effect,
            effect,
            self.floor,
            severity(effect, self.severity_cuts),
            self._below(pair, statistic),
        )

    @abc.abstractmethod
    def _measure(self, pair: _Pair[P]) -> tuple[float, Callable[[], float], float] | None:
        """(statistic, its p-value's function, effect size), or None if not applicable."""

    def _below(self, pair: _Pair[P], statistic: float) -> Callable[[float], bool] | None:
        """Whether the p-value is below a level, if the test can tell without computing it."""
        return None


class KolmogorovSmirnovTest(WindowTest[NumericPeriod]):
    """KS statistic and p-value; effect: Wasserstein-1 in reference standard deviations."""

    name = "ks"
    effect = "wasserstein_sigma"
    floor_param = "wasserstein_floor"

    def _measure(
        self, pair: _Pair[NumericPeriod]
    ) -> tuple[float, Callable[[], float], float] | None:
        reference, current = pair.reference, pair.current
        if current.count < MIN_VALUES:
            return None
        # The reference's items are kept: it no longer changes once windows are tested.
        statistic, distance = cdf_distances_of(
            reference.sketch.items(keep=True), current.sketch.cdf_items()
        )
        # In reference sigma: saturated, as a window of extremes against a tiny spread can
        # exceed the float range.
        effect = saturate(distance / reference.scale)
        return statistic, partial(ks_p_value, statistic, reference.count, current.count), effect

    def _below(self, pair: _Pair[NumericPeriod], statistic: float) -> Callable[[float], bool]:
        return partial(ks_significant, statistic, pair.reference.count, pair.current.count)


class ChiSquareTest(WindowTest[Any]):
    """Chi-square test of homogeneity of the (pooled) bin counts; effect: PSI."""

    name = "chi2"
    effect = "psi"
    floor_param = "psi_floor"
    severity_cuts = PSI_SEVERITY_CUTS

    def _measure(self, pair: _Pair[Any]) -> tuple[float, Callable[[], float], float] | None:
        if pair.current.count < MIN_VALUES:
            return None
        histogram = pair.histogram
        statistic, dof = chi_square_statistic(histogram.reference, histogram.current)
        return statistic, partial(chi_square_p_value, statistic, dof), histogram.psi


class MissingRateTest(WindowTest[Any]):
    """Fisher's exact test of the missing rates (statistic: the two-proportion z);
    effect: Cohen's h."""

    name = "missing"
    effect = "cohens_h"
    floor_param = "missing_floor"

    def _measure(self, pair: _Pair[Any]) -> tuple[float, Callable[[], float], float]:
        table = (
            pair.reference.missing,
            pair.reference.events,
            pair.current.missing,
            pair.current.events,
        )
        effect = cohens_h(pair.reference.missing_rate, pair.current.missing_rate)
        return missing_rate_z(*table), partial(missing_rate_p_value, *table), effect


@dataclass(frozen=True)
class Evaluation:
    """The tests of one closed window.

    index
        Index, in the batch passed to :meth:`Windows.update`, of the event that closed the
        window; -1 when :meth:`Windows.update_missing` closed it.
    evidence_from, position
        Tags of the window's first and last events (None if none was tagged).
    reference, current
        Summaries of the reference period and of the window.
    details
        JSON-able: alpha, every test's numbers, distances, top contributing bins, and ``extra``.

    The summaries and details are built on first use (``describe``): only the windows that
    open or resolve an episode are ever described.
    """

    index: int
    evidence_from: int | None
    position: int | None
    results: tuple[WindowTestResult, ...]
    describe: Callable[[], tuple[dict[str, Any], dict[str, Any], dict[str, Any]]] = field(
        repr=False, compare=False
    )
    extra: dict[str, Any] = field(default_factory=dict, compare=False)

    @cached_property
    def _described(self) -> tuple[dict[str, Any], dict[str, Any], dict[str, Any]]:
        return self.describe()

    @property
    def reference(self) -> dict[str, Any]:
        return self._described[0]

    @property
    def current(self) -> dict[str, Any]:
        return self._described[1]

    @property
    def details(self) -> dict[str, Any]:
        return {**self._described[2], **self.extra}

    @property
    def drifted(self) -> bool:
        return any(result.drifted for result in self.results)

    @property
    def quiet(self) -> bool:
        return all(result.quiet for result in self.results)

    def strongest(self) -> WindowTestResult:
        """The drifted test with the smallest p-value (of all tests if none drifted)."""
        candidates = [r for r in self.results if r.drifted] or list(self.results)
        return min(candidates, key=lambda result: result.p_value)


class _Progress(msgspec.Struct, frozen=True):
    evaluated: _Count
    drifted: _Count
    window_from: int | None
    last_position: int | None
    score: float
    seeded: bool = False  # the reference came from a stored baseline
    max_time: float | None = None  # event-time windows: the newest trusted event time
    late: _Count = 0  # event-time windows: events too late for their window
    recent: list[float] = []  # event-time windows: the last watermark_events event times
    recent_reference: _Count = 0  # how many of them came from the reference period
    early: _Count = 0  # event-time windows: events too far ahead to be trusted


class Windows(abc.ABC, Generic[P]):
    """The reference period, the open window and the tests of one series."""

    test_types: ClassVar[tuple[type[WindowTest[Any]], ...]]

    def __init__(self, params: WindowParams, alpha: float) -> None:
        self.params = params
        self.alpha = alpha
        self.tests = [test(alpha, params) for test in self.test_types]
        self.reference: P = self._period(reference=True)
        self.current: P = self._period()
        self.evaluated = 0  # windows evaluated
        self.drifted = 0  # windows in which a test drifted
        self.window_from: int | None = None  # tag of the open window's first event
        self.last_position: int | None = None
        self.score = 0.0  # PSI of the last window
        self.seeded = False
        # Event-time windows (params.seconds > 0): the open ones by index (start = index *
        # seconds) with the tags of their first and last events, the newest trusted event time
        # (the watermark is it minus the allowed lateness), the events that came too late, the
        # last watermark_events event times (the first recent_reference of them from the
        # reference period: they corroborate, but do not move the watermark), and the events
        # too far ahead to be trusted (see _fronts).
        self.open: dict[int, tuple[P, int, int]] = {}
        self.max_time = -math.inf
        self.late = 0
        self.recent: list[float] = []
        self.recent_reference = 0
        self.early = 0

    @property
    def ready(self) -> bool:
        """Whether the reference is complete (windows are being tested)."""
        return self.seeded or self.reference.count >= self.params.reference_events

    def seed(self, reference: P) -> None:
        """Take ``reference`` (a stored baseline) as the complete reference; the open window
        starts afresh."""
        self.reference = reference
        self.current = self._period()
        self.window_from = None
        self.seeded = True

    @abc.abstractmethod
    def _period(self, reference: bool = False) -> P: ...

    @property
    def by_time(self) -> bool:
        return self.params.seconds > 0

    def update(
        self,
        values: Any,
        missing: NDArray[np.bool_],
        positions: NDArray[np.integer[Any]],
        times: NDArray[np.float64] | None = None,
    ) -> list[Evaluation]:
        """Add events in stream order (``values[i]`` is missing where ``missing[i]``, ``times``
        their event times in epoch seconds, needed by event-time windows); return the
        evaluations of the windows they closed."""
        if self.by_time:
            if times is None:
                raise ValueError("event-time windows need the events' times")
            return self._update_by_time(
                values, missing, positions, np.asarray(times, dtype=np.float64)
            )
        evaluations = []
        start, length, size = 0, len(missing), self.params.events
        while start < length:
            ready = self.ready  # the reference's stretch first; the window stays empty until then
            period = self.current if ready else self.reference
            if ready:
                filled = period.events
                stop = min(length, start + size - filled)  # what _fill gives once ready
                if filled == 0:
                    self.window_from = int(positions[start])
            else:
                stop = self._fill(start, missing)
            period.add(values[start:stop], missing[start:stop])
            self.last_position = int(positions[stop - 1])
            if ready and period.events >= size:
                evaluations.append(self._close(stop - 1))
            start = stop
        return evaluations

    def _update_by_time(
        self,
        values: Any,
        missing: NDArray[np.bool_],
        positions: NDArray[np.integer[Any]],
        times: NDArray[np.float64],
    ) -> list[Evaluation]:
        """Event-time tumbling windows of ``seconds``, closed by the watermark (newest event
        time minus ``allowed_lateness_s``). An event is late when the watermark before it had
        passed its window's end: that window was closed, so the event is counted in ``late``
        (the detectors and the counts still see it) but tested in no window. Judged event by
        event, so the windows do not depend on how the stream is cut into batches."""
        start = 0
        if not self.ready and len(missing):  # the reference: the first reference_events values
            start = self._fill(0, missing)
            self.reference.add(values[:start], missing[:start])
            self.last_position = int(positions[start - 1])
            # Their times corroborate the first events after them (see _fronts).
            self.recent = [*self.recent, *times[:start].tolist()][-self.params.watermark_events :]
            self.recent_reference = len(self.recent)
        if start == len(missing):
            return []
        size, lateness = self.params.seconds, self.params.allowed_lateness_s
        t = times[start:]
        running, early = self._fronts(t)  # the watermark's front before each event, and after
        with np.errstate(over="ignore"):  # any finite time: an index beyond the float range
            index = np.floor(t / size)
            late = (index + 1) * size + lateness <= running[:-1]
        # Window indices beyond +-2**62 (event times of ~1e19 s and more) share one window.
        window = np.clip(index, -(2**62), 2**62).astype(np.int64)
        self.late += int(late.sum())
        self.early += int(early.sum())
        taken = ~late & ~early
        for w in np.unique(window[taken]).tolist():
            chosen = start + np.flatnonzero((window == w) & taken)
            period, first, _ = self.open.get(w) or (self._period(), int(positions[chosen[0]]), 0)
            period.add(_take(values, chosen), missing[chosen])
            self.open[w] = (period, first, int(positions[chosen[-1]]))
        self.max_time = float(running[-1])
        evaluations = []
        for w in sorted(self.open):
            closes_at = (w + 1) * size + lateness
            if closes_at > self.max_time:
                break
            self.current, self.window_from, self.last_position = self.open.pop(w)
            # The event that moved the watermark past the window's end closed it.
            evaluation = self._close(start + int(np.searchsorted(running[1:], closes_at)))
            evaluation.extra.update(
                window_start=w * size,
                window_end=(w + 1) * size,
                late_events=self.late,
                early_events=self.early,
            )
            evaluations.append(evaluation)
        return evaluations

    @property
    def horizon(self) -> float:
        """How far ahead of the corroborated event times an event is still trusted (s)."""
        return self.params.watermark_horizon * self.params.seconds + self.params.allowed_lateness_s

    def _fronts(self, t: NDArray[np.float64]) -> tuple[NDArray[np.float64], NDArray[np.bool_]]:
        """The watermark's front (newest trusted event time) before each of the event times
        ``t`` and after the last, and which of them are early; updates the recent times.

        With ``k = watermark_events``, an event is trusted when its time is at most
        :attr:`horizon` ahead of the *floor*: the front or, if later, the oldest of the last k
        event times (its own included; the floor is the front alone until k times are known).
        The front then moves to the newest of the last k times that is trusted by this floor,
        so a time alone far ahead waits until k events (counting itself) come within the
        horizon of it, and k - 1 outliers in a row never move it. Times of the reference
        period corroborate but are not candidates: the front starts with the first event after
        it, as it always did.
        """
        k = self.params.watermark_events
        horizon = self.horizon
        front = self.max_time
        running = np.maximum.accumulate(np.concatenate(([front], t)))
        chain = np.concatenate((self.recent, t))
        drop = max(len(chain) - k, 0)
        # Fast path: when every event is trusted by the floor under the plain running maximum,
        # and no earlier event is held back (ahead of the front), that maximum is the front
        # (each event is then its own candidate, and the largest), as before.
        held = max(self.recent[self.recent_reference :], default=-math.inf) > front
        oldest = np.full(len(t), -math.inf)
        if len(chain) >= k:
            window_mins = np.lib.stride_tricks.sliding_window_view(chain, k).min(axis=1)
            first = max(k - 1 - len(self.recent), 0)  # the first event with k times known
            oldest[first:] = window_mins[len(self.recent) + first - k + 1 :]
        if k == 1 or (not held and bool(np.all(t <= np.maximum(running[:-1], oldest) + horizon))):
            self.recent = chain[len(chain) - min(len(chain), k) :].tolist()
            self.recent_reference = max(self.recent_reference - drop, 0)
            return running, np.zeros(len(t), dtype=bool)
        recent, reference = list(self.recent), self.recent_reference
        early = np.zeros(len(t), dtype=bool)
        for i, time in enumerate(t.tolist()):
            recent.append(time)
            if len(recent) > k:
                del recent[0]
                reference = max(reference - 1, 0)
            limit = (max(front, min(recent)) if len(recent) == k else front) + horizon
            early[i] = time > limit
            for candidate in recent[reference:]:
                if front < candidate <= limit:
                    front = candidate
            running[i + 1] = front
        self.recent, self.recent_reference = recent, reference
        return running, early

    def update_missing(self, n: int, position: int | None = None) -> list[Evaluation]:
        """Add ``n`` missing events at the current point of the stream (by event time: to the
        newest open window)."""
        if position is not None:
            self.last_position = position
        if not self.ready:
            self.reference.missing += n
            return []
        if self.by_time:
            if self.open:
                self.open[max(self.open)][0].missing += n
            return []
        evaluations = []
        while n:
            taken = min(n, self.params.events - self.current.events)
            self.current.missing += taken
            n -= taken
            if self.current.events >= self.params.events:
                evaluations.append(self._close(-1))
        return evaluations

    def _fill(self, start: int, missing: NDArray[np.bool_]) -> int:
        """End of the stretch from ``start`` that completes the reference or the window."""
        if self.ready:
            return min(len(missing), start + self.params.events - self.current.events)
        needed = self.params.reference_events - self.reference.count
        values_seen = np.cumsum(~missing[start:])
        return start + min(int(np.searchsorted(values_seen, needed)) + 1, len(values_seen))

    def _close(self, index: int) -> Evaluation:
        histogram = self.reference.histogram(self.current).pooled()
        pair = _Pair(self.reference, self.current, histogram)
        results = tuple(r for r in (test.run(pair) for test in self.tests) if r is not None)

        def describe() -> tuple[dict[str, Any], dict[str, Any], dict[str, Any]]:
            counted = pair.current.count > 0
            return (
                pair.reference.summary(),
                pair.current.summary(),
                {
                    "alpha": self.alpha,
                    "window_events": self.params.events,
                    "tests": {result.test: result.describe() for result in results},
                    "distances": self._distances(pair, results) if counted else {},
                    "top_contributors": histogram.top_contributors() if counted else [],
                },
            )

        evaluation = Evaluation(index, self.window_from, self.last_position, results, describe)
        self.evaluated += 1
        self.drifted += evaluation.drifted
        self.score = histogram.psi if self.current.count else 0.0
        self.current = self._period()
        self.window_from = None
        return evaluation

    def _distances(self, pair: _Pair[P], results: tuple[WindowTestResult, ...]) -> dict[str, float]:
        histogram = pair.histogram
        return {
            "psi": histogram.psi,
            "jensen_shannon": jensen_shannon(histogram.reference, histogram.current),
            "hellinger": hellinger(histogram.reference, histogram.current),
        }

    @abc.abstractmethod
    def to_state(self) -> msgspec.Struct: ...

    def _progress(self) -> _Progress:
        return _Progress(
            self.evaluated,
            self.drifted,
            self.window_from,
            self.last_position,
            self.score,
            self.seeded,
            None if self.max_time == -math.inf else self.max_time,
            self.late,
            list(self.recent),
            self.recent_reference,
            self.early,
        )

    def _open_states(self) -> list[tuple[int, int, int, Any]]:
        return [
            (w, first, last, period.to_state())
            for w, (period, first, last) in sorted(self.open.items())
        ]

    def _restore_progress(self, progress: _Progress) -> None:
        self.evaluated, self.drifted = progress.evaluated, progress.drifted
        self.window_from, self.last_position = progress.window_from, progress.last_position
        self.score, self.seeded = progress.score, progress.seeded
        self.max_time = -math.inf if progress.max_time is None else progress.max_time
        self.late, self.early = progress.late, progress.early
        # States of version 2 have no recent times: the front alone is the floor until k come.
        self.recent = list(progress.recent)[-self.params.watermark_events :]
        if not all(
            math.isfinite(time)
            for time in [*self.recent, self.max_time if progress.max_time is not None else 0.0]
        ):
            raise ValueError("event times of the watermark are not finite")
        self.recent_reference = min(progress.recent_reference, len(self.recent))


class NumericWindowsState(msgspec.Struct, frozen=True):
    cuts: list[float]
    reference: NumericPeriodState
    current: NumericPeriodState
    progress: _Progress
    open: list[tuple[int, int, int, NumericPeriodState]] = []  # event-time windows


class NumericWindows(Windows[NumericPeriod]):
    """Window tests of a numeric series, binned at ``cuts`` (see :func:`cuts_of`).

    >>> import numpy as np
    >>> from streamdrift.detectors.config import WindowParams
    >>> rng = np.random.default_rng(1)
    >>> cuts = NumericWindows.cuts_of(rng.normal(size=500), bins=10)
    >>> windows = NumericWindows(WindowParams(events=500, reference_events=2000), 1e-6, cuts)
    >>> values = np.concatenate([rng.normal(size=3000), rng.normal(0, 2, 500)])  # wider
    >>> found = windows.update(values, np.zeros(len(values), bool), np.arange(len(values)))
    >>> [(e.position, e.drifted) for e in found]
    [(2499, False), (2999, False), (3499, True)]
    >>> sorted(result.test for result in found[-1].results if result.drifted)
    ['chi2', 'ks']
    """

    test_types = (KolmogorovSmirnovTest, ChiSquareTest, MissingRateTest)

    def __init__(
        self, params: WindowParams, alpha: float, cuts: NDArray[np.float64], k: int = 200
    ) -> None:
        self.cuts = cuts
        self.k = k
        super().__init__(params, alpha)

    @staticmethod
    def cuts_of(values: NDArray[np.float64], bins: int) -> NDArray[np.float64]:
        """Distinct inner edges of ``bins`` equiprobable bins of ``values``."""
        return np.unique(np.quantile(values, np.arange(1, bins) / bins, method="inverted_cdf"))

    @staticmethod
    def cuts_of_sketch(sketch: QuantileSketch, bins: int) -> NDArray[np.float64]:
        """Distinct inner edges of ``bins`` equiprobable bins of a sketched distribution."""
        return np.unique(sketch.quantiles((np.arange(1, bins) / bins).tolist()))

    def _period(self, reference: bool = False) -> NumericPeriod:
        # The window's sketch holds all its values: exact and reproducible on a replay.
        return NumericPeriod(self.cuts, self.k if reference else max(self.k, self.params.events))

    def _distances(
        self, pair: _Pair[NumericPeriod], results: tuple[WindowTestResult, ...]
    ) -> dict[str, float]:
        measured = super()._distances(pair, results)
        for result in results:
            if result.test == KolmogorovSmirnovTest.name:
                measured["wasserstein"] = saturate(result.effect_size * pair.reference.scale)
        return measured

    def to_state(self) -> NumericWindowsState:
        return NumericWindowsState(
            self.cuts.tolist(),
            self.reference.to_state(),
            self.current.to_state(),
            self._progress(),
            self._open_states(),
        )

    @classmethod
    def from_state(
        cls, state: NumericWindowsState, params: WindowParams, alpha: float, k: int
    ) -> NumericWindows:
        cuts = np.array(state.cuts, dtype=np.float64)
        if not len(cuts) or np.any(cuts[1:] <= cuts[:-1]) or not np.isfinite(cuts).all():
            raise ValueError("bin edges are not increasing")
        windows = cls(params, alpha, cuts, k)
        windows.reference = NumericPeriod.from_state(state.reference, cuts)
        windows.current = NumericPeriod.from_state(state.current, cuts)
        windows.open = {
            w: (NumericPeriod.from_state(period, cuts), first, last)
            for w, first, last, period in state.open
        }
        windows._restore_progress(state.progress)
        return windows


class CategoricalWindowsState(msgspec.Struct, frozen=True):
    reference: CategoricalPeriodState
    current: CategoricalPeriodState
    progress: _Progress
    open: list[tuple[int, int, int, CategoricalPeriodState]] = []  # event-time windows


class CategoricalWindows(Windows[CategoricalPeriod]):
    """Window tests of a categorical series.

    >>> import numpy as np
    >>> from streamdrift.detectors.config import WindowParams
    >>> windows = CategoricalWindows(WindowParams(events=500, reference_events=1000), 1e-6)
    >>> rng = np.random.default_rng(2)
    >>> values = list(rng.choice(["card", "cash"], 2000, p=[0.7, 0.3]))
    >>> values += list(rng.choice(["card", "cash", "crypto"], 500, p=[0.5, 0.3, 0.2]))
    >>> found = windows.update(values, np.zeros(len(values), bool), np.arange(len(values)))
    >>> [(e.position, e.drifted) for e in found]
    [(1499, False), (1999, False), (2499, True)]
    >>> found[-1].details["top_contributors"][0]["bin"]
    '(new)'
    """

    test_types = (ChiSquareTest, MissingRateTest)

    def __init__(self, params: WindowParams, alpha: float, max_categories: int = 200) -> None:
        self.max_categories = max_categories
        super().__init__(params, alpha)

    def _period(self, reference: bool = False) -> CategoricalPeriod:
        return CategoricalPeriod(self.max_categories)

    def _distances(
        self, pair: _Pair[CategoricalPeriod], results: tuple[WindowTestResult, ...]
    ) -> dict[str, float]:
        known = pair.reference.counts.counts
        new = sum(n for value, n in pair.current.counts.counts.items() if value not in known)
        return {**super()._distances(pair, results), "new_category_rate": new / pair.current.count}

    def to_state(self) -> CategoricalWindowsState:
        return CategoricalWindowsState(
            self.reference.to_state(),
            self.current.to_state(),
            self._progress(),
            self._open_states(),
        )

    @classmethod
    def from_state(
        cls, state: CategoricalWindowsState, params: WindowParams, alpha: float
    ) -> CategoricalWindows:
        windows = cls(params, alpha, state.reference.counts.max_categories)
        windows.reference = CategoricalPeriod.from_state(state.reference)
        windows.current = CategoricalPeriod.from_state(state.current)
        windows.open = {
            w: (CategoricalPeriod.from_state(period), first, last)
            for w, first, last, period in state.open
        }
        windows._restore_progress(state.progress)
        return windows


@cache
def _fused() -> ModuleType:
    """The fused kernels, imported on first use (the extension need not be installed for the
    reference backend)."""
    from streamdrift.detectors.kernels import fused

    return fused


def _take(values: Any, chosen: NDArray[np.int64]) -> Any:
    """``values`` (an array, or a list of categories) at the indices ``chosen``."""
    return values[chosen] if isinstance(values, np.ndarray) else [values[i] for i in chosen]


def _edge(value: float | None, infinite: str) -> str:
    return infinite if value is None else f"{value:.6g}"
