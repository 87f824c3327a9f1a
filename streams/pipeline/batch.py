"""A batch of one partition's admitted events, grouped for the monitors: per series, the
values as one array (columnar: events of one shape, many at a time) or row by row, with their
offsets, event times and positions — so each monitor gets one update per batch."""

from __future__ import annotations

import math
from collections import defaultdict
from collections.abc import Callable, Container, Sequence
from dataclasses import dataclass, field
from itertools import chain, compress, repeat
from operator import attrgetter, itemgetter
from typing import Any, cast

import msgspec
import numpy as np

from streamdrift.detectors import (
    CategoricalMonitor,
    NumericMonitor,
)
from streamdrift.streams.pipeline.codec import (
    PREDICTION,
    Event,
    Invalid,
    Limits,
    RawEvent,
    Typed,
    event_time,
)
from streamdrift.streams.pipeline.outcome import Outcome, Record
from streamdrift.streams.state.keys import parse_series, series_name
from streamdrift.streams.state.partition import (
    PartitionState,
)

Item = tuple[int | None, RawEvent]  # a typed event and its position in its message's array
# model, version, feature names, has a prediction
BatchKey = tuple[str, str | None, tuple[str, ...], bool]
_Chunk = tuple[np.ndarray, Any, np.ndarray, np.ndarray]  # seqs, values, offsets, event times


class Ignored:
    """The kind of an ignored feature's column: checked as the codec does, never monitored."""


@dataclass(slots=True, eq=False)
class Shape:
    """Events of a batch with the same model, version, feature names (in order) and presence of
    a prediction, which go column by column, and what each column's series expects."""

    model: str
    version: str | None
    names: tuple[str, ...]  # the features', then PREDICTION if the events have one
    with_prediction: bool
    events: list[int]  # each event's place in the batch's ``Decoded``
    raws: list[RawEvent]
    seqs: np.ndarray
    # per name: kind (None: nulls only), known categories
    expect: list[tuple[type | None, Container[str]]]
    series: Sequence[str | None]  # per name: its series (None: an ignored feature)

    def keep(self, kept: list[int]) -> None:
        """Keep only these of its events (positions in its lists)."""
        self.events = [self.events[i] for i in kept]
        self.raws = [self.raws[i] for i in kept]
        self.seqs = self.seqs[kept]


@dataclass(slots=True, eq=False)
class Decoded:
    """A batch's typed events in stream order, flat: each with its record's position and its
    index in its message (0 for a single-event message)."""

    raws: list[RawEvent]
    positions: list[int]
    indexes: list[int]
    arrays: set[int]  # positions of the messages that are arrays
    whole: list[int]  # positions of the messages the typed decoder refused

    @classmethod
    def of(cls, fresh: Sequence[int], typed: list[Typed | None]) -> Decoded:
        """``typed``: the message of each fresh record (``fresh``: their positions) as
        ``typed_messages`` decodes it."""
        if typed and set(map(type, typed)) == {RawEvent}:  # single-event messages only
            return cls(cast("list[RawEvent]", typed), list(fresh), [0] * len(typed), set(), [])
        decoded = cls([], [], [], set(), [])
        for position, message in zip(fresh, typed, strict=True):
            if message is None:
                decoded.whole.append(position)
            elif message.__class__ is RawEvent:
                decoded.raws.append(message)
                decoded.positions.append(position)
                decoded.indexes.append(0)
            else:
                events = cast("list[RawEvent]", message)
                decoded.raws += events
                decoded.positions += [position] * len(events)
                decoded.indexes += range(len(events))
                decoded.arrays.add(position)
        return decoded

    def only(self, keep: Callable[[int, int], bool]) -> Decoded:
        """These events but only those ``keep(position, index)`` is true of."""
        kept = [
            i
            for i, (position, index) in enumerate(zip(self.positions, self.indexes, strict=True))
            if keep(position, index)
        ]
        return Decoded(
            [self.raws[i] for i in kept],
            [self.positions[i] for i in kept],
            [self.indexes[i] for i in kept],
            self.arrays,
            self.whole,
        )

    def rest(
        self, records: Sequence[Record], left: list[int]
    ) -> list[tuple[int, Record, list[Item] | None]]:
        """For the per-event path, in stream order: (position, record, its events ``left`` as
        ``typed_events`` gives them, or None for a message the typed decoder refused)."""
        items: dict[int, list[Item]] = {}
        for i in sorted(left):
            position = self.positions[i]
            index = self.indexes[i] if position in self.arrays else None
            items.setdefault(position, []).append((index, self.raws[i]))
        return [
            (position, records[position], items.get(position))
            for position in sorted([*self.whole, *items])
        ]


