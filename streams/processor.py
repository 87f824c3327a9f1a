"""Pure batch logic of the worker: records of one partition in, state updates and findings out.

Nothing here does I/O, so the whole data flow — decode → validate → admit → update state →
decide — is unit-testable; ``streams.runtime`` wires it to Kafka and Redis.

Exactly-once state: every partition's state remembers the next offset it expects. A record
below it was already applied before the last checkpoint (a duplicate read after a crash or a
rebalance) and is skipped, so replays never double-count.
"""

from __future__ import annotations

import logging
import math
from collections import defaultdict
from dataclasses import dataclass, field
from typing import Any, Iterable

import msgspec
import numpy as np

from detectors import (
    CategoricalMonitor,
    Detection,
    ErrorMonitor,
    MonitorParams,
    NumericMonitor,
    StateError,
    ignored_features,
    model_task,
    monitor_from_bytes,
    resolve,
)
from streams.checkpoint import META_PREFIX, SEP, Claim
from streams.codec import Event, Label, Limits, Reason, decode_events, decode_labels, element_bytes

log = logging.getLogger("streamdrift")

Monitor = NumericMonitor | CategoricalMonitor | ErrorMonitor

_VERSIONS = f"{META_PREFIX}versions"
UNKNOWN_MISSING = f"{META_PREFIX}unknown_missing"
_PENDING = f"{META_PREFIX}pending_labels"
ERROR_SERIES = "error_rate"


@dataclass(frozen=True, slots=True)
class Record:
    """One Kafka message of the partition being processed."""

    offset: int
    timestamp: float  # Kafka timestamp, epoch seconds
    value: bytes | None


@dataclass(frozen=True, slots=True)
class AdmissionLimits:
    """Limits that protect a worker from a flood of new names (per partition state).

    The bound on categories per feature is each monitor's own ``max_categories`` parameter.
    """

    max_models: int = 1_000
    max_features_per_model: int = 2_000


@dataclass(frozen=True, slots=True)
class DeadLetter:
    payload: bytes
    reason: Reason
    detail: str
    offset: int
    index: int | None = None


@dataclass(frozen=True, slots=True)
class Finding:
    """A detection with the context an alert needs."""

    model: str
    model_version: str | None
    feature: str
    kind: str  # "feature" | "prediction" | "performance"
    detection: Detection
    time: float  # Kafka timestamp of the record that triggered it: a replay rebuilds the same alert


@dataclass
class Outcome:
    events: int = 0
    duplicates: int = 0
    findings: list[Finding] = field(default_factory=list)
    dead_letters: list[DeadLetter] = field(default_factory=list)
    joins: list[tuple[str, str, bytes]] = field(default_factory=list)  # (model, event_id, packed)
    max_event_time: float | None = None
    join_lags: list[tuple[str, float]] = field(default_factory=list)  # (model, label time − prediction time)


@dataclass
class PendingLabel:
    model: str
    event_id: str
    label: float | str
    timestamp: float
    offset: int
    arrived: float  # worker clock, epoch seconds


class PartitionState:
    """Everything one worker holds for one owned partition, and what its checkpoint writes."""

    def __init__(self, topic: str, partition: int, epoch: int, next_offset: int | None) -> None:
        self.topic = topic
        self.partition = partition
        self.epoch = epoch
        self.next_offset = next_offset
        self.monitors: dict[str, Monitor] = {}
        self.features_by_model: dict[str, set[str]] = defaultdict(set)
        self.versions: dict[str, str | None] = {}
        self.unknown_missing: dict[str, int] = {}  # series seen only as null so far
        self.pending: list[PendingLabel] = []
        self.corrupt: list[str] = []  # series whose stored state could not be read (started afresh)
        self.dirty: set[str] = set()
        self.events_since_checkpoint = 0

    @classmethod
    def from_claim(cls, topic: str, partition: int, claim: Claim) -> PartitionState:
        state = cls(topic, partition, claim.epoch, claim.offset)
        for raw_name, blob in claim.fields.items():
            name = raw_name.decode()
            if name == _VERSIONS:
                state.versions = msgspec.msgpack.decode(blob)
            elif name == UNKNOWN_MISSING:
                state.unknown_missing = msgspec.msgpack.decode(blob)
            elif name == _PENDING:
                state.pending = msgspec.msgpack.decode(blob, type=list[PendingLabel])
            else:
                try:
                    state.monitors[name] = monitor_from_bytes(blob)
                except StateError:
                    state.corrupt.append(name)
        for name in [*state.monitors, *state.unknown_missing]:
            model, _, feature = name.partition(SEP)
            state.features_by_model[model].add(feature)
        for model in state.versions:  # models admitted with no series yet still count
            state.features_by_model[model]
        return state

    def checkpoint_fields(self) -> dict[str, bytes]:
        """Serialized fields changed since the last checkpoint (partition meta always included)."""
        fields = {name: self.monitors[name].to_bytes() for name in self.dirty if name in self.monitors}
        fields[_VERSIONS] = msgspec.msgpack.encode(self.versions)
        fields[UNKNOWN_MISSING] = msgspec.msgpack.encode(self.unknown_missing)
        fields[_PENDING] = msgspec.msgpack.encode(self.pending)
        return fields

    def mark_checkpointed(self) -> None:
        self.dirty.clear()
        self.events_since_checkpoint = 0

    def _skip(self, offset: int) -> bool:
        if self.next_offset is not None and offset < self.next_offset:
            return True
        self.next_offset = offset + 1
        return False


