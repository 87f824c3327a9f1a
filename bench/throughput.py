"""Throughput, latency and cost of streamdrift next to the consumers a user could write instead.

Run ``python -m bench.throughput`` (``make bench``). In one run on one broker (``--broker``: the
embedded Tansu by default, or ``kafka``: a single-node Apache Kafka started from the jars the
test suite uses) and redis-server it prepares, per message size (``--batch``: single-event JSON
messages and 100-event JSON arrays by default), one input topic of ``--events``
simulator-shaped events (``bench.load``: 20 numeric + 2 categorical features per event) in
``--partitions`` partitions, and consumes it from the beginning with each column in its own
consumer group:

1. ``limit``: a bare confluent-kafka batch consumer that only decodes (``bench.peers``);
2. ``river``: the hand-written peer, river ADWIN + Page-Hinkley per feature per event;
3. ``faust``: a plain faust-streaming agent that only counts events;
4. ``streamdrift-1``: ``streamdrift worker``, one process;
5. ``streamdrift-2``: two worker processes in one group;
6. ``mapped-json``, ``kserve``, ``seldon2``: one worker reading the same events through an input
   adapter instead of the native topic (``bench.adapters``: a user's own JSON with a JMESPath
   mapping, KServe payload logs, Seldon Core 2's protobuf topics; requests paired with their
   responses), from topics prepared when the column starts.

After measuring its throughput, each native streamdrift column gets paced traffic at half its
measured rate with mean shifts injected into a few models, to measure event-to-alert latency. One
table per message size, with the targets of issue 14 (rates, ratios to the bare consumer and the
hand-written river loop, latency, checkpoint CPU, RSS, worker start to ready) and every column's
ratio to one native worker, is printed; the
results go to ``bench-results/throughput.json`` (``throughput-kafka.json`` on Kafka; ``--json``).
The tables, the log and the JSON name the broker and its version. How each number is measured
is printed under the table (:data:`NOTES`) and stored in the JSON.
"""

from __future__ import annotations

import argparse
import itertools
import json
import os
import platform
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Collection, Iterable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from contextlib import ExitStack, contextmanager
from dataclasses import asdict, dataclass, field
from importlib import metadata
from pathlib import Path
from typing import Any, Protocol, cast

import msgspec
import numpy as np
import redis
from confluent_kafka import Consumer, KafkaError, TopicPartition
from prometheus_client.parser import text_string_to_metric_families
from rich.console import Console
from rich.table import Table

from bench.adapters import ADAPTERS
from bench.load import NUMERIC, SERIES_PER_EVENT, Shape, bench_models, drift, messages, produce
from streamdrift.detectors import kernels
from streamdrift.streams.dev.embedded import (
    LOCAL_WORKER_ENV,
    EmbeddedBroker,
    EmbeddedRedis,
    ManagedProcess,
    Topics,
    WorkerProcess,
    free_port,
    tansu_binary,
)
from streamdrift.streams.dev.simulate import ModelSpec, SimMessage
from streamdrift.streams.kafka.admin import create_topics

REPO_ROOT = Path(__file__).resolve().parents[1]

__all__ = ["COLUMNS", "Column", "Result", "main", "run"]

BROKERS = ("tansu", "kafka")
DEFAULT_JSON = {
    "tansu": Path("bench-results/throughput.json"),
    "kafka": Path("bench-results/throughput-kafka.json"),
}
PROBE_EVERY_S = 1.0
MIN_WINDOW_S = 3 * PROBE_EVERY_S  # a shorter window between probes is timed from readiness
PROGRESS_EVERY_S = 15.0
STARTUP_S = 90.0  # a process start plus a group join, with room for a busy machine
SHIFT_SIGMAS = 3.0
DRIFTED_FEATURES = 4
WARMUP_PER_MODEL = 600  # stationary events per model before a latency run (monitors warm up on 500)
MIN_SHIFTED_PER_MODEL = 100  # shifted events a round's drifting model gets on average, at least
ALERT_GRACE_S = 1.0  # alerts are sent right after the batch that found them is checkpointed


@dataclass(frozen=True)
class Column:
    key: str
    title: str
    description: str
    workers: int = 0
    """streamdrift worker processes; 0 for a ``bench.peers`` process."""
    adapter: str | None = None
    """The input adapter (``bench.adapters``) the workers read the events through; None: the
    native input topic."""


COLUMNS = (
    Column(
        "limit",
        "(1) bare consumer",
        "confluent-kafka consume(10000) + msgspec JSON decode, nothing else",
    ),
    Column(
        "river",
        "(2) hand-written river",
        "poll() loop + json.loads + river ADWIN and PageHinkley (defaults) per numeric feature "
        "and prediction",
    ),
    Column(
        "faust",
        "(3) faust agent, count",
        "a plain faust-streaming agent (JSON values) that only counts events",
    ),
    Column("streamdrift-1", "(4) streamdrift ×1", "streamdrift worker, one process", workers=1),
    Column(
        "streamdrift-2",
        "(5) streamdrift ×2",
        "streamdrift worker, two processes in one group",
        workers=2,
    ),
    Column(
        "mapped-json",
        "(6) mapped JSON ×1",
        "streamdrift worker, one process, reading the events in a user's own JSON shape from a "
        "mapped input topic (format: json, JMESPath mapping, one message per simulator message)",
        workers=1,
        adapter="mapped-json",
    ),
    Column(
        "kserve",
        "(7) KServe logs ×1",
        "streamdrift worker, one process, reading KServe V1 payload logs (CloudEvents in binary "
        "mode): a request and a response record per simulator message, paired into events",
        workers=1,
        adapter="kserve",
    ),
    Column(
        "seldon2",
        "(8) Seldon 2 OIP ×1",
        "streamdrift worker, one process, reading Seldon Core 2 model topics: a ModelInferRequest "
        "on .inputs and a ModelInferResponse on .outputs (protobuf) per simulator message, paired",
        workers=1,
        adapter="seldon2",
    ),
)
BY_KEY = {column.key: column for column in COLUMNS}
NATIVE = "streamdrift-1"
"""The column every other is compared with in the table's "× (4)" and the JSON's
``vs_streamdrift_1``."""