_FEATURES = attrgetter("features")
_PREDICTION = attrgetter("prediction")
_PACK = msgspec.msgpack.encode


def raw_columns(shape: Shape, raws: list[RawEvent]) -> list[Sequence[Any]]:
    """The events' raw values per column (their feature names are the same, in the same order)."""
    width = len(shape.names) - shape.with_prediction
    flat = list(chain.from_iterable(map(dict.values, map(_FEATURES, raws))))
    columns: list[Sequence[Any]] = [flat[j::width] for j in range(width)]
    if shape.with_prediction:
        columns.append(list(map(_PREDICTION, raws)))
    return columns


def by_names(raws: list[RawEvent], events: list[int]) -> list[tuple[tuple[str, ...], list[int]]]:
    """``events`` (indexes into ``raws``, with as many features each) split by their feature
    names, in order: (names, events) per distinct names, in order of first appearance."""
    features = list(map(_FEATURES, map(raws.__getitem__, events)))
    names = tuple(features[0])
    if not names or list(chain.from_iterable(features)) == list(names) * len(features):
        return [(names, events)]  # the usual: all alike, checked name by name in one pass
    split: dict[tuple[str, ...], list[int]] = {}
    for event, named in zip(events, features, strict=True):
        split.setdefault(tuple(named), []).append(event)
    return list(split.items())


def ids_fit(ids: list[str | None], limit: int) -> bool:
    """Whether each event id given (not None) is 1..``limit`` characters, as ``check_ids``
    wants."""
    if None in ids:
        ids = [i for i in ids if i is not None]
    if not ids:
        return True
    lengths = list(map(len, cast("list[str]", ids)))
    return min(lengths) > 0 and max(lengths) <= limit


def event_times(
    stamps: list[float | str | None], kafka_times: np.ndarray, limits: Limits
) -> np.ndarray | None:
    """Event times as the codec reads them; None if one is invalid."""
    if stamps.count(None) == len(stamps):
        return kafka_times
    if set(map(type, stamps)) == _FLOAT:  # epoch seconds: ``event_time``'s checks at once
        seconds = np.array(stamps, dtype=np.float64)
        with np.errstate(invalid="ignore"):
            valid = (
                np.isfinite(seconds)
                & (seconds >= 0)
                & ~(seconds - kafka_times > limits.max_future_skew_s)
                & ~(kafka_times - seconds > limits.max_past_skew_s)
            )
        return seconds if valid.all() else None
    try:
        return np.array(
            [event_time(t, k, limits) for t, k in zip(stamps, kafka_times.tolist(), strict=True)],
            dtype=np.float64,
        )
    except Invalid:
        return None


_FLOAT = {float}


def fits(column: np.ndarray | list[str | None], kind: type | None, known: Container[str]) -> bool:
    """Whether a classified column goes to its series without admission: nulls fit any series,
    numbers a numeric one, categories a categorical one that has counted each of them."""
    if kind is Ignored:
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
class Values:
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
        if not self.seqs and len(self.chunks) == 1:  # the usual: one shape's column
            _, only, at, when = self.chunks[0]
            return (
                np.asarray(only, dtype=np.float64) if numeric else list(only),
                np.asarray(at, dtype=np.int64),
                np.asarray(when, dtype=np.float64),
            )
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

    def keyed(self, numeric: bool) -> tuple[np.ndarray, np.ndarray, np.ndarray | list[str | None]]:
        """Seqs, offsets and values (as ``merged`` gives them), in stream order."""
        parts: list[tuple[Any, Any, Any]] = [
            (seqs, offsets, values) for seqs, values, offsets, _ in self.chunks
        ]
        if self.seqs:
            parts.append((self.seqs, self.offsets, self.values))
        seqs = np.concatenate([np.asarray(s, dtype=np.int64) for s, _, _ in parts])
        offsets = np.concatenate([np.asarray(o, dtype=np.int64) for _, o, _ in parts])
        order = np.argsort(seqs, kind="stable")
        if numeric:
            column = np.concatenate([np.asarray(v, dtype=np.float64) for _, _, v in parts])
            return seqs[order], offsets[order], column[order]
        flat = [value for _, _, part in parts for value in part]
        return seqs[order], offsets[order], [flat[i] for i in order.tolist()]


@dataclass(slots=True, eq=False)
class Rows:
    """A (model, version)'s events with numeric values, for its PCA monitor, like ``Values``."""

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


def first_of(item: tuple[Any, Values | Rows]) -> Any:
    return item[1].first


def index_of(item: Item) -> int:
    return item[0] or 0


def latest(latest: float | None, time: float) -> float:
    return time if latest is None else max(latest, time)