def series_name(model: str, feature: str) -> str:
    return f"{model}{SEP}{feature}"


class _Params:
    """Resolved monitor parameters per series (the configuration is fixed for a worker's life)."""

    def __init__(self, config: dict[str, Any]) -> None:
        self.config = config
        self._cache: dict[tuple[str, str], MonitorParams] = {}

    def __call__(self, model: str, feature: str) -> MonitorParams:
        key = (model, feature)
        if key not in self._cache:
            self._cache[key] = resolve(self.config, model, feature)
        return self._cache[key]


class PredictionProcessor:
    """Applies a batch of prediction messages of one partition to its state."""

    def __init__(self, config: dict[str, Any], limits: Limits, admission: AdmissionLimits) -> None:
        self.config = config
        self.limits = limits
        self.admission = admission
        self.params = _Params(config)
        self._ignored_by_model: dict[str, frozenset[str]] = {}

    def process(self, state: PartitionState, records: Iterable[Record]) -> Outcome:
        out = Outcome()
        batch = _Batch()
        for record in records:
            if state._skip(record.offset):
                out.duplicates += 1
                continue
            try:
                self._accept(state, record, batch, out)
            except Exception as exc:  # a bug must not turn one message into a crash loop
                log.exception("unexpected error on %s[%d]@%d", state.topic, state.partition, record.offset)
                out.dead_letters.append(DeadLetter(record.value or b"", Reason.INTERNAL_ERROR, repr(exc), record.offset))
        state.events_since_checkpoint += out.events
        out.findings = self._apply(state, batch, {r.offset: r.timestamp for r in records})
        return out

    def _accept(self, state: PartitionState, record: Record, batch: _Batch, out: Outcome) -> None:
        events, rejections = decode_events(record.value, record.timestamp, self.limits)
        for rejection in rejections:
            out.dead_letters.append(DeadLetter(rejection.payload, rejection.reason, rejection.detail, record.offset, rejection.index))
        for event in events:
            refused = self._admit(state, event, batch)
            if refused:
                reason, detail = refused
                payload = element_bytes(record.value or b"", event.index)
                out.dead_letters.append(DeadLetter(payload, reason, detail, record.offset, event.index))
                continue
            batch.add(event, record.offset)
            state.versions[event.model] = event.model_version
            out.events += 1
            out.max_event_time = max(out.max_event_time or event.timestamp, event.timestamp)
            if event.event_id is not None and event.prediction is not None:
                packed = msgspec.msgpack.encode((event.prediction, event.model_version, event.timestamp))
                out.joins.append((event.model, event.event_id, packed))

    # -- admission: every check happens before any state changes, so a refused event leaves no trace

    def _admit(self, state: PartitionState, event: Event, batch: _Batch) -> tuple[Reason, str] | None:
        self._drop_ignored(event)
        known = state.features_by_model.get(event.model)
        if known is None and len(state.features_by_model) >= self.admission.max_models:
            return Reason.TOO_MANY_MODELS, f"more than max_models={self.admission.max_models} models"
        new = [n for n in (*event.numeric, *event.categorical, *event.missing) if known is None or n not in known]
        if new and len(known or ()) + len(new) > self.admission.max_features_per_model:
            limit = self.admission.max_features_per_model
            return Reason.TOO_MANY_FEATURES_FOR_MODEL, f"model {event.model!r} would exceed max_features_per_model={limit}"
        for kinds, kind in ((event.numeric, NumericMonitor), (event.categorical, CategoricalMonitor)):
            for name in kinds:
                series = series_name(event.model, name)
                existing = state.monitors.get(series)
                if (existing is not None and not isinstance(existing, kind)) or batch.kind_clash(series, kind):
                    return Reason.FEATURE_TYPE_CHANGED, f"feature {name!r} changed type (numeric vs categorical)"
        new_categories = []
        for name, value in event.categorical.items():
            series = series_name(event.model, name)
            limit = self.params(event.model, name).max_categories
            fits, is_new = batch.category_fits(series, value, state.monitors.get(series), limit)
            if not fits:
                return Reason.TOO_MANY_CATEGORIES, f"feature {name!r} exceeds max_categories={limit}"
            if is_new:
                new_categories.append((series, value))
        # Admitted: only now does the event take room (a refused event must leave no trace).
        batch.reserve(new_categories)
        state.features_by_model[event.model].update(new)
        return None

    def _drop_ignored(self, event: Event) -> None:
        """Remove the model's ignored features: they are neither monitored nor counted in limits."""
        ignored = self._ignored_by_model.get(event.model)
        if ignored is None:  # the configuration is fixed for the worker's life: resolve once per model
            ignored = self._ignored_by_model[event.model] = ignored_features(self.config, event.model)
        if ignored:
            event.numeric = {n: v for n, v in event.numeric.items() if n not in ignored}
            event.categorical = {n: v for n, v in event.categorical.items() if n not in ignored}
            event.missing = [n for n in event.missing if n not in ignored]

    # -- state update and decision -------------------------------------------------------------

    def _apply(self, state: PartitionState, batch: _Batch, times: dict[int, float]) -> list[Finding]:
        findings: list[Finding] = []
        for series, (values, offsets) in batch.values.items():
            kind = _kind_of(state.monitors.get(series)) or batch.kinds.get(series)
            state.dirty.add(series)
            if kind is None:  # seen only as null so far: its kind is still unknown
                state.unknown_missing[series] = state.unknown_missing.get(series, 0) + len(values)
                continue
            monitor = self._monitor(state, series, kind)
            positions = np.asarray(offsets, dtype=np.int64)
            if kind is NumericMonitor:  # missing values travel inline (NaN / None), in stream order
                detections = monitor.update(np.array([np.nan if v is None else v for v in values]), positions)
            else:
                detections = monitor.update(values, positions)
            findings += self._findings(state, series, detections, times)
        return findings

    def _monitor(self, state: PartitionState, series: str, kind: type) -> Monitor:
        monitor = state.monitors.get(series)
        if monitor is None:
            model, _, feature = series.partition(SEP)
            monitor = state.monitors[series] = kind(self.params(model, feature))
            earlier_missing = state.unknown_missing.pop(series, 0)
            if earlier_missing:  # before any value: there is no window to judge them in yet
                monitor.update_missing(earlier_missing)
        return monitor

    @staticmethod
    def _findings(state: PartitionState, series: str, detections: list[Detection], times: dict[int, float]) -> list[Finding]:
        model, _, feature = series.partition(SEP)
        kind = "prediction" if feature == "prediction" else "feature"
        return [Finding(model, state.versions.get(model), feature, kind, d, times[d.position]) for d in detections]