# Paragraphs, folded to one line each (as in bench.quality).
NOTES = tuple(
    " ".join(paragraph.split())
    for paragraph in """
events/s: peers time themselves from the first record received to the last event handled.
streamdrift workers are probed every {probe:g} s (GET /metrics?name[]=... asking for the four
metrics the probe reads, streamdrift_events_total of the input topic summed over workers; a full
page would cost the worker ~15-45 ms of CPU at 1,000 series):
events/s is the increase between the first probe after every worker owns its partitions and the
last probe before all events were applied, divided by the time between them (runs with a window
under {min_window:g} s are timed from the first worker's readiness to the last probe, and their
Redis counts include the workers' start). A column still running after --max-seconds is stopped
and reported on the events it handled (complete: false).

feature-updates/s: values fed to detectors per second. streamdrift: events/s x {series} (20
numeric, 2 categorical features and the prediction each update a monitor); river: events/s x 21
(numbers only); the bare consumer and the Faust agent update nothing.

RSS: peak resident memory (VmHWM from /proc/PID/status; peers: getrusage ru_maxrss) of the
consuming process, the largest worker's for streamdrift x2. {models} models x 22 features =
{features:,} monitored features ({series_total:,} series with the predictions).

ready: seconds from starting a streamdrift column's worker processes to the last one answering
/readyz (imports, the detector kernels, the broker's and Redis's checks), in the JSON as
ready_s and judged against {ready:g} s.

Redis cmds/1k ev: INFO commandstats calls (commands run inside the checkpoint Lua script
included; the probe's own INFO excluded) over the events/s window, per 1,000 events.

ckpt CPU: increase of streamdrift_checkpoint_cpu_seconds_total (CPU time of the worker's event
loop thread inside checkpoints: serialising the changed monitors, the Redis script call,
publishing alerts) over the increase of the workers' CPU time (utime + stime from
/proc/PID/stat) in the events/s window.

latency: after its throughput run, each streamdrift column starts again as a new group on a new
topic holding {warmup} stationary events per model; once they are applied it gets traffic paced
at half its measured events/s: a stationary lead-in round, then {drifts} rounds, each shifting
the mean of {drifted} numeric features of one more model by {sigmas:g} sigma from the round's
middle on. A sample is the first 'detected' alert of a shifted feature or the prediction of that
model whose evidence.to_offset is at or after the first shifted record: alert record's Kafka
timestamp (set by the worker's producer when it sends the alert) minus the Kafka timestamp of
the input record at evidence.partition / evidence.to_offset (set by the bench's producer, linger
5 ms), i.e. from the record whose value made the detector fire to the alert in Kafka. 'onset' in
the JSON is measured from the first shifted record instead, so it adds the detector's
statistical delay. p99 of fewer than 100 samples is close to their maximum. Redis runs without
persistence.

adapter columns (6-8): the same events (same seed) written in the adapter's shape to topics of
{partitions} partitions each, prepared when the column starts (bench.adapters), every record on
its model's partition as for the native column; one worker whose configuration lists them under
inputs (its native input topic is an empty one of its own). events/s as for (4), summed over the
adapter's topics; for KServe and Seldon 2 an event is a request paired with its response (two
Kafka records whose halves meet in Redis). x (4): events/s over those of streamdrift x1 in the
same run. No latency run and no targets (issue 14's are for the native path).
""".strip().split("\n\n")
)


# --- results -----------------------------------------------------------------------------------


@dataclass
class Result:
    column: str
    batch: int
    events: int
    """Events in the measured window."""
    seconds: float
    complete: bool
    cpu_s: float
    """CPU time of the column's processes in the window."""
    rss_mb: float
    updates: int = 0
    alarms: int | None = None
    """Detector firings of the hand-written peer (all false alarms: the input is stationary)."""
    redis: dict[str, Any] | None = None
    checkpoint: dict[str, Any] | None = None
    latency: dict[str, Any] | None = None
    processes: int = 1
    ready_s: float | None = None
    """streamdrift: seconds from starting its worker processes to the last one answering
    /readyz (imports, the detector kernels, Redis and broker checks)."""

    @property
    def events_per_s(self) -> float:
        return self.events / self.seconds if self.seconds > 0 else 0.0

    @property
    def updates_per_s(self) -> float:
        return self.updates / self.seconds if self.seconds > 0 else 0.0

    def to_json(self) -> dict[str, Any]:
        data = asdict(self)
        data["events_per_s"] = round(self.events_per_s, 1)
        data["updates_per_s"] = round(self.updates_per_s, 1)
        data["cpu_us_per_event"] = round(1e6 * self.cpu_s / self.events, 2) if self.events else None
        return data


# --- processes -----------------------------------------------------------------------------------


class PeerProcess(ManagedProcess):
    """A ``python -m bench.peers`` process."""

    name = "peer"

    def __init__(self, command: Sequence[str], log_path: Path) -> None:
        super().__init__(log_path)
        self.command = list(command)

    def start(self) -> PeerProcess:
        self._spawn(self.command, cwd=REPO_ROOT)
        return self


def stop(processes: Sequence[ManagedProcess]) -> None:
    """Stop ``processes`` gracefully (SIGTERM), all at once: a worker takes about a second."""
    with ThreadPoolExecutor(max(1, len(processes))) as pool:
        list(pool.map(lambda process: process.terminate(), processes))


def cpu_seconds(pid: int) -> float:
    """utime + stime of a process, from /proc/PID/stat."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def peak_rss_kb(pid: int) -> int:
    """Peak resident set size (VmHWM) of a process, in kB."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1])
    return 0


@dataclass
class Probe:
    """One look at a group of workers (and Redis)."""

    at: float
    events: float = 0.0
    owned: list[float] = field(default_factory=list)
    checkpoint_s: float = 0.0
    checkpoints: float = 0.0
    cpu_s: float = 0.0
    redis_calls: dict[str, int] = field(default_factory=dict)
    redis_cpu_s: float = 0.0


