"""Drifting prediction-event simulator: reproducible traffic with known drift, for demos and tests.

Generation is pure and separate from producing:

* :func:`generate` turns a :class:`Scenario` into Kafka-ready messages (key = model name, value =
  UTF-8 JSON of one event or a JSON array of events, plus the label messages of its
  classification events). The same scenario always yields the same bytes.
* :func:`run` produces those messages to Kafka with confluent-kafka at the scenario's rate and
  emits each label ``label_delay_s`` after its prediction.

At the drift point (``Scenario.drift_at``) the drifting model changes abruptly: some numeric
features shift their mean by ``shift_sigmas`` standard deviations, one categorical feature takes
new frequencies, and one classification model's error rate rises. A label is the predicted class
XOR an error bit drawn with the configured error rate, so the observed error rate is the
configured one.

>>> messages = list(generate(Scenario(), max_events=3))
>>> [m.key for m in messages], [m.events for m in messages]
([b'pricing', b'churn', b'churn'], [1, 1, 1])
>>> sorted(msgspec.json.decode(messages[0].value))
['event_id', 'features', 'model', 'model_version', 'prediction', 'timestamp']
"""

from __future__ import annotations

import logging
import math
import time
from collections import deque
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field, replace
from typing import Any, Literal, NamedTuple

import msgspec
import numpy as np
from confluent_kafka import KafkaError, KafkaException, Message, Producer

from streamdrift.client import produce_with_retry

DEFAULT_START_TIME = 1_763_719_200.0
"""2025-11-21T10:00:00Z: the first event's timestamp in :func:`generate` unless a scenario says
otherwise (fixed, so that generation is reproducible; :func:`run` uses the wall clock)."""

_CHUNK_MESSAGES = 256
"""Messages drawn per vectorized step. Part of the random stream's layout: changing it changes the
generated events (it never changes which events a prefix of the stream holds)."""

_encode = msgspec.json.Encoder().encode
_log = logging.getLogger(__name__)

Category = str | bool


@dataclass(frozen=True)
class NumericFeature:
    """A normally distributed numeric feature."""

    name: str
    mean: float
    std: float
    missing_rate: float = 0.0
    decimals: int = 2


@dataclass(frozen=True)
class CategoricalFeature:
    """A categorical feature (strings or booleans) drawn with the given relative weights."""

    name: str
    categories: tuple[Category, ...]
    weights: tuple[float, ...]
    missing_rate: float = 0.0


@dataclass(frozen=True)
class ModelSpec:
    """One simulated model.

    The prediction is ``intercept + scale * z @ w`` over the standardized numeric features ``z``
    (missing values count as 0) and fixed positive weights ``w`` with unit norm drawn from the
    scenario seed; a classification model outputs ``sigmoid`` of it as a probability, a regression
    model the value itself.
    """

    name: str
    version: str
    task: Literal["classification", "regression"]
    numeric: tuple[NumericFeature, ...]
    categorical: tuple[CategoricalFeature, ...] = ()
    share: float = 1.0
    """Relative share of the traffic."""
    error_rate: float = 0.1
    """Classification only: share of labels that disagree with the predicted class."""
    intercept: float = 0.0
    scale: float = 1.0

    @property
    def feature_names(self) -> tuple[str, ...]:
        return tuple(f.name for f in self.numeric) + tuple(f.name for f in self.categorical)


@dataclass(frozen=True)
class Drift:
    """What changes at the drift point (applies to every event from that index on)."""

    model: str = "fraud"
    """The model whose features drift."""
    shifted: tuple[str, ...] = ("amount", "tx_velocity_1h", "distance_km")
    """Numeric features whose mean moves by ``shift_sigmas`` of their standard deviation."""
    shift_sigmas: float = 1.5
    categorical: str | None = "country"
    """Categorical feature that takes ``categorical_weights`` after the drift point."""
    categorical_weights: tuple[float, ...] = (0.10, 0.10, 0.15, 0.10, 0.05, 0.50)
    error_model: str | None = "fraud"
    """Classification model whose error rate becomes ``error_rate``."""
    error_rate: float = 0.35


