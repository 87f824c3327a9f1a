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
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any, Iterable, Iterator, Mapping

import msgspec
import numpy as np

from detectors import (
    Baseline,
    CategoricalMonitor,
    Detection,
    ErrorMonitor,
    MonitorParams,
    MultivariateParams,
    NumericMonitor,
    PCAReconstructionMonitor,
    StateError,
    ignored_features,
    model_task,
    monitor_from_bytes,
    resolve,
)
from streams.checkpoint import META_PREFIX, Claim, parse_series, series_name
from streams.codec import PREDICTION, Event, Label, Limits, Reason, decode_events, decode_labels, element_bytes

log = logging.getLogger("streamdrift")

Monitor = NumericMonitor | CategoricalMonitor | ErrorMonitor | PCAReconstructionMonitor

_VERSIONS = f"{META_PREFIX}versions"
UNKNOWN_MISSING = f"{META_PREFIX}unknown_missing"
_PENDING = f"{META_PREFIX}pending_labels"
ERROR_SERIES = "error_rate"
MULTIVARIATE_SERIES = "multivariate"  # the model's PCA reconstruction-error monitor


def restore_monitor(name: str, blob: bytes) -> Monitor:
    """The monitor stored in state field ``name``; ``StateError`` if it cannot be restored."""
    if parse_series(name)[2] == MULTIVARIATE_SERIES:
        return PCAReconstructionMonitor.from_bytes(blob)
    return monitor_from_bytes(blob)


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
    # Versions of a model monitored side by side (a canary next to the stable one); beyond it
    # the least recently seen version's series are retired (dropped from state and Redis).
    max_versions_per_model: int = 3


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
    reference_source: str | None = None  # the stored baseline compared with (None: warm-up)


@dataclass
class Outcome:
    events: int = 0
    duplicates: int = 0
    findings: list[Finding] = field(default_factory=list)
    dead_letters: list[DeadLetter] = field(default_factory=list)
    joins: list[tuple[str, str, bytes]] = field(default_factory=list)  # (model, event_id, packed)
    max_event_time: float | None = None
    join_lags: list[tuple[str, float]] = field(default_factory=list)  # (model, label time − prediction time)
    failed_series: list[str] = field(default_factory=list)  # monitors that raised and were restarted


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
        self.versions: dict[str, list[str | None]] = {}  # per model, least recently seen first
        self.retired: set[str] = set()  # series dropped since the last checkpoint
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
                state.versions = {
                    model: versions if isinstance(versions, list) else [versions]  # before 0.2: the last one
                    for model, versions in msgspec.msgpack.decode(blob).items()
                }
            elif name == UNKNOWN_MISSING:
                state.unknown_missing = msgspec.msgpack.decode(blob)
            elif name == _PENDING:
                state.pending = msgspec.msgpack.decode(blob, type=list[PendingLabel])
            else:
                try:
                    state.monitors[name] = restore_monitor(name, blob)
                except StateError:
                    state.corrupt.append(name)
        for name in [*state.monitors, *state.unknown_missing]:
            model, _, feature = parse_series(name)
            state.features_by_model[model].add(feature)
        for model in state.versions:  # models admitted with no series yet still count
            state.features_by_model[model]
        return state

    def checkpoint_fields(self) -> dict[str, bytes]:
        """Serialized fields changed since the last checkpoint (partition meta always included)."""
        # A retired series that came back since is written, not deleted.
        fields = {name: b"" for name in self.retired if name not in self.monitors}  # the script deletes these
        fields.update({name: self.monitors[name].to_bytes() for name in self.dirty if name in self.monitors})
        fields[_VERSIONS] = msgspec.msgpack.encode(self.versions)
        fields[UNKNOWN_MISSING] = msgspec.msgpack.encode(self.unknown_missing)
        fields[_PENDING] = msgspec.msgpack.encode(self.pending)
        return fields

    def mark_checkpointed(self) -> None:
        self.dirty.clear()
        self.retired.clear()
        self.events_since_checkpoint = 0

    def _skip(self, offset: int) -> bool:
        if self.next_offset is not None and offset < self.next_offset:
            return True
        self.next_offset = offset + 1
        return False

    def saw_version(self, model: str, version: str | None) -> None:
        versions = self.versions.setdefault(model, [])
        if not versions or versions[-1] != version:
            if version in versions:
                versions.remove(version)
            versions.append(version)

    def retire_versions(self, keep: int) -> None:
        """Drop the series of each model's least recently seen versions beyond ``keep``."""
        for model, versions in self.versions.items():
            while len(versions) > keep:
                old = versions.pop(0)
                names = [n for n in (*self.monitors, *self.unknown_missing) if parse_series(n)[:2] == (model, old)]
                for name in names:
                    self.monitors.pop(name, None)
                    self.unknown_missing.pop(name, None)
                    self.dirty.discard(name)
                self.retired.update(names)
                log.info("retired %d series of %s version %s on %s[%d]", len(names), model, old, self.topic, self.partition)


