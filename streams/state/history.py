"""Drift-score history: what ``streamdrift report`` plots over time.

The checkpointed state holds only each series' latest drift score, so the workers also append
samples to one Redis Stream per (group, model), ``sd:{G}:history:<model>``. Each entry is one
partition's changed series of that model at one checkpoint: field ``partition``
(``topic:partition``) and field ``samples``, a msgpack array of :class:`Sample`; the entry id is
Redis's clock (ms).

Bounds: a partition's series are sampled at most once every ``STREAMDRIFT_HISTORY_INTERVAL_S``
(the samples in between are folded into the next one: it covers every series changed since the
last), and each stream keeps about the newest :data:`HISTORY_MAX_ENTRIES` entries
(``XADD MAXLEN ~``): a day at the default 10 s for a model on one partition. Models on probation
(see ``streams.pipeline.admission``) have no history yet, so a flood of made-up names leaves no
stream behind. An entry costs
~30 bytes per series. Cost per checkpoint: one pipelined round trip, only when a sample is due.

History is a view, not state: a failed write is logged and counted
(``streamdrift_history_errors_total``), never raised, so it can never break a checkpoint.
"""

from __future__ import annotations

import logging
import time
from collections import defaultdict
from collections.abc import Iterable
from dataclasses import dataclass
from typing import cast

import msgspec
import redis
import redis.asyncio as aioredis
from prometheus_client import CollectorRegistry, Counter
from redis.asyncio.cluster import RedisCluster

from streamdrift.streams.state.keys import KeyLayout, parse_series
from streamdrift.streams.state.partition import PartitionState

log = logging.getLogger("streamdrift")

#: Entries kept per (group, model) stream, approximately (Redis trims whole macro nodes).
HISTORY_MAX_ENTRIES = 8_640


class Sample(msgspec.Struct, array_like=True, frozen=True):
    """One series at one checkpoint."""

    version: str | None
    feature: str
    drift_score: float
    count: int
    episode_open: bool


@dataclass(frozen=True)
class Point:
    """A sample as read back, with when and where it was taken."""

    at: float  # epoch seconds (the entry id)
    partition: str  # topic:partition
    sample: Sample


_ENCODER = msgspec.msgpack.Encoder()
_DECODER = msgspec.msgpack.Decoder(list[Sample])


def history_key(group_id: str, model: str) -> str:
    """The model's drift-score stream (:meth:`streams.state.keys.KeyLayout.history_key`)."""
    return KeyLayout(group_id).history_key(model)


class HistoryRecorder:
    """Appends the drift scores of a worker's checkpointed series to the history streams."""

    def __init__(
        self,
        client: aioredis.Redis | RedisCluster,
        group_id: str,
        interval_s: float,
        registry: CollectorRegistry,
        max_entries: int = HISTORY_MAX_ENTRIES,
    ) -> None:
        self.redis = client
        self.group_id = group_id
        self.interval_s = interval_s
        self.max_entries = max_entries
        self.errors = Counter(
            "streamdrift_history_errors",
            "Drift-score history writes that failed (the checkpoint did not)",
            registry=registry,
        )
        self._changed: dict[tuple[str, int], set[str]] = defaultdict(set)  # series not sampled yet
        self._sampled_at: dict[tuple[str, int], float] = {}

    async def record(self, states: Iterable[PartitionState]) -> None:
        """Sample the series of freshly checkpointed ``states`` changed since their last sample
        (call before their dirty sets are cleared). Never raises."""
        try:
            entries = self._due_entries(states, time.monotonic())
            if not entries:
                return
            pipe = self.redis.pipeline(transaction=False)
            for model, fields in entries:
                pipe.xadd(
                    history_key(self.group_id, model),
                    fields,  # type: ignore[arg-type]  # redis-py's dict key type is invariant
                    maxlen=self.max_entries,
                    approximate=True,
                )
            await pipe.execute()
        except Exception as exc:  # history must never break the checkpoint
            self.errors.inc()
            log.warning("could not append drift-score history (the checkpoint is saved): %s", exc)

    def _due_entries(
        self, states: Iterable[PartitionState], now: float
    ) -> list[tuple[str, dict[str, bytes]]]:
        entries = []
        for state in states:
            key = (state.topic, state.partition)
            self._changed[key] |= state.dirty
            if (
                now - self._sampled_at.get(key, -float("inf")) < self.interval_s
                or not self._changed[key]
            ):
                continue
            self._sampled_at[key] = now
            by_model: dict[str, list[Sample]] = defaultdict(list)
            for name in sorted(self._changed.pop(key)):
                monitor = state.monitors.get(name)
                if monitor is None:  # retired since
                    continue
                model, version, feature = parse_series(name)
                if (
                    model in state.ledger.probation
                ):  # a made-up name must not leave a Redis key behind
                    continue
                sample = Sample(
                    version,
                    feature,
                    float(monitor.drift_score()),
                    monitor.count,
                    monitor.lifecycle.is_open,
                )
                by_model[model].append(sample)
            partition = f"{state.topic}:{state.partition}".encode()
            entries += [
                (model, {"partition": partition, "samples": _ENCODER.encode(samples)})
                for model, samples in by_model.items()
            ]
        return entries


def read_history(client: redis.Redis, group_id: str, model: str) -> list[Point]:
    """Every stored sample of ``model``, oldest first (entries that cannot be decoded are
    skipped)."""
    points = []
    entries = cast(
        "list[tuple[bytes, dict[bytes, bytes]]]", client.xrange(history_key(group_id, model))
    )
    for entry_id, fields in entries:
        try:
            samples = _DECODER.decode(fields[b"samples"])
            partition = fields[b"partition"].decode()
        except (KeyError, msgspec.DecodeError, UnicodeDecodeError):
            continue
        at = int(entry_id.split(b"-")[0]) / 1000
        points += [Point(at, partition, sample) for sample in samples]
    return points
