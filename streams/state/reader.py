"""Read-only walk over a group's checkpointed state in Redis: the one reader behind
``streamdrift status``, ``report`` and ``baseline freeze``. It never writes, so it is safe
beside running workers (each partition's hash is read in one command: a consistent snapshot
of that partition, not of the group).
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from dataclasses import dataclass
from typing import cast

import redis

from streamdrift.streams.state.keys import KeyLayout, SeriesKey, is_series

log = logging.getLogger("streamdrift")


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
        """``(topic, partition)`` of every checkpointed partition, sorted.

        A member that is not ``topic:partition`` (only workers write the set, but the store is
        not ours alone) is skipped with a warning: one bad entry must not hide the others.
        """
        found = []
        for member in self.client.smembers(self.layout.partitions_key):
            parsed = _topic_partition(cast(bytes, member))
            if parsed is None:
                log.warning(
                    "skipping %r in %s: not a topic:partition", member, self.layout.partitions_key
                )
            else:
                found.append(parsed)
        return sorted(found)

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


def _topic_partition(member: bytes) -> tuple[str, int] | None:
    """``b"predictions:3"`` → ``("predictions", 3)``; None for anything else.

    >>> _topic_partition(b"predictions:3"), _topic_partition(b"x:-1"), _topic_partition(b"\\xff:1")
    (('predictions', 3), None, None)
    """
    try:
        topic, _, number = member.decode().rpartition(":")
    except UnicodeDecodeError:
        return None
    if not topic or not number.isdigit() or not number.isascii():
        return None
    return topic, int(number)