Baselines = Mapping[tuple[str, str | None], Baseline]


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
    """Applies a batch of prediction messages of one partition to its state.

    ``baselines`` (kept current by the caller) holds the stored reference of each (model,
    version): a series of a version with a baseline is compared with it from its first value
    (and re-seeded when a new revision appears); other series warm up on their own first values.

    With ``multivariate`` parameters, each (model, version) also gets a PCA reconstruction-error
    monitor over its numeric features (those of its first batch, sorted, at most
    ``max_multivariate_features``; a feature absent from an event counts as missing and is
    imputed with the reference mean).
    """

    def __init__(
        self,
        config: dict[str, Any],
        limits: Limits,
        admission: AdmissionLimits,
        baselines: Baselines | None = None,
        multivariate: MultivariateParams | None = None,
        max_multivariate_features: int = 50,
    ) -> None:
        self.config = config
        self.limits = limits
        self.admission = admission
        self.params = _Params(config)
        self.baselines: Baselines = baselines if baselines is not None else {}
        self.multivariate = multivariate
        self.max_multivariate_features = max_multivariate_features
        self._ignored_by_model: dict[str, frozenset[str]] = {}
        self._unusable: set[tuple[str, str]] = set()  # (series, baseline) already reported unusable

    def process(self, state: PartitionState, records: Iterable[Record]) -> Outcome:
        out = Outcome()
        batch = _Batch(rows=self.multivariate is not None)
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
        out.findings = self._apply(state, batch, {r.offset: r.timestamp for r in records}, out)
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
            state.saw_version(event.model, event.model_version)
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
                series = series_name(event.model, event.model_version, name)
                existing = state.monitors.get(series)
                if (existing is not None and not isinstance(existing, kind)) or batch.kind_clash(series, kind):
                    return Reason.FEATURE_TYPE_CHANGED, f"feature {name!r} changed type (numeric vs categorical)"
        new_categories = []
        for name, value in event.categorical.items():
            series = series_name(event.model, event.model_version, name)
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

    def _apply(self, state: PartitionState, batch: _Batch, times: dict[int, float], out: Outcome) -> list[Finding]:
        findings: list[Finding] = []
        for series, (values, offsets, event_times) in batch.values.items():
            kind = _kind_of(state.monitors.get(series)) or batch.kinds.get(series)
            state.dirty.add(series)
            if kind is None:  # seen only as null so far: its kind is still unknown
                state.unknown_missing[series] = state.unknown_missing.get(series, 0) + len(values)
                continue
            with _bulkhead(state, series, out):
                findings += self._apply_values(state, series, kind, values, offsets, event_times, times)
        for (model, version), (rows, offsets) in batch.rows.items():
            with _bulkhead(state, series_name(model, version, MULTIVARIATE_SERIES), out):
                findings += self._apply_rows(state, model, version, rows, offsets, times)
        state.retire_versions(self.admission.max_versions_per_model)
        return findings

    def _apply_values(
        self, state: PartitionState, series: str, kind: type, values: list[Any], offsets: list[int],
        event_times: list[float], times: dict[int, float],
    ) -> list[Finding]:
        monitor = self._monitor(state, series, kind)
        self._follow_baseline(series, monitor)
        positions = np.asarray(offsets, dtype=np.int64)
        at = np.asarray(event_times, dtype=np.float64)  # for event-time windows
        if kind is NumericMonitor:  # missing values travel inline (NaN / None), in stream order
            detections = monitor.update(np.array([np.nan if v is None else v for v in values]), positions, at)
        else:
            detections = monitor.update(values, positions, at)
        return _findings(series, monitor, detections, times)

    def _apply_rows(
        self, state: PartitionState, model: str, version: str | None, rows: list[dict[str, float]],
        offsets: list[int], times: dict[int, float],
    ) -> list[Finding]:
        """Feed a (model, version)'s numeric rows to its PCA monitor (created on its first rows
        with at least two numeric features)."""
        series = series_name(model, version, MULTIVARIATE_SERIES)
        monitor = state.monitors.get(series)
        if monitor is None:
            names = sorted({name for row in rows for name in row if name != PREDICTION})[: self.max_multivariate_features]
            if len(names) < 2:
                return []
            monitor = state.monitors[series] = PCAReconstructionMonitor(names, self.multivariate)
        assert isinstance(monitor, PCAReconstructionMonitor)
        column = {name: j for j, name in enumerate(monitor.features)}
        matrix = np.full((len(rows), len(column)), np.nan)
        for i, row in enumerate(rows):
            for name, value in row.items():
                j = column.get(name)
                if j is not None:
                    matrix[i, j] = value
        state.dirty.add(series)
        return _findings(series, monitor, monitor.update(matrix, np.asarray(offsets, dtype=np.int64)), times)

    def _monitor(self, state: PartitionState, series: str, kind: type) -> Monitor:
        monitor = state.monitors.get(series)
        if monitor is None:
            model, _, feature = parse_series(series)
            monitor = state.monitors[series] = kind(self.params(model, feature))
            earlier_missing = state.unknown_missing.pop(series, 0)
            if earlier_missing:  # before any value: there is no window to judge them in yet
                monitor.update_missing(earlier_missing)
        return monitor

    def _follow_baseline(self, series: str, monitor: Monitor) -> None:
        """Seed the series with its version's stored baseline if it has one it does not use yet."""
        model, version, feature = parse_series(series)
        baseline = self.baselines.get((model, version))
        if baseline is None or monitor.reference_source == baseline.label or (series, baseline.label) in self._unusable:
            return
        profile = baseline.features.get(feature)
        if profile is None:  # not in the training data: the series warms up on the stream
            self._unusable.add((series, baseline.label))
            return
        try:
            monitor.seed(profile, baseline.label)
        except ValueError as exc:
            self._unusable.add((series, baseline.label))
            log.warning("baseline %s not used for %r: %s", baseline.label, feature, exc)