def default_models() -> tuple[ModelSpec, ...]:
    """Three models: ``fraud`` and ``churn`` (classification, probability), ``pricing``
    (regression)."""
    return (
        ModelSpec(
            name="fraud",
            version="3",
            task="classification",
            numeric=(
                NumericFeature("amount", 80.0, 30.0),
                NumericFeature("tx_velocity_1h", 3.0, 1.2),
                NumericFeature("account_age_days", 900.0, 300.0, decimals=0),
                NumericFeature("merchant_risk", 0.3, 0.1, decimals=4),
                NumericFeature("distance_km", 40.0, 15.0),
                NumericFeature("hour_of_day", 13.0, 4.0, decimals=1),
                NumericFeature("device_score", 0.7, 0.12, decimals=4),
                NumericFeature("age", 42.0, 12.0, missing_rate=0.05, decimals=0),
            ),
            categorical=(
                CategoricalFeature(
                    "country",
                    ("DE", "FR", "US", "GB", "NL", "ES"),
                    (0.30, 0.20, 0.20, 0.15, 0.10, 0.05),
                ),
                CategoricalFeature("card_present", (True, False), (0.6, 0.4)),
            ),
            share=0.5,
            error_rate=0.10,
            intercept=-1.2,
            scale=1.5,
        ),
        ModelSpec(
            name="churn",
            version="12",
            task="classification",
            numeric=(
                NumericFeature("tenure_months", 28.0, 14.0, decimals=0),
                NumericFeature("monthly_charges", 65.0, 20.0),
                NumericFeature("support_tickets_90d", 1.5, 1.0, decimals=1),
                NumericFeature("logins_30d", 18.0, 7.0, decimals=0),
                NumericFeature("discount_pct", 8.0, 5.0, missing_rate=0.10, decimals=1),
            ),
            categorical=(
                CategoricalFeature("plan", ("basic", "standard", "premium"), (0.50, 0.35, 0.15)),
                CategoricalFeature("auto_renew", (True, False), (0.7, 0.3)),
            ),
            share=0.3,
            error_rate=0.15,
            intercept=-0.8,
            scale=1.2,
        ),
        ModelSpec(
            name="pricing",
            version="2025.11",
            task="regression",
            numeric=(
                NumericFeature("sqft", 95.0, 30.0, decimals=1),
                NumericFeature("bedrooms", 2.8, 0.9, decimals=1),
                NumericFeature("bathrooms", 1.6, 0.6, decimals=1),
                NumericFeature("building_age_years", 35.0, 20.0, decimals=0),
                NumericFeature("distance_center_km", 8.0, 4.0),
            ),
            categorical=(
                CategoricalFeature(
                    "region",
                    ("north", "south", "east", "west", "center"),
                    (0.2, 0.2, 0.2, 0.25, 0.15),
                ),
                CategoricalFeature("has_garden", (True, False), (0.4, 0.6)),
            ),
            share=0.2,
            intercept=350_000.0,
            scale=60_000.0,
        ),
    )