@dataclass
class Group:
    """The worker processes of one streamdrift consumer group."""

    alerts: str
    """Its alert topic."""
    before: Probe
    """Redis before the workers started; when the first was ready and their CPU time then."""
    workers: list[WorkerProcess] = field(default_factory=list)
    started: float = 0.0
    """When the first worker process was started (time.monotonic)."""
    ready_s: float = 0.0
    """Seconds from ``started`` to the last worker answering /readyz."""

    def peak_rss_mb(self) -> float:
        return max(peak_rss_kb(w.pid) for w in self.workers if w.pid is not None) / 1024


def _redis_calls(client: redis.Redis) -> tuple[dict[str, int], float]:
    stats = client.info("commandstats")
    calls = {
        name.removeprefix("cmdstat_"): int(v["calls"])
        for name, v in stats.items()
        if name != "cmdstat_info"
    }
    cpu = client.info("cpu")
    return calls, float(cpu["used_cpu_sys"]) + float(cpu["used_cpu_user"])


# What a probe reads: asked for by name, the scrape skips every series' samples (~15-45 ms of the
# worker's CPU for a full page at 1,000 series; a few ms a second at the probes' pace).
PROBED_METRICS = (
    "streamdrift_events_total",
    "streamdrift_partitions_owned",
    "streamdrift_checkpoint_cpu_seconds_total",
    "streamdrift_checkpoint_duration_seconds_count",
)


def probe(workers: Sequence[WorkerProcess], topics: Collection[str], store: redis.Redis) -> Probe:
    """Events applied from ``topics`` and partitions of them owned, per worker; checkpoints, CPU
    time and Redis commands so far."""
    found = Probe(at=0.0)
    for worker in workers:
        owned = 0.0
        page = worker.metrics_text(timeout=60, names=PROBED_METRICS)
        for family in text_string_to_metric_families(page):
            for sample in family.samples:
                ours = sample.labels.get("topic") in topics
                if sample.name == "streamdrift_events_total" and ours:
                    found.events += sample.value
                elif sample.name == "streamdrift_partitions_owned" and ours:
                    owned += sample.value
                elif sample.name == "streamdrift_checkpoint_cpu_seconds_total":
                    found.checkpoint_s += sample.value
                elif sample.name == "streamdrift_checkpoint_duration_seconds_count":
                    found.checkpoints += sample.value
        found.owned.append(owned)
        assert worker.pid is not None
        found.cpu_s += cpu_seconds(worker.pid)
    found.redis_calls, found.redis_cpu_s = _redis_calls(store)
    found.at = time.monotonic()
    return found


# --- Kafka reads -------------------------------------------------------------------------------


def read_records(
    bootstrap: str, topic: str, start: dict[int, int], timeout: float = 30.0
) -> list[tuple[int, int, int, bytes]]:
    """(partition, offset, timestamp ms, value) of ``topic`` from ``start`` offsets to the end."""
    consumer = Consumer(
        {
            "bootstrap.servers": bootstrap,
            "group.id": f"bench-read-{uuid.uuid4().hex}",
            "enable.auto.commit": False,
            "enable.partition.eof": True,
            "fetch.wait.max.ms": 50,
        }
    )
    records: list[tuple[int, int, int, bytes]] = []
    finished: set[int] = set()
    deadline = time.monotonic() + timeout
    try:
        consumer.assign([TopicPartition(topic, p, offset) for p, offset in start.items()])
        while len(finished) < len(start):
            if time.monotonic() > deadline:
                raise TimeoutError(
                    f"reading {topic} from {start}: partitions {sorted(finished)} done in "
                    f"{timeout:g} s"
                )
            for record in consumer.consume(1000, timeout=0.1):
                partition = cast(int, record.partition())  # a consumed record has one
                error = record.error()
                if error is not None and error.code() == KafkaError._PARTITION_EOF:
                    finished.add(partition)
                    continue
                if error is not None:
                    raise RuntimeError(f"reading {topic}: {error}")
                offset, value = cast(int, record.offset()), cast(bytes, record.value())
                records.append((partition, offset, record.timestamp()[1], value))
    finally:
        consumer.close()
    return records


# --- brokers -----------------------------------------------------------------------------------


class Broker(Protocol):
    """What the bench needs of a running broker (EmbeddedBroker and KafkaBroker have it)."""

    @property
    def bootstrap(self) -> str: ...


@dataclass(frozen=True)
class BrokerInfo:
    """Which broker a run used, for the tables and the JSON."""

    key: str
    product: str
    version: str
    setup: str
    start_s: float
    """Seconds from launch until it answered metadata (KRaft storage format included)."""

    def __str__(self) -> str:
        return f"{self.product} {self.version} ({self.setup})"


def tansu_version() -> str:
    """``tansu --version`` of the binary EmbeddedBroker runs (e.g. ``0.6.0``)."""
    try:
        done = subprocess.run(
            [tansu_binary(), "--version"], capture_output=True, text=True, timeout=30, check=False
        )
    except (OSError, subprocess.TimeoutExpired):
        return "unknown"
    words = done.stdout.split()
    return words[-1] if done.returncode == 0 and words else "unknown"


def _jar_version(jars: Path) -> str | None:
    """The version in the name of the broker jar (``kafka_2.13-<version>.jar``) in ``jars``."""
    for jar in sorted(jars.glob("kafka_2.13-*.jar")):
        found = re.fullmatch(r"kafka_2\.13-(\d[\w.]*)\.jar", jar.name)
        if found:
            return found.group(1)
    return None


