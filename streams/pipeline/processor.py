"""Pure batch logic of the worker: records of one partition in, state updates and findings out.

Nothing here does I/O, so the whole data flow — decode → validate → admit → update state →
decide — is unit-testable; ``streams.runtime`` wires it to Kafka and Redis. The partition's
state (and its exactly-once next offset) is :class:`streams.state.partition.PartitionState`.
"""

from __future__ import annotations

import logging
import math
from collections import defaultdict
from collections.abc import Container, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from operator import itemgetter
from typing import Any, cast

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
    allowed_features,
    ignored_features,
    multivariate_params,
    resolve,
)
from streams.pipeline.admission import AdmissionLimits
from streams.pipeline.codec import (
    PREDICTION,
    Elements,
    Event,
    Invalid,
    Limits,
    RawEvent,
    Reason,
    check_ids,
    classify_column,
    decode_events,
    event_time,
    names_pass,
    typed_events,
    validate_events,
)
from streams.pipeline.outcome import DeadLetter, Finding, Outcome, Record
from streams.state.keys import parse_series, series_name
from streams.state.partition import (
    MULTIVARIATE_SERIES,
    Monitor,
    PartitionState,
)

log = logging.getLogger("streamdrift")


Baselines = Mapping[tuple[str, str | None], Baseline]


MAX_CACHED = 100_000  # entries of a per-name cache before it starts again (bounds its memory)


class ResolvedParams:
    """Resolved monitor parameters per series (the configuration is fixed for a worker's life),
    cached with a bound: a flood of made-up names must not grow the cache for good."""

    def __init__(self, config: dict[str, Any]) -> None:
        self.config = config
        self._cache: dict[tuple[str, str], MonitorParams] = {}

    def __call__(self, model: str, feature: str) -> MonitorParams:
        key = (model, feature)
        params = self._cache.get(key)
        if params is None:
            if len(self._cache) >= MAX_CACHED:
                self._cache.clear()
            params = self._cache[key] = resolve(self.config, model, feature)
        return params


