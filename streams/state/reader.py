"""Read-only walk over a group's checkpointed state in Redis: the one reader behind
``streamdrift status``, ``report`` and ``baseline freeze``. It never writes, so it is safe
beside running workers (each partition's hash is read in one command: a consistent snapshot
of that partition, not of the group).
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from typing import cast

import redis

from streamdrift.streams.state.keys import KeyLayout, SeriesKey, is_series


@dataclass(frozen=True, slots=True)
class StoredSeries:
    """One series' checkpointed monitor in one partition (restore it with
    :func:`streams.state.partition.restore_monitor`)."""

    topic: str
    partition: int
    key: SeriesKey
    blob: bytes


class StateReader:
    """The checkpoints and states of every partition a group ever checkpointed."""

    def __init__(self, client: redis.Redis, group_id: str) -> None:
        self.client = client
        self.layout = KeyLayout(group_id)

    def partitions(self) -> list[tuple[str, int]]:
        """``(topic, partition)`` of every checkpointed partition, sorted."""
        members = (
            cast(bytes, m).decode().rpartition(":")
            for m in self.client.smembers(self.layout.partitions_key)
        )
        return sorted((topic, int(partition)) for topic, _, partition in members)

    def checkpoint(self, topic: str, partition: int) -> dict[str, str]:
        """The partition's checkpoint hash (epoch, offset, worker, times, events)."""
        key = self.layout.keys(topic, partition)[0]
        replies = cast("dict[bytes, bytes]", self.client.hgetall(key))
        return {k.decode(): v.decode() for k, v in replies.items()}

    def fields(self, topic: str, partition: int) -> dict[str, bytes]:
        """The partition's whole state hash: series fields and partition-level (meta) fields."""
        key = self.layout.keys(topic, partition)[1]
        replies = cast("dict[bytes, bytes]", self.client.hgetall(key))
        return {name.decode(): blob for name, blob in replies.items()}

    def series(self, model: str | None = None) -> Iterator[StoredSeries]:
        """Every stored series (of ``model`` only, if given), partition by partition."""
        for topic, partition in self.partitions():
            for name, blob in self.fields(topic, partition).items():
                if not is_series(name):
                    continue
                key = SeriesKey.parse(name)
                if model is None or key.model == model:
                    yield StoredSeries(topic, partition, key, blob)
