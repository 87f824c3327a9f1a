"""Pure batch logic of the worker: records of one partition in, state updates and findings out.

Nothing here does I/O, so the whole data flow — decode → validate → admit → update state →
decide — is unit-testable; ``streams.runtime`` wires it to Kafka and Redis. The partition's
state (and its exactly-once next offset) is :class:`streams.state.partition.PartitionState`.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Container, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from itertools import compress, groupby, repeat
from operator import attrgetter, is_not, lt
from struct import Struct
from struct import error as StructError
from typing import Any, cast

import numpy as np

from streamdrift.detectors import (
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
    segment_features,
)
from streamdrift.streams.pipeline import native_decode
from streamdrift.streams.pipeline.admission import AdmissionLimits
from streamdrift.streams.pipeline.batch import (
    Batch,
    BatchKey,
    Decoded,
    Ignored,
    Item,
    Rows,
    Shape,
    Values,
    by_names,
    event_times,
    first_of,
    fits,
    ids_fit,
    latest,
    raw_columns,
)
from streamdrift.streams.pipeline.codec import (
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
    names_pass,
    typed_messages,
    validate_events,
)
from streamdrift.streams.pipeline.outcome import DeadLetter, Finding, Outcome, Record
from streamdrift.streams.pipeline.segments import apply_segments
from streamdrift.streams.state.keys import parse_series, series_name
from streamdrift.streams.state.partition import (
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
        compiled_decoding: bool = True,
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
        self._segments_by_model: dict[str, tuple[str, ...]] = {}
        # per shape (model, version, names, prediction): its columns' names and series, or None
        self._shapes = _ShapeCache(self._shape_columns)
        self._unusable: set[tuple[str, str]] = set()  # (series, baseline) already reported unusable
        # The columnar path's decoder: the compiled one where the compiled kernels are in use
        # (the common shapes' columns straight from the bytes), else msgspec's structs only.
        self._decode_columns = native_decode.decoder() if compiled_decoding else None

    def process(
        self,
        state: PartitionState,
        records: Sequence[Record],
        columnar: bool = True,
        now: float | None = None,
        fresh: bool = False,
    ) -> Outcome:
        """Apply ``records`` (one partition's, in offset order) to ``state``.

        ``fresh``: the caller has judged the records' offsets already (a mapped input's native
        messages, paired events settled after their records were read): every record is applied
        and the state's next offset is left alone.

        Events go column by column where admission can neither refuse them nor change anything
        (see ``_take_columns``), the others one by one; ``columnar=False`` takes every event one
        by one: the reference the columnar path matches exactly (the tests compare them).
        ``now`` (the worker's clock) caps how far record timestamps may move the admission
        clock.

        Every fresh record is accounted for once, whatever it holds: its events are counted or
        dead-lettered with a reason (``internal_error`` if handling it raised anything at all).
        """
        out = Outcome()
        offsets = list(map(_OFFSET, records))
        first = state.next_offset
        if fresh:
            fresh_positions: Sequence[int] = range(len(records))
            fresh_records: Sequence[Record] = records
        elif (
            offsets
            and (first is None or offsets[0] >= first)
            and all(map(lt, offsets, offsets[1:]))
        ):
            # the usual batch, in increasing offsets from the next one on: all fresh (as
            # ``_skip`` would find them one by one)
            fresh_positions = range(len(records))  # positions of the fresh records
            state.next_offset = offsets[-1] + 1
            fresh_records = records
        else:
            positions = []
            for position, record in enumerate(records):
                if state._skip(record.offset):
                    out.duplicates += 1
                else:
                    positions.append(position)
            fresh_positions = positions
            fresh_records = [records[position] for position in positions]
        if fresh_positions:
            self._advance_clock(state, fresh_records, now, out)
        batch = Batch(self.multivariate is not None, self.limits.max_events_per_message + 1)
        left: list[tuple[int, Record, list[Item] | None]] | None = None
        if columnar:
            try:
                left = self._take_columns(
                    state, records, fresh_positions, fresh_records, batch, out
                )
            except Exception:  # never expected; the per-event path guards each record
                log.exception(
                    "columnar path failed on %s[%d]: taking the batch event by event",
                    state.topic,
                    state.partition,
                )
                batch = Batch(self.multivariate is not None, self.limits.max_events_per_message + 1)
                out.events, out.max_event_time = 0, None
        if left is None:
            left = [(position, records[position], None) for position in fresh_positions]
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
        out.findings = self._apply(state, batch, _Times(records), out)
        return out

    def _advance_clock(
        self,
        state: PartitionState,
        fresh: Sequence[Record],
        now: float | None,
        out: Outcome,
    ) -> None:
        """Move the admission clock and evict what has been idle too long (once a minute)."""
        latest = max(map(_TIMESTAMP, fresh))
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

    def _touch_models(self, state: PartitionState, batch: Batch) -> None:
        for model, count in batch.model_events.items():
            state.ledger_dirty |= state.ledger.touch_model(model, count, self.admission)

    def _accept(
        self,
        state: PartitionState,
        record: Record,
        position: int,
        items: list[Item] | None,
        batch: Batch,
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
            out.max_event_time = latest(out.max_event_time, event.timestamp)

    # -- the columnar path: per shape of event, not per event

    def _take_columns(
        self,
        state: PartitionState,
        records: Sequence[Record],
        fresh: Sequence[int],
        fresh_records: Sequence[Record],
        batch: Batch,
        out: Outcome,
    ) -> list[tuple[int, Record, list[Item] | None]]:
        """Take the events that admission would neither refuse nor change anything for, column by
        column per shape; return the rest for the per-event path, in stream order: (position,
        record, its typed events left, or None for the whole message).

        Taking them out of order is exact: such an event (known model and names, each series of
        a fixed kind, categories its series has counted, valid values) is judged on the state at
        the start of the batch, and what makes it so only grows within a batch; everything
        order-dependent (values per series, versions, joins) is merged back by stream position.
        So is taking some of a batch's events of a shape (those the compiled decoder read) and
        the others of it later, or event by event.
        """
        values = list(map(_VALUE, fresh_records))
        if self._decode_columns is None:
            decoded = Decoded.of(fresh, typed_messages(values, self.limits))
            return self._take_typed(state, records, decoded, batch, out)
        shapes, refused = native_decode.decode(self._decode_columns, values, self.limits)
        offsets = np.array(list(map(_OFFSET, records)), dtype=np.int64)
        kafka_times = np.array(list(map(_TIMESTAMP, records)), dtype=np.float64)
        positions = np.asarray(fresh, dtype=np.int64)  # of the records, by place in ``values``
        left = [
            shape
            for shape in shapes
            if not self._take_decoded(state, shape, positions, batch, out, offsets, kafka_times)
        ]
        if not refused and not left:
            return []
        rest = self._typed_rest(values, fresh, refused, left)
        return self._take_typed(state, records, rest, batch, out)

    def _typed_rest(
        self,
        values: list[bytes | None],
        fresh: Sequence[int],
        refused: list[int],
        left: list[native_decode.DecodedShape],
    ) -> Decoded:
        """What the compiled decoder did not take, typed by msgspec as before: the messages it
        refused, and of the messages it read, the events of its shapes ``left``."""
        read = {message for shape in left for message in shape.messages.tolist()}
        not_taken = {
            (fresh[message], index)
            for shape in left
            for message, index in zip(shape.messages.tolist(), shape.indexes.tolist(), strict=True)
        }
        again = sorted(read.union(refused))
        typed = typed_messages([values[i] for i in again], self.limits)
        if any(typed[k] is None for k, message in enumerate(again) if message in read):
            # never expected: the decoders disagree (process() takes the batch event by event)
            raise RuntimeError("a message the compiled decoder read fails the typed decoder")
        whole = {fresh[message] for message in refused}
        return Decoded.of([fresh[message] for message in again], typed).only(
            lambda position, index: position in whole or (position, index) in not_taken
        )

    def _take_decoded(
        self,
        state: PartitionState,
        shape: native_decode.DecodedShape,
        positions: np.ndarray,
        batch: Batch,
        out: Outcome,
        offsets: np.ndarray,
        kafka_times: np.ndarray,
    ) -> bool:
        """Add a shape's events from the compiled decoder to the batch columnwise if all of them
        go (as ``_take_shape`` would take them); whether they did. ``positions``: the record
        position of each decoded message."""
        if len(shape.messages) < self.min_columnar_events:
            return False
        key = (shape.model, shape.version, shape.names, shape.with_prediction)
        plan = self._plan(state, key)
        limits = self.limits
        if (
            plan is None
            or shape.largest > limits.max_abs_value
            or shape.longest > limits.max_category_length
        ):
            return False
        expect, series = plan
        if not all(
            column is not None and fits(column, *wanted)
            for column, wanted in zip(shape.columns, expect, strict=True)
        ) or not ids_fit(shape.event_ids, limits.max_event_id_length):
            return False
        at = positions[shape.messages]  # each event's record
        times = native_decode.stamped_times(shape.timestamps, kafka_times[at], limits)
        if times is None:
            return False
        seqs = at * batch.stride + shape.indexes
        model, version, names, with_prediction = key
        full_names = (*names, PREDICTION) if with_prediction else names
        # No typed events (``events``, ``raws``): the columns come straight from the decoder.
        taken = Shape(model, version, full_names, with_prediction, [], [], seqs, expect, series)
        values = cast("list[np.ndarray | list[str | None]]", shape.columns)  # None: refused above
        batch.add_columns(taken, seqs, offsets[at], times, values, shape.event_ids)
        out.events += len(seqs)
        out.max_event_time = latest(out.max_event_time, float(times.max()))
        return True

    def _take_typed(
        self,
        state: PartitionState,
        records: Sequence[Record],
        events: Decoded,
        batch: Batch,
        out: Outcome,
    ) -> list[tuple[int, Record, list[Item] | None]]:
        """``_take_columns`` of events typed by msgspec."""
        raws = events.raws
        # per model, version, number of features and presence of a prediction, its events
        # (indexes into ``raws``, in stream order), then split by feature names (``by_names``);
        # runs of one shape are common (arrays, a producer's burst): grouped run by run
        keys = list(
            zip(
                map(_MODEL, raws),
                map(_VERSION, raws),
                map(len, map(_FEATURES, raws)),
                map(is_not, map(_PREDICTION, raws), repeat(None)),
                strict=False,  # all as long as raws
            )
        )
        coarse: dict[tuple[str, str | None, int, bool], list[int]] = {}
        for alike_key, run in groupby(range(len(keys)), keys.__getitem__):
            group = coarse.get(alike_key)
            if group is None:
                coarse[alike_key] = list(run)
            else:
                group.extend(run)
        groups: dict[BatchKey, list[int]] = {}
        for (model, version, _, with_prediction), group in coarse.items():
            for names, alike in by_names(raws, group):
                groups[model, version, names, with_prediction] = alike
        offsets = np.array(list(map(_OFFSET, records)), dtype=np.int64)
        kafka_times = np.array(list(map(_TIMESTAMP, records)), dtype=np.float64)
        seqs = np.array(events.positions, dtype=np.int64) * batch.stride + np.array(
            events.indexes, dtype=np.int64
        )
        left: list[int] = []  # events for the per-event path
        for key, group in groups.items():
            plan = self._plan(state, key) if len(group) >= self.min_columnar_events else None
            if plan is None:
                left += group
                continue
            model, version, features, with_prediction = key
            shape = Shape(
                model,
                version,
                (*features, PREDICTION) if with_prediction else features,
                with_prediction,
                group,
                list(map(raws.__getitem__, group)),
                seqs[group],
                *plan,
            )
            left += self._take_shape(shape, batch, out, offsets, kafka_times)
        return events.rest(records, left)

    def _plan(
        self, state: PartitionState, key: BatchKey
    ) -> tuple[list[tuple[type | None, Container[str]]], Sequence[str | None]] | None:
        """What each column's series expects of a shape's events, and the series (None: an
        ignored feature); None if they need the per-event path (a new model or name, invalid
        names)."""
        model = key[0]
        known = state.features_by_model.get(model)
        if known is None or model in state.ledger.probation:
            return None  # a model on probation may be evicted within the batch: event by event
        columns = self._shapes.get(key)
        if columns is None:
            return None  # invalid names
        expect: list[tuple[type | None, Container[str]]] = []
        monitors = state.monitors
        for name, series in columns:
            if series is None:
                expect.append((Ignored, ()))
            elif name not in known:
                return None
            else:
                monitor = monitors.get(series)
                if monitor is None and series not in state.unknown_missing:
                    # a new series (a known name under a new version): admission counts it
                    return None
                if isinstance(monitor, NumericMonitor):
                    expect.append((NumericMonitor, ()))
                elif isinstance(monitor, CategoricalMonitor):
                    expect.append((CategoricalMonitor, monitor.counts.counts))
                else:
                    # not monitored yet (or not a feature's monitor): only nulls go without
                    # admission
                    expect.append((None, ()))
        return expect, [series for _, series in columns]

    def _shape_columns(self, key: BatchKey) -> tuple[tuple[str, str | None], ...] | None:
        """What of a shape holds whatever the state: each column's name and series (None: an
        ignored feature); None if its names or version fail the codec's checks."""
        model, version, features, with_prediction = key
        if not names_pass(model, features, with_prediction, self.limits):
            return None
        try:
            check_ids(version, None, self.limits)
        except Invalid:
            return None
        ignored = self._ignored(model)
        return tuple(
            (name, None if name in ignored else series_name(model, version, name))
            for name in ((*features, PREDICTION) if with_prediction else features)
        )

    def _take_shape(
        self,
        shape: Shape,
        batch: Batch,
        out: Outcome,
        offsets: np.ndarray,
        kafka_times: np.ndarray,
    ) -> list[int]:
        """Add a shape's events to the batch columnwise; return those left for the per-event
        path: the events holding a value that needs it (all, if that leaves none or the rest
        still does not go)."""
        positions = shape.seqs // batch.stride
        columns = self._columns(shape, shape.raws, kafka_times[positions])
        left: list[int] = []
        if columns is None:
            misfits = self._misfits(shape, shape.raws, kafka_times[positions])
            kept = [i for i in range(len(shape.raws)) if i not in misfits]
            if 0 < len(kept) < len(shape.raws):
                columns = self._columns(
                    shape, [shape.raws[i] for i in kept], kafka_times[positions[kept]]
                )
            if columns is None:
                return shape.events
            left = [shape.events[i] for i in sorted(misfits)]
            shape.keep(kept)
            positions = positions[kept]
        values, times = columns
        ids = list(map(_EVENT_ID, shape.raws))
        batch.add_columns(shape, shape.seqs, offsets[positions], times, values, ids)
        out.events += len(shape.seqs)
        out.max_event_time = latest(out.max_event_time, float(times.max()))
        return left

    def _columns(
        self, shape: Shape, raws: list[RawEvent], kafka_times: np.ndarray
    ) -> tuple[list[np.ndarray | list[str | None]], np.ndarray] | None:
        """The events' values per column as the codec classifies them, and their event times;
        None if a value needs the per-event path (invalid, another kind, a new category)."""
        raw = raw_columns(shape, raws)
        values = self._dense(shape, raw, len(raws))
        if values is None:
            values = []
            for raw_column, expect in zip(raw, shape.expect, strict=True):
                column = self._column(raw_column, expect)
                if column is None:
                    return None
                values.append(column)
        elif not values:
            return None
        if not ids_fit(list(map(_EVENT_ID, raws)), self.limits.max_event_id_length):
            return None
        times = event_times(list(map(_STAMP, raws)), kafka_times, self.limits)
        return None if times is None else (values, times)

    def _dense(
        self, shape: Shape, raw: list[Sequence[Any]], events: int
    ) -> list[np.ndarray | list[str | None]] | None:
        """``_columns``' values when the numeric series' columns hold numbers only (no nulls):
        converted in one block, a struct of doubles, which refuses strings and nulls; booleans
        it takes as 1.0 and 0.0, so the columns with such values are checked for booleans.
        [] if a column does not go as a whole; None to classify each column instead."""
        numeric = [j for j, (kind, _) in enumerate(shape.expect) if kind is NumericMonitor]
        if not numeric:
            return None
        doubles = Struct(f"{events}d")
        block = bytearray(doubles.size * len(numeric))
        try:
            for row, j in enumerate(numeric):
                doubles.pack_into(block, row * doubles.size, *raw[j])
        except StructError:  # a string or a null among a numeric series' values
            return None
        matrix = np.frombuffer(block, dtype=np.float64).reshape(len(numeric), events)
        maybe = ((matrix == 0.0) | (matrix == 1.0)).any(axis=1)  # a boolean, or a plain number
        if maybe.any() and any(
            bool in set(map(type, raw[j])) for j in compress(numeric, maybe.tolist())
        ):
            return None
        if np.abs(matrix).max() > self.limits.max_abs_value:
            return []
        rows: dict[int, np.ndarray] = dict(zip(numeric, matrix, strict=True))
        values: list[np.ndarray | list[str | None]] = []
        for j, (raw_column, expect) in enumerate(zip(raw, shape.expect, strict=True)):
            column: np.ndarray | list[str | None] | None = rows.get(j)
            if column is None:
                column = self._column(raw_column, expect)
                if column is None:
                    return []
            values.append(column)
        return values

    def _misfits(self, shape: Shape, raws: list[RawEvent], kafka_times: np.ndarray) -> set[int]:
        """Which events hold a value that needs the per-event path: each value of a column that
        does not go as a whole is checked alone."""
        misfits: set[int] = set()
        for raw_column, expect in zip(raw_columns(shape, raws), shape.expect, strict=True):
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
        if event_times(stamps, kafka_times, self.limits) is None:
            misfits.update(
                i
                for i, stamp in enumerate(stamps)
                if event_times([stamp], kafka_times[i : i + 1], self.limits) is None
            )
        return misfits

    def _column(
        self, raw_column: Sequence[Any], expect: tuple[type | None, Container[str]]
    ) -> np.ndarray | list[str | None] | None:
        column = classify_column(raw_column, self.limits)
        return column if column is not None and fits(column, *expect) else None

    # -- admission: every check happens before any state changes, so a refused event leaves no trace

    def _admit(
        self, state: PartitionState, event: Event, batch: Batch, budget: _Budget
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

    def _room_for_a_model(self, state: PartitionState, batch: Batch) -> bool:
        """Whether a new model fits: under both bounds, or a model on probation can make room."""
        under = len(state.features_by_model) < self.admission.max_models
        if under and len(state.ledger.probation) < self.admission.max_probation_models:
            return True
        return state.ledger.evictable() is not None

    def _make_room(self, state: PartitionState, batch: Batch, model: str) -> None:
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
        self, state: PartitionState, batch: Batch, times: Mapping[int, float], out: Outcome
    ) -> list[Finding]:
        findings: list[Finding] = []
        ledger = state.ledger
        for series, values in sorted(
            batch.series.items(), key=first_of
        ):  # as the per-event path met them
            state.ledger_dirty |= ledger.touch_series(series)
            kind = _kind_of(state.monitors.get(series)) or batch.kinds.get(series)
            state.dirty.add(series)
            if kind is None:  # seen only as null so far: its kind is still unknown
                state.unknown_missing[series] = state.unknown_missing.get(series, 0) + len(values)
                continue
            try:  # ``bulkhead``, inline: a context manager per series costs ~2 us
                findings += self._apply_values(state, series, kind, values, times)
            except Exception:
                _restart(state, series, out)
        for (model, version), rows in sorted(batch.rows.items(), key=first_of):
            state.ledger_dirty |= ledger.touch_series(
                series_name(model, version, MULTIVARIATE_SERIES)
            )
            with bulkhead(state, series_name(model, version, MULTIVARIATE_SERIES), out):
                findings += self._apply_rows(state, model, version, rows, times)
        if self._any_segments(batch):
            findings = apply_segments(
                state,
                batch,
                findings,
                self._segments,
                lambda series: _kind_of(state.monitors.get(series)) or batch.kinds.get(series),
            )
        state.retire_versions(self.admission.max_versions_per_model)
        return findings

    def _segments(self, model: str) -> tuple[str, ...]:
        """``models.<model>.segments`` (checked at start-up), resolved once per model."""
        segments = self._segments_by_model.get(model)
        if segments is None:
            if len(self._segments_by_model) >= MAX_CACHED:
                self._segments_by_model.clear()
            segments = self._segments_by_model[model] = segment_features(self.config, model)
        return segments

    def _any_segments(self, batch: Batch) -> bool:
        return any(map(self._segments, batch.model_events))

    def _apply_values(
        self,
        state: PartitionState,
        series: str,
        kind: type,
        values: Values,
        times: Mapping[int, float],
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
        rows: Rows,
        times: Mapping[int, float],
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
        # The rows' record times serve the lifecycle's cooldown_s only: looked up when it is on.
        at = (
            np.array([times.get(offset, np.nan) for offset in positions.tolist()], dtype=np.float64)
            if monitor.params.cooldown_s
            else None
        )
        return findings_of(series, monitor, monitor.update(matrix, positions, at), times)

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
        if not self.baselines:
            return
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


class _ShapeCache:
    """What ``PredictionProcessor._shape_columns`` makes of each shape, cached with a bound on
    the names it holds: made-up shapes must not grow it for good."""

    MAX_NAMES = 200_000

    def __init__(self, make: Callable[[BatchKey], tuple[tuple[str, str | None], ...] | None]):
        self._make = make
        self._cache: dict[BatchKey, tuple[tuple[str, str | None], ...] | None] = {}
        self._names = 0

    def get(self, key: BatchKey) -> tuple[tuple[str, str | None], ...] | None:
        try:
            return self._cache[key]
        except KeyError:
            pass
        columns = self._make(key)
        if self._names + len(key[2]) > self.MAX_NAMES:
            self._cache.clear()
            self._names = 0
        self._cache[key] = columns
        self._names += len(key[2]) + 1
        return columns


class _Times(Mapping[int, float]):
    """The records' Kafka timestamps by offset, made on first use: only a detection needs one."""

    __slots__ = ("_records", "_times")

    def __init__(self, records: Sequence[Record]) -> None:
        self._records = records
        self._times: dict[int, float] | None = None

    def _made(self) -> dict[int, float]:
        if self._times is None:
            self._times = {r.offset: r.timestamp for r in self._records}
        return self._times

    def __getitem__(self, offset: int) -> float:
        return self._made()[offset]

    def __iter__(self) -> Iterator[int]:
        return iter(self._made())

    def __len__(self) -> int:
        return len(self._made())


_OFFSET = attrgetter("offset")
_TIMESTAMP = attrgetter("timestamp")
_VALUE = attrgetter("value")
_MODEL = attrgetter("model")
_VERSION = attrgetter("model_version")
_FEATURES = attrgetter("features")
_PREDICTION = attrgetter("prediction")
_EVENT_ID = attrgetter("event_id")
_STAMP = attrgetter("timestamp")


def _is_new(series: str, state: PartitionState, batch: Batch) -> bool:
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
        _restart(state, series, out)


def _restart(state: PartitionState, series: str, out: Outcome) -> None:
    """``bulkhead``'s handling of a failed monitor (call it in an ``except`` block)."""
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
    series: str, monitor: Monitor, detections: list[Detection], times: Mapping[int, float]
) -> list[Finding]:
    if not detections:
        return []
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
