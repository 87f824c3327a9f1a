"""Seeded, labelled streams with known change points.

A scenario turns a seed into :class:`Trial` objects. A trial is a set of series (the features
of one model, or its error stream) watched side by side, and says where its change starts and
which series it affects. The change is in effect from index ``change`` to the end of each
affected series: that post-change stretch is the detection horizon, and its length is given per
row. Series not affected by the change, and the pre-change part of the affected ones, are
stationary: any alarm on them is a false alarm.

Rows are what the table shows; several scenarios may feed one row (the river generators' feature
series all go to one "features, P(X) unchanged" row).
"""

from __future__ import annotations

import functools
import zlib
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np

__all__ = [
    "FULL",
    "QUICK",
    "ROWS",
    "SCENARIOS",
    "Row",
    "Scale",
    "Scenario",
    "Series",
    "Trial",
]

KINDS = ("numeric", "categorical", "error")


@dataclass(frozen=True)
class Series:
    """One monitored stream: a feature (numeric or categorical) or a model's 0/1 errors."""

    name: str
    kind: str
    values: np.ndarray

    def __post_init__(self) -> None:
        if self.kind not in KINDS:
            raise ValueError(f"kind must be one of {KINDS}, got {self.kind!r}")
        if self.values.ndim != 1:
            raise ValueError("values must be 1-d")


@dataclass(frozen=True)
class Trial:
    """Series watched together, and the change (if any) in effect from index ``change`` on."""

    row: str
    series: tuple[Series, ...]
    change: int | None = None
    affected: frozenset[str] = frozenset()

    def __post_init__(self) -> None:
        names = [s.name for s in self.series]
        if len(set(names)) != len(names):
            raise ValueError(f"duplicate series names in {names}")
        if (self.change is None) != (not self.affected):
            raise ValueError("a trial has both a change point and affected series, or neither")
        if not self.affected <= set(names):
            raise ValueError(f"affected series {sorted(self.affected - set(names))} not in trial")
        if self.change is not None:
            for s in self.series:
                if s.name in self.affected and not 0 < self.change < len(s.values):
                    raise ValueError(f"change {self.change} outside series {s.name!r}")


@dataclass(frozen=True)
class Row:
    """A line of the table. ``must_detect``: the "every drift >= 0.5 sigma detected" target."""

    key: str
    title: str
    description: str
    must_detect: bool = False
    stationary: bool = False


@dataclass(frozen=True)
class Scale:
    """Stream lengths: :data:`FULL` for the benchmark, :data:`QUICK` for a smoke run."""

    features: int = 20  # features per model in the abrupt-shift rows
    pre: int = 5_000  # values before the change (includes every detector's warm-up)
    post: int = 15_000  # values after it: the detection horizon (> streamdrift's cool-down)
    ramp: int = 2_000  # length of the gradual drift's ramp
    stationary: int = 50_000  # values per stationary stream
    shuttle_stationary: int = 25_000
    synth_pretrain: int = 5_000  # river generators: events the model learns from unmonitored
    synth_position: int = 10_000  # centre of ConceptDriftStream's transition
    synth_width: int = 100  # its width (river overflows below position / 177)
    synth_total: int = 20_000


FULL = Scale()
QUICK = Scale(
    features=4,
    pre=2_000,
    post=3_000,
    ramp=1_000,
    stationary=10_000,
    shuttle_stationary=5_000,
    synth_pretrain=1_000,
    synth_position=2_500,
    synth_width=100,
    synth_total=5_000,
)


@dataclass(frozen=True)
class Scenario:
    key: str
    rows: tuple[str, ...]
    generate: Callable[[int, Scale], list[Trial]]
    cost: float = 1.0  # relative run time, to start the slow ones first
    notes: tuple[str, ...] = field(default=())


def _rng(key: str, seed: int) -> np.random.Generator:
    return np.random.default_rng([seed, zlib.crc32(key.encode())])


def _features(values: np.ndarray, kind: str = "numeric", prefix: str = "f") -> tuple[Series, ...]:
    return tuple(Series(f"{prefix}{i:02d}", kind, row) for i, row in enumerate(values))