def _kind_of(monitor: Monitor | None) -> type | None:
    return type(monitor) if isinstance(monitor, (NumericMonitor, CategoricalMonitor)) else None


class _Batch:
    """Values of one batch grouped per series, in stream order (None = missing), for
    vectorised updates."""

    def __init__(self) -> None:
        self.values: dict[str, tuple[list[float | str | None], list[int]]] = {}
        self.kinds: dict[str, type] = {}
        self._new_categories: dict[str, set[str]] = defaultdict(set)

    def add(self, event: Event, offset: int) -> None:
        for features, kind in ((event.numeric, NumericMonitor), (event.categorical, CategoricalMonitor)):
            for name, value in features.items():
                series = series_name(event.model, name)
                self._append(series, value, offset)
                self.kinds[series] = kind
        for name in event.missing:
            self._append(series_name(event.model, name), None, offset)

    def _append(self, series: str, value: float | str | None, offset: int) -> None:
        values, offsets = self.values.setdefault(series, ([], []))
        values.append(value)
        offsets.append(offset)

    def kind_clash(self, series: str, kind: type) -> bool:
        return self.kinds.get(series, kind) is not kind

    def category_fits(
        self, series: str, value: str, monitor: CategoricalMonitor | None, limit: int
    ) -> tuple[bool, bool]:
        """(fits, new): whether ``value`` fits the series' bound counting the batch's admitted but
        not yet applied categories, and whether it would be a new category."""
        new = self._new_categories.get(series, set())
        if value in new or (monitor is not None and monitor.knows(value)):
            return True, False
        fits = monitor.accepts(value, pending_new=new) if monitor is not None else len(new) < limit
        return fits, True

    def reserve(self, categories: list[tuple[str, str]]) -> None:
        for series, value in categories:
            self._new_categories[series].add(value)


