"""One owned partition's state in a worker's memory — its monitors, versions, pending and recently
joined labels, admission ledger and next offset — and the fields its checkpoint writes and a
claim restores. Pure (no Redis): :mod:`streams.state.checkpoint` stores the fields.

Exactly-once state: the state remembers the next offset it expects. A record below it was
already applied before the last checkpoint (a duplicate read after a crash or a rebalance) and
is skipped, so replays never double-count.
"""

from __future__ import annotations

import logging
import math
from collections import defaultdict
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, cast

import msgspec

from streamdrift.detectors import (
    CategoricalMonitor,
    ErrorMonitor,
    NumericMonitor,
    PCAReconstructionMonitor,
    StateError,
    monitor_from_bytes,
)
from streamdrift.detectors.segments import SegmentProfile
from streamdrift.streams.pipeline.admission import Ledger
from streamdrift.streams.pipeline.pairing import PendingHalf
from streamdrift.streams.state.keys import META_PREFIX, parse_series

log = logging.getLogger("streamdrift")


@dataclass
class Claim:
    """What claiming a partition found in the store (:meth:`CheckpointStore.claim
    <streamdrift.streams.state.checkpoint.CheckpointStore.claim>`): the new epoch and the last
    checkpoint's offset, state fields and outbox, from which :meth:`PartitionState.from_claim`
    rebuilds the partition."""

    epoch: int
    offset: int | None  # next offset to read; None if the partition was never checkpointed
    fields: dict[bytes, bytes] = field(default_factory=dict)
    outbox: list[bytes] = field(default_factory=list)  # checkpointed alerts maybe not yet published


Monitor = NumericMonitor | CategoricalMonitor | ErrorMonitor | PCAReconstructionMonitor
SegmentKey = tuple[str, str | None, str]  # model, version, segment feature

_VERSIONS = f"{META_PREFIX}versions"
UNKNOWN_MISSING = f"{META_PREFIX}unknown_missing"
_PENDING = f"{META_PREFIX}pending_labels"
_PAIRS = f"{META_PREFIX}pending_pairs"  # halves of inferences waiting for their partners
_LEDGER = f"{META_PREFIX}admission"
_JOINED = f"{META_PREFIX}joined_labels:"  # + chunk number (see RecentJoins)
_SEGMENTS = f"{META_PREFIX}segments:"  # + model, version, segment feature (see segment_field)
ERROR_SERIES = "error_rate"
MULTIVARIATE_SERIES = "multivariate"  # the model's PCA reconstruction-error monitor


def restore_monitor(name: str, blob: bytes) -> Monitor:
    """The monitor stored in state field ``name`` (its kind is in the stored envelope);
    ``StateError`` if it cannot be restored."""
    return cast(Monitor, monitor_from_bytes(blob))


