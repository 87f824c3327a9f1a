"""The throughput benchmark's reference columns, each run as its own process.

``python -m bench.peers KIND --bootstrap HOST:PORT --topic T --group G --events N --result PATH``
consumes ``T`` from the beginning in consumer group ``G`` until ``N`` events were seen (or
``--max-seconds`` passed since the first record) and writes one JSON object to ``PATH``:
``events``, ``updates`` (feature values fed to detectors), ``alarms`` (detector firings),
``seconds`` and ``cpu_s`` (wall and process CPU time from the first record received to the last
event handled), ``rss_hwm_kb`` (peak resident memory of the process) and ``complete``.

Kinds:

``limit``
    A bare confluent-kafka batch consumer (``consume(10000)``) that only decodes each message
    with msgspec: the ceiling for any Python consumer that looks at the data.
``river``
    What a user writes from a tutorial: a ``poll()`` loop, ``json.loads``, and river's ADWIN and
    Page-Hinkley (defaults) updated per numeric feature (and the prediction) per event.
``faust``
    A plain faust-streaming agent (JSON value serializer) that only counts events: what Faust's
    per-message machinery costs before any work is done.

Consumer groups use a 6 s session timeout, as the workers do: Tansu holds every join for half
of it, and it is Apache Kafka's smallest allowed (``group.min.session.timeout.ms``).
"""

from __future__ import annotations

import argparse
import json
import resource
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

__all__ = ["KINDS", "main"]

GROUP_TIMING = {"session.timeout.ms": 6000, "heartbeat.interval.ms": 1000}


class Meter:
    """Counts events and updates from the first record on; knows when to stop."""

    def __init__(self, args: argparse.Namespace) -> None:
        self.target = args.events
        self.max_seconds = args.max_seconds
        self.result = Path(args.result)
        self.events = 0
        self.updates = 0
        self.alarms = 0
        self.started: float | None = None
        self.cpu_started = 0.0
        self.written = False

    def first(self) -> None:
        if self.started is None:
            self.started = time.monotonic()
            self.cpu_started = time.process_time()

    @property
    def done(self) -> bool:
        if self.events >= self.target:
            return True
        return self.started is not None and time.monotonic() - self.started > self.max_seconds

    def write(self) -> None:
        """Write the result file once (atomically: the parent polls for it)."""
        if self.written:
            return
        self.written = True
        seconds = time.monotonic() - self.started if self.started is not None else 0.0
        cpu = time.process_time() - self.cpu_started if self.started is not None else 0.0
        data = {
            "events": self.events,
            "updates": self.updates,
            "alarms": self.alarms,
            "seconds": seconds,
            "cpu_s": cpu,
            "rss_hwm_kb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss,  # kB on Linux
            "complete": self.events >= self.target,
        }
        partial = self.result.with_suffix(".tmp")
        partial.write_text(json.dumps(data))
        partial.replace(self.result)


def _consumer(args: argparse.Namespace, **extra: Any):
    from confluent_kafka import Consumer

    consumer = Consumer(
        {
            "bootstrap.servers": args.bootstrap,
            "group.id": args.group,
            "auto.offset.reset": "earliest",
            "allow.auto.create.topics": False,
            **GROUP_TIMING,
            **extra,
        }
    )
    consumer.subscribe([args.topic])
    return consumer


def run_limit(args: argparse.Namespace) -> None:
    import msgspec

    decode = msgspec.json.decode
    meter = Meter(args)
    consumer = _consumer(args, **{"enable.auto.commit": False})
    try:
        while not meter.done:
            records = consumer.consume(10_000, timeout=0.1)
            if records:
                meter.first()
            for record in records:
                if record.error():
                    raise RuntimeError(f"consuming {args.topic}: {record.error()}")
                value = decode(record.value())
                meter.events += len(value) if isinstance(value, list) else 1
        meter.write()
    finally:
        consumer.close()


def run_river(args: argparse.Namespace) -> None:
    from river import drift

    meter = Meter(args)
    detectors: dict[tuple[str, str], tuple[drift.ADWIN, drift.PageHinkley]] = {}
    consumer = _consumer(args)
    try:
        while not meter.done:
            message = consumer.poll(0.1)
            if message is None:
                continue
            if message.error():
                raise RuntimeError(f"consuming {args.topic}: {message.error()}")
            meter.first()
            payload = json.loads(message.value())
            for event in payload if isinstance(payload, list) else [payload]:
                values = {**event["features"], "prediction": event.get("prediction")}
                for name, value in values.items():
                    if isinstance(value, bool) or not isinstance(value, (int, float)):
                        continue  # river's detectors take numbers only
                    key = (event["model"], name)
                    if key not in detectors:
                        detectors[key] = (drift.ADWIN(), drift.PageHinkley())
                    for detector in detectors[key]:
                        detector.update(value)
                        meter.alarms += detector.drift_detected
                    meter.updates += 1
                meter.events += 1
        meter.write()
    finally:
        consumer.close()


def run_faust(args: argparse.Namespace) -> None:
    import faust
    from faust.worker import Worker

    meter = Meter(args)
    app = faust.App(
        args.group,
        broker=f"kafka://{args.bootstrap}",
        store="memory://",
        # Faust's data directory beside the result (in the bench's temporary directory), not the cwd
        datadir=str(Path(args.result).parent / f"faust-{args.group}"),
        value_serializer="json",
        web_enabled=False,
        topic_disable_leader=True,
        topic_allow_declare=False,
        consumer_auto_offset_reset="earliest",
        broker_session_timeout=GROUP_TIMING["session.timeout.ms"] / 1000,
        broker_heartbeat_interval=GROUP_TIMING["heartbeat.interval.ms"] / 1000,
        broker_rebalance_timeout=GROUP_TIMING["session.timeout.ms"] / 1000,
    )

    @app.agent(app.topic(args.topic, value_serializer="json"))
    async def count(stream: faust.StreamT) -> None:
        async for value in stream:
            meter.first()
            meter.events += len(value) if isinstance(value, list) else 1
            if meter.done:
                meter.write()  # the parent stops this process once the result is there

    @app.timer(interval=1.0)
    async def deadline() -> None:
        if meter.done:
            meter.write()

    Worker(app, loglevel="warning", quiet=True).execute_from_commandline()


KINDS: dict[str, Callable[[argparse.Namespace], None]] = {
    "limit": run_limit,
    "river": run_river,
    "faust": run_faust,
}


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        prog="python -m bench.peers", description=__doc__.splitlines()[0]
    )
    parser.add_argument("kind", choices=sorted(KINDS))
    parser.add_argument("--bootstrap", required=True)
    parser.add_argument("--topic", required=True)
    parser.add_argument("--group", required=True)
    parser.add_argument("--events", type=int, required=True, help="stop after this many events")
    parser.add_argument(
        "--max-seconds",
        type=float,
        default=float("inf"),
        help="...or this long after the first record",
    )
    parser.add_argument("--result", required=True, help="JSON result file")
    args = parser.parse_args(argv)
    KINDS[args.kind](args)


if __name__ == "__main__":
    main()