@dataclass(frozen=True)
class Scenario:
    """Everything that determines the simulated traffic."""

    models: tuple[ModelSpec, ...] = field(default_factory=default_models)
    rate: float = 500.0
    """Events per second: spacing of event timestamps, and the pace of :func:`run`."""
    seed: int = 42
    drift_at: float = 30_000
    """Drift point, in ``drift_unit``: an event index, or seconds after the first event."""
    drift_unit: Literal["events", "seconds"] = "events"
    drift: Drift | None = field(default_factory=Drift)
    """What changes at the drift point; ``None`` for traffic without drift."""
    batch_size: int = 1
    """Events per Kafka message: 1 sends single-event objects, more sends JSON arrays of one
    model."""
    label_delay_s: float = 1.0
    """How long after its prediction a label is emitted (and timestamped)."""
    start_time: float = DEFAULT_START_TIME
    """Timestamp of the first event, epoch seconds."""

    def __post_init__(self) -> None:
        if not self.models:
            raise ValueError("a scenario needs at least one model")
        names = [m.name for m in self.models]
        if len(set(names)) != len(names):
            raise ValueError(f"model names must be unique: {names}")
        for model in self.models:
            _check_model(model)
        if not (self.rate > 0 and math.isfinite(self.rate)):
            raise ValueError(
                f"rate must be a positive number of events per second, got {self.rate}"
            )
        if self.batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {self.batch_size}")
        if self.drift_at < 0 or self.label_delay_s < 0:
            raise ValueError("drift_at and label_delay_s must be >= 0")
        if self.drift is not None:
            _check_drift(self.drift, {m.name: m for m in self.models})

    @property
    def drift_index(self) -> int | None:
        """Index of the first drifted event, or ``None`` without drift.

        >>> Scenario(drift_at=12.5, drift_unit="seconds", rate=100).drift_index
        1250
        """
        if self.drift is None:
            return None
        if self.drift_unit == "seconds":
            return math.ceil(self.drift_at * self.rate)
        return math.ceil(self.drift_at)

    def model(self, name: str) -> ModelSpec:
        """The model named ``name``."""
        for model in self.models:
            if model.name == name:
                return model
        raise KeyError(name)


def _check_model(model: ModelSpec) -> None:
    names = model.feature_names
    if len(set(names)) != len(names):
        raise ValueError(f"model {model.name!r}: feature names must be unique")
    if "prediction" in names:
        raise ValueError(f"model {model.name!r}: 'prediction' is reserved for the model output")
    if not model.numeric:
        raise ValueError(f"model {model.name!r}: needs at least one numeric feature")
    if model.share <= 0 or not 0 <= model.error_rate <= 1:
        raise ValueError(f"model {model.name!r}: share must be > 0 and error_rate in [0, 1]")
    for feature in model.numeric:
        if feature.std <= 0 or not 0 <= feature.missing_rate < 1:
            raise ValueError(
                f"{model.name}.{feature.name}: std must be > 0 and missing_rate in [0, 1)"
            )
    for categorical in model.categorical:
        what = f"{model.name}.{categorical.name}"
        _check_weights(what, categorical.categories, categorical.weights)
        if not 0 <= categorical.missing_rate < 1:
            raise ValueError(f"{what}: missing_rate must be in [0, 1)")


def _check_weights(what: str, categories: tuple[Category, ...], weights: tuple[float, ...]) -> None:
    if len(categories) != len(weights) or not categories:
        raise ValueError(f"{what}: needs one weight per category")
    if min(weights) < 0 or sum(weights) <= 0:
        raise ValueError(f"{what}: weights must be >= 0 with a positive sum")


def _check_drift(drift: Drift, models: Mapping[str, ModelSpec]) -> None:
    if drift.model not in models:
        raise ValueError(f"drift.model {drift.model!r} is not a scenario model")
    target = models[drift.model]
    numeric = {f.name for f in target.numeric}
    unknown = [name for name in drift.shifted if name not in numeric]
    if unknown:
        raise ValueError(f"drift.shifted: {unknown} are not numeric features of {drift.model!r}")
    if drift.categorical is not None:
        feature = next((f for f in target.categorical if f.name == drift.categorical), None)
        if feature is None:
            raise ValueError(
                f"drift.categorical {drift.categorical!r} is not a categorical feature of "
                f"{drift.model!r}"
            )
        _check_weights(
            f"drift.categorical_weights ({drift.categorical})",
            feature.categories,
            drift.categorical_weights,
        )
    if drift.error_model is not None:
        if drift.error_model not in models or models[drift.error_model].task != "classification":
            raise ValueError(
                f"drift.error_model {drift.error_model!r} is not a classification model of the "
                "scenario"
            )
        if not 0 <= drift.error_rate <= 1:
            raise ValueError("drift.error_rate must be in [0, 1]")