class _Dropped:
    """The features of a model that are not monitored: ``ignore_features``, and with an
    ``allow_features`` list every feature not on it (the prediction is always monitored)."""

    __slots__ = ("allowed", "ignored")

    def __init__(self, ignored: frozenset[str], allowed: frozenset[str] | None) -> None:
        self.ignored = ignored
        self.allowed = allowed

    def __contains__(self, name: object) -> bool:
        if name in self.ignored:
            return True
        return self.allowed is not None and name not in self.allowed and name != PREDICTION

    def __bool__(self) -> bool:
        return bool(self.ignored) or self.allowed is not None


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
        min_columnar_events: int = 8,
    ) -> None:
        self.config = config
        self.limits = limits
        self.admission = admission
        self.params = ResolvedParams(config)
        self.baselines: Baselines = baselines if baselines is not None else {}
        self.multivariate = multivariate
        self.max_multivariate_features = max_multivariate_features
        # A shape with fewer events in a batch costs more column by column than event by event
        # (measured: all-distinct shapes ran ~3x slower column by column).
        self.min_columnar_events = min_columnar_events
        self._ignored_by_model: dict[str, _Dropped] = {}
        self._unusable: set[tuple[str, str]] = set()  # (series, baseline) already reported unusable

    def process(
        self,
        state: PartitionState,
        records: Sequence[Record],
        columnar: bool = True,
        now: float | None = None,
    ) -> Outcome:
        """Apply ``records`` (one partition's, in offset order) to ``state``.

        Events go column by column where admission can neither refuse them nor change anything
        (see ``_take_columns``), the others one by one; ``columnar=False`` takes every event one
        by one: the reference the columnar path matches exactly (the tests compare them).
        ``now`` (the worker's clock) caps how far record timestamps may move the admission
        clock.

        Every fresh record is accounted for once, whatever it holds: its events are counted or
        dead-lettered with a reason (``internal_error`` if handling it raised anything at all).
        """
        out = Outcome()
        fresh = []
        for position, record in enumerate(records):
            if state._skip(record.offset):
                out.duplicates += 1
            else:
                fresh.append((position, record))
        if fresh:
            self._advance_clock(state, fresh, now, out)
        batch = _Batch(self.multivariate is not None, self.limits.max_events_per_message + 1)
        left: list[tuple[int, Record, list[_Item] | None]] | None = None
        if columnar:
            try:
                left = self._take_columns(state, records, fresh, batch, out)
            except Exception:  # never expected; the per-event path guards each record
                log.exception(
                    "columnar path failed on %s[%d]: taking the batch event by event",
                    state.topic,
                    state.partition,
                )
                batch = _Batch(
                    self.multivariate is not None, self.limits.max_events_per_message + 1
                )
                out.events, out.max_event_time = 0, None
        if left is None:
            left = [(position, record, None) for position, record in fresh]
        for position, record, items in left:
            try:
                self._accept(state, record, position, items, batch, out)
            except Exception as exc:  # a bug must not turn one message into a crash loop
                log.exception(
                    "unexpected error on %s[%d]@%d", state.topic, state.partition, record.offset
                )
                out.dead_letters.append(
                    DeadLetter(
                        record.value or b"", Reason.INTERNAL_ERROR, _describe(exc), record.offset
                    )
                )
        batch.close(state, out)
        self._touch_models(state, batch)
        state.events_since_checkpoint += out.events
        out.findings = self._apply(state, batch, {r.offset: r.timestamp for r in records}, out)
        return out

    def _advance_clock(
        self,
        state: PartitionState,
        fresh: list[tuple[int, Record]],
        now: float | None,
        out: Outcome,
    ) -> None:
        """Move the admission clock and evict what has been idle too long (once a minute)."""
        latest = max(record.timestamp for _, record in fresh)
        if state.ledger.advance(latest, now, self.admission, self.limits.max_future_skew_s):
            models, series = state.ledger.idle(self.admission)
            for model in models:
                state.evict_model(model)
            state.evict_series([name for name in series if parse_series(name)[0] not in models])
            out.evicted_models += models
            if models or series:
                log.info(
                    "evicted %d idle models and %d idle series on %s[%d]",
                    len(models),
                    len(series),
                    state.topic,
                    state.partition,
                )
            state.ledger_dirty = True

    def _touch_models(self, state: PartitionState, batch: _Batch) -> None:
        for model, count in batch.model_events.items():
            state.ledger_dirty |= state.ledger.touch_model(model, count, self.admission)

    def _accept(
        self,
        state: PartitionState,
        record: Record,
        position: int,
        items: list[_Item] | None,
        batch: _Batch,
        out: Outcome,
    ) -> None:
        """The per-event path for one record: its whole message (``items`` None), or the typed
        events of it the columnar path left."""
        try:  # nothing of the record is in the batch yet: on any error, all of it is dead-lettered
            if items is None:
                events, rejections = decode_events(record.value, record.timestamp, self.limits)
            else:
                events, rejections = validate_events(
                    record.value or b"", items, record.timestamp, self.limits
                )
        except Exception as exc:
            log.exception("could not decode %s[%d]@%d", state.topic, state.partition, record.offset)
            out.dead_letters.append(
                DeadLetter(
                    record.value or b"", Reason.INTERNAL_ERROR, _describe(exc), record.offset
                )
            )
            return
        for rejection in rejections:
            out.dead_letters.append(
                DeadLetter(
                    rejection.payload,
                    rejection.reason,
                    rejection.detail,
                    record.offset,
                    rejection.index,
                )
            )
        elements = Elements(record.value)
        budget = _Budget(self.admission.max_new_series_per_message)
        for event in events:
            try:
                refused = self._admit(state, event, batch, budget)
            except Exception as exc:
                log.exception(
                    "could not admit an event of %s[%d]@%d",
                    state.topic,
                    state.partition,
                    record.offset,
                )
                refused = Reason.INTERNAL_ERROR, _describe(exc)
            if refused:
                reason, detail = refused
                out.dead_letters.append(
                    DeadLetter(
                        _payload(elements, event.index), reason, detail, record.offset, event.index
                    )
                )
                continue
            batch.add(event, record.offset, batch.seq(position, event.index))
            out.events += 1
            out.max_event_time = _latest(out.max_event_time, event.timestamp)

    # -- the columnar path: per shape of event, not per event

    def _take_columns(
        self,
        state: PartitionState,
        records: Sequence[Record],
        fresh: list[tuple[int, Record]],
        batch: _Batch,
        out: Outcome,
    ) -> list[tuple[int, Record, list[_Item] | None]]:
        """Take the events that admission would neither refuse nor change anything for, column by
        column per shape; return the rest for the per-event path, in stream order: (position,
        record, its typed events left, or None for the whole message).

        Taking them out of order is exact: such an event (known model and names, each series of
        a fixed kind, categories its series has counted, valid values) is judged on the state at
        the start of the batch, and what makes it so only grows within a batch; everything
        order-dependent (values per series, versions, joins) is merged back by stream position.
        """
        groups: dict[_Key, tuple[list[int], list[_Item]]] = {}  # per shape: seqs and events
        whole: set[int] = set()  # positions of messages the typed decoder refused
        left: dict[int, list[_Item]] = defaultdict(list)
        for position, record in fresh:
            items = typed_events(record.value, self.limits)
            if items is None:
                whole.add(position)
                continue
            for item in items:
                index, raw = item
                key = (
                    raw.model,
                    raw.model_version,
                    tuple(raw.features),
                    raw.prediction is not None,
                )
                group = groups.get(key)
                if group is None:
                    group = groups[key] = ([], [])
                group[0].append(batch.seq(position, index))
                group[1].append(item)
        offsets = np.fromiter((r.offset for r in records), dtype=np.int64, count=len(records))
        kafka_times = np.fromiter(
            (r.timestamp for r in records), dtype=np.float64, count=len(records)
        )
        for key, (seqs, items) in groups.items():
            shape = (
                self._plan(state, key, seqs, items)
                if len(items) >= self.min_columnar_events
                else None
            )
            rest = (
                zip(seqs, items, strict=True)
                if shape is None
                else self._take_shape(shape, batch, out, offsets, kafka_times)
            )
            for seq, item in rest:
                left[seq // batch.stride].append(item)
        return [
            (
                position,
                records[position],
                sorted(left[position], key=_index_of) if position in left else None,
            )
            for position in sorted([*whole, *left])
        ]

    def _plan(
        self, state: PartitionState, key: _Key, seqs: list[int], items: list[_Item]
    ) -> _Shape | None:
        """The shape of these events, with what each column's series expects; None if they need
        the per-event path (a new model or name, invalid names)."""
        model, version, features, with_prediction = key
        known = state.features_by_model.get(model)
        if (
            known is None
            or model in state.ledger.probation
            or not names_pass(model, features, with_prediction, self.limits)
        ):
            return None  # a model on probation may be evicted within the batch: event by event
        try:
            check_ids(version, None, self.limits)
        except Invalid:
            return None
        shape = _Shape(
            model,
            version,
            (*features, PREDICTION) if with_prediction else features,
            with_prediction,
            seqs,
            items,
        )
        ignored = self._ignored(model)
        for name in shape.names:
            if name in ignored:
                shape.expect.append((_Ignored, ()))
            elif name not in known:
                return None
            else:
                series = series_name(model, version, name)
                monitor = state.monitors.get(series)
                if monitor is None and series not in state.unknown_missing:
                    # a new series (a known name under a new version): admission counts it
                    return None
                if isinstance(monitor, NumericMonitor):
                    shape.expect.append((NumericMonitor, ()))
                elif isinstance(monitor, CategoricalMonitor):
                    shape.expect.append((CategoricalMonitor, monitor.counts.counts))
                else:
                    # not monitored yet (or not a feature's monitor): only nulls go without
                    # admission
                    shape.expect.append((None, ()))
        return shape

    def _take_shape(
        self,
        shape: _Shape,
        batch: _Batch,
        out: Outcome,
        offsets: np.ndarray,
        kafka_times: np.ndarray,
    ) -> list[tuple[int, _Item]]:
        """Add a shape's events to the batch columnwise; return the (seq, item) left for the
        per-event path: the events holding a value that needs it (all, if that leaves none or the
        rest still does not go)."""
        seqs = np.array(shape.seqs, dtype=np.int64)
        positions = seqs // batch.stride
        columns = self._columns(shape, shape.items, kafka_times[positions])
        left: list[tuple[int, _Item]] = []
        if columns is None:
            misfits = self._misfits(shape, shape.items, kafka_times[positions])
            kept = [i for i in range(len(shape.items)) if i not in misfits]
            if 0 < len(kept) < len(shape.items):
                columns = self._columns(
                    shape, [shape.items[i] for i in kept], kafka_times[positions[kept]]
                )
            if columns is None:
                return list(zip(shape.seqs, shape.items, strict=True))
            left = [(shape.seqs[i], shape.items[i]) for i in sorted(misfits)]
            seqs, positions = seqs[kept], positions[kept]
            shape.items = [shape.items[i] for i in kept]
        values, times = columns
        batch.add_columns(shape, seqs, offsets[positions], times, values)
        out.events += len(seqs)
        out.max_event_time = _latest(out.max_event_time, float(times.max()))
        return left

    def _columns(
        self, shape: _Shape, items: list[_Item], kafka_times: np.ndarray
    ) -> tuple[list[np.ndarray | list[str | None]], np.ndarray] | None:
        """The events' values per column as the codec classifies them, and their event times;
        None if a value needs the per-event path (invalid, another kind, a new category)."""
        raws = [raw for _, raw in items]
        values = []
        for raw_column, expect in zip(_raw_columns(shape, raws), shape.expect, strict=True):
            column = self._column(raw_column, expect)
            if column is None:
                return None
            values.append(column)
        if any(
            raw.event_id is not None
            and not 0 < len(raw.event_id) <= self.limits.max_event_id_length
            for raw in raws
        ):
            return None
        times = _event_times([raw.timestamp for raw in raws], kafka_times, self.limits)
        return None if times is None else (values, times)

    def _misfits(self, shape: _Shape, items: list[_Item], kafka_times: np.ndarray) -> set[int]:
        """Which events hold a value that needs the per-event path: each value of a column that
        does not go as a whole is checked alone."""
        raws = [raw for _, raw in items]
        misfits: set[int] = set()
        for raw_column, expect in zip(_raw_columns(shape, raws), shape.expect, strict=True):
            if self._column(raw_column, expect) is not None:
                continue
            fits: dict[
                Any, bool
            ] = {}  # per category, or per type for the rest (every typed number is finite)
            for i, value in enumerate(raw_column):
                key = (value.__class__, value) if isinstance(value, str | bool) else value.__class__
                fit = fits.get(key)
                if fit is None:
                    fit = fits[key] = self._column([value], expect) is not None
                if not fit:
                    misfits.add(i)
        limit = self.limits.max_event_id_length
        misfits.update(
            i
            for i, raw in enumerate(raws)
            if raw.event_id is not None and not 0 < len(raw.event_id) <= limit
        )
        stamps = [raw.timestamp for raw in raws]
        if _event_times(stamps, kafka_times, self.limits) is None:
            misfits.update(
                i
                for i, stamp in enumerate(stamps)
                if _event_times([stamp], kafka_times[i : i + 1], self.limits) is None
            )
        return misfits

    def _column(
        self, raw_column: Sequence[Any], expect: tuple[type | None, Container[str]]
    ) -> np.ndarray | list[str | None] | None:
        column = classify_column(raw_column, self.limits)
        return column if column is not None and _fits(column, *expect) else None

    # -- admission: every check happens before any state changes, so a refused event leaves no trace

    def _admit(
        self, state: PartitionState, event: Event, batch: _Batch, budget: _Budget
    ) -> tuple[Reason, str] | None:
        self._drop_ignored(event)
        admission = self.admission
        known = state.features_by_model.get(event.model)
        if known is None:
            if admission.allowed_models is not None and event.model not in admission.allowed_models:
                return Reason.MODEL_NOT_ALLOWED, "model not in STREAMDRIFT_ALLOWED_MODELS"
            if not self._room_for_a_model(state, batch):
                return (
                    Reason.TOO_MANY_MODELS,
                    f"more than max_models={admission.max_models} models, none on probation",
                )
        names = (*event.numeric, *event.categorical, *event.missing)
        new = [n for n in names if known is None or n not in known]
        if new and len(known or ()) + len(new) > admission.max_features_per_model:
            limit = admission.max_features_per_model
            return (
                Reason.TOO_MANY_FEATURES_FOR_MODEL,
                f"model {event.model!r} would exceed max_features_per_model={limit}",
            )
        # New series: new names, and known names under a version not seen with them yet.
        created = sum(
            1
            for name in names
            if _is_new(series_name(event.model, event.model_version, name), state, batch)
        )
        if created and (created > budget.left or created > state.ledger.tokens):
            return Reason.TOO_MANY_NEW_SERIES, (
                f"{created} new series: over "
                f"max_new_series_per_message={admission.max_new_series_per_message} or "
                f"max_new_series_per_s={admission.max_new_series_per_s:g} on this partition"
            )
        for kinds, kind in (
            (event.numeric, NumericMonitor),
            (event.categorical, CategoricalMonitor),
        ):
            for name in kinds:
                series = series_name(event.model, event.model_version, name)
                existing = state.monitors.get(series)
                if (existing is not None and not isinstance(existing, kind)) or batch.kind_clash(
                    series, kind
                ):
                    return (
                        Reason.FEATURE_TYPE_CHANGED,
                        f"feature {name!r} changed type (numeric vs categorical)",
                    )
        new_categories = []
        for name, value in event.categorical.items():
            series = series_name(event.model, event.model_version, name)
            limit = self.params(event.model, name).max_categories
            # a categorical feature's series (a type change was refused above)
            monitor = cast("CategoricalMonitor | None", state.monitors.get(series))
            fits, is_new = batch.category_fits(series, value, monitor, limit)
            if not fits:
                return (
                    Reason.TOO_MANY_CATEGORIES,
                    f"feature {name!r} exceeds max_categories={limit}",
                )
            if is_new:
                new_categories.append((series, value))
        # Admitted: only now does the event take room (a refused event must leave no trace).
        if known is None:
            self._make_room(state, batch, event.model)
        if created:
            budget.left -= created
            state.ledger.take_tokens(created)
            state.ledger_dirty = True
        batch.reserve(new_categories)
        state.features_by_model[event.model].update(new)
        return None

    def _room_for_a_model(self, state: PartitionState, batch: _Batch) -> bool:
        """Whether a new model fits: under both bounds, or a model on probation can make room."""
        under = len(state.features_by_model) < self.admission.max_models
        if under and len(state.ledger.probation) < self.admission.max_probation_models:
            return True
        return state.ledger.evictable() is not None

    def _make_room(self, state: PartitionState, batch: _Batch, model: str) -> None:
        """Put a new model on probation, evicting the least recently seen one on probation if a
        bound is reached (established models are never evicted for a newcomer)."""
        full = len(state.features_by_model) >= self.admission.max_models
        if full or len(state.ledger.probation) >= self.admission.max_probation_models:
            victim = state.ledger.evictable()
            if victim is not None:
                state.evict_model(victim)
                batch.drop_model(victim)
        state.ledger.admit_model(model)
        state.features_by_model[model]
        state.ledger_dirty = True

    def _drop_ignored(self, event: Event) -> None:
        """Remove the model's ignored features: they are neither monitored nor counted in limits."""
        ignored = self._ignored(event.model)
        if ignored:
            event.numeric = {n: v for n, v in event.numeric.items() if n not in ignored}
            event.categorical = {n: v for n, v in event.categorical.items() if n not in ignored}
            event.missing = [n for n in event.missing if n not in ignored]

    def _ignored(self, model: str) -> _Dropped:
        ignored = self._ignored_by_model.get(model)
        if (
            ignored is None
        ):  # the configuration is fixed for the worker's life: resolve once per model
            if (
                len(self._ignored_by_model) >= MAX_CACHED
            ):  # made-up model names must not grow it for good
                self._ignored_by_model.clear()
            ignored = _Dropped(
                ignored_features(self.config, model), allowed_features(self.config, model)
            )
            self._ignored_by_model[model] = ignored
        return ignored

    # -- state update and decision -------------------------------------------------------------

    def _apply(
        self, state: PartitionState, batch: _Batch, times: dict[int, float], out: Outcome
    ) -> list[Finding]:
        findings: list[Finding] = []
        ledger = state.ledger
        for series, values in sorted(
            batch.series.items(), key=_first
        ):  # as the per-event path met them
            state.ledger_dirty |= ledger.touch_series(series)
            kind = _kind_of(state.monitors.get(series)) or batch.kinds.get(series)
            state.dirty.add(series)
            if kind is None:  # seen only as null so far: its kind is still unknown
                state.unknown_missing[series] = state.unknown_missing.get(series, 0) + len(values)
                continue
            with bulkhead(state, series, out):
                findings += self._apply_values(state, series, kind, values, times)
        for (model, version), rows in sorted(batch.rows.items(), key=_first):
            state.ledger_dirty |= ledger.touch_series(
                series_name(model, version, MULTIVARIATE_SERIES)
            )
            with bulkhead(state, series_name(model, version, MULTIVARIATE_SERIES), out):
                findings += self._apply_rows(state, model, version, rows, times)
        state.retire_versions(self.admission.max_versions_per_model)
        return findings

    def _apply_values(
        self,
        state: PartitionState,
        series: str,
        kind: type,
        values: _Values,
        times: dict[int, float],
    ) -> list[Finding]:
        monitor = self._monitor(state, series, kind)
        self._follow_baseline(series, monitor)
        # Missing values travel inline (NaN / None), in stream order; event times for event-time
        # windows.
        column, positions, at = values.merged(numeric=kind is NumericMonitor)
        # the column is what the monitor's kind takes: numbers (an array) or categories
        findings = monitor.update(column, positions, at)  # type: ignore[arg-type]
        return findings_of(series, monitor, findings, times)

    def _apply_rows(
        self,
        state: PartitionState,
        model: str,
        version: str | None,
        rows: _Rows,
        times: dict[int, float],
    ) -> list[Finding]:
        """Feed a (model, version)'s numeric rows to its PCA monitor (created on its first rows
        with at least two numeric features)."""
        series = series_name(model, version, MULTIVARIATE_SERIES)
        monitor = state.monitors.get(series)
        if monitor is None:
            names = sorted(name for name in rows.names() if name != PREDICTION)[
                : self.max_multivariate_features
            ]
            if len(names) < 2:
                return []
            monitor = state.monitors[series] = PCAReconstructionMonitor(
                names, multivariate_params(self.config, model, base=self.multivariate)
            )
        assert isinstance(monitor, PCAReconstructionMonitor)
        matrix, positions = rows.merged(monitor.features)
        state.dirty.add(series)
        return findings_of(series, monitor, monitor.update(matrix, positions), times)

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
        if (
            baseline is None
            or monitor.reference_source == baseline.label
            or (series, baseline.label) in self._unusable
        ):
            return
        profile = baseline.features.get(feature)
        if profile is None:  # not in the training data: the series warms up on the stream
            self._unusable.add((series, baseline.label))
            return
        try:
            # a feature's monitor (from _apply_column): numeric or categorical, never PCA
            monitor.seed(profile, baseline.label)  # type: ignore[union-attr]
        except ValueError as exc:
            self._unusable.add((series, baseline.label))
            log.warning("baseline %s not used for %r: %s", baseline.label, feature, exc)


def _is_new(series: str, state: PartitionState, batch: _Batch) -> bool:
    return (
        series not in state.monitors
        and series not in state.unknown_missing
        and series not in batch.series
    )


@dataclass(slots=True)
class _Budget:
    """New series one message may still create."""

    left: int


def _payload(elements: Elements, index: int | None) -> bytes:
    """An element's bytes to dead-letter; the whole message if even that fails."""
    try:
        return elements.payload(index)
    except Exception:  # e.g. an element too deep to re-encode: the original stays on its topic
        return elements.value


def _describe(exc: BaseException) -> str:
    """A bounded description of an unexpected error (a dead letter's detail header)."""
    return f"{type(exc).__name__}: {exc}"[:512]


@contextmanager
def bulkhead(state: PartitionState, series: str, out: Outcome) -> Iterator[None]:
    """A bug in one series' monitor must not crash the worker into a loop on the same batch:
    the series is logged, counted and restarted afresh (like an unreadable stored state); the
    other series and the offsets go on."""
    try:
        yield
    except Exception:
        log.exception(
            "monitor of %r on %s[%d] failed: restarting that series",
            series,
            state.topic,
            state.partition,
        )
        state.monitors.pop(series, None)
        state.retired.add(series)  # its stored state goes too: the next values start it afresh
        state.dirty.discard(series)
        out.failed_series.append(series)


def findings_of(
    series: str, monitor: Monitor, detections: list[Detection], times: dict[int, float]
) -> list[Finding]:
    model, version, feature = parse_series(series)
    if isinstance(monitor, PCAReconstructionMonitor):
        kind = "multivariate"
    else:
        kind = (
            "performance"
            if isinstance(monitor, ErrorMonitor)
            else "prediction"
            if feature == "prediction"
            else "feature"
        )
    return [
        Finding(model, version, feature, kind, d, times[d.position], monitor.reference_source)
        for d in detections
    ]


def _kind_of(monitor: Monitor | None) -> type | None:
    return type(monitor) if isinstance(monitor, (NumericMonitor, CategoricalMonitor)) else None


_Item = tuple[int | None, RawEvent]  # a typed event and its position in its message's array
# model, version, feature names, has a prediction
_Key = tuple[str, str | None, tuple[str, ...], bool]
_Chunk = tuple[np.ndarray, Any, np.ndarray, np.ndarray]  # seqs, values, offsets, event times


class _Ignored:
    """The kind of an ignored feature's column: checked as the codec does, never monitored."""


@dataclass(slots=True, eq=False)
class _Shape:
    """Events of a batch with the same model, version, feature names (in order) and presence of
    a prediction, which go column by column, and what each column's series expects."""

    model: str
    version: str | None
    names: tuple[str, ...]  # the features', then PREDICTION if the events have one
    with_prediction: bool
    seqs: list[int]
    items: list[_Item]
    # per name: kind (None: nulls only), known categories
    expect: list[tuple[type | None, Container[str]]] = field(default_factory=list)


def _raw_columns(shape: _Shape, raws: list[RawEvent]) -> list[Sequence[Any]]:
    """The events' raw values per column (their feature names are the same, in the same order)."""
    columns: list[Sequence[Any]] = list(zip(*[raw.features.values() for raw in raws], strict=True))
    if shape.with_prediction:
        columns.append([raw.prediction for raw in raws])
    return columns


def _event_times(
    stamps: list[float | str | None], kafka_times: np.ndarray, limits: Limits
) -> np.ndarray | None:
    """Event times as the codec reads them; None if one is invalid."""
    if stamps.count(None) == len(stamps):
        return kafka_times
    try:
        return np.array(
            [event_time(t, k, limits) for t, k in zip(stamps, kafka_times.tolist(), strict=True)],
            dtype=np.float64,
        )
    except Invalid:
        return None


def _fits(column: np.ndarray | list[str | None], kind: type | None, known: Container[str]) -> bool:
    """Whether a classified column goes to its series without admission: nulls fit any series,
    numbers a numeric one, categories a categorical one that has counted each of them."""
    if kind is _Ignored:
        return True  # dropped: the codec's checks were all it needed
    if isinstance(column, np.ndarray):
        return kind is NumericMonitor
    if column.count(None) == len(column):
        return True
    present = set(column)
    present.discard(None)
    return kind is CategoricalMonitor and all(value in known for value in present)


def _ranks(values: list[np.ndarray | list[str | None]]) -> list[int]:
    """Where each column's value in the first event would come in the per-event path's order
    of series (numbers, categories, nulls; each in feature order)."""

    def group(column: np.ndarray | list[str | None]) -> int:
        if isinstance(column, np.ndarray):
            return 0 if not math.isnan(column[0]) else 2
        return 1 if column[0] is not None else 2

    order = sorted(range(len(values)), key=lambda j: (group(values[j]), j))
    ranks = [0] * len(values)
    for rank, j in enumerate(order):
        ranks[j] = rank
    return ranks


@dataclass(slots=True, eq=False)
class _Values:
    """One series' values in a batch: appended one by one by the per-event path, in chunks by
    the columnar one; ``seq`` orders them as the stream did."""

    first: tuple[int, int]  # (seq, rank in its event) of its first value
    seqs: list[int] = field(default_factory=list)
    values: list[float | str | None] = field(default_factory=list)
    offsets: list[int] = field(default_factory=list)
    times: list[float] = field(default_factory=list)
    chunks: list[_Chunk] = field(default_factory=list)

    def __len__(self) -> int:
        return len(self.seqs) + sum(len(chunk[0]) for chunk in self.chunks)

    def merged(self, numeric: bool) -> tuple[np.ndarray | list[str | None], np.ndarray, np.ndarray]:
        """Values (floats with NaN for missing, or a list with None), offsets and event times, in
        stream order."""
        parts = (
            [*self.chunks, (self.seqs, self.values, self.offsets, self.times)]
            if self.seqs
            else self.chunks
        )
        column = [np.asarray(v, dtype=np.float64) if numeric else list(v) for _, v, _, _ in parts]
        offsets = [np.asarray(o, dtype=np.int64) for _, _, o, _ in parts]
        times = [np.asarray(t, dtype=np.float64) for _, _, _, t in parts]
        if len(parts) == 1:
            return column[0], offsets[0], times[0]
        order = np.argsort(
            np.concatenate([np.asarray(s, dtype=np.int64) for s, _, _, _ in parts]), kind="stable"
        )
        if numeric:
            merged: np.ndarray | list[str | None] = np.concatenate(column)[order]
        else:
            flat = [value for part in column for value in part]
            merged = [flat[i] for i in order.tolist()]
        return merged, np.concatenate(offsets)[order], np.concatenate(times)[order]


@dataclass(slots=True, eq=False)
class _Rows:
    """A (model, version)'s events with numeric values, for its PCA monitor, like ``_Values``."""

    first: int  # seq of its first row
    seqs: list[int] = field(default_factory=list)
    rows: list[dict[str, float]] = field(default_factory=list)
    offsets: list[int] = field(default_factory=list)
    # seqs, names, matrix, offsets
    chunks: list[tuple[np.ndarray, list[str], np.ndarray, np.ndarray]] = field(default_factory=list)

    def names(self) -> set[str]:
        """The features with a value in some row."""
        named = {name for row in self.rows for name in row}
        for _, names, matrix, _ in self.chunks:
            named.update(
                name
                for name, present in zip(names, ~np.isnan(matrix).all(axis=0), strict=True)
                if present
            )
        return named

    def merged(self, features: list[str]) -> tuple[np.ndarray, np.ndarray]:
        """The rows as a matrix over ``features`` (NaN: missing) and their offsets, in stream
        order."""
        column = {name: j for j, name in enumerate(features)}
        parts = []
        for seqs, names, matrix, offsets in self.chunks:
            block = np.full((len(seqs), len(column)), np.nan)
            for k, name in enumerate(names):
                if name in column:
                    block[:, column[name]] = matrix[:, k]
            parts.append((seqs, block, offsets))
        if self.rows:
            block = np.full((len(self.rows), len(column)), np.nan)
            for i, row in enumerate(self.rows):
                for name, value in row.items():
                    j = column.get(name)
                    if j is not None:
                        block[i, j] = value
            parts.append(
                (
                    np.asarray(self.seqs, dtype=np.int64),
                    block,
                    np.asarray(self.offsets, dtype=np.int64),
                )
            )
        if len(parts) == 1:
            return parts[0][1], parts[0][2]
        order = np.argsort(np.concatenate([seqs for seqs, _, _ in parts]), kind="stable")
        return np.concatenate([block for _, block, _ in parts])[order], np.concatenate(
            [o for _, _, o in parts]
        )[order]


def _first(item: tuple[Any, _Values | _Rows]) -> Any:
    return item[1].first


def _index_of(item: _Item) -> int:
    return item[0] or 0


def _latest(latest: float | None, time: float) -> float:
    return time if latest is None else max(latest, time)


class _Batch:
    """The admitted events of one batch, grouped per series for vectorised updates, and what
    else they leave: versions seen, joins. Every event has a ``seq``, its place in the stream
    (record position, index in its message), which orders what the two paths add."""

    def __init__(self, rows: bool, stride: int) -> None:
        self.stride = stride  # more than any message's events
        self.series: dict[str, _Values] = {}
        self.kinds: dict[str, type] = {}
        self._new_categories: dict[str, set[str]] = defaultdict(set)
        self._collect_rows = rows
        self.rows: dict[tuple[str, str | None], _Rows] = {}
        self._versions: list[
            tuple[int, str, str | None]
        ] = []  # (seq, model, version) to replay in order
        self._joins: list[
            tuple[str, str, bytes]
        ] = []  # (model, event_id, packed) and the seq of each
        self._join_seqs: list[int] = []
        self.model_events: dict[str, int] = defaultdict(int)  # admitted events per model
        # models evicted during the batch (their values dropped with them)
        self.evicted: set[str] = set()
        # per model: its series in ``series``
        self._series_of: dict[str, set[str]] = defaultdict(set)

    def seq(self, position: int, index: int | None) -> int:
        return position * self.stride + (index or 0)

    def add(self, event: Event, offset: int, seq: int) -> None:
        model, version = event.model, event.model_version
        if self._collect_rows and event.numeric:
            rows = self._rows(model, version, seq)
            rows.seqs.append(seq)
            rows.rows.append(event.numeric)
            rows.offsets.append(offset)
        rank = 0
        for features, kind in (
            (event.numeric, NumericMonitor),
            (event.categorical, CategoricalMonitor),
        ):
            for name, value in features.items():
                series = series_name(model, version, name)
                self._append(series, (seq, rank), value, offset, event.timestamp)
                self.kinds[series] = kind
                rank += 1
        for name in event.missing:
            self._append(
                series_name(model, version, name), (seq, rank), None, offset, event.timestamp
            )
            rank += 1
        self._versions.append((seq, model, version))
        # last seen last: probation's LRU order
        self.model_events[model] = self.model_events.pop(model, 0) + 1
        if event.event_id is not None and event.prediction is not None:
            packed = msgspec.msgpack.encode((event.prediction, version, event.timestamp))
            self._joins.append((model, event.event_id, packed))
            self._join_seqs.append(seq)

    def _append(
        self,
        series: str,
        first: tuple[int, int],
        value: float | str | None,
        offset: int,
        time: float,
    ) -> None:
        values = self._values(series, first)
        values.seqs.append(first[0])
        values.values.append(value)
        values.offsets.append(offset)
        values.times.append(time)

    def _values(self, series: str, first: tuple[int, int]) -> _Values:
        """The series' values, which ``first`` may come before (columns are added before the
        per-event path runs)."""
        values = self.series.get(series)
        if values is None:
            values = self.series[series] = _Values(first)
            self._series_of[parse_series(series)[0]].add(series)
        elif first < values.first:
            values.first = first
        return values

    def _rows(self, model: str, version: str | None, seq: int) -> _Rows:
        rows = self.rows.get((model, version))
        if rows is None:
            rows = self.rows[(model, version)] = _Rows(seq)
        elif seq < rows.first:
            rows.first = seq
        return rows

    def add_columns(
        self,
        shape: _Shape,
        seqs: np.ndarray,
        offsets: np.ndarray,
        times: np.ndarray,
        values: list[np.ndarray | list[str | None]],
    ) -> None:
        """Add a shape's events at once (see ``PredictionProcessor._take_columns``)."""
        model, version, first = shape.model, shape.version, int(seqs[0])
        monitored = [
            (name, column, rank)
            for name, (kind, _), column, rank in zip(
                shape.names, shape.expect, values, _ranks(values), strict=True
            )
            if kind is not _Ignored
        ]
        for name, column, rank in monitored:
            self._values(series_name(model, version, name), (first, rank)).chunks.append(
                (seqs, column, offsets, times)
            )
        numeric = [
            (name, column) for name, column, _ in monitored if isinstance(column, np.ndarray)
        ]
        if self._collect_rows and numeric:
            matrix = np.column_stack([column for _, column in numeric])
            # the per-event path's rows: events with a number
            in_rows = ~np.isnan(matrix).all(axis=1)
            if in_rows.any():
                row_seqs = seqs[in_rows]
                self._rows(model, version, int(row_seqs[0])).chunks.append(
                    (row_seqs, [name for name, _ in numeric], matrix[in_rows], offsets[in_rows])
                )
        # all that replay needs
        self._versions += [
            (first, model, version),
            (int(seqs[-1]), model, version),
        ]
        self.model_events[model] += len(seqs)
        self._add_joins(shape, seqs, times)

    def _add_joins(self, shape: _Shape, seqs: np.ndarray, times: np.ndarray) -> None:
        """Joins as the per-event path packs them: the prediction as the codec classifies it
        (a feature named prediction stands in for an absent one)."""
        raws = [raw for _, raw in shape.items]
        if shape.with_prediction:
            predictions = [raw.prediction for raw in raws]
        else:
            predictions = [raw.features.get(PREDICTION) for raw in raws]
        for seq, raw, prediction, time in zip(
            seqs.tolist(), raws, predictions, times.tolist(), strict=True
        ):
            if raw.event_id is not None and prediction is not None:
                if prediction.__class__ is bool:
                    prediction = "true" if prediction else "false"
                packed = msgspec.msgpack.encode((prediction, shape.version, time))
                self._joins.append((shape.model, raw.event_id, packed))
                self._join_seqs.append(seq)

    def close(self, state: PartitionState, out: Outcome) -> None:
        """Replay the admitted events' versions and list their joins, in stream order."""
        for _, model, version in sorted(self._versions, key=itemgetter(0)):
            state.saw_version(model, version)
        out.evicted_models += sorted(self.evicted)
        out.joins = [
            self._joins[i] for i in sorted(range(len(self._joins)), key=self._join_seqs.__getitem__)
        ]

    def drop_model(self, model: str) -> None:
        """Forget what the batch holds of a model evicted mid-batch: its values go with its state
        (its events stay counted: they were admitted); if it comes back later in the batch, it
        starts afresh like any new model."""
        for series in self._series_of.pop(model, ()):
            self.series.pop(series, None)
            self.kinds.pop(series, None)
            self._new_categories.pop(series, None)
        for key in [key for key in self.rows if key[0] == model]:
            del self.rows[key]
        self._versions = [entry for entry in self._versions if entry[1] != model]
        self.model_events.pop(model, None)
        self.evicted.add(model)

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