@dataclass
class PendingLabel:
    model: str
    event_id: str
    label: float | str
    timestamp: float
    offset: int
    arrived: float  # worker clock, epoch seconds
    due: float = 0.0  # worker clock of its next look-up (see LabelProcessor)
    retry_s: float = 0.0  # the wait after its last look-up in vain (0: none yet)


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
        self.pending_dirty = False  # pending labels added or removed since the last checkpoint
        self.labels_due = -math.inf  # worker clock when a pending label is due (not checkpointed)
        self.pairs: list[PendingHalf] = []  # mapped inputs with pairing (streams.pipeline.pairing)
        self.pairs_dirty = False
        self.pairs_due = -math.inf  # worker clock when a pending half is due (not checkpointed)
        self.joined = RecentJoins()  # labels partitions: recently joined keys, for de-duplication
        self.corrupt: list[str] = []  # series whose stored state could not be read (started afresh)
        # Series restored with change detectors started afresh (state of another river release):
        # (series, the detectors, what wrote the state).
        self.rewarmed: list[tuple[str, tuple[str, ...], dict[str, Any]]] = []
        self.dirty: set[str] = set()
        self.events_since_checkpoint = 0
        self.ledger = Ledger()  # admission bookkeeping (streams.pipeline.admission)
        self.ledger_dirty = False
        # segment triage: per (model, version, segment feature), its profile
        self.segments: dict[SegmentKey, SegmentProfile] = {}
        self.segments_dirty: set[SegmentKey] = set()
        self.segments_retired: set[SegmentKey] = set()

    @classmethod
    def from_claim(cls, topic: str, partition: int, claim: Claim) -> PartitionState:
        state = cls(topic, partition, claim.epoch, claim.offset)
        joined: dict[int, bytes] = {}
        for raw_name, blob in claim.fields.items():
            name = raw_name.decode()
            if name == _VERSIONS:
                state.versions = {
                    model: versions
                    if isinstance(versions, list)
                    else [versions]  # before 0.2: the last one
                    for model, versions in msgspec.msgpack.decode(blob).items()
                }
            elif name == UNKNOWN_MISSING:
                state.unknown_missing = msgspec.msgpack.decode(blob)
            elif name == _LEDGER:
                try:
                    state.ledger = msgspec.msgpack.decode(blob, type=Ledger)
                except (msgspec.DecodeError, msgspec.ValidationError):
                    state.corrupt.append(name)  # started afresh: every model counts as established
            elif name == _PENDING:
                try:
                    state.pending = msgspec.msgpack.decode(blob, type=list[PendingLabel])
                except (msgspec.DecodeError, msgspec.ValidationError):
                    state.corrupt.append(name)
                    state.pending_dirty = True  # overwritten at the next checkpoint
            elif name == _PAIRS:
                try:
                    state.pairs = msgspec.msgpack.decode(blob, type=list[PendingHalf])
                except (msgspec.DecodeError, msgspec.ValidationError):
                    state.corrupt.append(name)
                    state.pairs_dirty = True
                state.pairs_due = min((p.due for p in state.pairs), default=math.inf)
            elif name.startswith(_JOINED) and name[len(_JOINED) :].isdigit():
                joined[int(name[len(_JOINED) :])] = blob
            elif name.startswith(_SEGMENTS):
                state._restore_segments(name, blob)
            else:
                try:
                    monitor = state.monitors[name] = restore_monitor(name, blob)
                except StateError:
                    state.corrupt.append(name)
                    continue
                if monitor.rewarmed:  # rewritten at the next checkpoint, as today's river has it
                    written_by = dict(monitor.restored_from)
                    state.rewarmed.append((name, tuple(monitor.rewarmed), written_by))
                    state.dirty.add(name)
        state.corrupt += [f"{_JOINED}{number}" for number in state.joined.load(joined)]
        for name in [*state.monitors, *state.unknown_missing]:
            model, _, feature = parse_series(name)
            state.features_by_model[model].add(feature)
        for model in state.versions:  # models admitted with no series yet still count
            state.features_by_model[model]
        return state

    def _restore_segments(self, name: str, blob: bytes) -> None:
        key = segment_key(name)
        try:
            if key is None:
                raise StateError("not a segment profile's field name")
            profile = SegmentProfile.from_bytes(blob)
        except StateError:
            self.corrupt.append(name)
            if key is not None:
                self.segments_retired.add(key)  # deleted at the next checkpoint
            return
        self.segments[key] = profile

    def checkpoint_fields(self) -> dict[str, bytes]:
        """Serialized fields changed since the last checkpoint (partition meta always included;
        pending and recently joined labels when they changed)."""
        # A retired series that came back since is written, not deleted.
        # the script deletes these
        fields = {name: b"" for name in self.retired if name not in self.monitors}
        fields.update(
            {name: self.monitors[name].to_bytes() for name in self.dirty if name in self.monitors}
        )
        fields[_VERSIONS] = msgspec.msgpack.encode(self.versions)
        fields[UNKNOWN_MISSING] = msgspec.msgpack.encode(self.unknown_missing)
        if self.ledger_dirty:
            fields[_LEDGER] = msgspec.msgpack.encode(self.ledger)
        if self.pending_dirty:
            fields[_PENDING] = msgspec.msgpack.encode(self.pending)
        if self.pairs_dirty:
            fields[_PAIRS] = msgspec.msgpack.encode(self.pairs)
        fields.update(self.joined.fields())
        fields.update(
            {segment_field(key): b"" for key in self.segments_retired if key not in self.segments}
        )
        fields.update(
            {
                segment_field(key): self.segments[key].to_bytes()
                for key in self.segments_dirty
                if key in self.segments
            }
        )
        return fields

    def mark_checkpointed(self) -> None:
        self.ledger_dirty = False
        self.dirty.clear()
        self.retired.clear()
        self.pending_dirty = False
        self.pairs_dirty = False
        self.joined.saved()
        self.segments_dirty.clear()
        self.segments_retired.clear()
        self.events_since_checkpoint = 0

    def unsave_pending(self) -> None:
        """Have the next checkpoint write the pending and recently joined labels and the pending
        halves of inferences in full (after Redis lost the stored state)."""
        self.pending_dirty = True
        self.pairs_dirty = True
        self.joined.changed |= set(self.joined.chunks)

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

    def series_of(self, model: str) -> list[str]:
        return [
            name
            for name in (*self.monitors, *self.unknown_missing)
            if parse_series(name)[0] == model
        ]

    def evict_model(self, model: str) -> None:
        """Drop a model with every series and version of it (its stored state goes at the next
        checkpoint, its metrics with it)."""
        names = self.series_of(model)
        self._drop_series(names)
        self.drop_segments(lambda key: key[0] == model)
        self.features_by_model.pop(model, None)
        self.versions.pop(model, None)
        self.ledger.forget_model(model, names)
        self.ledger_dirty = True

    def evict_series(self, names: list[str]) -> None:
        """Drop idle series; a model's features and versions are what its remaining series use."""
        self._drop_series(names)
        for model in {parse_series(name)[0] for name in names}:
            remaining = [parse_series(name) for name in self.series_of(model)]
            if model in self.features_by_model:
                self.features_by_model[model] = {feature for _, _, feature in remaining}
            if model in self.versions:
                used = {version for _, version, _ in remaining}
                self.versions[model] = [
                    version for version in self.versions[model] if version in used
                ]
        for name in names:
            self.ledger.series_seen.pop(name, None)
        gone = {parse_series(name) for name in names}
        self.drop_segments(lambda key: key in gone)
        self.ledger_dirty = True

    def drop_segments(self, which: Callable[[SegmentKey], bool]) -> None:
        """Drop the segment profiles ``which`` is true of (their stored state goes at the next
        checkpoint)."""
        for key in [key for key in self.segments if which(key)]:
            del self.segments[key]
            self.segments_dirty.discard(key)
            self.segments_retired.add(key)

    def _drop_series(self, names: list[str]) -> None:
        for name in names:
            self.monitors.pop(name, None)
            self.unknown_missing.pop(name, None)
            self.dirty.discard(name)
        self.retired.update(names)

    def retire_versions(self, keep: int) -> None:
        """Drop the series of each model's least recently seen versions beyond ``keep``."""
        for model, versions in self.versions.items():
            while len(versions) > keep:
                old = versions.pop(0)
                names = [
                    n
                    for n in (*self.monitors, *self.unknown_missing)
                    if parse_series(n)[:2] == (model, old)
                ]
                for name in names:
                    self.monitors.pop(name, None)
                    self.unknown_missing.pop(name, None)
                    self.dirty.discard(name)
                self.retired.update(names)
                self.drop_segments(lambda key: key[:2] == (model, old))  # noqa: B023 (called at once)
                log.info(
                    "retired %d series of %s version %s on %s[%d]",
                    len(names),
                    model,
                    old,
                    self.topic,
                    self.partition,
                )


