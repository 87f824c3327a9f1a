"""Faults only a real Kafka has: a three-node Apache Kafka 4.x cluster (replication factor 3,
``min.insync.replicas`` 2) losing the leader of the consumed partitions, restarted node by node
under load, losing the group coordinator during a rebalance; and a single broker killed and
restarted on its own log directory. Each is checked against the golden replay
(:mod:`faults.golden`: exact counts and detector state, every alert once by id) and reports its
recovery figures for ``python -m bench.faults_report``.
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Callable, Iterable, Iterator
from typing import Any

import pytest
import redis
from confluent_kafka import Consumer, ConsumerGroupState, KafkaError, KafkaException, TopicPartition
from confluent_kafka.admin import AdminClient
from conftest import TOPIC_PARTITIONS, Topics, consume_all, produce
from faults.golden import (
    RECOVERY_S,
    Ends,
    assert_exact,
    checkpointed_offsets,
    ends_of,
    produce_slowly,
    report,
    stream,
    wait_until_caught_up,
)
from servers.kafka_broker import KafkaBroker, KafkaCluster

from streamdrift.streams.kafka.admin import admin_client

pytestmark = [pytest.mark.e2e, pytest.mark.faults]

INPUT_PARTITIONS = range(TOPIC_PARTITIONS["input"])
#: Answers of a group coordinator still starting (or moving): ask again.
COORDINATOR_MOVING = {
    KafkaError.NOT_COORDINATOR,
    KafkaError.COORDINATOR_LOAD_IN_PROGRESS,
    KafkaError.COORDINATOR_NOT_AVAILABLE,
}


@pytest.fixture(autouse=True)
def whole_cluster_after(broker: KafkaCluster, topics: Topics) -> Iterator[None]:
    """Every node running again after each test (a test that failed half-way included), and every
    replica of this test's topics back in sync, so the next test starts from a healthy cluster."""
    yield
    broker.start()
    wait_in_sync(broker, [topics.input, topics.labels, topics.alerts, topics.dlq])


# --- cluster helpers ---------------------------------------------------------------------------


def partitions_of(cluster: KafkaCluster, topic: str) -> dict[int, Any]:
    return dict(
        admin_client(cluster.bootstrap).list_topics(topic, timeout=10).topics[topic].partitions
    )


def wait_in_sync(
    cluster: KafkaCluster, topics: Iterable[str], timeout: float = RECOVERY_S
) -> float:
    """Seconds until every partition of ``topics`` has a leader and all its replicas in sync."""
    began = time.monotonic()
    while True:
        lagging = [
            (topic, p.id)
            for topic in topics
            for p in partitions_of(cluster, topic).values()
            if p.leader < 0 or sorted(p.isrs) != sorted(p.replicas)
        ]
        if not lagging:
            return time.monotonic() - began
        assert time.monotonic() - began < timeout, f"replicas not back in sync: {lagging}"
        time.sleep(0.2)


def busiest_leader(cluster: KafkaCluster, topic: str) -> tuple[int, list[int]]:
    """The node leading most partitions of ``topic``, and those partitions."""
    led: dict[int, list[int]] = {}
    for partition in partitions_of(cluster, topic).values():
        led.setdefault(partition.leader, []).append(partition.id)
    node = max(led, key=lambda n: len(led[n]))
    return node, sorted(led[node])


def group_coordinator(
    cluster: KafkaCluster, group: str, admin: AdminClient | None = None
) -> tuple[int, ConsumerGroupState]:
    """The ``node.id`` of the group's coordinator and the group's state."""
    admin = admin or admin_client(cluster.bootstrap)  # referenced until the answer
    description = admin.describe_consumer_groups([group], request_timeout=10)[group].result(
        timeout=15
    )
    return int(description.coordinator.id), description.state


REBALANCING = (ConsumerGroupState.PREPARING_REBALANCING, ConsumerGroupState.COMPLETING_REBALANCING)


def join_until_rebalancing(
    cluster: KafkaCluster, group: str, start_worker: Callable[[], Any], attempts: int = 3
) -> tuple[int, Any]:
    """Start workers one at a time until the group is caught re-forming; the coordinator then,
    and the worker whose join began it.

    A join keeps the group in PreparingRebalance until every member has rejoined, which is at most
    one heartbeat interval (3 s) and can be a few milliseconds: a sample can miss it. A missed
    rebalance is not a failed test: the next worker's join starts another.
    """
    admin = admin_client(cluster.bootstrap)  # one client: each sample is one round trip
    for _ in range(attempts):
        joining = start_worker()
        deadline = time.monotonic() + RECOVERY_S
        while time.monotonic() < deadline:
            coordinator, state = group_coordinator(cluster, group, admin)
            if state in REBALANCING:
                return coordinator, joining
            if joining.readyz(timeout=0.5) == 200:
                break  # it owns partitions: the rebalance came and went between two samples
            time.sleep(0.005)
    raise AssertionError(f"{attempts} joins and the group was never caught rebalancing")


