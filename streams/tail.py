"""Read alerts from the alert topic (``streamdrift alerts`` and the demo)."""

from __future__ import annotations

import uuid
from typing import Any, Callable, Iterator

import msgspec
from confluent_kafka import Consumer, KafkaError


def tail_alerts(
    client_config: dict[str, Any], topic: str, from_beginning: bool = True, follow: bool = True,
    max_alerts: int | None = None, idle_timeout: float = 5.0, until: Callable[[], bool] | None = None,
) -> Iterator[dict[str, Any]]:
    """Yield alerts as dicts; without ``follow``, stop after ``idle_timeout`` seconds of silence.

    ``until`` is polled twice a second; the tail ends when it returns True.

    ``client_config`` holds ``bootstrap.servers`` and any security properties. Uses a throwaway
    consumer group and commits nothing, so tailing never disturbs anyone.
    """
    consumer = Consumer({
        **client_config,
        "group.id": f"streamdrift-tail-{uuid.uuid4().hex[:8]}",
        "auto.offset.reset": "earliest" if from_beginning else "latest",
        "enable.auto.commit": False,
    })
    consumer.subscribe([topic])
    seen, idle = 0, 0.0
    try:
        while (max_alerts is None or seen < max_alerts) and not (until and until()):
            message = consumer.poll(0.5)
            if message is None:
                idle += 0.5
                if not follow and idle >= idle_timeout:
                    return
                continue
            idle = 0.0
            if message.error():
                if message.error().code() == KafkaError._PARTITION_EOF:
                    continue
                raise RuntimeError(f"reading {topic}: {message.error()}")
            seen += 1
            yield msgspec.json.decode(message.value())
    finally:
        consumer.close()