# --- synthetic numeric, categorical and error streams --------------------------------------


def abrupt(shift: float, seed: int, scale: Scale) -> list[Trial]:
    """``scale.features`` N(0, 1) features; one of them, chosen by the seed, shifts its mean."""
    rng = _rng(f"abrupt-{shift}", seed)
    values = rng.standard_normal((scale.features, scale.pre + scale.post))
    target = int(rng.integers(scale.features))
    values[target, scale.pre :] += shift
    series = _features(values)
    return [Trial(f"abrupt-{shift:g}", series, scale.pre, frozenset({series[target].name}))]


def variance(seed: int, scale: Scale) -> list[Trial]:
    """N(0, 1) whose standard deviation becomes 1.5 (mean unchanged)."""
    values = _rng("variance", seed).standard_normal(scale.pre + scale.post)
    values[scale.pre :] *= 1.5
    return [Trial("variance", (Series("x", "numeric", values),), scale.pre, frozenset({"x"}))]


def gradual(seed: int, scale: Scale) -> list[Trial]:
    """N(0, 1) whose mean ramps linearly to 1 over ``scale.ramp`` values, then stays there."""
    values = _rng("gradual", seed).standard_normal(scale.pre + scale.post)
    values[scale.pre :] += np.minimum(np.arange(1, scale.post + 1) / scale.ramp, 1.0)
    return [Trial("gradual", (Series("x", "numeric", values),), scale.pre, frozenset({"x"}))]


CATEGORIES = np.array(["A", "B", "C", "D", "E"])
CATEGORY_BEFORE = np.array([0.40, 0.30, 0.15, 0.10, 0.05])
CATEGORY_AFTER = np.array([0.25, 0.30, 0.15, 0.10, 0.20])


def categorical(seed: int, scale: Scale) -> list[Trial]:
    """Five categories; 15% of the mass moves from the most to the least frequent one."""
    rng = _rng("categorical", seed)
    values = np.concatenate(
        [
            rng.choice(CATEGORIES, scale.pre, p=CATEGORY_BEFORE),
            rng.choice(CATEGORIES, scale.post, p=CATEGORY_AFTER),
        ]
    )
    return [
        Trial("categorical", (Series("x", "categorical", values),), scale.pre, frozenset({"x"}))
    ]


def error_rate(seed: int, scale: Scale) -> list[Trial]:
    """0/1 errors of a model: Bernoulli(0.10), then Bernoulli(0.15)."""
    rng = _rng("error-rate", seed)
    rate = np.where(np.arange(scale.pre + scale.post) < scale.pre, 0.10, 0.15)
    values = (rng.random(len(rate)) < rate).astype(np.float64)
    return [
        Trial("error-rate", (Series("errors", "error", values),), scale.pre, frozenset({"errors"}))
    ]


DISTRIBUTIONS: dict[str, Callable[[np.random.Generator, int], np.ndarray]] = {
    "normal": lambda rng, n: rng.standard_normal(n),
    "lognormal": lambda rng, n: rng.lognormal(size=n),
    "uniform": lambda rng, n: rng.uniform(size=n),
    "exponential": lambda rng, n: rng.exponential(size=n),
}


def stationary(distribution: str, seed: int, scale: Scale) -> list[Trial]:
    values = DISTRIBUTIONS[distribution](_rng(f"stationary-{distribution}", seed), scale.stationary)
    return [Trial(f"stationary-{distribution}", (Series("x", "numeric", values),))]


# --- real data shipped in river's wheel: the Statlog Shuttle sensor readings ---------------

SHUTTLE_SHARE_AFTER = 0.20


@functools.cache
def shuttle() -> tuple[np.ndarray, np.ndarray, tuple[str, ...]]:
    """Features (n x 9), labels (1 = anomaly, ~7%) and feature names, from river's bundled file."""
    from river import datasets

    dataset = datasets.Shuttle()  # a FileDataset: the CSV is inside the installed package
    rows = list(dataset)
    names = tuple(rows[0][0])
    features = np.array([[x[name] for name in names] for x, _ in rows], dtype=np.float64)
    labels = np.array([int(y) for _, y in rows])
    return features, labels, names