def log_ends(cluster: KafkaCluster, topic: str, partitions: Iterable[int]) -> dict[int, int]:
    """Each partition's log end offset (high watermark) now."""
    consumer = Consumer(
        {"bootstrap.servers": cluster.bootstrap, "group.id": "streamdrift-tests-watermarks"}
    )
    try:
        return {
            p: consumer.get_watermark_offsets(TopicPartition(topic, p), timeout=10)[1]
            for p in partitions
        }
    finally:
        consumer.close()


def seconds_until_past(
    client: redis.Redis,
    topics: Topics,
    ends: dict[int, int],
    since: float,
    timeout: float = RECOVERY_S,
) -> float:
    """Seconds from ``since`` until the checkpoint of every partition of ``ends`` has gone past its
    offset there: the worker processed records written after that moment (e.g. after a fault).
    Partitions still empty are left out: the stream is keyed by model, and four models need not
    cover four partitions."""
    ends = {p: end for p, end in ends.items() if end > 0}
    assert ends, "no records yet: nothing to measure"
    deadline = time.monotonic() + timeout
    while True:
        offsets = checkpointed_offsets(client, topics, ends)
        behind = sorted(p for p, end in ends.items() if (offsets[p] or 0) <= end)
        if not behind:
            return time.monotonic() - since
        assert time.monotonic() < deadline, (
            f"partitions {behind} did not process past {ends} within {timeout} s"
        )
        time.sleep(0.05)


class Load:
    """The fault tests' stream produced in the background over ``seconds`` (acks=all)."""

    def __init__(
        self, broker: KafkaCluster, topics: Topics, n: int, seconds: float, seed: int
    ) -> None:
        bodies, models = stream(n, seed)
        self.delivered: list[tuple[int, int]] = []
        self._thread = threading.Thread(
            target=produce_slowly,
            args=(broker, topics, bodies, models, seconds, self.delivered),
            daemon=True,
        )
        self._thread.start()

    def ends(self) -> Ends:
        """Wait for the last record; where each partition ends."""
        self._thread.join()
        return ends_of(self.delivered)


# --- three nodes -----------------------------------------------------------------------------


@pytest.mark.brokers("kafka3")
def test_the_leader_of_the_consumed_partitions_killed_mid_stream(
    broker, topics, start_worker, redis_client
):
    worker = start_worker().wait_ready()
    load = Load(broker, topics, 24_000, seconds=12, seed=21)
    time.sleep(5)  # the worker is busy with the stream
    leader, led = busiest_leader(broker, topics.input)
    written = log_ends(broker, topics.input, led)
    since = time.monotonic()
    broker.kill(leader)  # kill -9: no controlled shutdown, no leadership handed over
    # records from the new leaders
    resumed = seconds_until_past(redis_client, topics, written, since)
    ends = load.ends()  # the producer rode through the failover too
    broker.node(
        leader
    ).start().wait_ready()  # back with its log directory; catches up from the others
    wait_until_caught_up(redis_client, topics, ends)
    report(
        f"Kafka 3 nodes: kill -9 of the leader of {len(led)} of 4 input partitions",
        resumed_s=resumed,
        caught_up_s=time.monotonic() - since,
    )
    assert_exact(broker, redis_client, topics, ends)
    assert worker.running, "a leader change is the client's business, not a reason to exit"


@pytest.mark.brokers("kafka3")
def test_a_rolling_restart_of_all_three_brokers_under_load(
    broker, topics, start_worker, redis_client
):
    worker = start_worker().wait_ready()
    load = Load(broker, topics, 30_000, seconds=22, seed=22)
    time.sleep(3)
    since = time.monotonic()
    per_node = []
    for node in broker.nodes:  # what an operator's rolling upgrade does: one node at a time
        began = time.monotonic()
        node.restart()  # SIGTERM: controlled shutdown hands its leaderships over first
        wait_in_sync(broker, [topics.input, topics.alerts, topics.dlq, topics.labels])
        per_node.append(time.monotonic() - began)
    ends = load.ends()
    wait_until_caught_up(redis_client, topics, ends)
    report(
        "Kafka 3 nodes: rolling restart under load (per node: restart + replicas in sync)",
        ready_s=max(per_node),
        caught_up_s=time.monotonic() - since,
    )
    assert_exact(broker, redis_client, topics, ends)
    assert worker.running