class SimMessage(NamedTuple):
    """One input-topic message and the labels it causes."""

    key: bytes
    """Model name, UTF-8."""
    value: bytes
    """One event object (``batch_size`` 1) or a JSON array of events of the model."""
    labels: tuple[bytes, ...]
    """Label-topic values for the classification events in ``value`` (same key)."""
    first_event: int
    """Index of the first event in ``value``; it is due ``first_event / rate`` s after the start."""
    events: int
    """Number of events in ``value``."""


class _ModelPlan:
    """Precomputed arrays for drawing one model's events in vectorized blocks."""

    def __init__(self, spec: ModelSpec, scenario: Scenario, weights: np.ndarray) -> None:
        self.spec = spec
        self.key = spec.name.encode()
        self.means = np.array([f.mean for f in spec.numeric])
        self.stds = np.array([f.std for f in spec.numeric])
        self.numeric_missing = np.array([f.missing_rate for f in spec.numeric])
        self.decimals = [f.decimals for f in spec.numeric]
        self.weights = weights
        self.categorical_missing = np.array([f.missing_rate for f in spec.categorical])
        self.cdf_before = [_cdf(f.weights) for f in spec.categorical]
        self.cdf_after = list(self.cdf_before)
        self.shift = np.zeros(len(spec.numeric))
        self.error_before = spec.error_rate
        self.error_after = spec.error_rate
        drift = scenario.drift
        if drift is not None and drift.model == spec.name:
            for j, feature in enumerate(spec.numeric):
                if feature.name in drift.shifted:
                    self.shift[j] = drift.shift_sigmas * feature.std
            for j, categorical in enumerate(spec.categorical):
                if categorical.name == drift.categorical:
                    self.cdf_after[j] = _cdf(drift.categorical_weights)
        if drift is not None and drift.error_model == spec.name:
            self.error_after = drift.error_rate

    def draw(
        self, rng: np.random.Generator, index: np.ndarray, scenario: Scenario
    ) -> tuple[list[bytes], list[bytes | None]]:
        """Encoded events (and labels, ``None`` for regression) for the given event indices."""
        spec, n = self.spec, len(index)
        drift_index = scenario.drift_index
        drifted = index >= drift_index if drift_index is not None else np.zeros(n, dtype=bool)
        x = rng.normal(self.means, self.stds, size=(n, len(self.means))) + np.outer(
            drifted, self.shift
        )
        x_missing = rng.random(x.shape) < self.numeric_missing
        u = rng.random((n, len(spec.categorical)))
        c_missing = rng.random(u.shape) < self.categorical_missing
        z = np.where(x_missing, 0.0, (x - self.means) / self.stds)
        raw = spec.intercept + spec.scale * (z @ self.weights)
        timestamps = np.round(scenario.start_time + index / scenario.rate, 3).tolist()
        if spec.task == "classification":
            prediction = 1.0 / (1.0 + np.exp(-raw))
            error_rate = np.where(drifted, self.error_after, self.error_before)
            errors = rng.random(n) < error_rate
            label_values = ((prediction >= 0.5) ^ errors).astype(int).tolist()
            predictions = np.round(prediction, 4).tolist()
        else:
            label_values = None
            predictions = np.round(raw, 2).tolist()

        columns: list[list[Any]] = []
        for j, decimals in enumerate(self.decimals):
            values = np.round(x[:, j], decimals).tolist()
            columns.append(_blank(values, x_missing[:, j]))
        for j, feature in enumerate(spec.categorical):
            codes = np.where(
                drifted,
                np.searchsorted(self.cdf_after[j], u[:, j], side="right"),
                np.searchsorted(self.cdf_before[j], u[:, j], side="right"),
            )
            values = [feature.categories[c] for c in codes.tolist()]
            columns.append(_blank(values, c_missing[:, j]))

        names = spec.feature_names
        events: list[bytes] = []
        labels: list[bytes | None] = []
        for i, event_index in enumerate(index.tolist()):
            event_id = f"sim-{scenario.seed}-{event_index}"
            events.append(
                _encode(
                    {
                        "model": spec.name,
                        "model_version": spec.version,
                        "event_id": event_id,
                        "timestamp": timestamps[i],
                        "features": dict(
                            zip(names, [column[i] for column in columns], strict=True)
                        ),
                        "prediction": predictions[i],
                    }
                )
            )
            if label_values is None:
                labels.append(None)
            else:
                label = {
                    "model": spec.name,
                    "event_id": event_id,
                    "label": label_values[i],
                    "timestamp": round(timestamps[i] + scenario.label_delay_s, 3),
                }
                labels.append(_encode(label))
        return events, labels


