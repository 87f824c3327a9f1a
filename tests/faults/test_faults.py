"""Fault tests on one broker: real broker, Redis and worker processes, checked against a golden
replay (:mod:`faults.golden` states the invariants I1-I5). The worker faults and a frozen broker
run on Tansu and on Apache Kafka (``tests/faults/test_kafka_faults.py`` has the faults only a real
Kafka cluster has); Redis faults do not depend on the broker and run on Tansu."""

from __future__ import annotations

import random
import threading
import time

import pytest
from conftest import consume_all, produce
from faults.golden import (
    KAFKA_AND_TANSU,
    RECOVERY_S,
    Golden,
    assert_exact,
    assert_recovered_exactly,
    assert_state_matches,
    ends_of,
    on,
    produce_slowly,
    produce_stream,
    stream,
    wait_until_caught_up,
)

pytestmark = [pytest.mark.e2e, pytest.mark.faults]


@KAFKA_AND_TANSU
def test_sigterm_under_load_checkpoints_and_a_restart_continues_exactly(
    broker, topics, start_worker, redis_client
):
    # first: a worker on Kafka keeps up with the producer
    ends = produce_stream(broker, topics, 30_000)
    first = start_worker().wait_ready()
    time.sleep(1.0)  # mid-stream
    since = time.monotonic()
    assert first.terminate(timeout=30) == 0, "SIGTERM must stop the worker cleanly"
    start_worker().wait_ready()
    ready = time.monotonic() - since
    assert_recovered_exactly(
        broker,
        redis_client,
        topics,
        ends,
        fault=f"{on(broker)}: SIGTERM under load, restart",
        since=since,
        ready_s=ready,
    )


@KAFKA_AND_TANSU
def test_kill_9_at_random_moments_five_times(broker, topics, start_worker, redis_client):
    rng = random.Random(7)
    ends = produce_stream(broker, topics, 60_000, seed=1)
    worker = start_worker().wait_ready()
    ready = []
    for _ in range(5):
        time.sleep(rng.uniform(0.5, 2.5))
        since = time.monotonic()
        worker.kill()
        worker = start_worker().wait_ready(timeout=RECOVERY_S)
        ready.append(time.monotonic() - since)
    assert_recovered_exactly(
        broker,
        redis_client,
        topics,
        ends,
        fault=f"{on(broker)}: kill -9 x5, restart (figures: the last kill)",
        since=since,
        ready_s=max(ready),
    )


@KAFKA_AND_TANSU
def test_a_zombie_cannot_overwrite_the_new_owners_checkpoint(
    broker, topics, start_worker, redis_client
):
    # A long checkpoint interval: the zombie surely holds unsaved state when it is frozen.
    zombie = start_worker(checkpoint_interval_s=30, checkpoint_every_events=10**9).wait_ready()
    ends = produce_stream(broker, topics, 30_000, seed=2)
    time.sleep(1.0)
    since = time.monotonic()
    zombie.pause()  # SIGSTOP past the 6 s session timeout: the group moves on without it
    successor = start_worker().wait_ready(timeout=RECOVERY_S)
    wait_until_caught_up(
        redis_client,
        topics,
        ends,
        fault=f"{on(broker)}: zombie (SIGSTOP), successor started",
        since=since,
        ready_s=time.monotonic() - since,
    )
    zombie.resume()  # it wakes up believing it still owns everything
    time.sleep(8)
    assert_exact(broker, redis_client, topics, ends)
    fenced = [
        line
        for line in zombie.metrics_text().splitlines()
        if line.startswith('streamdrift_checkpoints_total{result="fenced"}')
    ]
    assert fenced and float(fenced[0].split()[-1]) >= 1, (
        "the zombie's stale checkpoint should have been fenced"
    )
    assert successor.running


@pytest.mark.parametrize("seconds", [20, 45])
def test_broker_frozen_loses_and_duplicates_nothing(
    seconds, broker, topics, start_worker, redis_client
):
    broker_frozen(seconds, broker, topics, start_worker, redis_client)


@pytest.mark.brokers("kafka")
def test_kafka_frozen_for_20_seconds_loses_and_duplicates_nothing(
    broker, topics, start_worker, redis_client
):
    broker_frozen(20, broker, topics, start_worker, redis_client)


def broker_frozen(seconds, broker, topics, start_worker, redis_client) -> None:
    ends = produce_stream(broker, topics, 20_000, seed=3)
    start_worker().wait_ready()
    time.sleep(0.5)
    broker.pause()  # longer than the session timeout: the group must re-form afterwards
    try:
        time.sleep(seconds)
    finally:
        broker.resume()
    assert_recovered_exactly(
        broker,
        redis_client,
        topics,
        ends,
        timeout=120,
        fault=f"{on(broker)}: broker SIGSTOP {seconds} s",
    )