def shuttle_stationary(seed: int, scale: Scale) -> list[Trial]:
    """Rows drawn at random (with replacement) from the dataset: stationary by construction."""
    features, _, names = shuttle()
    rows = _rng("shuttle-stationary", seed).integers(len(features), size=scale.shuttle_stationary)
    series = tuple(Series(name, "numeric", features[rows, j]) for j, name in enumerate(names))
    return [Trial("shuttle-stationary", series)]


def shuttle_shift(seed: int, scale: Scale) -> list[Trial]:
    """Rows drawn at random from the dataset (~7% anomalies), then with 20% anomalies."""
    features, labels, names = shuttle()
    rng = _rng("shuttle-shift", seed)
    before = rng.integers(len(features), size=scale.pre)
    pools = [np.flatnonzero(labels == 0), np.flatnonzero(labels == 1)]
    anomalous = rng.random(scale.post) < SHUTTLE_SHARE_AFTER
    after = np.where(
        anomalous,
        rng.choice(pools[1], scale.post),
        rng.choice(pools[0], scale.post),
    )
    rows = np.concatenate([before, after])
    series = tuple(Series(name, "numeric", features[rows, j]) for j, name in enumerate(names))
    return [Trial("shuttle-shift", series, scale.pre, frozenset(names))]


# --- river's concept-drift generators, with a prequential Hoeffding tree -------------------

SYNTH = {
    # key: (generator, parameter naming the concept, concept before, after)
    "sea": ("SEA", "variant", 0, 3),
    "agrawal": ("Agrawal", "classification_function", 0, 2),
    "stagger": ("STAGGER", "classification_function", 0, 2),
}


def river_synth(key: str, seed: int, scale: Scale) -> list[Trial]:
    """``ConceptDriftStream`` from one concept to another; a Hoeffding tree learns prequentially.

    The model learns unmonitored from the first ``synth_pretrain`` events (a model is trained
    before it is deployed), then its 0/1 errors and the features are monitored. The change starts
    where the drift probability of the sigmoid passes ~2% (``position - width``). These
    generators draw X the same way under every concept: only P(y | X) changes, so the error
    stream is where the change is; an alarm on a feature is a false alarm.
    """
    from river import tree
    from river.datasets import synth

    generator, parameter, before, after = SYNTH[key]
    make = getattr(synth, generator)
    base = 1_000 * seed + zlib.crc32(key.encode()) % 1_000
    stream = synth.ConceptDriftStream(
        stream=make(**{parameter: before}, seed=base + 1),
        drift_stream=make(**{parameter: after}, seed=base + 2),
        position=scale.synth_position,
        width=scale.synth_width,
        seed=base + 3,
    )
    model = tree.HoeffdingTreeClassifier()
    rows, errors = [], []
    for x, y in stream.take(scale.synth_total):
        errors.append(model.predict_one(x) != y)
        model.learn_one(x, y)
        rows.append(x)
    start = scale.synth_pretrain
    change = scale.synth_position - scale.synth_width - start
    error_series = Series("errors", "error", np.array(errors[start:], dtype=np.float64))
    names = list(rows[0])
    if key == "stagger":  # size, colour and shape: categories coded 0-2
        columns = [np.array([str(r[name]) for r in rows[start:]]) for name in names]
        kind = "categorical"
    else:
        columns = [np.array([r[name] for r in rows[start:]], dtype=np.float64) for name in names]
        kind = "numeric"
    features = tuple(
        Series(f"{key}.{name}", kind, c) for name, c in zip(names, columns, strict=True)
    )
    return [
        Trial(f"synth-{key}", (error_series,), change, frozenset({"errors"})),
        Trial("synth-features", features),
    ]


# --- the table ---------------------------------------------------------------------------

