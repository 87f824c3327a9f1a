"""Reference baselines: the distribution of every feature of one model version, as sketches.

A :class:`Baseline` holds, per feature, what the window tests and the change detectors need
from a reference — exact moments, a KLL quantile sketch and the missing count for a numeric
feature; exact category counts and the missing count for a categorical one — and never raw
rows. Baselines are built from training data (:class:`BaselineBuilder`), from precomputed
statistics (:func:`baseline_from_statistics`) or from the monitors of a live stream
(:func:`profile_of`), merge like the sketches they hold, and serialise to msgpack.

A monitor *seeded* with a profile (:meth:`detectors.monitor.Monitor.seed`) skips its warm-up
and compares the stream with the baseline from its first value.

>>> import numpy as np
>>> builder = BaselineBuilder()
>>> builder.add_columns({"amount": [12.0, None, 30.5], "channel": ["web", "app", None]})
>>> baseline = builder.build("fraud", "v3", source="train.csv")
>>> baseline.rows, sorted(baseline.features)
(3, ['amount', 'channel'])
>>> amount = baseline.features["amount"]
>>> amount.kind, amount.stats.count, amount.missing
('numeric', 2, 1)
>>> baseline.features["channel"].counts.counts
{'web': 1, 'app': 1}
>>> Baseline.from_bytes(baseline.to_bytes()) == baseline
True
"""

from __future__ import annotations

import math
import time
from collections.abc import Iterable, Mapping, Sequence
from typing import Annotated, Any

import msgspec
import numpy as np

from streamdrift.detectors.sketches import CategoryCounts, CategoryCountsState, QuantileSketch
from streamdrift.detectors.stats import FLOAT_MAX, RunningStats, RunningStatsState, saturate

__all__ = [
    "Baseline",
    "BaselineBuilder",
    "CategoricalProfile",
    "NumericProfile",
    "Profile",
    "baseline_from_statistics",
    "profile_of",
]

FORMAT = 1
# Points per quantile grid step when a sketch is rebuilt from uploaded quantiles.
_UPLOAD_POINTS = 2_000

_Count = Annotated[int, msgspec.Meta(ge=0)]


class NumericProfile(msgspec.Struct, frozen=True, tag="numeric"):
    """Moments, a serialised KLL sketch of the present values, and the missing count."""

    stats: RunningStatsState
    sketch: bytes
    missing: _Count

    kind = "numeric"

    @property
    def events(self) -> int:
        return self.stats.count + self.missing

    def summary(self) -> dict[str, Any]:
        stats = RunningStats.from_state(self.stats)
        sketch = QuantileSketch.from_bytes(self.sketch)
        quantiles = sketch.quantiles([0.05, 0.5, 0.95]) if stats.count else [None] * 3
        return {
            "kind": self.kind,
            "count": stats.count,
            "missing": self.missing,
            "mean": stats.mean if stats.count else None,
            "std": stats.std if stats.count else None,
            **dict(zip(("p05", "p50", "p95"), quantiles, strict=True)),
        }


class CategoricalProfile(msgspec.Struct, frozen=True, tag="categorical"):
    """Exact category counts (at most ``counts.max_categories`` values) and the missing count."""

    counts: CategoryCountsState
    missing: _Count

    kind = "categorical"

    @property
    def events(self) -> int:
        return sum(self.counts.counts.values()) + self.missing

    def summary(self) -> dict[str, Any]:
        top = CategoryCounts.from_state(self.counts).top(5)
        return {
            "kind": self.kind,
            "count": self.events - self.missing,
            "missing": self.missing,
            "distinct": len(self.counts.counts),
            "top": dict(top),
        }


Profile = NumericProfile | CategoricalProfile


class Baseline(msgspec.Struct, frozen=True):
    """The reference of one ``(model, version)``; ``version`` None stands for events that carry
    no ``model_version``. ``revision`` is set by the store that keeps it (0: not stored)."""

    model: str
    version: str | None
    rows: _Count
    features: dict[str, Profile]
    source: str
    created_at: float
    revision: _Count = 0
    format: int = FORMAT

    @property
    def label(self) -> str:
        """``model/version rN``: how alerts and status name the reference."""
        return f"{self.model}/{self.version if self.version is not None else '-'} r{self.revision}"

    def to_bytes(self) -> bytes:
        return msgspec.msgpack.encode(self)

    @classmethod
    def from_bytes(cls, data: bytes) -> Baseline:
        """Inverse of :meth:`to_bytes`; ``ValueError`` on malformed or foreign data."""
        try:
            baseline = msgspec.msgpack.decode(data, type=cls)
        except msgspec.DecodeError as exc:
            raise ValueError(f"malformed baseline: {exc}") from exc
        if baseline.format != FORMAT:
            raise ValueError(f"baseline format {baseline.format}, this version reads {FORMAT}")
        return baseline

    def summary(self) -> dict[str, Any]:
        return {
            "model": self.model,
            "version": self.version,
            "revision": self.revision,
            "rows": self.rows,
            "source": self.source,
            "created_at": self.created_at,
            "features": {
                name: profile.summary() for name, profile in sorted(self.features.items())
            },
        }