@contextmanager
def start_broker(key: str, workdir: Path) -> Iterator[tuple[Broker, BrokerInfo]]:
    """The broker of a run, started in ``workdir`` and stopped on exit."""
    began = time.monotonic()
    if key == "tansu":
        tansu = EmbeddedBroker(workdir=workdir).start()
        try:
            ready = round(time.monotonic() - began, 1)
            yield (
                tansu,
                BrokerInfo("tansu", "Tansu", tansu_version(), "embedded, memory storage", ready),
            )
        finally:
            tansu.stop(timeout=1.0)  # memory-only broker: nothing to lose
        return
    # Apache Kafka comes from the test suite's server module, imported by its full name and only
    # for --broker kafka. bench/ is a dev tool run from a checkout (neither bench/ nor tests/ is
    # installed, and the worker imports neither), so tests/ is always beside it; the module needs
    # nothing from pytest (streams.dev.embedded and confluent-kafka only). One copy of the KRaft
    # set-up (jars via `make kafka-jars`, server.properties, readiness) keeps the bench on the
    # very broker the end-to-end tests run against; the default Tansu run does not touch tests/.
    from tests.servers.kafka_broker import KafkaBroker, kafka_version

    kafka = KafkaBroker(workdir=workdir)
    try:
        kafka.start()
        ready = round(time.monotonic() - began, 1)
        version = _jar_version(kafka.jars) or kafka_version()
        yield (
            kafka,
            BrokerInfo("kafka", "Apache Kafka", version, "single-node KRaft, local disk", ready),
        )
    finally:
        kafka.stop()


# --- the benchmark -------------------------------------------------------------------------------


@dataclass
class Options:
    events: int = 1_000_000
    partitions: int = 8
    batches: tuple[int, ...] = (1, 100)
    models: int = 46
    only: tuple[str, ...] = tuple(BY_KEY)
    max_seconds: float = 120.0
    latency_seconds: float = 10.0
    drifts: int = 5
    worker_settings: tuple[tuple[str, str], ...] = ()  # STREAMDRIFT_* overrides for the workers
    broker: str = "tansu"


@dataclass(frozen=True)
class Feed:
    """What a streamdrift column's workers consume."""

    input: str
    """Their native input topic (STREAMDRIFT_INPUT_TOPIC)."""
    measured: tuple[str, ...]
    """The topics whose events the probes count."""
    config: Path | None = None
    """The worker configuration (STREAMDRIFT_CONFIG) listing the adapter's topics as inputs."""

    @classmethod
    def native(cls, topic: str) -> Feed:
        """The native input ``topic`` and nothing else."""
        return cls(topic, (topic,))


