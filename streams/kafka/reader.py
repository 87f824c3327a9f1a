"""Reading one topic as an onlooker (the alert topic, for ``streamdrift alerts``, ``streamdrift
report`` and the demo): the topic's partitions are assigned directly, without joining a consumer
group, and nothing is committed.

A group join can take longer than an operator waits (on the embedded broker a join alone outlasts
the tail's idle timeout, which then ended the tail before the first alert), and an onlooker's
commits must never disturb anyone. Only the confluent-kafka side is here; what the messages
mean, and when to stop waiting for them, is :mod:`streams.ops.tail`'s.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from types import TracebackType
from typing import Any, Self, cast

from confluent_kafka import OFFSET_BEGINNING, OFFSET_END, Consumer, KafkaError, TopicPartition


@dataclass(frozen=True, slots=True)
class Fetched:
    """One message read: where it is (to name it in a warning) and its value."""

    partition: int
    offset: int
    value: bytes | None


class TopicFollower:
    """Follows one topic from its beginning or its end, until closed.

    ``client_config`` holds ``bootstrap.servers`` and any security properties. A topic that does
    not exist yet is subscribed to (without committing, the group is only a name) and
    :attr:`assigned` turns true once it has partitions: until then, silence means nothing.
    """

    def __init__(self, client_config: Mapping[str, Any], topic: str, from_beginning: bool) -> None:
        self.topic = topic
        reset = "earliest" if from_beginning else "latest"
        self._consumer = _onlooker(client_config, "tail", {"auto.offset.reset": reset})
        start = OFFSET_BEGINNING if from_beginning else OFFSET_END
        self._assigned = _assign_or_subscribe(self._consumer, topic, start)

    @property
    def assigned(self) -> bool:
        """Whether the consumer has partitions of the topic."""
        return bool(self._assigned)

    def poll(self, timeout: float) -> Fetched | None:
        """The next message, or None if none came within ``timeout`` seconds (or the consumer
        only reported a partition's end). ``RuntimeError`` for the consumer's error."""
        message = self._consumer.poll(timeout)
        if message is None:
            return None
        error = message.error()
        if error:
            if error.code() == KafkaError._PARTITION_EOF:
                return None
            raise RuntimeError(f"reading {self.topic}: {error}")
        return Fetched(cast(int, message.partition()), cast(int, message.offset()), message.value())

    def close(self) -> None:
        """Leave the topic (nothing to commit)."""
        self._consumer.close()

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()


def _onlooker(client_config: Mapping[str, Any], purpose: str, more: Mapping[str, Any]) -> Consumer:
    """A consumer that commits nothing, in a group of its own (``streamdrift-<purpose>-<random>``)
    so that onlookers never share partitions; ``more``: librdkafka properties for its purpose."""
    group = f"streamdrift-{purpose}-{uuid.uuid4().hex[:8]}"
    return Consumer({**client_config, "group.id": group, "enable.auto.commit": False, **more})


class _Assigned:
    """Truthy once the consumer has partitions of the topic."""

    def __init__(self, now: bool) -> None:
        self.now = now

    def __bool__(self) -> bool:
        return self.now

    def on_assign(self, consumer: Consumer, partitions: list[TopicPartition]) -> None:
        self.now = True


def _assign_or_subscribe(consumer: Consumer, topic: str, offset: int) -> _Assigned:
    metadata = consumer.list_topics(topic, timeout=10).topics.get(topic)
    if metadata is not None and metadata.error is None and metadata.partitions:
        consumer.assign([TopicPartition(topic, p, offset) for p in metadata.partitions])
        return _Assigned(True)
    assigned = _Assigned(False)
    consumer.subscribe([topic], on_assign=assigned.on_assign)
    return assigned


def read_to_end(
    client_config: Mapping[str, Any], topic: str, timeout: float = 60.0
) -> Iterator[bytes | None]:
    """The value of every message the topic holds now, each partition in order.

    Every partition is read from its beginning up to its end as it is now, so the read stops
    when the topic is exhausted instead of after a guessed silence. ``TimeoutError`` if that
    takes longer than ``timeout`` seconds; ``RuntimeError`` for the consumer's error; an absent
    topic holds nothing.
    """
    consumer = _onlooker(
        client_config,
        "read",
        {
            "enable.partition.eof": True,
            "fetch.wait.max.ms": 100,  # an empty partition answers (with its end) this soon
        },
    )
    try:
        metadata = consumer.list_topics(topic, timeout=timeout).topics.get(topic)
        if metadata is None or metadata.error is not None:
            return
        consumer.assign([TopicPartition(topic, p, OFFSET_BEGINNING) for p in metadata.partitions])
        at_end: set[int] = set()
        deadline = time.monotonic() + timeout
        while len(at_end) < len(metadata.partitions):
            if time.monotonic() > deadline:
                raise TimeoutError(f"reading {topic}: not at its end after {timeout:g} s")
            for message in consumer.consume(1000, timeout=0.1):
                error = message.error()
                if error is None:
                    yield message.value()
                elif error.code() == KafkaError._PARTITION_EOF:
                    at_end.add(cast(int, message.partition()))  # a consumed message has one
                else:
                    raise RuntimeError(f"reading {topic}: {error}")
    finally:
        consumer.close()
