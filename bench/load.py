"""The throughput benchmark's input: simulator-shaped prediction events, produced fast or paced.

Events come from :func:`streams.dev.simulate.generate` (the same JSON objects as ``streamdrift
simulate``: model, model_version, event_id, timestamp, features, prediction) for ``models``
regression models of 20 numeric and 2 categorical features each (23 monitored series per
model with the prediction; no labels). Model ``k`` is produced to partition ``k % partitions``
(keyed by model name), so partitions carry nearly equal shares and each model's stream stays
whole on one partition, as docs/contracts.md asks producers to key. The adapter columns' records
(:mod:`bench.adapters`: the same messages in another shape, keyed as their platform keys them)
go to the same partitions.

Single-event messages are cut from 100-event arrays: the simulator draws one message per model
choice, which costs ~24 µs per event with 46 models and one event per message but ~5 µs in
100-event arrays. A model's single events therefore arrive in runs of up to 100.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import NamedTuple, cast

import msgspec
from confluent_kafka import KafkaError, Message, Producer

from streamdrift.client import produce_with_retry
from streamdrift.client.producer import Headers
from streamdrift.streams.dev.simulate import (
    CategoricalFeature,
    Drift,
    ModelSpec,
    NumericFeature,
    Scenario,
    SimMessage,
    generate,
)

__all__ = [
    "NUMERIC",
    "SERIES_PER_EVENT",
    "Outgoing",
    "Produced",
    "Shape",
    "bench_models",
    "drift",
    "messages",
    "produce",
]

NUMERIC = tuple(f"f{j:02d}" for j in range(20))
CATEGORICAL = (
    CategoricalFeature(
        "country", ("DE", "FR", "US", "GB", "NL", "ES"), (0.30, 0.20, 0.20, 0.15, 0.10, 0.05)
    ),
    CategoricalFeature("channel", ("web", "app", "store"), (0.5, 0.3, 0.2)),
)
SERIES_PER_EVENT = len(NUMERIC) + len(CATEGORICAL) + 1
"""Values one event feeds to streamdrift's monitors: every feature and the prediction."""

_SPLIT_FROM = 100  # events per generated array when single-event messages are wanted
_RAW_EVENTS = msgspec.json.Decoder(list[msgspec.Raw])


def bench_models(count: int) -> tuple[ModelSpec, ...]:
    """``count`` regression models ``m00``, ``m01``… with features ``f00``…``f19``, country,
    channel."""
    return tuple(
        ModelSpec(
            name=f"m{k:02d}",
            version="1",
            task="regression",
            numeric=tuple(
                NumericFeature(name, 10.0 * (j + 1), 1.0 + j) for j, name in enumerate(NUMERIC)
            ),
            categorical=CATEGORICAL,
            intercept=100.0,
            scale=10.0,
        )
        for k in range(count)
    )


def drift(model: str, features: int, sigmas: float) -> Drift:
    """A mean shift of ``sigmas`` standard deviations in the first ``features`` numeric features."""
    return Drift(
        model=model,
        shifted=NUMERIC[:features],
        shift_sigmas=sigmas,
        categorical=None,
        error_model=None,
    )


def messages(
    models: Sequence[ModelSpec],
    events: int,
    batch: int,
    *,
    seed: int,
    rate: float = 1e6,
    drift: Drift | None = None,
    drift_at: int = 0,
) -> Iterator[SimMessage]:
    """``events`` events in messages of ``batch`` events (``drift`` from event ``drift_at`` on)."""
    scenario = Scenario(
        models=tuple(models),
        rate=rate,
        seed=seed,
        drift=drift,
        drift_at=drift_at,
        batch_size=batch if batch > 1 else _SPLIT_FROM,
        start_time=time.time(),
    )
    for message in generate(scenario, events):
        if batch > 1:
            yield message
            continue
        for i, raw in enumerate(_RAW_EVENTS.decode(message.value)):
            yield SimMessage(message.key, bytes(raw), (), message.first_event + i, 1)


class Outgoing(NamedTuple):
    """One Kafka record of a simulator message in another shape (:mod:`bench.adapters`)."""

    topic: str
    key: bytes
    value: bytes
    headers: Headers | None = None


Shape = Callable[[SimMessage], Sequence[Outgoing]]
"""The records one simulator message becomes (a request and its response, say)."""


@dataclass
class Produced:
    """What :func:`produce` sent."""

    messages: int = 0
    """Kafka records."""
    events: int = 0
    failed: int = 0
    seconds: float = 0.0
    marks: dict[int, tuple[int, int, int]] = field(default_factory=dict)
    """For each marked message: (partition, offset, Kafka timestamp in ms) once delivered."""


def produce(
    bootstrap: str,
    topic: str,
    models: Sequence[ModelSpec],
    partitions: int,
    stream: Iterable[SimMessage],
    *,
    rate: float | None = None,
    mark: Callable[[SimMessage], int | None] = lambda _: None,
    timeout: float = 120.0,
    shape: Shape | None = None,
) -> Produced:
    """Produce ``stream`` to ``topic``: as fast as possible, or paced at ``rate`` events/s.

    ``mark(message)`` may return an id for messages whose delivery (partition, offset, timestamp)
    should be recorded in :attr:`Produced.marks` (of its first record). ``shape`` turns each
    message into the records to send instead (to the topics they name); every record goes to
    its model's partition all the same. Raises if any message is not delivered.
    """
    place = {spec.name.encode(): k % partitions for k, spec in enumerate(models)}
    paced = rate is not None
    producer = Producer(
        {
            "bootstrap.servers": bootstrap,
            "allow.auto.create.topics": False,
            # Paced: a small linger, as an inference service would use; bulk: big batches.
            "linger.ms": 5 if paced else 50,
            "batch.size": 1_000_000,
            "compression.type": "lz4",
            "queue.buffering.max.messages": 1_000_000,
            "queue.buffering.max.kbytes": 1_048_576,
            "message.timeout.ms": int(timeout * 1000),
        }
    )
    done = Produced()
    errors: list[str] = []

    def on_delivery(error: KafkaError | None, message: Message) -> None:
        if error is not None:
            errors.append(error.str())

    def marked(key: int) -> Callable[[KafkaError | None, Message], None]:
        def record(error: KafkaError | None, message: Message) -> None:
            on_delivery(error, message)
            if error is None:
                # a delivered message has its partition and offset
                done.marks[key] = cast(
                    "tuple[int, int, int]",
                    (message.partition(), message.offset(), message.timestamp()[1]),
                )

        return record

    started = time.monotonic()
    for message in stream:
        if paced:
            ahead = started + done.events / cast(float, rate) - time.monotonic()
            if ahead > 0.001:
                producer.poll(0)
                time.sleep(ahead)
        key = mark(message)
        callback = on_delivery if key is None else marked(key)
        records = [Outgoing(topic, message.key, message.value)] if shape is None else shape(message)
        for record in records:
            produce_with_retry(
                producer,
                record.topic,
                record.value,
                record.key,
                partition=place[message.key],
                headers=record.headers,
                on_delivery=callback,
                poll_timeout=0.05,
            )
            callback = on_delivery
            done.messages += 1
            if done.messages % 1000 == 0:
                producer.poll(0)
        done.events += message.events
    left = producer.flush(timeout)
    done.seconds = time.monotonic() - started
    done.failed = len(errors) + left
    if done.failed:
        raise RuntimeError(
            f"{done.failed} of {done.messages} messages to {topic} were not delivered: {errors[:3]}"
        )
    return done
