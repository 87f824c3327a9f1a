"""Batch intake: Faust's consumer feeds the runtime without Faust's per-event machinery.

Faust's own Fetcher turns every Kafka record into a ``Message`` and an ``Event``, schedules
four asyncio tasks per record (``Service.wait_first`` in ``Consumer._drain_messages``), queues
it for a stream and acks it: ~70–116 µs of CPU per record, a ceiling of ~10–13k records/s
per worker whatever the agent does. :class:`Intake` takes the Fetcher's place in the app (Faust
starts it after each rebalance's recovery and stops it on shutdown, as its own) and hands the
records of each ``getmany`` to :meth:`Runtime.handle` in batches, untouched: per record it builds
one :class:`Record` and counts the events. Each ``getmany`` asks for about
``STREAMDRIFT_BATCH_MAX_EVENTS`` events' worth of records (aiokafka bounds polls by records). Faust
still owns the consumer: group membership, rebalances, pausing, seeking to the committed offsets,
the aiokafka fetcher and its prefetch buffer (bounded by ``consumer_max_fetch_size`` per
partition), which is the only buffer: nothing is fetched while a batch is handled beyond what
aiokafka prefetches.

Offsets are committed from the checkpoints (:meth:`Intake.commit`), not from acks: Faust
never sees an event of our topics, so it has nothing to commit for them.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Iterator, Mapping, Sequence, Set
from typing import Any, cast

import faust
from faust.types import TP

from streamdrift.streams.pipeline.outcome import Record
from streamdrift.streams.runtime import Runtime

log = logging.getLogger("streamdrift")


#: Bytes a mapped input's message is taken to hold per event, for sizing batches: its messages
#: need not name a model per event (KServe tensors, Avro, protobuf), so their size stands in.
MAPPED_EVENT_BYTES = 256


def events_in(value: bytes | None, mapped: bool = False) -> int:
    """The events of one message, counted without decoding it: its ``"model"`` keys (every
    event and label has one; a JSON array holds many), at least 1; for a mapped input's message
    (``mapped``), at least one per ``MAPPED_EVENT_BYTES`` too. Only batch sizes depend on it: a
    miscount makes a batch larger or smaller, never wrong.

    >>> events_in(b'[{"model": "a"}, {"model": "b"}]'), events_in(b"x" * 2560, mapped=True)
    (2, 10)
    """
    if not value:
        return 1
    events = max(1, value.count(b'"model"'))
    return max(events, len(value) // MAPPED_EVENT_BYTES) if mapped else events


def poll_records(max_events: int, events_per_record: float) -> int:
    """Records to ask of one ``getmany`` so that it holds about ``max_events`` events: aiokafka
    bounds a poll by records, and a 100-event message is a hundred times the memory of a
    single-event one.

    >>> poll_records(2000, 1.0), poll_records(2000, 100.0), poll_records(2000, 1e6)
    (2000, 20, 1)
    """
    return max(1, min(max_events, round(max_events / max(events_per_record, 1.0))))


def batches(
    records: Mapping[TP, Sequence[Any]], max_events: int, keyed: Set[str] = frozenset()
) -> Iterator[tuple[str, dict[int, list[Record]]]]:
    """Split one ``getmany`` result (aiokafka records by partition, each in offset order) into
    ``(topic, records by partition)`` batches of about ``max_events`` events; a message is never
    split, so a batch holds at least one. The records of ``keyed`` topics keep their key and
    headers."""
    by_topic: dict[str, list[TP]] = {}
    for tp in records:
        by_topic.setdefault(tp.topic, []).append(tp)
    for topic, tps in by_topic.items():
        batch: dict[int, list[Record]] = {}
        events = 0
        full = topic in keyed
        for tp in tps:
            part: list[Record] | None = None
            for r in records[tp]:
                if events >= max_events:
                    yield topic, batch
                    batch, events, part = {}, 0, None
                if part is None:
                    part = batch[tp.partition] = []
                part.append(
                    Record(r.offset, r.timestamp / 1000.0, r.value, r.key, r.headers)
                    if full
                    else Record(r.offset, r.timestamp / 1000.0, r.value)
                )
                events += events_in(r.value, full)
        if events:
            yield topic, batch


class Intake(faust.Service):
    """Drains the app's Kafka consumer into :meth:`Runtime.handle`, in place of Faust's Fetcher.

    The rest of a ``getmany`` is not applied once a rebalance began (Faust's own ``getmany``
    stops there too): the rebalance ends by seeking every assigned partition back to its
    committed offset (clamped to the checkpoint), so those records are read again by their
    owner. A batch already waiting for the runtime's lock when the rebalance starts is applied
    first (the lock is FIFO), or dropped by the runtime if its partition was revoked meanwhile.
    After a rebuild's seek (``FaustPublisher.seek``) the runtime drops the records fetched from
    the old position itself. An exception from the runtime crashes the worker (a crashed
    service stops the app): its memory may hold a half-applied batch, and a restart resumes
    from the checkpoint.
    """

    def __init__(
        self,
        app: faust.App,
        runtime: Runtime,
        max_events: int,
        wait_s: float,
        keyed: Set[str] = frozenset(),
    ) -> None:
        super().__init__(loop=app.loop, beacon=app.consumer.beacon)
        self.keyed = keyed  # topics whose records keep their key and headers (mapped inputs)
        self.app = app
        self.runtime = runtime
        self.max_events = max_events
        self.wait_s = wait_s
        self._handling = asyncio.Lock()  # held while a batch is in the runtime's hands
        self._committed: dict[tuple[str, int], int] = {}
        self._events_per_record = 1.0

    @faust.Service.task
    async def _drain(self) -> None:
        # Faust's Consumer: its internals are not on ConsumerT (streams.kafka.compat checks them).
        app, consumer = self.app, cast(Any, self.app.consumer)
        while not self.should_stop:
            records, _ = await consumer._wait_next_records(self.wait_s)
            # records come from the current one (as in Faust)
            generation = app.consumer_generation_id
            self._size_polls(records or {})
            for topic, batch in batches(records or {}, self.max_events, self.keyed):
                if (
                    self.should_stop
                    or not consumer.flow_active
                    or app.consumer_generation_id != generation
                ):
                    break  # a rebalance began: it ends by seeking back to the committed offsets
                async with self._handling:
                    await self.runtime.handle(topic, batch)

    def _size_polls(self, records: Mapping[TP, Sequence[Any]]) -> None:
        """Size the next polls by the events per record seen (a moving average)."""
        counts = [
            events_in(r.value, tp.topic in self.keyed)
            for tp, rs in records.items()
            for r in rs[:100]
        ]
        if not counts:
            return
        self._events_per_record += 0.3 * (sum(counts) / len(counts) - self._events_per_record)
        aiokafka_consumer = cast(Any, self.app.consumer)._thread._consumer  # read by each getmany
        if aiokafka_consumer is not None:
            aiokafka_consumer._max_poll_records = poll_records(
                self.max_events, self._events_per_record
            )

    async def on_stop(self) -> None:
        """Let the batch in hand finish: cancelled halfway it could leave state applied but its
        dead letters unsent, and the final checkpoint (``Runtime.close``) would save that."""
        async with self._handling:
            pass

    async def commit(self) -> None:
        """Commit the checkpointed offsets that moved since the last commit (never raises: it
        runs in the app's timer, and a commit lost to a rebalance is simply redone)."""
        runtime = self.runtime
        if self.app.rebalancing:  # the assignment is in flux; on_assigned commits the claims
            return
        due = {
            key: offset
            for key in runtime.states
            if (offset := runtime.committable(*key)) is not None
            and self._committed.get(key) != offset
        }
        if not due:
            return
        try:
            consumer = cast(Any, self.app.consumer)  # Faust's internal _commit: see compat
            committed = await consumer._commit({TP(t, p): o for (t, p), o in due.items()})
        except Exception as exc:  # the consumer logs and handles its own errors; we retry
            log.warning("could not commit checkpointed offsets (will retry): %s", exc)
            return
        if committed:
            self._committed = {
                key: o for key, o in {**self._committed, **due}.items() if key in runtime.states
            }