class BaselineBuilder:
    """Accumulates columns of training data into a :class:`Baseline`, in batches, in bounded
    memory (one sketch per feature).

    A column is numeric when its present values are numbers, categorical when they are strings
    or booleans (``"true"``/``"false"``, as the stream's decoder treats them); None and NaN are
    missing. A feature keeps the kind it was first seen with; a later batch of the other kind
    raises ``ValueError`` naming the feature.
    """

    def __init__(self, k: int = 200, max_categories: int = 200) -> None:
        self.k = k
        self.max_categories = max_categories
        self.rows = 0
        self._numeric: dict[str, tuple[RunningStats, QuantileSketch]] = {}
        self._categorical: dict[str, CategoryCounts] = {}
        self._missing: dict[str, int] = {}

    def add_columns(self, columns: Mapping[str, Sequence[Any]], rows: int | None = None) -> None:
        """Add one batch of ``rows`` rows given as columns. Without ``rows`` the columns must be
        equally long; with it, a shorter column holds the values of the rows that have the
        feature (absent is not missing, as in the stream)."""
        lengths = {len(values) for values in columns.values()}
        if rows is None and len(lengths) > 1:
            raise ValueError(f"columns of different lengths: {sorted(lengths)}")
        for name, values in columns.items():
            self._add(name, values)
        self.rows += rows if rows is not None else max(lengths, default=0)

    def add_rows(self, rows: Iterable[Mapping[str, Any]]) -> None:
        """Add rows given as mappings; a feature absent from a row is not counted for it
        (as in the stream, where only a null value is *missing*)."""
        rows = list(rows)
        names = dict.fromkeys(name for row in rows for name in row)
        self.add_columns(
            {name: [row[name] for row in rows if name in row] for name in names}, len(rows)
        )

    def _add(self, name: str, values: Sequence[Any]) -> None:
        present = [
            v for v in values if v is not None and not (isinstance(v, float) and math.isnan(v))
        ]
        self._missing[name] = self._missing.get(name, 0) + len(values) - len(present)
        if not present:
            return
        present = [("true" if v else "false") if isinstance(v, bool) else v for v in present]
        if all(isinstance(v, str) for v in present):
            counts = self._categories(name)
            try:
                counts.update_many(present)
            except ValueError:
                raise ValueError(
                    f"feature {name!r} has more than {self.max_categories} categories: leave it out"
                    " or allow more (max_categories)"
                ) from None
        elif all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in present):
            stats, sketch = self._sketches(name)
            array = np.asarray(present, dtype=np.float64)
            stats.update_many(array)
            sketch.update_many(array)
        else:
            kinds = sorted({type(v).__name__ for v in present})
            raise ValueError(
                f"feature {name!r} has values of types {kinds}: features are numbers or strings"
            )

    def _categories(self, name: str) -> CategoryCounts:
        if name in self._numeric:
            raise ValueError(f"feature {name!r} was numeric and now has strings")
        return self._categorical.setdefault(name, CategoryCounts(self.max_categories))

    def _sketches(self, name: str) -> tuple[RunningStats, QuantileSketch]:
        if name in self._categorical:
            raise ValueError(f"feature {name!r} was categorical and now has numbers")
        return self._numeric.setdefault(name, (RunningStats(), QuantileSketch(self.k)))

    def build(self, model: str, version: str | None, source: str) -> Baseline:
        """The baseline of every feature seen; features that were only ever missing are left
        out (their kind is unknown: the stream warms them up itself)."""
        features: dict[str, Profile] = {}
        for name, (stats, sketch) in self._numeric.items():
            features[name] = NumericProfile(
                stats.to_state(), sketch.to_bytes(), self._missing[name]
            )
        for name, counts in self._categorical.items():
            features[name] = CategoricalProfile(counts.to_state(), self._missing[name])
        return Baseline(
            model, version, self.rows, dict(sorted(features.items())), source, time.time()
        )