@contextmanager
def _bulkhead(state: PartitionState, series: str, out: Outcome) -> Iterator[None]:
    """A bug in one series' monitor must not crash the worker into a loop on the same batch:
    the series is logged, counted and restarted afresh (like an unreadable stored state); the
    other series and the offsets go on."""
    try:
        yield
    except Exception:
        log.exception("monitor of %r on %s[%d] failed: restarting that series", series, state.topic, state.partition)
        state.monitors.pop(series, None)
        state.retired.add(series)  # its stored state goes too: the next values start it afresh
        state.dirty.discard(series)
        out.failed_series.append(series)


def _findings(series: str, monitor: Monitor, detections: list[Detection], times: dict[int, float]) -> list[Finding]:
    model, version, feature = parse_series(series)
    if isinstance(monitor, PCAReconstructionMonitor):
        kind = "multivariate"
    else:
        kind = "performance" if isinstance(monitor, ErrorMonitor) else "prediction" if feature == "prediction" else "feature"
    return [Finding(model, version, feature, kind, d, times[d.position], monitor.reference_source) for d in detections]


def _kind_of(monitor: Monitor | None) -> type | None:
    return type(monitor) if isinstance(monitor, (NumericMonitor, CategoricalMonitor)) else None


class _Batch:
    """Values of one batch grouped per series, in stream order (None = missing), for
    vectorised updates."""

    def __init__(self, rows: bool = False) -> None:
        self.values: dict[str, tuple[list[float | str | None], list[int], list[float]]] = {}  # values, offsets, event times
        self.kinds: dict[str, type] = {}
        self._new_categories: dict[str, set[str]] = defaultdict(set)
        self._collect_rows = rows
        # (model, version) -> numeric features of each event and its offset, for the PCA monitor
        self.rows: dict[tuple[str, str | None], tuple[list[dict[str, float]], list[int]]] = {}

    def add(self, event: Event, offset: int) -> None:
        if self._collect_rows and event.numeric:
            rows, offsets = self.rows.setdefault((event.model, event.model_version), ([], []))
            rows.append(event.numeric)
            offsets.append(offset)
        for features, kind in ((event.numeric, NumericMonitor), (event.categorical, CategoricalMonitor)):
            for name, value in features.items():
                series = series_name(event.model, event.model_version, name)
                self._append(series, value, offset, event.timestamp)
                self.kinds[series] = kind
        for name in event.missing:
            self._append(series_name(event.model, event.model_version, name), None, offset, event.timestamp)

    def _append(self, series: str, value: float | str | None, offset: int, time: float) -> None:
        values, offsets, times = self.values.setdefault(series, ([], [], []))
        values.append(value)
        offsets.append(offset)
        times.append(time)

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

    def __init__(
        self, config: dict[str, Any], limits: Limits, ttl_s: float, max_pending: int, max_versions: int = 3
    ) -> None:
        self.config = config
        self.params = _Params(config)
        self.limits = limits
        self.ttl_s = ttl_s
        self.max_pending = max_pending
        self.max_versions = max_versions

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
        errors: dict[str, tuple[list[float], list[int]]] = {}  # per error series
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
            values, offsets = errors.setdefault(series_name(label.model, version, ERROR_SERIES), ([], []))
            values.append(error)
            offsets.append(label.offset)
            state.saw_version(label.model, version)
            out.events += 1
        state.pending = self._expire(still_pending, now, out)
        state.events_since_checkpoint += out.events
        times = {label.offset: label.timestamp for label in labels}
        for series, (values, offsets) in errors.items():
            monitor = state.monitors.get(series)
            if monitor is None:
                monitor = state.monitors[series] = ErrorMonitor(self.params(parse_series(series)[0], ERROR_SERIES))
            state.dirty.add(series)
            detections = monitor.update(np.asarray(values, dtype=np.float64), np.asarray(offsets, dtype=np.int64))
            out.findings += _findings(series, monitor, detections, times)
        state.retire_versions(self.max_versions)
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
