"""Shared fixtures: one real broker and one real Redis per test session, workers as subprocesses.

Fixtures: ``broker`` / ``redis_server`` (session; ``broker`` is Tansu, or Apache Kafka — one node
or a three-node cluster — for tests marked ``brokers``: see that section), ``topics``
(unique topics + group id per test), ``redis_client``, ``start_worker`` (factory of
:class:`WorkerProcess`).
Helpers for end-to-end tests: ``from conftest import produce, consume_all, Message, WorkerProcess``.

Isolation comes from names, not from wiping shared servers: every test gets its own topics and
consumer group id, and the worker namespaces its Redis keys by group id.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import time
import urllib.error
import urllib.request
import uuid
from collections import Counter
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, cast

import numpy as np
import pytest
import redis
from confluent_kafka import OFFSET_BEGINNING, Consumer, KafkaError, Producer, TopicPartition
from confluent_kafka import Message as KafkaMessage
from servers.kafka_broker import KafkaBroker, KafkaCluster, kafka_version
from servers.schema_registry import SchemaRegistry

from streamdrift.client import produce_with_retry
from streamdrift.detectors import Detection, NumericMonitor
from streamdrift.streams.dev.embedded import (
    LOCAL_WORKER_ENV,
    EmbeddedBroker,
    EmbeddedRedis,
    Topics,
    WorkerProcess,
    free_port,
)
from streamdrift.streams.kafka.admin import create_topics
from streamdrift.streams.runtime import Publisher

REPO_ROOT = Path(__file__).resolve().parents[1]

#: Partitions of each per-test topic.
TOPIC_PARTITIONS = {"input": 4, "labels": 2, "alerts": 1, "dlq": 1}

#: Worker settings for tests: the local group timing plus frequent checkpoints.
WORKER_TEST_ENV = {**LOCAL_WORKER_ENV, "STREAMDRIFT_CHECKPOINT_INTERVAL_S": "0.5"}


# --- servers -------------------------------------------------------------------------------


@pytest.fixture(scope="session")
def tansu_broker(tmp_path_factory: pytest.TempPathFactory) -> Iterator[EmbeddedBroker]:
    """One Tansu broker for the whole session (memory storage), stopped even if tests fail.
    It is the ``broker`` of every test not marked ``brokers`` (see the brokers section below)."""
    server = EmbeddedBroker(workdir=tmp_path_factory.mktemp("tansu"))
    try:
        yield server.start()
    finally:
        # Memory storage has nothing to flush, and on SIGTERM Tansu waits ~5 s for any client
        # connection still open: don't wait for that.
        server.stop(timeout=1.0)


# --- brokers: Tansu, and Apache Kafka for the tests that opt in ----------------------------------
# ``broker`` is Tansu (``tansu_broker``) unless a test is marked ``@pytest.mark.brokers("tansu",
# "kafka")``: it then runs once per named broker (ids ``[tansu]``, ``[kafka]``; select with
# ``-k kafka``). ``kafka3`` is the three-node Apache Kafka cluster (``kafka_cluster``; topics of
# the ``topics`` fixture are then replicated three times). Each broker is one server for the
# whole session, started by the first test that needs it; all expose ``bootstrap``. Apache
# Kafka's jars come from ``make kafka-jars`` (run by ``make test``; run here too if missing).

#: Broker name -> its session fixture. A ``brokers`` marker without names means the first two.
BROKER_FIXTURES = {"tansu": "tansu_broker", "kafka": "kafka_broker", "kafka3": "kafka_cluster"}
BROKERS = ("tansu", "kafka")


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    """Parametrise ``broker`` over the names of a test's ``brokers`` marker."""
    marker = metafunc.definition.get_closest_marker("brokers")
    if marker is None:
        return
    names = tuple(marker.args) or BROKERS
    if set(names) - set(BROKER_FIXTURES) or "broker" not in metafunc.fixturenames:
        raise pytest.UsageError(
            f"{metafunc.definition.nodeid}: @pytest.mark.brokers takes names from "
            f"{tuple(BROKER_FIXTURES)} (got {names}) and needs a test using the broker fixture"
        )
    metafunc.parametrize("broker", names, indirect=True, scope="session", ids=names)


@pytest.fixture(scope="session")
def broker(request: pytest.FixtureRequest) -> EmbeddedBroker | KafkaCluster:
    """The broker of this test: the session's Tansu, or the one its ``brokers`` run names."""
    return request.getfixturevalue(BROKER_FIXTURES[getattr(request, "param", "tansu")])


