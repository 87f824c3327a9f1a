"""The Apache Kafka test servers themselves: a single node that keeps its data across a crash and
restart, and a three-node cluster that fails over when the leader is killed."""

from __future__ import annotations

import time
import uuid

import pytest
from confluent_kafka import Consumer, KafkaError, KafkaException, TopicPartition
from confluent_kafka.admin import AdminClient
from conftest import KAFKA_TIMINGS, consume_all, produce, unique_name

from servers.kafka_broker import KafkaBroker, KafkaCluster
from streamdrift.streams.kafka.admin import TopicAdminError, create_topics

pytestmark = pytest.mark.e2e


COORDINATOR_MOVING = {
    KafkaError.NOT_COORDINATOR,
    KafkaError.COORDINATOR_LOAD_IN_PROGRESS,
    KafkaError.COORDINATOR_NOT_AVAILABLE,
}


def committed(bootstrap: str, group: str, topic: str) -> int:
    """The group's committed offset, asked again while a restarted broker is still loading its
    offsets topic: the coordinator answers NOT_COORDINATOR (or COORDINATOR_LOAD_IN_PROGRESS)
    until then, and librdkafka hands that retriable error to the caller instead of retrying."""
    consumer = Consumer({"bootstrap.servers": bootstrap, "group.id": group})
    deadline = time.monotonic() + 60
    try:
        while True:
            try:
                return int(consumer.committed([TopicPartition(topic, 0)], timeout=30)[0].offset)
            except KafkaException as error:
                if error.args[0].code() not in COORDINATOR_MOVING or time.monotonic() > deadline:
                    raise
                time.sleep(0.5)
    finally:
        consumer.close()


def commit(bootstrap: str, group: str, topic: str, offset: int) -> None:
    consumer = Consumer({"bootstrap.servers": bootstrap, "group.id": group})
    try:
        consumer.commit(offsets=[TopicPartition(topic, 0, offset)], asynchronous=False)
    finally:
        consumer.close()


def test_a_killed_broker_restarts_with_its_topics_messages_and_committed_offsets(
    kafka_broker: KafkaBroker, request: pytest.FixtureRequest
) -> None:
    topic, group = unique_name(request), f"g-{uuid.uuid4().hex[:8]}"
    create_topics(kafka_broker.bootstrap, {topic: 1})
    produce(kafka_broker.bootstrap, topic, [str(i).encode() for i in range(100)])
    commit(kafka_broker.bootstrap, group, topic, 60)
    port, pid = kafka_broker.port, kafka_broker.pid

    kafka_broker.kill()  # SIGKILL: no clean shutdown, no flush
    assert not kafka_broker.running
    kafka_broker.restart()

    assert kafka_broker.port == port and kafka_broker.pid != pid
    values = [m.value for m in consume_all(kafka_broker.bootstrap, topic, expect_at_least=100)]
    assert values == [str(i).encode() for i in range(100)]
    assert committed(kafka_broker.bootstrap, group, topic) == 60


def test_create_topics_works_on_kafka_as_on_tansu(
    kafka_broker: KafkaBroker, request: pytest.FixtureRequest
) -> None:
    wanted = {f"{unique_name(request)}.{n}": n for n in (1, 3)}
    create_topics(kafka_broker.bootstrap, wanted)
    create_topics(kafka_broker.bootstrap, wanted)  # existing topics are fine
    listed = (
        AdminClient({"bootstrap.servers": kafka_broker.bootstrap}).list_topics(timeout=5).topics
    )
    assert {name: len(listed[name].partitions) for name in wanted} == wanted
    with pytest.raises(TopicAdminError, match=r"already exists .* with 1 partitions, not 2"):
        create_topics(kafka_broker.bootstrap, {next(iter(wanted)): 2})


def isr(cluster: KafkaCluster, topic: str) -> list[int]:
    metadata = AdminClient({"bootstrap.servers": cluster.bootstrap}).list_topics(topic, timeout=10)
    return sorted(metadata.topics[topic].partitions[0].isrs)


def test_the_cluster_fails_over_when_the_leader_is_killed_and_the_node_rejoins(
    kafka_cluster: KafkaCluster, request: pytest.FixtureRequest
) -> None:
    topic = unique_name(request)
    kafka_cluster.create_topics({topic: 1})  # the cluster default: 3 replicas, 2 in sync needed
    assert isr(kafka_cluster, topic) == [1, 2, 3]
    produce(kafka_cluster.bootstrap, topic, [b"before"] * 200)  # librdkafka's default acks=all
    leader = kafka_cluster.leader(topic)

    began = time.monotonic()
    kafka_cluster.kill(leader)
    produce(kafka_cluster.bootstrap, topic, [b"after"] * 200, timeout=60)
    failover = time.monotonic() - began
    assert kafka_cluster.leader(topic) not in (leader, -1)

    kafka_cluster.restart(leader)
    deadline = time.monotonic() + 60
    while isr(kafka_cluster, topic) != [1, 2, 3]:
        assert time.monotonic() < deadline, (
            f"node {leader} did not rejoin the ISR: {isr(kafka_cluster, topic)}"
        )
        time.sleep(0.2)
    values = [m.value for m in consume_all(kafka_cluster.bootstrap, topic, expect_at_least=400)]
    assert values == [b"before"] * 200 + [b"after"] * 200  # nothing lost, nothing duplicated
    KAFKA_TIMINGS.append(
        f"three-node cluster: acks=all writes resumed {failover:.1f} s after the leader's kill -9"
    )