class Bench:
    """The servers and the topics of one run; columns are measured one after another."""

    def __init__(
        self,
        options: Options,
        broker: Broker,
        store: EmbeddedRedis,
        workdir: Path,
        log: Console,
    ) -> None:
        self.o = options
        self.broker = broker
        self.store_url = store.url
        self.redis = redis.Redis.from_url(store.url)
        self.workdir = workdir
        self.log = log
        self.models = bench_models(options.models)
        self.started = time.monotonic()

    def say(self, text: str) -> None:
        self.log.print(
            f"[{time.monotonic() - self.started:6.1f}s] {text}", highlight=False, markup=False
        )

    # -- input ---------------------------------------------------------------------------------

    def prepare(self, batch: int, events: int, purpose: str) -> str:
        """A new topic holding ``events`` stationary events in messages of ``batch``."""
        topic = f"bench-{purpose}-b{batch}-{uuid.uuid4().hex[:6]}"
        self._fill((topic,), batch, events)
        return topic

    def prepare_adapter(self, adapter: str, batch: int) -> Feed:
        """The input's topics holding the events of :meth:`prepare`'s input topic in the shape of
        ``adapter`` (``bench.adapters``), an empty native input, the configuration listing them."""
        stem = f"bench-{adapter}-b{batch}-{uuid.uuid4().hex[:6]}"
        shaper = ADAPTERS[adapter]
        topics = shaper.topics(stem)
        create_topics(self.broker.bootstrap, {f"{stem}-native": 1})
        config = self.workdir / f"{stem}.yaml"
        config.write_text(json.dumps({"inputs": shaper.inputs(topics)}, indent=2))  # JSON is YAML
        self._fill(topics, batch, self.o.events, lambda m: shaper.records(topics, m))
        return Feed(f"{stem}-native", topics, config)

    def _fill(
        self, topics: Sequence[str], batch: int, events: int, shape: Shape | None = None
    ) -> None:
        """Create ``topics`` and write ``events`` stationary events in messages of ``batch`` to
        them (``shape``: as that makes them; see ``bench.load.produce``)."""
        create_topics(self.broker.bootstrap, dict.fromkeys(topics, self.o.partitions))
        stream = messages(self.models, events, batch, seed=batch)
        sent = produce(
            self.broker.bootstrap, topics[0], self.models, self.o.partitions, stream, shape=shape
        )
        self.say(
            f"prepared {', '.join(topics)}: {sent.events:,} events in {sent.messages:,} records "
            f"from messages of {batch} event(s), {self.o.partitions} partitions "
            f"({sent.events / sent.seconds:,.0f} events/s)"
        )

    # -- peers ---------------------------------------------------------------------------------

    def run_peer(self, column: Column, batch: int, topic: str) -> Result:
        group = f"bench-{column.key}-{topic}"
        result_path = self.workdir / f"{group}.json"
        command = [
            sys.executable, "-m", "bench.peers", column.key,
            "--bootstrap", self.broker.bootstrap, "--topic", topic, "--group", group,
            "--events", str(self.o.events), "--max-seconds", str(self.o.max_seconds),
            "--result", str(result_path),
        ]  # fmt: skip
        peer = PeerProcess(command, self.workdir / f"{group}.log").start()
        try:
            deadline = time.monotonic() + STARTUP_S + self.o.max_seconds
            while not result_path.exists():
                if not peer.running:
                    raise RuntimeError(
                        f"{column.key} exited with status {peer.returncode}:\n{peer.log_tail()}"
                    )
                if time.monotonic() > deadline:
                    raise RuntimeError(f"{column.key} reported nothing in time:\n{peer.log_tail()}")
                time.sleep(0.2)
        finally:
            peer.kill()  # its result is written (or it failed): no graceful stop to wait for
        data = json.loads(result_path.read_text())
        return Result(
            column=column.key,
            batch=batch,
            events=data["events"],
            seconds=data["seconds"],
            complete=data["complete"],
            cpu_s=data["cpu_s"],
            rss_mb=data["rss_hwm_kb"] / 1024,
            updates=data["updates"],
            alarms=data["alarms"] if column.key == "river" else None,
        )

    # -- streamdrift ---------------------------------------------------------------------------

    def run_streamdrift(self, column: Column, batch: int, topic: str) -> Result:
        """Measure a streamdrift column on the native input ``topic``, or on its adapter's."""
        adapter = column.adapter
        feed = self.prepare_adapter(adapter, batch) if adapter else Feed.native(topic)
        with self._group(column, feed) as group:
            result = self._measure(column, batch, feed.measured, group)
            result.rss_mb = group.peak_rss_mb()
            result.ready_s = round(group.ready_s, 1)
            for worker in group.workers:  # measured: nothing left to save (the group, its topics
                worker.kill()  # and Redis keys are the column's own), no graceful stop to wait for
        if self.o.drifts and not column.adapter:
            result.latency = self._latency(column, batch, result.events_per_s / 2)
        return result

    @contextmanager
    def _group(self, column: Column, feed: Feed) -> Iterator[Group]:
        """``column.workers`` workers of a new group on ``feed``, ready; stopped on exit."""
        group_id = f"bench-{column.key}-{feed.input}"
        names = Topics(
            feed.input, f"{group_id}.labels", f"{group_id}.alerts", f"{group_id}.dlq", group_id
        )
        create_topics(self.broker.bootstrap, {names.labels: 1, names.alerts: 1, names.dlq: 1})
        inherited = {k: v for k, v in os.environ.items() if not k.startswith("STREAMDRIFT_")}
        env = {
            **inherited,
            "PYTHONUNBUFFERED": "1",
            "STREAMDRIFT_KAFKA_BOOTSTRAP": self.broker.bootstrap,
            "STREAMDRIFT_REDIS_URL": self.store_url,
            **names.env(),
            # The local set-ups' short group timing (6 s sessions, 1 s heartbeats: Tansu holds
            # each join for half a session; 6 s is also Apache Kafka's minimum session); the
            # checkpoint cadence stays at the production defaults, since its cost is measured.
            **LOCAL_WORKER_ENV,
            **dict(self.o.worker_settings),
        }
        if feed.config is not None:
            env["STREAMDRIFT_CONFIG"] = str(feed.config)
        group = Group(names.alerts, Probe(at=0.0))
        group.before.redis_calls, group.before.redis_cpu_s = _redis_calls(self.redis)
        group.started = time.monotonic()
        try:
            for n in range(column.workers):
                port = str(free_port())
                worker = WorkerProcess(
                    {**env, "STREAMDRIFT_METRICS_PORT": port}, self.workdir / f"{group_id}-{n}.log"
                )
                group.workers.append(worker)
                worker.start()
            self._ready(group)
            yield group
        finally:
            stop(group.workers)

    def _ready(self, group: Group) -> None:
        """Wait until every worker answers /readyz; note in ``group.before`` when the first one
        did, and the CPU time each had used by then (start-up, not processing)."""
        waiting = list(group.workers)
        deadline = time.monotonic() + STARTUP_S
        while waiting:
            for worker in list(waiting):
                if not worker.running:
                    raise RuntimeError(
                        f"a worker exited with status {worker.returncode}:\n{worker.log_tail()}"
                    )
                if worker.readyz() == 200:
                    assert worker.pid is not None
                    group.before.at = group.before.at or time.monotonic()
                    group.before.cpu_s += cpu_seconds(worker.pid)
                    group.ready_s = time.monotonic() - group.started
                    waiting.remove(worker)
            if time.monotonic() > deadline:
                raise RuntimeError(
                    f"{len(waiting)} worker(s) not ready after {STARTUP_S:g} s:\n"
                    f"{waiting[0].log_tail()}"
                )
            time.sleep(0.1)

    def _measure(self, column: Column, batch: int, topics: Collection[str], group: Group) -> Result:
        target, workers = self.o.events, group.workers
        deadline = time.monotonic() + STARTUP_S
        while True:  # the group is settled once each worker owns partitions and all are owned
            first = probe(workers, topics, self.redis)
            if sum(first.owned) == self.o.partitions * len(topics) and min(first.owned) > 0:
                break
            if time.monotonic() > deadline:
                raise RuntimeError(
                    f"partitions owned per worker stayed {first.owned}:\n{workers[0].log_tail()}"
                )
            time.sleep(0.2)
        last = current = first
        stop_at = first.at + self.o.max_seconds
        next_progress = first.at + PROGRESS_EVERY_S
        while current.events < target and current.at < stop_at:
            time.sleep(PROBE_EVERY_S)
            last, current = current, probe(workers, topics, self.redis)
            if current.at >= next_progress:
                next_progress += PROGRESS_EVERY_S
                rate = (current.events - first.events) / (current.at - first.at)
                self.say(f"  … {current.events:,.0f}/{target:,} events, {rate:,.0f}/s")
        complete = current.events >= target
        start, end = first, (last if complete and last is not first else current)
        if end.at - start.at < MIN_WINDOW_S:  # too short to time between probes: from readiness
            start, end = group.before, current
        events = int(min(end.events, target) - start.events)
        cpu = end.cpu_s - start.cpu_s
        calls = {name: n - start.redis_calls.get(name, 0) for name, n in end.redis_calls.items()}
        calls = {name: n for name, n in calls.items() if n > 0}
        commands = sum(calls.values())
        checkpoint_s = end.checkpoint_s - start.checkpoint_s
        return Result(
            column=column.key,
            batch=batch,
            events=events,
            seconds=end.at - start.at,
            complete=complete,
            cpu_s=cpu,
            rss_mb=0.0,  # read when the column ends
            updates=events * SERIES_PER_EVENT,
            redis={
                "commands": commands,
                "per_1k_events": round(1000 * commands / events, 2) if events else None,
                "cpu_ms_per_1k_events": round(
                    1e6 * (end.redis_cpu_s - start.redis_cpu_s) / events, 3
                )
                if events
                else None,
                "by_command": dict(sorted(calls.items(), key=lambda item: -item[1])),
            },
            checkpoint={
                "seconds": round(checkpoint_s, 4),
                "checkpoints": int(end.checkpoints - start.checkpoints),
                "cpu_share": round(checkpoint_s / cpu, 5) if cpu > 0 else None,
            },
            processes=column.workers,
        )

    def _wait_applied(self, workers: Sequence[WorkerProcess], topic: str, events: int) -> None:
        timeout = STARTUP_S + self.o.max_seconds
        deadline = time.monotonic() + timeout
        while probe(workers, (topic,), self.redis).events < events:
            if time.monotonic() > deadline:
                raise RuntimeError(
                    f"the workers did not apply {events:,} events of {topic} within {timeout:g} s"
                )
            time.sleep(0.25)

    def _latency(self, column: Column, batch: int, rate: float) -> dict[str, Any]:
        """Fresh workers on a warmed-up topic get paced traffic with injected mean shifts;
        event-to-alert latency of each detected shift."""
        warmup = WARMUP_PER_MODEL * len(self.models)
        topic = self.prepare(batch, warmup, "latency")
        drifting = self.models[: self.o.drifts]
        shifted = max(MIN_SHIFTED_PER_MODEL, batch)
        per_round = max(
            int(rate * self.o.latency_seconds / (len(drifting) + 1)), 2 * shifted * len(self.models)
        )
        middle = per_round // 2
        stream: list[SimMessage] = []
        onsets: dict[int, int] = {}  # id(first shifted message) -> round
        for r, model in enumerate([None, *drifting]):
            shift = drift(model.name, DRIFTED_FEATURES, SHIFT_SIGMAS) if model else None
            for seed in itertools.count(
                1000 * (r + 1)
            ):  # until the drifting model has shifted events
                part = list(
                    messages(
                        self.models,
                        per_round,
                        batch,
                        seed=seed,
                        rate=rate,
                        drift=shift,
                        drift_at=middle,
                    )
                )
                key = model.name.encode() if model else None
                onset = next(
                    (m for m in part if m.key == key and m.first_event + m.events > middle), None
                )
                if model is None or onset is not None:
                    break
            if onset is not None:
                onsets[id(onset)] = r
            stream += part
        with self._group(column, Feed.native(topic)) as group:
            self._wait_applied(group.workers, topic, warmup)
            self.say(
                f"  latency: {len(stream):,} messages at {rate:,.0f} events/s (half the measured "
                f"rate), {len(drifting)} drifting models"
            )
            sent = produce(
                self.broker.bootstrap,
                topic,
                self.models,
                self.o.partitions,
                stream,
                rate=rate,
                mark=lambda m: onsets.get(id(m)),
            )
            self._wait_applied(group.workers, topic, warmup + sent.events)
            time.sleep(ALERT_GRACE_S)
        return self._latency_samples(
            topic, group.alerts, drifting, sent.marks, rate, sent.events / sent.seconds
        )

    def _latency_samples(
        self,
        topic: str,
        alert_topic: str,
        drifting: Sequence[ModelSpec],
        onsets: dict[int, tuple[int, int, int]],
        rate: float,
        achieved: float,
    ) -> dict[str, Any]:
        onset_of = {
            model.name: onsets[r] for r, model in enumerate(drifting, start=1) if r in onsets
        }
        watched = {*NUMERIC[:DRIFTED_FEATURES], "prediction"}
        firsts: dict[
            tuple[str, str], tuple[int, int, int, int]
        ] = {}  # -> alert ts, partition, to_offset, onset ts
        for _, _, alert_ts, value in read_records(self.broker.bootstrap, alert_topic, {0: 0}):
            data = msgspec.json.decode(value)["data"]
            onset = onset_of.get(data["model"])
            if onset is None or data.get("event") != "detected" or data["feature"] not in watched:
                continue
            partition, onset_offset, onset_ts = onset
            evidence = data["evidence"]
            if (
                evidence["topic"] == topic
                and evidence["partition"] == partition
                and evidence["to_offset"] >= onset_offset
            ):
                firsts.setdefault(
                    (data["model"], data["feature"]),
                    (alert_ts, partition, evidence["to_offset"], onset_ts),
                )
        starts: dict[int, int] = {}  # the input records that triggered the alerts, read at once
        for _, partition, offset, _ in firsts.values():
            starts[partition] = min(offset, starts.get(partition, offset))
        produced_at = {
            (p, o): ts for p, o, ts, _ in read_records(self.broker.bootstrap, topic, starts)
        }
        latencies, from_onset, detail = [], [], []
        for (model, feature), (alert_ts, partition, offset, onset_ts) in firsts.items():
            latencies.append(alert_ts - produced_at[partition, offset])
            from_onset.append(alert_ts - onset_ts)
            detail.append(
                {"series": f"{model}/{feature}", "ms": latencies[-1], "onset_ms": from_onset[-1]}
            )
        return {
            "rate": round(rate, 1),
            "achieved_rate": round(achieved, 1),
            "drifts": len(drifting),
            "expected_samples": len(drifting) * len(watched),
            "samples": len(latencies),
            **_quantiles("", latencies),
            **_quantiles("onset_", from_onset),
            "per_series": detail,
        }