def _cdf(weights: tuple[float, ...]) -> np.ndarray:
    cdf = np.cumsum(weights, dtype=float)
    cdf /= cdf[-1]
    cdf[-1] = np.inf  # u in [0, 1) always lands on a category, whatever the rounding
    return cdf


def _blank(values: list[Any], missing: np.ndarray) -> list[Any]:
    for i in np.flatnonzero(missing).tolist():
        values[i] = None
    return values


def generate(scenario: Scenario, max_events: int | None = None) -> Iterator[SimMessage]:
    """Yield the scenario's messages in order, up to ``max_events`` events (``None``: endless).

    Deterministic: the same scenario yields the same bytes, and a shorter run yields a prefix of
    a longer one. Each message holds ``batch_size`` events of one model (the last may hold fewer
    when ``max_events`` cuts it); models are drawn per message by their ``share``.

    >>> first = next(generate(Scenario(batch_size=4)))
    >>> first.key, first.events, len(msgspec.json.decode(first.value)), len(first.labels)
    (b'pricing', 4, 4, 0)
    """
    if max_events is not None and max_events < 0:
        raise ValueError("max_events must be >= 0")
    rng = np.random.default_rng(scenario.seed)
    plans = []
    for spec in scenario.models:
        weights = np.abs(rng.normal(size=len(spec.numeric))) + 0.1
        plans.append(_ModelPlan(spec, scenario, weights / np.linalg.norm(weights)))
    shares = np.array([m.share for m in scenario.models], dtype=float)
    shares /= shares.sum()
    batch = scenario.batch_size
    produced = 0
    while max_events is None or produced < max_events:
        owners = rng.choice(len(plans), size=_CHUNK_MESSAGES, p=shares)
        event_owner = np.repeat(owners, batch)
        event_index = produced + np.arange(len(event_owner))
        events: list[bytes] = [b""] * len(event_owner)
        labels: list[bytes | None] = [None] * len(event_owner)
        for k, plan in enumerate(plans):
            positions = np.flatnonzero(event_owner == k)
            block_events, block_labels = plan.draw(rng, event_index[positions], scenario)
            for position, event, label in zip(
                positions.tolist(), block_events, block_labels, strict=True
            ):
                events[position] = event
                labels[position] = label
        for m, owner in enumerate(owners.tolist()):
            start = m * batch
            count = batch if max_events is None else min(batch, max_events - produced)
            if count <= 0:
                return
            chunk = events[start : start + count]
            value = chunk[0] if batch == 1 else b"[" + b",".join(chunk) + b"]"
            message_labels = tuple(
                label for label in labels[start : start + count] if label is not None
            )
            yield SimMessage(plans[owner].key, value, message_labels, produced, count)
            produced += count


# --- producing ------------------------------------------------------------------------------


class BrokerUnavailableError(ConnectionError):
    """The Kafka bootstrap servers could not be reached."""


@dataclass
class RunStats:
    """Counts of one :func:`run` (passed to ``on_progress`` while it runs)."""

    messages: int = 0
    """Input-topic messages produced."""
    events: int = 0
    labels: int = 0
    """Label messages produced."""
    delivered: int = 0
    """Messages (both topics) the broker acknowledged."""
    failed: int = 0
    """Messages (both topics) that could not be delivered."""
    undelivered: int = 0
    """Messages still unacknowledged when the final flush timed out."""
    elapsed_s: float = 0.0
    interrupted: bool = False
    """Stopped by KeyboardInterrupt."""
    last_error: str | None = None