ROWS: dict[str, Row] = {
    row.key: row
    for row in (
        Row(
            "abrupt-0.25",
            "mean +0.25σ, 1 of 20 features",
            "N(0,1) features; one shifts its mean by 0.25σ (below the 0.5σ detection target)",
        ),
        Row(
            "abrupt-0.5",
            "mean +0.5σ, 1 of 20 features",
            "N(0,1) features; one shifts its mean by 0.5σ",
            must_detect=True,
        ),
        Row(
            "abrupt-1",
            "mean +1σ, 1 of 20 features",
            "N(0,1) features; one shifts its mean by 1σ",
            must_detect=True,
        ),
        Row(
            "variance",
            "std 1 → 1.5",
            "N(0,1) → N(0,1.5²): a 0.5σ change of scale, mean unchanged",
            must_detect=True,
        ),
        Row(
            "gradual",
            "gradual mean 0 → 1σ",
            "N(0,1) whose mean ramps to 1σ over the ramp length",
            must_detect=True,
        ),
        Row(
            "categorical",
            "categorical frequency shift",
            "5 categories, p(A) 0.40 → 0.25 and p(E) 0.05 → 0.20 (TVD 0.15; 0.69σ of E's "
            "indicator)",
            must_detect=True,
        ),
        Row(
            "error-rate",
            "error rate 10% → 15%",
            "0/1 errors, Bernoulli(0.10) → (0.15): 0.17σ of the error indicator, so outside the "
            "≥0.5σ target; detection is reported",
        ),
        *(
            Row(f"stationary-{d}", f"stationary {d}", f"{d} values, no change", stationary=True)
            for d in DISTRIBUTIONS
        ),
        Row(
            "shuttle-stationary",
            "Shuttle (real), stationary",
            "river's bundled Statlog Shuttle: 9 sensor features, rows drawn at random",
            stationary=True,
        ),
        Row(
            "shuttle-shift",
            "Shuttle (real), anomalies 7% → 20%",
            "Shuttle rows drawn at random, then with 20% anomalies: a real prior shift; one "
            "episode spans all 9 features (each further feature alert counts as a duplicate)",
            must_detect=True,
        ),
        Row(
            "synth-sea",
            "river SEA 0→3: model errors",
            "ConceptDriftStream SEA variant 0 → 3, errors of a prequential Hoeffding tree "
            "(~2.5% → ~13%, falling back as the tree relearns)",
            must_detect=True,
        ),
        Row(
            "synth-agrawal",
            "river Agrawal 0→2: model errors",
            "ConceptDriftStream Agrawal function 0 → 2, errors of a Hoeffding tree (~1% → ~45%)",
            must_detect=True,
        ),
        Row(
            "synth-stagger",
            "river STAGGER 0→2: model errors",
            "ConceptDriftStream STAGGER function 0 → 2, errors of a Hoeffding tree (~0% → ~50%)",
            must_detect=True,
        ),
        Row(
            "synth-features",
            "river SEA/Agrawal/STAGGER features",
            "the generators' features (3 + 9 numeric, 3 categorical): the concept drifts leave "
            "P(X) unchanged, so every alarm is false",
            stationary=True,
        ),
    )
}

SCENARIOS: dict[str, Scenario] = {
    s.key: s
    for s in (
        *(
            Scenario(
                f"abrupt-{shift:g}",
                (f"abrupt-{shift:g}",),
                functools.partial(abrupt, shift),
                cost=20,
            )
            for shift in (0.25, 0.5, 1.0)
        ),
        Scenario("variance", ("variance",), variance),
        Scenario("gradual", ("gradual",), gradual),
        Scenario("categorical", ("categorical",), categorical, cost=2),
        Scenario("error-rate", ("error-rate",), error_rate, cost=0.5),
        *(
            Scenario(
                f"stationary-{d}", (f"stationary-{d}",), functools.partial(stationary, d), cost=2.5
            )
            for d in DISTRIBUTIONS
        ),
        Scenario("shuttle-stationary", ("shuttle-stationary",), shuttle_stationary, cost=11),
        Scenario("shuttle-shift", ("shuttle-shift",), shuttle_shift, cost=9),
        *(
            Scenario(
                f"synth-{key}",
                (f"synth-{key}", "synth-features"),
                functools.partial(river_synth, key),
                cost=cost,
            )
            for key, cost in (("sea", 6), ("agrawal", 20), ("stagger", 6))
        ),
    )
}