class LabelProcessor:
    """Joins labels to predictions and feeds each model's error stream to its ErrorMonitor."""

    def __init__(self, config: dict[str, Any], limits: Limits, ttl_s: float, max_pending: int) -> None:
        self.config = config
        self.params = _Params(config)
        self.limits = limits
        self.ttl_s = ttl_s
        self.max_pending = max_pending

    def decode(self, state: PartitionState, records: Iterable[Record], now: float) -> tuple[list[PendingLabel], Outcome]:
        """Decode new label messages; the caller looks up their predictions, then calls ``apply``."""
        out = Outcome()
        labels: list[PendingLabel] = []
        for record in records:
            if state._skip(record.offset):
                out.duplicates += 1
                continue
            decoded, rejections = decode_labels(record.value, record.timestamp, self.limits)
            out.dead_letters += [DeadLetter(r.payload, r.reason, r.detail, record.offset, r.index) for r in rejections]
            labels += [_pending(label, record.offset, now) for label in decoded]
        return labels, out

    def apply(
        self,
        state: PartitionState,
        labels: list[PendingLabel],
        predictions: dict[tuple[str, str], bytes],
        now: float,
        out: Outcome,
    ) -> Outcome:
        """Apply labels whose prediction was found; keep the rest pending until the TTL."""
        errors: dict[str, tuple[list[float], list[int], str | None]] = {}
        still_pending: list[PendingLabel] = []
        for label in labels:
            packed = predictions.get((label.model, label.event_id))
            if packed is None:
                still_pending.append(label)
                continue
            prediction, version, predicted_at = msgspec.msgpack.decode(packed)
            out.join_lags.append((label.model, label.timestamp - predicted_at))
            error = label_error(prediction, label.label, model_task(self.config, label.model))
            if error is None:
                out.dead_letters.append(_label_letter(label, Reason.INVALID_LABEL, "label and prediction types do not match"))
                continue
            values, offsets, _ = errors.get(label.model, ([], [], None))
            values.append(error)
            offsets.append(label.offset)
            errors[label.model] = (values, offsets, version)  # the newest version labelled wins
            out.events += 1
        state.pending = self._expire(still_pending, now, out)
        state.events_since_checkpoint += out.events
        for model, (values, offsets, version) in errors.items():
            series = series_name(model, ERROR_SERIES)
            monitor = state.monitors.get(series)
            if monitor is None:
                monitor = state.monitors[series] = ErrorMonitor(self.params(model, ERROR_SERIES))
            state.dirty.add(series)
            state.versions[model] = version
            detections = monitor.update(np.asarray(values, dtype=np.float64), np.asarray(offsets, dtype=np.int64))
            times = {label.offset: label.timestamp for label in labels}
            out.findings += [Finding(model, version, ERROR_SERIES, "performance", d, times[d.position]) for d in detections]
        return out

    def _expire(self, pending: list[PendingLabel], now: float, out: Outcome) -> list[PendingLabel]:
        kept = []
        for label in pending:
            if now - label.arrived > self.ttl_s:
                out.dead_letters.append(_label_letter(label, Reason.LABEL_UNMATCHED, f"no prediction within {self.ttl_s:g}s"))
            elif len(kept) >= self.max_pending:
                out.dead_letters.append(_label_letter(label, Reason.LABEL_BUFFER_FULL, f"more than {self.max_pending} pending labels"))
            else:
                kept.append(label)
        return kept


def label_error(prediction: float | str, label: float | str, task: str = "auto") -> float | None:
    """The model's error on one labelled event: 0/1 for classification, |error| for regression.

    ``auto`` treats a 0/1 label with a prediction in [0, 1] as binary classification
    (threshold 0.5), other numbers as regression, strings as classes.

    >>> label_error(0.91, 1.0), label_error(0.2, 1.0), label_error(3.5, 2.0), label_error("cat", "dog")
    (0.0, 1.0, 1.5, 1.0)
    >>> label_error(0.7, 1.0, task="regression")
    0.30000000000000004
    """
    prediction, label = _as_number(prediction), _as_number(label)
    if isinstance(prediction, str) or isinstance(label, str):
        return float(_as_class(prediction) != _as_class(label))
    binary = label in (0.0, 1.0) and 0.0 <= prediction <= 1.0
    if task == "classification" or (task == "auto" and binary):
        predicted = float(prediction >= 0.5) if binary else prediction
        return float(predicted != label)
    error = abs(prediction - label)
    return error if math.isfinite(error) else None


def _as_number(value: float | str) -> float | str:
    """Boolean predictions arrive as the categories "true"/"false"; compare them as 1/0."""
    return {"true": 1.0, "false": 0.0}.get(value, value) if isinstance(value, str) else value


def _as_class(value: float | str) -> str:
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    return str(value)


def _pending(label: Label, offset: int, now: float) -> PendingLabel:
    return PendingLabel(label.model, label.event_id, label.label, label.timestamp, offset, now)


def _label_letter(label: PendingLabel, reason: Reason, detail: str) -> DeadLetter:
    body = {"model": label.model, "event_id": label.event_id, "label": label.label, "timestamp": label.timestamp}
    return DeadLetter(msgspec.json.encode(body), reason, detail, label.offset)