#: Start-up (and failover) times of the Apache Kafka servers, shown in the terminal summary.
KAFKA_TIMINGS: list[str] = []


@pytest.fixture(scope="session")
def kafka_broker(tmp_path_factory: pytest.TempPathFactory) -> Iterator[KafkaBroker]:
    """One single-node Apache Kafka 4.x (KRaft) for the whole session, with its log dir under
    the session's basetemp; stopped even if tests fail."""
    server = KafkaBroker(workdir=tmp_path_factory.mktemp("kafka"))
    try:
        server.start()
        KAFKA_TIMINGS.append(
            f"Apache Kafka {kafka_version()} single node: storage formatted in "
            f"{server.format_seconds:.1f} s, ready {server.start_seconds:.1f} s after start()"
        )
        yield server
    finally:
        server.stop()


@pytest.fixture(scope="session")
def kafka_cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[KafkaCluster]:
    """Three combined controller+broker nodes (replication factor 3, ``min.insync.replicas`` 2)
    for the whole session; tests that stop a node restart it before they end."""
    cluster = KafkaCluster(3, workdir=tmp_path_factory.mktemp("kafka-cluster"))
    try:
        cluster.start()
        KAFKA_TIMINGS.append(
            f"Apache Kafka {kafka_version()} three-node cluster: storage formatted in "
            f"{cluster.format_seconds:.1f} s, ready {cluster.start_seconds:.1f} s after start()"
        )
        yield cluster
    finally:
        cluster.stop(timeout=1.0)  # nothing to keep: don't wait for controlled shutdowns


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> None:
    for line in KAFKA_TIMINGS:
        terminalreporter.write_line(line)


def pytest_sessionfinish(session: pytest.Session) -> None:
    """In a test process of pytest-xdist: hand the timings to the controller, which prints."""
    workeroutput = getattr(session.config, "workeroutput", None)
    if workeroutput is not None:
        workeroutput["kafka_timings"] = list(KAFKA_TIMINGS)


@pytest.hookimpl(optionalhook=True)
def pytest_testnodedown(node: Any, error: object) -> None:
    KAFKA_TIMINGS.extend(getattr(node, "workeroutput", {}).get("kafka_timings", []))


@pytest.fixture(scope="session")
def redis_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[EmbeddedRedis]:
    """One redis-server (append-only file) for the whole session, stopped even if tests fail."""
    server = EmbeddedRedis(workdir=tmp_path_factory.mktemp("redis"))
    try:
        yield server.start()
    finally:
        server.stop()


@pytest.fixture(scope="session")
def schema_registry(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SchemaRegistry]:
    """One Schema Registry (Apicurio, in memory) for the session; subjects are named by test."""
    server = SchemaRegistry(tmp_path_factory.mktemp("schema-registry"))
    try:
        yield server.start()
    finally:
        server.terminate()


@pytest.fixture
def redis_client(redis_server: EmbeddedRedis) -> Iterator[redis.Redis]:
    """A client of the session Redis. Flushes nothing: namespace keys by the test's group id."""
    client = redis.Redis.from_url(redis_server.url)
    try:
        yield client
    finally:
        client.close()


# --- topics --------------------------------------------------------------------------------


def unique_name(request: pytest.FixtureRequest) -> str:
    """A Kafka-safe name: a slug of the test name plus a random suffix."""
    slug = re.sub(r"[^A-Za-z0-9_-]+", "-", request.node.name).strip("-")[:40]
    return f"{slug}-{uuid.uuid4().hex[:8]}"


def topic_names(request: pytest.FixtureRequest) -> Topics:
    """Unique names of a test's four topics and consumer group (nothing created)."""
    base = unique_name(request)
    return Topics(
        input=f"{base}.input",
        labels=f"{base}.labels",
        alerts=f"{base}.alerts",
        dlq=f"{base}.dlq",
        group_id=f"sd-{base}",
    )


@pytest.fixture
def topics(broker: EmbeddedBroker | KafkaCluster, request: pytest.FixtureRequest) -> Topics:
    """Input (4 partitions), labels (2), alerts (1) and dlq (1) topics created for this test."""
    names = topic_names(request)
    wanted = {getattr(names, role): partitions for role, partitions in TOPIC_PARTITIONS.items()}
    if isinstance(broker, KafkaCluster):  # replicated as the cluster's default says (3 on kafka3)
        broker.create_topics(wanted)
    else:
        create_topics(broker.bootstrap, wanted)
    return names