def test_redis_killed_and_restarted_with_its_data(
    broker, topics, start_worker, redis_client, redis_server
):
    worker = start_worker().wait_ready()
    ends = produce_stream(broker, topics, 20_000, seed=4)
    time.sleep(1.0)
    redis_server.kill()
    time.sleep(3)
    assert "streamdrift_redis_up 0.0" in worker.metrics_text()
    redis_server.restart(keep_data=True)
    assert_recovered_exactly(
        broker,
        redis_client,
        topics,
        ends,
        timeout=120,
        fault="Redis kill -9 3 s, restarted with data",
    )
    assert worker.running


def test_redis_restarted_without_its_data_is_rewritten_from_the_workers_memory(
    broker, topics, start_worker, redis_client, redis_server
):
    worker = start_worker().wait_ready()
    ends = produce_stream(broker, topics, 20_000, seed=6)
    time.sleep(1.5)
    redis_server.restart(keep_data=False)  # every checkpoint, epoch and outbox is gone
    assert_recovered_exactly(
        broker,
        redis_client,
        topics,
        ends,
        timeout=120,
        incidents_exact=False,  # the incidents' hash went with the rest
        fault="Redis restarted without data, worker running",
    )
    assert 'streamdrift_checkpoints_total{result="lost"}' in worker.metrics_text()


def test_a_worker_restarted_after_redis_lost_its_data_rebuilds_from_the_earliest_offset(
    broker, topics, start_worker, redis_client, redis_server
):
    worker = start_worker().wait_ready()
    ends = produce_stream(broker, topics, 10_000, seed=7)
    wait_until_caught_up(redis_client, topics, ends)
    time.sleep(4)  # let Faust commit its offsets to Kafka too
    worker.terminate()
    redis_server.restart(keep_data=False)
    since = time.monotonic()
    start_worker().wait_ready()
    wait_until_caught_up(
        redis_client,
        topics,
        ends,
        timeout=120,
        fault="Redis lost its data, worker restarted (rebuild)",
        since=since,
        ready_s=time.monotonic() - since,
    )
    assert_state_matches(redis_client, topics, Golden(broker, topics, sum(ends.values())))


def test_redis_paused_for_15_seconds(broker, topics, start_worker, redis_client, redis_server):
    worker = start_worker().wait_ready()
    ends = produce_stream(broker, topics, 20_000, seed=8)
    time.sleep(1.0)
    redis_server.pause()
    try:
        time.sleep(15)
        assert "streamdrift_redis_up 0.0" in worker.metrics_text(), (
            "the outage should show in metrics"
        )
    finally:
        redis_server.resume()
    assert_recovered_exactly(
        broker, redis_client, topics, ends, timeout=120, fault="Redis SIGSTOP 15 s"
    )
    assert worker.running


@KAFKA_AND_TANSU
def test_a_poison_message_goes_to_the_dlq_without_a_crash_loop(
    broker, topics, start_worker, redis_client
):
    worker = start_worker().wait_ready()
    bodies, models = stream(2_000, seed=5)
    poison = b'{"model": "fraud", "features": {"f0": ' + b"[" * 100_000 + b"]" * 100_000 + b"}}"
    since = time.monotonic()
    ends = ends_of(
        produce(
            broker.bootstrap,
            topics.input,
            [*bodies[:1_000], poison, *bodies[1_000:]],
            keys=[*models[:1_000], "fraud", *models[1_000:]],
        )
    )
    wait_until_caught_up(
        redis_client,
        topics,
        ends,
        fault=f"{on(broker)}: poison message (200 KB nested JSON) among 2,000 events",
        since=since,
    )
    assert_state_matches(redis_client, topics, Golden(broker, topics, 2_001))
    (letter,) = consume_all(broker.bootstrap, topics.dlq, expect_at_least=1)
    assert letter.value == poison and letter.header("streamdrift-reason") is not None
    assert worker.running


def test_scale_1_to_3_to_1_then_churn_for_twenty_seconds(
    broker, topics, start_worker, redis_client
):
    """Workers join and leave while events flow; state stays exact and no partition stays
    unowned."""
    bodies, models = stream(40_000, seed=9)
    delivered: list[tuple[int, int]] = []
    producer = threading.Thread(
        target=produce_slowly, args=(broker, topics, bodies, models, 40.0, delivered), daemon=True
    )
    first = start_worker().wait_ready()
    producer.start()
    extra = [start_worker(), start_worker()]  # 1 -> 3
    time.sleep(10)
    for worker in extra:  # 3 -> 1
        worker.terminate()
    rng, churned = random.Random(11), []
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:  # start/stop a worker every 2-5 s
        if churned and rng.random() < 0.5:
            churned.pop(rng.randrange(len(churned))).terminate()
        else:
            churned.append(start_worker())
        time.sleep(rng.uniform(2, 5))
    for worker in churned:
        worker.terminate()
    since = time.monotonic()
    producer.join()
    wait_until_caught_up(
        redis_client,
        topics,
        ends_of(delivered),
        timeout=30,  # every partition owned again
        fault="scale 1-3-1 + 20 s churn, back to 1 worker",
        since=since,
    )
    assert_exact(broker, redis_client, topics, ends_of(delivered))
    assert first.running