def _quantiles(prefix: str, values: list[int]) -> dict[str, float | None]:
    if not values:
        return {f"{prefix}p50_ms": None, f"{prefix}p99_ms": None, f"{prefix}max_ms": None}
    p50, p99 = np.percentile(values, [50, 99])
    return {
        f"{prefix}p50_ms": round(float(p50), 1),
        f"{prefix}p99_ms": round(float(p99), 1),
        f"{prefix}max_ms": float(max(values)),
    }


def run(
    options: Options, log: Console
) -> tuple[BrokerInfo | None, list[tuple[int, dict[str, Result]]]]:
    """Measure every selected column for every message size: the broker used, results per batch
    size."""
    runs: list[tuple[int, dict[str, Result]]] = []
    info: BrokerInfo | None = None
    workdir = Path(tempfile.mkdtemp(prefix="streamdrift-bench-"))
    failed = True
    try:
        with ExitStack() as stack:
            broker, info = stack.enter_context(start_broker(options.broker, workdir / "broker"))
            store = stack.enter_context(EmbeddedRedis(workdir=workdir / "redis", appendonly=False))
            bench = Bench(options, broker, store, workdir, log)
            stack.callback(bench.redis.close)
            bench.say(
                f"broker: {info} at {broker.bootstrap}, ready {info.start_s:g} s after launch; "
                f"redis {store.url}; logs in {workdir}"
            )
            for batch in options.batches:
                topic = bench.prepare(batch, options.events, "input")
                results: dict[str, Result] = {}
                for column in (c for c in COLUMNS if c.key in options.only):
                    bench.say(f"{column.title} · {batch}-event messages")
                    if column.workers:
                        result = bench.run_streamdrift(column, batch, topic)
                    else:
                        result = bench.run_peer(column, batch, topic)
                    results[column.key] = result
                    bench.say(
                        f"  {result.events_per_s:,.0f} events/s"
                        f"{'' if result.complete else ' (stopped early)'}"
                    )
                runs.append((batch, results))
        failed = False
    finally:
        if failed:
            log.print(f"logs kept in {workdir}")
        else:
            shutil.rmtree(workdir, ignore_errors=True)
    return info, runs