class Batch:
    """The admitted events of one batch, grouped per series for vectorised updates, and what
    else they leave: versions seen, joins. Every event has a ``seq``, its place in the stream
    (record position, index in its message), which orders what the two paths add."""

    def __init__(self, rows: bool, stride: int) -> None:
        self.stride = stride  # more than any message's events
        self.series: dict[str, Values] = {}
        self.kinds: dict[str, type] = {}
        self._new_categories: dict[str, set[str]] = defaultdict(set)
        self._collect_rows = rows
        self.rows: dict[tuple[str, str | None], Rows] = {}
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

    def series_of(self, model: str) -> set[str]:
        """The model's series with values in the batch."""
        return self._series_of.get(model, set())

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

    def _values(self, series: str, first: tuple[int, int], model: str | None = None) -> Values:
        """The series' values, which ``first`` may come before (columns are added before the
        per-event path runs); ``model``: the series' model, if the caller knows it."""
        values = self.series.get(series)
        if values is None:
            values = self.series[series] = Values(first)
            self._series_of[parse_series(series)[0] if model is None else model].add(series)
        elif first < values.first:
            values.first = first
        return values

    def _rows(self, model: str, version: str | None, seq: int) -> Rows:
        rows = self.rows.get((model, version))
        if rows is None:
            rows = self.rows[(model, version)] = Rows(seq)
        elif seq < rows.first:
            rows.first = seq
        return rows

    def add_columns(
        self,
        shape: Shape,
        seqs: np.ndarray,
        offsets: np.ndarray,
        times: np.ndarray,
        values: list[np.ndarray | list[str | None]],
        ids: list[str | None],
    ) -> None:
        """Add a shape's events at once (see ``PredictionProcessor._take_columns``); ``ids``:
        their event ids."""
        model, version, first = shape.model, shape.version, int(seqs[0])
        chunk = (seqs, offsets, times)
        numeric: list[tuple[str, np.ndarray]] = []
        for name, series, column, rank in zip(
            shape.names, shape.series, values, _ranks(values), strict=True
        ):
            if series is None:  # ignored
                continue
            self._values(series, (first, rank), model).chunks.append(
                (chunk[0], column, chunk[1], chunk[2])
            )
            if isinstance(column, np.ndarray):
                numeric.append((name, column))
        if self._collect_rows and numeric:
            matrix = np.column_stack([column for _, column in numeric])
            # the per-event path's rows: events with a number
            in_rows = ~np.isnan(matrix).all(axis=1)
            if in_rows.all():
                self._rows(model, version, first).chunks.append(
                    (seqs, [name for name, _ in numeric], matrix, offsets)
                )
            elif in_rows.any():
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
        self._add_joins(shape, seqs, times, values, ids)

    def _add_joins(
        self,
        shape: Shape,
        seqs: np.ndarray,
        times: np.ndarray,
        values: list[np.ndarray | list[str | None]],
        ids: list[str | None],
    ) -> None:
        """Joins as the per-event path packs them: the prediction as the codec classifies it
        (a feature named prediction stands in for an absent one)."""
        if shape.with_prediction:
            predictions = values[-1]
        elif PREDICTION in shape.names:
            predictions = values[shape.names.index(PREDICTION)]
        else:
            return  # no prediction: no joins
        if isinstance(predictions, np.ndarray):  # numbers, NaN for null
            joined = ~np.isnan(predictions)
            if None in ids:
                joined &= np.array([i is not None for i in ids], dtype=bool)
            if not joined.any():
                return
            if not joined.all():
                ids = list(compress(ids, joined.tolist()))
                predictions, times, seqs = predictions[joined], times[joined], seqs[joined]
            packs = map(
                _PACK,
                zip(predictions.tolist(), repeat(shape.version), times.tolist(), strict=False),
            )
            self._joins += zip(repeat(shape.model), cast("list[str]", ids), packs, strict=False)
            self._join_seqs += seqs.tolist()
            return
        for seq, event_id, prediction, time in zip(
            seqs.tolist(), ids, predictions, times.tolist(), strict=True
        ):
            if event_id is not None and prediction is not None:
                packed = msgspec.msgpack.encode((prediction, shape.version, time))
                self._joins.append((shape.model, event_id, packed))
                self._join_seqs.append(seq)

    def close(self, state: PartitionState, out: Outcome) -> None:
        """Replay the admitted events' versions and list their joins, in stream order."""
        for _, model, version in sorted(self._versions, key=itemgetter(0)):
            state.saw_version(model, version)
        out.evicted_models += sorted(self.evicted)
        order = np.argsort(np.array(self._join_seqs, dtype=np.int64), kind="stable")
        out.joins = list(map(self._joins.__getitem__, order.tolist()))

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
