"""The one "produce with retry" step of every streamdrift producer.

librdkafka's ``produce`` only appends to a local queue; when that queue is full it raises
``BufferError`` at once, and room is made only by serving delivery reports (``poll``). Every
producer here (the :class:`~streamdrift.client.DriftClient`'s sending thread, the simulator, the
benchmark's load generator, the tests' helper) does the same: try, and while the queue is full,
serve reports for a moment and try again. Delivery itself is reported later, to ``on_delivery``,
from ``poll`` or ``flush``: a caller that must know the outcome flushes at the end
(``producer.flush(timeout)`` returns the number of messages still unacknowledged).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from confluent_kafka import KafkaError, Message, Producer

__all__ = ["DeliveryCallback", "Headers", "produce_with_retry"]

DeliveryCallback = Callable[[KafkaError | None, Message], None]
"""``on_delivery(error, message)``: ``error`` is None when the broker acknowledged the message."""

Headers = list[tuple[str, str | bytes | None]] | dict[str, str | bytes | None]
"""Kafka record headers as confluent-kafka takes them."""


def produce_with_retry(
    producer: Producer,
    topic: str,
    value: bytes | str | None,
    key: bytes | str | None = None,
    *,
    partition: int = -1,
    headers: Headers | None = None,
    on_delivery: DeliveryCallback | None = None,
    poll_timeout: float = 0.05,
    attempts: int | None = None,
    on_queue_full: Callable[[], Any] | None = None,
) -> bool:
    """Hand one message to ``producer``; while its local queue is full, serve delivery reports
    for up to ``poll_timeout`` seconds (they free the queue) and try again.

    Returns True once librdkafka took the message, False if its queue was still full after
    ``attempts`` tries (None: try until it is taken, which waits as long as the broker does not
    acknowledge anything). ``on_queue_full()`` is called each time the queue was found full,
    before serving reports. ``partition`` -1 lets the producer's partitioner choose (by key).
    Any other error (``KafkaException``: e.g. a message larger than ``message.max.bytes``, an
    unknown partition) is raised at once, unretried.

    The message's fate is reported to ``on_delivery(error, message)`` from a later ``poll`` or
    ``flush`` of the producer, on the thread that calls it::

        producer = Producer({"bootstrap.servers": "kafka:9092"})
        for value in values:
            produce_with_retry(producer, "predictions", value, b"fraud", on_delivery=report)
        left = producer.flush(30.0)  # messages still unacknowledged after 30 s
    """
    if attempts is not None and attempts < 1:
        raise ValueError(f"attempts must be >= 1 or None, got {attempts}")
    tries = 0
    while True:
        try:
            producer.produce(
                topic, value, key, partition=partition, on_delivery=on_delivery, headers=headers
            )
            return True
        except BufferError:  # librdkafka's queue is full: deliveries make room
            tries += 1
            if on_queue_full is not None:
                on_queue_full()
            producer.poll(poll_timeout)
            if attempts is not None and tries >= attempts:
                return False