def run(
    bootstrap: str,
    scenario: Scenario,
    input_topic: str = "predictions",
    labels_topic: str = "labels",
    *,
    duration_s: float | None = None,
    max_events: int | None = None,
    on_progress: Callable[[RunStats], None] | None = None,
    progress_interval_s: float = 1.0,
    connect_timeout_s: float = 10.0,
    flush_timeout_s: float = 15.0,
    producer_config: Mapping[str, Any] | None = None,
) -> RunStats:
    """Produce the scenario to Kafka at ``scenario.rate`` events/s and return the counts.

    Stops after ``duration_s`` seconds or ``max_events`` events, whichever comes first (neither:
    runs until interrupted). Labels go to ``labels_topic`` ``scenario.label_delay_s`` after their
    event; at a normal end the run waits for the outstanding ones. Event timestamps follow the wall
    clock from the start of the run. On KeyboardInterrupt the run stops producing events, sends the
    pending labels at once, flushes (at most ``flush_timeout_s``) and returns with
    ``interrupted=True``.

    Raises :class:`BrokerUnavailableError` naming the address when no broker answers within
    ``connect_timeout_s``.
    """
    bootstrap = bootstrap.removeprefix("kafka://").strip()
    stats = RunStats()
    config: dict[str, Any] = {
        "bootstrap.servers": bootstrap,
        "client.id": "streamdrift-simulator",
        "linger.ms": 5,
        "compression.type": "lz4",
        "message.timeout.ms": 30_000,
        "logger": _log,
        "error_cb": lambda err: _log.warning("kafka: %s", err),
    }
    config.update(producer_config or {})
    producer = Producer(config)
    try:
        producer.list_topics(timeout=connect_timeout_s)
    except KafkaException as exc:
        raise BrokerUnavailableError(
            f"cannot reach Kafka at {bootstrap!r} within {connect_timeout_s:g} s: "
            f"{exc.args[0].str()}"
        ) from None

    def delivered(err: KafkaError | None, _msg: Message) -> None:
        if err is None:
            stats.delivered += 1
        else:
            stats.failed += 1
            stats.last_error = str(err)

    def produce(topic: str, key: bytes, value: bytes) -> None:
        produce_with_retry(producer, topic, value, key, on_delivery=delivered, poll_timeout=0.05)

    pending: deque[tuple[float, bytes, bytes]] = deque()  # (due, key, label), in due order
    clock = time.monotonic
    start = clock()
    next_progress = start + progress_interval_s

    def pump(deadline: float) -> None:
        """Serve deliveries and due labels until ``deadline`` (monotonic seconds)."""
        nonlocal next_progress
        while True:
            now = clock()
            while pending and pending[0][0] <= now:
                _, key, label = pending.popleft()
                produce(labels_topic, key, label)
                stats.labels += 1
            if on_progress is not None and now >= next_progress:
                stats.elapsed_s = now - start
                on_progress(stats)
                next_progress = now + progress_interval_s
            if now >= deadline:
                producer.poll(0)
                return
            wake = min(deadline, pending[0][0]) if pending else deadline
            producer.poll(min(max(wake - now, 0.0), 0.1))

    timed = replace(scenario, start_time=time.time())
    try:
        for message in generate(timed, max_events):
            due = start + message.first_event / scenario.rate
            if duration_s is not None and due - start >= duration_s:
                break
            pump(due)
            produce(input_topic, message.key, message.value)
            stats.messages += 1
            stats.events += message.events
            pending.extend(
                (due + scenario.label_delay_s, message.key, label) for label in message.labels
            )
        if pending:
            pump(pending[-1][0])
    except KeyboardInterrupt:
        stats.interrupted = True
        while pending:
            _, key, label = pending.popleft()
            produce(labels_topic, key, label)
            stats.labels += 1
    finally:
        stats.undelivered = producer.flush(flush_timeout_s)
        stats.elapsed_s = clock() - start
    if on_progress is not None:
        on_progress(stats)
    return stats