# --- targets and report ----------------------------------------------------------------------


# Issue 14's targets: one worker, all detectors on.
RATE_TARGETS = {1: 100_000, 100: 200_000}
READY_S = 10.0  # worker start to ready


def targets(batch: int, key: str, results: dict[str, Result]) -> list[tuple[str, bool]]:
    """(target, met) for one column's result; empty for the reference and adapter columns."""
    if not BY_KEY[key].workers or BY_KEY[key].adapter:
        return []
    r = results[key]
    found: list[tuple[str, bool]] = []
    if key == "streamdrift-1":
        if batch in RATE_TARGETS:
            found.append(
                (f"≥{RATE_TARGETS[batch] // 1000}k ev/s", r.events_per_s >= RATE_TARGETS[batch])
            )
        if "limit" in results:
            found.append(("≥0.8×(1)", r.events_per_s >= 0.8 * results["limit"].events_per_s))
        if "river" in results:
            found.append(("≥2.5×(2)", r.events_per_s >= 2.5 * results["river"].events_per_s))
    if r.ready_s is not None:
        found.append((f"ready≤{READY_S:g}s", r.ready_s <= READY_S))
    if key == "streamdrift-2" and "streamdrift-1" in results:
        found.append(("≥1.7×(4)", r.events_per_s >= 1.7 * results["streamdrift-1"].events_per_s))
    if r.latency is not None:
        p99 = r.latency["p99_ms"]
        found.append(("p99≤250ms", p99 is not None and p99 <= 250))
    if r.checkpoint is not None and r.checkpoint["cpu_share"] is not None:
        found.append(("ckpt≤3%", r.checkpoint["cpu_share"] <= 0.03))
    found.append(("RSS≤300MB", r.rss_mb <= 300))
    return found


def _rate(value: float) -> str:
    return f"{value:,.0f}" if value else "—"


def to_native(results: dict[str, Result]) -> dict[str, float]:
    """Each other column's events/s over those of one native worker (:data:`NATIVE`), if run."""
    native = results.get(NATIVE)
    if native is None or not native.events_per_s:
        return {}
    return {
        key: round(r.events_per_s / native.events_per_s, 3)
        for key, r in results.items()
        if key != NATIVE
    }


def table(batch: int, results: dict[str, Result], options: Options, broker: BrokerInfo) -> Table:
    size = "single-event messages" if batch == 1 else f"{batch}-event messages"
    grid = Table(
        title=f"{size} · {options.events:,} events · {options.partitions} partitions · {broker}",
        title_justify="left",
    )
    for name in ("column", "events/s", "feature-updates/s", "× (1)", "× (4)", "latency p50/p99 ms",
                 "RSS MB", "Redis cmds/1k ev", "ckpt CPU", "targets"):  # fmt: skip
        grid.add_column(name, justify="left" if name in ("column", "targets") else "right")
    limit = results.get("limit")
    native = to_native(results)
    for key, r in results.items():
        ratio = (
            f"{r.events_per_s / limit.events_per_s:.2f}" if limit and limit.events_per_s else "—"
        )
        latency = "—"
        if r.latency is not None:
            lat = r.latency
            latency = (
                "no alert"
                if lat["p50_ms"] is None
                else f"{lat['p50_ms']:.0f} / {lat['p99_ms']:.0f}"
            )
        redis_cell = (
            "—"
            if r.redis is None or r.redis["per_1k_events"] is None
            else f"{r.redis['per_1k_events']:.1f}"
        )
        share = r.checkpoint["cpu_share"] if r.checkpoint else None
        judged = targets(batch, key, results)
        missed = [name for name, met in judged if not met]
        verdict = (
            "—"
            if not judged
            else (
                "[green]met[/green]" if not missed else "[red]NOT met:[/red] " + ", ".join(missed)
            )
        )
        grid.add_row(
            BY_KEY[key].title + ("" if r.complete else " *"),
            _rate(r.events_per_s),
            _rate(r.updates_per_s),
            ratio,
            f"{native[key]:.2f}" if key in native else "—",
            latency,
            f"{r.rss_mb:,.0f}",
            redis_cell,
            "—" if share is None else f"{100 * share:.2f}%",
            verdict,
        )
    return grid


def _notes(options: Options) -> list[str]:
    features = options.models * 22
    return [
        note.format(
            probe=PROBE_EVERY_S,
            min_window=MIN_WINDOW_S,
            series=SERIES_PER_EVENT,
            models=options.models,
            features=features,
            series_total=options.models * SERIES_PER_EVENT,
            drifts=options.drifts,
            warmup=WARMUP_PER_MODEL,
            drifted=DRIFTED_FEATURES,
            sigmas=SHIFT_SIGMAS,
            ready=READY_S,
            partitions=options.partitions,
        )
        for note in NOTES
    ]