# --- worker processes ----------------------------------------------------------------------


def _env_name(key: str) -> str:
    name = key.upper()
    return name if name.startswith("STREAMDRIFT_") else f"STREAMDRIFT_{name}"


@pytest.fixture
def start_worker(
    broker: EmbeddedBroker,
    redis_server: EmbeddedRedis,
    topics: Topics,
    tmp_path: Path,
) -> Iterator[Callable[..., WorkerProcess]]:
    """Factory: ``start_worker(**overrides)`` launches a worker on this test's topics.

    Override keys are setting names (``checkpoint_every_events=100``) or full variable names
    (``STREAMDRIFT_LOG_LEVEL="debug"``); a value of None removes the variable. Each worker gets
    its own free metrics port and ``tmp_path/worker-N.log``. All are SIGKILLed at teardown.
    """
    workers: list[WorkerProcess] = []
    inherited = {k: v for k, v in os.environ.items() if not k.startswith("STREAMDRIFT_")}

    def start(**overrides: object) -> WorkerProcess:
        env = {
            **inherited,
            "PYTHONUNBUFFERED": "1",
            "STREAMDRIFT_KAFKA_BOOTSTRAP": broker.bootstrap,
            "STREAMDRIFT_REDIS_URL": redis_server.url,
            **topics.env(),
            "STREAMDRIFT_METRICS_PORT": str(free_port()),
            **WORKER_TEST_ENV,
        }
        for key, value in overrides.items():
            if value is None:
                env.pop(_env_name(key), None)
            else:
                env[_env_name(key)] = str(value)
        worker = WorkerProcess(env, tmp_path / f"worker-{len(workers)}.log")
        workers.append(worker)
        return worker.start()

    try:
        yield start
    finally:
        for worker in workers:
            worker.kill()


# --- Kafka helpers for end-to-end tests ----------------------------------------------------


def told_once(broker: Any, topics: Topics, model: str) -> None:
    """The drift of ``model`` was told once: one incident opened, every detection in it (the
    model's events spread over partitions, each with monitors of its own)."""
    found = [json.loads(m.value) for m in consume_all(broker.bootstrap, topics.alerts)]
    unique = {e["id"]: e for e in found}.values()
    opened = [e for e in unique if e["type"] == "io.streamdrift.incident.opened"]
    assert [e["subject"] for e in opened] == [model], opened
    incident = opened[0]["incident"]
    detected = [e for e in unique if e["type"] == "io.streamdrift.drift.detected"]
    assert {e.get("incident") for e in detected} == {incident}, detected


def produce(
    bootstrap: str,
    topic: str,
    values: Sequence[bytes | None],
    *,
    key: bytes | str | None = None,
    keys: Sequence[bytes | str | None] | None = None,
    partition: int | None = None,
    partitions: Sequence[int] | None = None,
    headers: Sequence[tuple[str, bytes | None]] | None = None,
    headers_each: Sequence[Sequence[tuple[str, bytes | None]] | None] | None = None,
    max_message_bytes: int | None = None,
    timeout: float = 30.0,
) -> list[tuple[int, int]]:
    """Produce ``values`` (one ``key`` for all, or one per value in ``keys``; likewise
    ``partition``/``partitions`` and ``headers``/``headers_each``); assert all delivered.

    Returns ``(partition, offset)`` of each value, in input order. Unknown topics are not
    auto-created (that would give them 4 partitions): delivery fails instead.
    ``max_message_bytes`` raises the producer's own size limit (to send oversize messages).
    """
    if keys is not None and (key is not None or len(keys) != len(values)):
        raise ValueError("pass either one key or exactly one key per value")
    producer = Producer(
        {
            "bootstrap.servers": bootstrap,
            "allow.auto.create.topics": False,
            "linger.ms": 5,
            "message.timeout.ms": int(timeout * 1000),
            **({"message.max.bytes": max_message_bytes} if max_message_bytes else {}),
        }
    )
    delivered: dict[int, tuple[int, int]] = {}
    errors: list[str] = []

    def on_delivery(index: int) -> Callable[..., None]:
        def callback(error: KafkaError | None, message: KafkaMessage) -> None:
            if error is not None:
                errors.append(f"#{index}: {error.str()}")
            else:
                delivered[index] = (cast(int, message.partition()), cast(int, message.offset()))

        return callback

    for index, value in enumerate(values):
        produce_with_retry(
            producer,
            topic,
            value,
            keys[index] if keys is not None else key,
            # -1: the partitioner's
            partition=_nth(partitions, index, -1 if partition is None else partition),
            headers=_nth(headers_each, index, list(headers) if headers else None),
            on_delivery=on_delivery(index),
            poll_timeout=0.1,
        )
        producer.poll(0)
    left = producer.flush(timeout)
    assert not errors, f"{len(errors)} of {len(values)} messages to {topic} failed: {errors[:5]}"
    assert left == 0 and len(delivered) == len(values), (
        f"only {len(delivered)} of {len(values)} messages to {topic} delivered within {timeout:g} s"
    )
    return [delivered[index] for index in range(len(values))]