@pytest.mark.brokers("kafka3")
def test_the_group_coordinator_killed_during_a_rebalance(
    broker, topics, start_worker, redis_client
):
    start_worker().wait_ready()
    load = Load(broker, topics, 36_000, seconds=20, seed=23)
    time.sleep(3)
    # strike while the group is re-forming
    coordinator, joining = join_until_rebalancing(broker, topics.group_id, start_worker)
    written = log_ends(broker, topics.input, INPUT_PARTITIONS)
    since = time.monotonic()
    broker.kill(coordinator)
    # every partition owned again
    resumed = seconds_until_past(redis_client, topics, written, since)
    joining.wait_ready(timeout=RECOVERY_S)
    new_coordinator, _ = group_coordinator(broker, topics.group_id)
    assert new_coordinator != coordinator
    ends = load.ends()
    broker.node(coordinator).start().wait_ready()
    wait_until_caught_up(redis_client, topics, ends)
    report(
        "Kafka 3 nodes: group coordinator kill -9 during a rebalance (a worker joining)",
        resumed_s=resumed,
        caught_up_s=time.monotonic() - since,
    )
    assert_exact(broker, redis_client, topics, ends)


# --- one node, its log directory the only copy ---------------------------------------------------


def committed(bootstrap: str, group: str, topic: str, partitions: Iterable[int]) -> dict[int, int]:
    """The group's committed offsets, once the (restarted) broker's coordinator has loaded them."""
    consumer = Consumer({"bootstrap.servers": bootstrap, "group.id": group})
    deadline = time.monotonic() + RECOVERY_S
    try:
        while True:
            try:
                found = consumer.committed(
                    [TopicPartition(topic, p) for p in partitions], timeout=30
                )
                return {tp.partition: tp.offset for tp in found}
            except KafkaException as exc:
                if exc.args[0].code() not in COORDINATOR_MOVING or time.monotonic() > deadline:
                    raise
                time.sleep(0.2)
    finally:
        consumer.close()


def records(bootstrap: str, topic: str, at_least: int) -> list[tuple[bytes | None, bytes | None]]:
    return [
        (m.key, m.value)
        for m in consume_all(bootstrap, topic, expect_at_least=at_least, timeout=60)
    ]


@pytest.mark.brokers("kafka")
def test_a_broker_killed_and_restarted_on_its_log_directory_keeps_offsets_alerts_and_dead_letters(
    broker: KafkaBroker, topics, start_worker, redis_client
):
    worker = start_worker().wait_ready()
    bodies, models = stream(20_000, seed=24)  # fraud's f3 shifts halfway: alerts
    poison = [b"{not json", json.dumps({"model": "fraud", "features": {"f0": "NaN?"}}).encode()]
    first = ends_of(
        produce(
            broker.bootstrap,
            topics.input,
            [*bodies[:10_000], *poison, *bodies[10_000:]],
            keys=[*models[:10_000], "fraud", "fraud", *models[10_000:]],
        )
    )
    wait_until_caught_up(redis_client, topics, first)
    deadline = time.monotonic() + RECOVERY_S
    while (
        committed(broker.bootstrap, topics.group_id, topics.input, first) != first
    ):  # Kafka has them too
        assert time.monotonic() < deadline, "the worker never committed its offsets to Kafka"
        time.sleep(0.5)
    alerts = records(broker.bootstrap, topics.alerts, 1)
    letters = records(broker.bootstrap, topics.dlq, len(poison))
    assert len(letters) == len(poison)

    killed = time.monotonic()
    broker.kill()  # kill -9 under a running worker; the restart reads the same log directory
    broker.restart()
    restarted = time.monotonic() - killed
    assert committed(broker.bootstrap, topics.group_id, topics.input, first) == first
    assert records(broker.bootstrap, topics.alerts, len(alerts)) == alerts
    assert records(broker.bootstrap, topics.dlq, len(letters)) == letters

    since = time.monotonic()
    more, more_models = stream(10_000, seed=25)
    ends = ends_of(produce(broker.bootstrap, topics.input, more, keys=more_models))
    ends = {p: max(first.get(p, 0), ends.get(p, 0)) for p in {*first, *ends}}
    wait_until_caught_up(redis_client, topics, ends)
    report(
        "Kafka 1 node: kill -9 and restart on its log directory (worker running)",
        ready_s=restarted,
        caught_up_s=time.monotonic() - since,
        backlog=10_000,
    )
    assert_exact(broker, redis_client, topics, ends)  # nothing replayed twice after the restart
    assert worker.running