def segment_field(key: SegmentKey) -> str:
    """The checkpoint field of a segment profile.

    >>> segment_key(segment_field(("fraud", None, "country")))
    ('fraud', None, 'country')
    """
    return _SEGMENTS + msgspec.json.encode(list(key)).decode()


def segment_key(name: str) -> SegmentKey | None:
    """The (model, version, segment feature) of a segment profile's field; None if malformed."""
    try:
        key = msgspec.json.decode(name[len(_SEGMENTS) :], type=tuple[str, str | None, str])
    except (msgspec.DecodeError, msgspec.ValidationError):
        return None
    return key


JOINED_CHUNK = 1_000  # most keys in one checkpoint field of the recently joined keys


@dataclass(slots=True)
class _Joined:
    last: float  # worker clock when its newest key was joined
    keys: list[tuple[str, str]]


class RecentJoins:
    """The (model, event_id) keys a labels partition joined recently: a second label for one of
    them is a duplicate.

    Kept in chunks, oldest first, each a checkpoint field of its own (``\\x00joined_labels:<n>``),
    so a checkpoint writes only the chunks changed since the last one (in a steady stream: the
    newest) and deletes the forgotten ones. A chunk is forgotten as a whole when its newest key
    is older than the TTL, or while the memory holds more keys than its bound.
    """

    def __init__(self) -> None:
        self.chunks: dict[int, _Joined] = {}  # by number, oldest first
        self.where: dict[tuple[str, str], int] = {}  # key -> number of its chunk
        self.changed: set[int] = set()  # chunks to write at the next checkpoint
        self.forgotten: set[int] = set()  # chunks to delete at the next checkpoint
        # number of the newest chunk (numbers only grow: their order is the chunks')
        self.newest = -1

    def __contains__(self, key: object) -> bool:
        return key in self.where

    def __len__(self) -> int:
        return len(self.where)

    def add(self, key: tuple[str, str], now: float, chunk_size: int) -> None:
        chunk = self.chunks.get(self.newest)
        if chunk is None or len(chunk.keys) >= chunk_size:
            self.newest += 1
            chunk = self.chunks[self.newest] = _Joined(now, [])
        number = self.newest
        chunk.keys.append(key)
        chunk.last = max(chunk.last, now)
        self.where[key] = number
        self.changed.add(number)

    def forget(self, now: float, ttl_s: float, limit: int) -> None:
        """Drop the oldest chunks while they are past the TTL or the memory holds more than
        ``limit`` keys."""
        while self.chunks:
            number, chunk = next(iter(self.chunks.items()))
            if now - chunk.last <= ttl_s and len(self.where) <= limit:
                return
            del self.chunks[number]
            for key in chunk.keys:
                if self.where.get(key) == number:
                    del self.where[key]
            self.changed.discard(number)
            self.forgotten.add(number)

    def fields(self) -> dict[str, bytes]:
        """The checkpoint fields changed since the last checkpoint (an empty value deletes)."""
        fields = {f"{_JOINED}{n}": b"" for n in self.forgotten if n not in self.chunks}
        for number in self.changed:
            chunk = self.chunks[number]
            fields[f"{_JOINED}{number}"] = msgspec.msgpack.encode((chunk.last, chunk.keys))
        return fields

    def saved(self) -> None:
        self.changed.clear()
        self.forgotten.clear()

    def load(self, blobs: dict[int, bytes]) -> list[int]:
        """Restore chunks from their checkpoint fields; return the numbers of unreadable ones
        (forgotten: the next checkpoint deletes them)."""
        bad = []
        self.newest = max(self.newest, *blobs) if blobs else self.newest
        for number in sorted(blobs):
            try:
                last, keys = _JOINED_CHUNK.decode(blobs[number])
            except (msgspec.DecodeError, msgspec.ValidationError):
                bad.append(number)
                self.forgotten.add(number)
                continue
            self.chunks[number] = _Joined(last, keys)
            for key in keys:
                self.where[key] = number
        return bad


_JOINED_CHUNK = msgspec.msgpack.Decoder(tuple[float, list[tuple[str, str]]])