def _nth(each: Sequence | None, index: int, default: object) -> object:
    return default if each is None else each[index]


@dataclass(frozen=True)
class Message:
    """One consumed Kafka record."""

    value: bytes | None
    headers: list[tuple[str, bytes | None]]
    key: bytes | None
    partition: int
    offset: int

    def header(self, name: str) -> bytes | None:
        """The last value of header ``name`` (None if absent)."""
        found = [value for key, value in self.headers if key == name]
        return found[-1] if found else None


def drift_alerts(messages: Sequence[Message]) -> list[dict[str, Any]]:
    """The drift alerts among messages of the alert topic (not the incident events)."""
    found = [json.loads(m.value) for m in messages]
    return [a for a in found if a["type"].startswith("io.streamdrift.drift.")]


def consume_all(
    bootstrap: str, topic: str, *, expect_at_least: int = 0, timeout: float = 30.0
) -> list[Message]:
    """Every message of ``topic`` from the beginning, sorted by (partition, offset).

    Reads until the end of every partition once at least ``expect_at_least`` messages were seen;
    fails if that takes longer than ``timeout`` s. Partitions are assigned directly (a throwaway
    group id, nothing committed), so there is no group join delay.
    """
    consumer = Consumer(
        {
            "bootstrap.servers": bootstrap,
            "group.id": f"consume-all-{uuid.uuid4().hex}",
            "enable.auto.commit": False,
            "enable.partition.eof": True,
            "allow.auto.create.topics": False,
            # Tansu long-polls an empty partition for this long before reporting its end.
            "fetch.wait.max.ms": 50,
        }
    )
    try:
        metadata = consumer.list_topics(topic, timeout=min(timeout, 10.0)).topics.get(topic)
        assert metadata is not None and metadata.error is None, (
            f"topic {topic} not found on {bootstrap}: {metadata.error if metadata else 'missing'}"
        )
        partitions = sorted(metadata.partitions)
        consumer.assign([TopicPartition(topic, p, OFFSET_BEGINNING) for p in partitions])
        messages: list[Message] = []
        at_end: set[int] = set()
        deadline = time.monotonic() + timeout
        while len(at_end) < len(partitions) or len(messages) < expect_at_least:
            remaining = deadline - time.monotonic()
            assert remaining > 0, (
                f"{topic}: {len(messages)} messages after {timeout:g} s, expected at least "
                f"{expect_at_least} (partitions at end: {sorted(at_end)} of {partitions})"
            )
            # consume() waits the whole timeout unless the batch fills: keep the timeout short.
            for record in consumer.consume(1000, timeout=min(remaining, 0.05)):
                error = record.error()
                partition = cast(int, record.partition())
                if error is not None and error.code() == KafkaError._PARTITION_EOF:
                    at_end.add(partition)
                    continue
                assert error is None, f"consuming {topic}: {error}"
                at_end.discard(partition)
                messages.append(
                    Message(
                        value=record.value(),
                        headers=cast(list[tuple[str, bytes | None]], record.headers() or []),
                        key=record.key(),
                        partition=partition,
                        offset=cast(int, record.offset()),
                    )
                )
        return sorted(messages, key=lambda m: (m.partition, m.offset))
    finally:
        consumer.close()


# --- detectors tests ------------------------------------------------------------------------


def feed_batches(
    monitor: NumericMonitor, values: np.ndarray, batch: int = 1000, first_position: int = 0
) -> list[Detection]:
    """Feed ``values`` in batches, tagged with consecutive positions; return the detections."""
    positions = np.arange(first_position, first_position + len(values), dtype=np.int64)
    detections = []
    for start in range(0, len(values), batch):
        part = slice(start, start + batch)
        detections += monitor.update(values[part], positions[part])
    return detections