def profile_of(
    stats: RunningStats | None = None,
    sketch: QuantileSketch | None = None,
    counts: CategoryCounts | None = None,
    missing: int = 0,
) -> Profile:
    """A profile of summaries a monitor already holds (to freeze a live stream as a baseline)."""
    if counts is not None:
        return CategoricalProfile(counts.to_state(), missing)
    if stats is None or sketch is None:
        raise ValueError("a numeric profile needs both stats and a sketch")
    return NumericProfile(stats.to_state(), sketch.to_bytes(), missing)


class _UploadedNumeric(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    count: Annotated[int, msgspec.Meta(ge=1)]
    mean: float
    std: Annotated[float, msgspec.Meta(ge=0)]
    quantiles: dict[str, float]
    missing: _Count = 0


class _UploadedCategorical(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    counts: dict[str, Annotated[int, msgspec.Meta(ge=1)]]
    missing: _Count = 0


class _Uploaded(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    model: str
    version: str | None = None
    numeric: dict[str, _UploadedNumeric] = {}
    categorical: dict[str, _UploadedCategorical] = {}


def baseline_from_statistics(document: bytes, source: str, k: int = 200) -> Baseline:
    """A baseline from precomputed statistics (JSON), for training pipelines that already
    summarise their data::

        {"model": "fraud", "version": "v3",
         "numeric": {"amount": {"count": 100000, "mean": 52.1, "std": 20.3, "missing": 12,
                                "quantiles": {"0.0": 0.5, "0.1": 27.0, "0.5": 50.2, "1.0": 310}}},
         "categorical": {"channel": {"counts": {"web": 61000, "app": 39000}, "missing": 0}}}

    Numeric quantiles (rank -> value, ranks 0 and 1 included) are turned into a sketch of at
    most 2,000 points spread evenly in rank between them (linear interpolation of the quantile
    function); the moments are taken as given. More quantiles give a closer reference. The
    window tests then see the reference as at most 2,000 values, which makes them more
    conservative (smaller samples, larger p-values), never more alarm-prone.

    >>> doc = b'{"model": "m", "numeric": {"x": {"count": 1000, "mean": 0.5, "std": 0.29,'
    >>> doc += b' "quantiles": {"0": 0, "0.5": 0.5, "1": 1}}}}'
    >>> baseline = baseline_from_statistics(doc, "stats.json")
    >>> x = baseline.features["x"]
    >>> x.stats.count, round(QuantileSketch.from_bytes(x.sketch).quantiles([0.25])[0], 2)
    (1000, 0.25)
    """
    try:
        uploaded = msgspec.json.decode(document, type=_Uploaded)
    except msgspec.DecodeError as exc:
        raise ValueError(f"not a statistics document: {exc}") from exc
    features: dict[str, Profile] = {}
    for name, numeric in uploaded.numeric.items():
        features[name] = _numeric_from_statistics(name, numeric, k)
    for name, categorical in uploaded.categorical.items():
        if name in features:
            raise ValueError(f"feature {name!r} is both numeric and categorical")
        state = CategoryCountsState(max(len(categorical.counts), 1), dict(categorical.counts))
        features[name] = CategoricalProfile(state, categorical.missing)
    rows = max((profile.events for profile in features.values()), default=0)
    return Baseline(
        uploaded.model, uploaded.version, rows, dict(sorted(features.items())), source, time.time()
    )


def _numeric_from_statistics(name: str, uploaded: _UploadedNumeric, k: int) -> NumericProfile:
    try:
        grid = sorted((float(rank), value) for rank, value in uploaded.quantiles.items())
    except ValueError as exc:
        raise ValueError(f"feature {name!r}: quantile ranks must be numbers: {exc}") from exc
    ranks = np.array([rank for rank, _ in grid])
    values = np.array([value for _, value in grid])
    if len(grid) < 2 or ranks[0] != 0.0 or ranks[-1] != 1.0 or np.any(values[1:] < values[:-1]):
        raise ValueError(
            f"feature {name!r}: quantiles need ranks 0 and 1 and non-decreasing values"
        )
    points = min(uploaded.count, _UPLOAD_POINTS)
    sketch = QuantileSketch(k)
    sketch.update_many(np.interp((np.arange(points) + 0.5) / points, ranks, values))
    # ``**`` raises OverflowError past the float range (1.3e154 squared): saturate instead.
    m2 = saturate(uploaded.std**2 * (uploaded.count - 1)) if uploaded.std < 1e154 else FLOAT_MAX
    stats = RunningStatsState(
        uploaded.count, uploaded.mean, m2, float(values[0]), float(values[-1])
    )
    return NumericProfile(stats, sketch.to_bytes(), uploaded.missing)