PACKAGES = (
    "streamdrift",
    "faust-streaming",
    "confluent-kafka",
    "aiokafka",
    "river",
    "msgspec",
    "streamdrift-kernels",
)


def _version(package: str) -> str:
    try:
        return metadata.version(package)
    except metadata.PackageNotFoundError:
        return "not installed"


def report(
    broker: BrokerInfo,
    runs: Iterable[tuple[int, dict[str, Result]]],
    options: Options,
    runtime: float,
    console: Console,
) -> dict[str, Any]:
    data: dict[str, Any] = {
        "broker": asdict(broker),
        "options": {
            **asdict(options),
            "batches": list(options.batches),
            "only": list(options.only),
        },
        "machine": {
            "cpus": os.cpu_count(),
            "platform": platform.platform(),
            "load_average": os.getloadavg(),
        },
        "versions": {"python": platform.python_version(), **{p: _version(p) for p in PACKAGES}},
        "runtime_s": round(runtime, 1),
        "columns": {
            c.key: {"title": c.title, "description": c.description}
            for c in COLUMNS
            if c.key in options.only
        },
        "notes": _notes(options),
        "runs": [],
    }
    for batch, results in runs:
        console.print()
        console.print(table(batch, results, options, broker))
        judged = {key: targets(batch, key, results) for key in results}
        data["runs"].append(
            {
                "batch": batch,
                "results": {key: r.to_json() for key, r in results.items()},
                "vs_streamdrift_1": to_native(results),
                "targets": {
                    key: [{"target": name, "met": met} for name, met in found]
                    for key, found in judged.items()
                    if found
                },
            }
        )
    console.print()
    console.print("Columns:")
    for key in data["columns"]:
        console.print(
            f"  {BY_KEY[key].title}: {BY_KEY[key].description}", highlight=False, markup=False
        )
    console.print("Notes (* = stopped after --max-seconds):")
    for note in data["notes"]:
        console.print(f"  - {note}", highlight=False, markup=False)
    console.print(
        f"Broker {broker}. Runtime {runtime:.0f} s on {os.cpu_count()} CPUs; load average now "
        f"{os.getloadavg()[0]:.1f}.",
        highlight=False,
        markup=False,
    )
    return data


def main(argv: Sequence[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(
        prog="python -m bench.throughput", description=__doc__.splitlines()[0]
    )
    defaults = Options()
    parser.add_argument(
        "--events", type=int, default=defaults.events, help="events per input topic (default 10^6)"
    )
    parser.add_argument(
        "--partitions", type=int, default=defaults.partitions, help="input partitions (default 8)"
    )
    parser.add_argument(
        "--batch",
        type=int,
        nargs="+",
        default=list(defaults.batches),
        help="events per message, one run each (default 1 100)",
    )
    parser.add_argument(
        "--models",
        type=int,
        default=defaults.models,
        help="models of 22 features each (default 46: 1,012 features)",
    )
    parser.add_argument(
        "--only",
        nargs="+",
        choices=list(BY_KEY),
        default=list(BY_KEY),
        help="columns to run (default all)",
    )
    parser.add_argument(
        "--max-seconds",
        type=float,
        default=defaults.max_seconds,
        help="stop a column's throughput run after this long (default 120)",
    )
    parser.add_argument(
        "--latency-seconds",
        type=float,
        default=defaults.latency_seconds,
        help="paced traffic per latency run, at least (default 10)",
    )
    parser.add_argument(
        "--drifts",
        type=int,
        default=defaults.drifts,
        help="drifting models per latency run; 0 skips latency (default 5)",
    )
    parser.add_argument(
        "--broker",
        choices=BROKERS,
        default=defaults.broker,
        help="the Kafka broker: the embedded Tansu (default) or a single-node Apache Kafka (KRaft) "
        "from the test suite's cached jars (`make kafka-jars`: Java >= 17 and Maven)",
    )
    parser.add_argument(
        "--json",
        type=Path,
        default=None,
        help=f"results file (default {DEFAULT_JSON['tansu']}, "
        f"{DEFAULT_JSON['kafka']} with --broker kafka)",
    )
    parser.add_argument(
        "--set",
        action="append",
        default=[],
        metavar="STREAMDRIFT_NAME=VALUE",
        help="a worker setting for this run (repeatable); the workers otherwise get the defaults, "
        "whatever the environment says",
    )
    args = parser.parse_args(argv)
    settings = [tuple(item.split("=", 1)) for item in args.set]
    if any(len(pair) != 2 or not pair[0].startswith("STREAMDRIFT_") for pair in settings):
        parser.error("--set takes STREAMDRIFT_NAME=VALUE")
    if args.events < 1 or args.partitions < 1 or args.models < 1 or min(args.batch) < 1:
        parser.error("--events, --partitions, --models and --batch must be >= 1")
    if not 0 <= args.drifts <= args.models:
        parser.error("--drifts must be between 0 and --models")
    options = Options(
        events=args.events,
        partitions=args.partitions,
        batches=tuple(args.batch),
        models=args.models,
        only=tuple(args.only),
        max_seconds=args.max_seconds,
        latency_seconds=args.latency_seconds,
        drifts=args.drifts,
        worker_settings=tuple(settings),
        broker=args.broker,
    )
    json_path: Path = args.json or DEFAULT_JSON[args.broker]
    console = Console(width=None if sys.stdout.isatty() else 170)  # logs: no wrapped tables
    signal.signal(signal.SIGTERM, signal.default_int_handler)  # stop every process on SIGTERM too
    # The workers take the compiled kernels where they are installed (`make`; STREAMDRIFT_KERNELS).
    console.print(f"detector kernels: {kernels.active()} (loaded in {kernels.warm_up():.2f} s)")
    started = time.perf_counter()
    broker, runs = run(options, console)
    assert broker is not None  # run() raises if the broker did not start
    data = report(broker, runs, options, time.perf_counter() - started, console)
    json_path.parent.mkdir(parents=True, exist_ok=True)
    json_path.write_text(json.dumps(data, indent=2, ensure_ascii=False) + "\n")
    console.print(f"results: {json_path}")
    return data


if __name__ == "__main__":
    main()