@pytest.fixture
def feed() -> Callable[..., list[Detection]]:
    return feed_batches


# --- polling helpers for end-to-end tests ------------------------------------------------------


def wait_for(predicate: Callable[[], bool], timeout: float, what: str) -> None:
    """Poll ``predicate`` until it holds; fail naming ``what`` after ``timeout`` seconds.

    A probe that times out (a worker busy with a large batch answers late) counts as "not yet".
    """
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            if predicate():
                return
        except (TimeoutError, urllib.error.URLError):
            pass
        time.sleep(0.25)
    raise AssertionError(f"timed out after {timeout:g} s waiting for {what}")


def metric(worker: WorkerProcess, sample: str) -> float:
    """The value of one sample (``name{labels}`` exactly as exposed) of a worker's /metrics, or
    0."""
    for line in worker.metrics_text(timeout=30).splitlines():
        if line.startswith(sample + " "):
            return float(line.rsplit(" ", 1)[1])
    return 0.0


# --- secrets: none may reach a log file -----------------------------------------------------
# Every password and token the suite hands to workers and commands. tests/e2e/test_security_e2e.py
# and tests/test_client.py spell theirs in place: keep their values listed here.

REDIS_TEST_PASSWORD = "r3dis-s3cret-pw"  # test_security_e2e: password-protected Redis
HTTP_TEST_TOKEN = "status-t0ken-xyz"  # test_security_e2e: /status bearer token
SASL_TEST_PASSWORD = "kafka-s3cret-pw"  # test_security_e2e: SASL logins
CLI_TEST_PASSWORD = "hunter2"  # test_cli, test_operator_input; test_client's "hunter2-secret"
SETTINGS_TEST_PASSWORDS = ("pa55-word", "r3dis-pw", "k3y-pass")  # test_security, test_client

TEST_SECRETS: tuple[str, ...] = (
    REDIS_TEST_PASSWORD,
    HTTP_TEST_TOKEN,
    SASL_TEST_PASSWORD,
    CLI_TEST_PASSWORD,
    *SETTINGS_TEST_PASSWORDS,
)


def secret_leaks(folder: Path, secrets: Sequence[str] = TEST_SECRETS) -> list[str]:
    """``file: 'secret'`` for each of ``secrets`` found in a ``*.log`` file under ``folder``."""
    leaks = []
    for path in sorted(folder.rglob("*.log")):
        text = path.read_bytes()
        leaks += [
            f"{path.relative_to(folder)}: {secret!r}"
            for secret in secrets
            if secret.encode() in text
        ]
    return leaks


@pytest.fixture(scope="session", autouse=True)
def no_secret_in_logs(tmp_path_factory: pytest.TempPathFactory) -> Iterator[None]:
    """At the end of the session, fail if any log the session wrote (workers, servers, demo; all
    under its basetemp) holds one of the test secrets: a leak anywhere fails the suite."""
    yield
    leaks = secret_leaks(tmp_path_factory.getbasetemp())
    if leaks:
        pytest.fail(f"test secrets written to logs: {leaks}", pytrace=False)


# --- a publisher for runtime tests without a broker ----------------------------------------


class RecordingPublisher(Publisher):
    """Records what the runtime sends (topic, key, value, headers); ``fail_dlq`` failures of
    each dead letter before it goes through (-1: always), raising ``error``."""

    def __init__(self, fail_dlq: int = 0, error: type[BaseException] = ConnectionError) -> None:
        self.sent: list[tuple[str, bytes | None, bytes, list[tuple[str, bytes]]]] = []
        self.attempts: Counter[str] = Counter()
        self.fail_dlq = fail_dlq  # failures before each dead letter goes through (-1: always)
        self.error = error
        self._failed: Counter[bytes] = Counter()

    async def send(self, topic, key, value, headers):
        self.attempts[topic] += 1
        if topic.endswith("dlq") and self.fail_dlq:
            key_ = hashlib.sha256(value).digest()
            if self.fail_dlq < 0 or self._failed[key_] < self.fail_dlq:
                self._failed[key_] += 1
                raise self.error("broker unavailable")
        self.sent.append((topic, key, value, list(headers)))

    async def flush(self):
        return None

    async def commit(self, offsets):
        return None

    async def committed(self, partitions):
        return {}

    async def earliest(self, partitions):
        return {}

    async def seek(self, topic, partition, offset):
        return None
