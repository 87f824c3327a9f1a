"""Read alerts from the alert topic (``streamdrift alerts`` and the demo)."""

from __future__ import annotations

import json
import time
import uuid
from collections.abc import Callable, Iterator
from typing import Any, cast

import msgspec
from confluent_kafka import OFFSET_BEGINNING, OFFSET_END, Consumer, KafkaError, TopicPartition

from streamdrift.streams.security import printable


def tail_alerts(
    client_config: dict[str, Any],
    topic: str,
    from_beginning: bool = True,
    follow: bool = True,
    max_alerts: int | None = None,
    idle_timeout: float = 5.0,
    until: Callable[[], bool] | None = None,
    on_unreadable: Callable[[str], None] | None = None,
) -> Iterator[dict[str, Any]]:
    """Yield alerts as dicts; without ``follow``, stop after ``idle_timeout`` seconds of silence.

    ``until`` is polled twice a second; the tail ends when it returns True. A message that is not
    a JSON object is skipped (anyone may write to the topic), told to ``on_unreadable``.

    ``client_config`` holds ``bootstrap.servers`` and any security properties. The topic's
    partitions are assigned directly (no consumer group to join: a join can take longer than the
    idle timeout, which then ended the tail before the first alert); a topic that does not exist
    yet is subscribed to, and silence counts only once it is assigned. Commits nothing, so
    tailing never disturbs anyone.
    """
    consumer = Consumer(
        {
            **client_config,
            "group.id": f"streamdrift-tail-{uuid.uuid4().hex[:8]}",
            "auto.offset.reset": "earliest" if from_beginning else "latest",
            "enable.auto.commit": False,
        }
    )
    assigned = _assign_or_subscribe(
        consumer, topic, OFFSET_BEGINNING if from_beginning else OFFSET_END
    )
    seen, idle = 0, 0.0
    try:
        while (max_alerts is None or seen < max_alerts) and not (until and until()):
            message = consumer.poll(0.5)
            if message is None:
                idle += 0.5 if assigned else 0.0
                if not follow and idle >= idle_timeout:
                    return
                continue
            idle = 0.0
            error = message.error()
            if error:
                if error.code() == KafkaError._PARTITION_EOF:
                    continue
                raise RuntimeError(f"reading {topic}: {error}")
            alert = _decode(message.value())
            if alert is None:
                if on_unreadable:
                    on_unreadable(f"{topic}[{message.partition()}]@{message.offset()}")
                continue
            seen += 1
            yield alert
    finally:
        consumer.close()


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


def read_alerts(
    client_config: dict[str, Any], topic: str, timeout: float = 60.0
) -> list[dict[str, Any]]:
    """Every alert the topic holds now (``streamdrift report``), each partition in order.

    Partitions are assigned directly and read up to their end: no consumer group to join (a
    join can take longer than any idle timeout), nothing committed, and the read stops when
    the topic is exhausted instead of after a guessed silence. ``TimeoutError`` if that takes
    longer than ``timeout`` seconds; an absent topic has no alerts.
    """
    consumer = Consumer(
        {
            **client_config,
            "group.id": f"streamdrift-read-{uuid.uuid4().hex[:8]}",
            "enable.auto.commit": False,
            "enable.partition.eof": True,
            "fetch.wait.max.ms": 100,  # an empty partition answers (with its end) this soon
        }
    )
    try:
        metadata = consumer.list_topics(topic, timeout=timeout).topics.get(topic)
        if metadata is None or metadata.error is not None:
            return []
        consumer.assign([TopicPartition(topic, p, OFFSET_BEGINNING) for p in metadata.partitions])
        alerts: list[dict[str, Any]] = []
        at_end: set[int] = set()
        deadline = time.monotonic() + timeout
        while len(at_end) < len(metadata.partitions):
            if time.monotonic() > deadline:
                raise TimeoutError(f"reading {topic}: not at its end after {timeout:g} s")
            for message in consumer.consume(1000, timeout=0.1):
                error = message.error()
                if error is None:
                    alert = _decode(message.value())
                    if alert is not None:  # not an alert: nothing to report about it
                        alerts.append(alert)
                elif error.code() == KafkaError._PARTITION_EOF:
                    at_end.add(cast(int, message.partition()))  # a consumed message has one
                else:
                    raise RuntimeError(f"reading {topic}: {error}")
        return alerts
    finally:
        consumer.close()


def _decode(value: bytes | None) -> dict[str, Any] | None:
    """The message as a JSON object, or None if it is not one."""
    try:
        alert = msgspec.json.decode(value or b"")
    except msgspec.DecodeError:
        return None
    return alert if isinstance(alert, dict) else None


#: Printed once above the alert lines: how to read their ``evidence predictions[2] 500..15059``.
EVIDENCE_LEGEND = (
    "[dim]evidence: topic\\[partition] first..last offset of the input records the detection "
    "summarises (the last one completed it)[/dim]"
)


def format_alert(alert: Any) -> str:
    """One alert as one line of Rich markup; every field from the message printed literally.

    Anything on the alert topic can be read here, so a message without an alert's shape is shown
    as unreadable rather than ending the tail.
    """
    try:
        return _alert_line(alert)
    except (KeyError, TypeError, AttributeError, ValueError, IndexError):
        text = printable(json.dumps(alert, default=str)[:300])
        return f"[yellow]not an alert:[/yellow] {text}"


def _alert_line(alert: dict[str, Any]) -> str:
    p = printable
    d = alert["data"]
    what = "error rate" if d["kind"] == "performance" else "mean"
    key = "error_rate" if d["kind"] == "performance" else "mean"
    if d["reference"].get(key) is not None:
        change = (
            f"reference {what} {number_text(d['reference'].get(key))} → current "
            f"{number_text(d['current'].get(key))}"
        )
    else:  # categorical or multivariate: the window test's own numbers say it
        change = f"{p(d['test'])} test p={number_text(d['p_value'])}"
    e = d["evidence"]
    return (
        f"[bold red]DRIFT[/bold red] {p(alert['time'])} [bold]{p(alert['subject'])}[/bold] "
        f"({p(d['kind'])}, {p(d['detector'])}, severity {p(d['severity'])}) effect "
        f"{float(d['effect_size']):.2f}, {change}; evidence "
        f"{p(e['topic'])}\\[{p(e['partition'])}] {p(e['from_offset'])}..{p(e['to_offset'])}  "
        f"[dim]id {p(alert['id'])}[/dim]"
    )


def number_text(value: Any) -> str:
    """A number in 4 significant digits; "-" for anything else."""
    return f"{value:.4g}" if isinstance(value, (int, float)) else "-"
