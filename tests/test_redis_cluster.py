"""The state store on a real three-node Redis Cluster started from redis-server binaries on
loopback.

Every key of one checkpoint shares the partition's hash tag, so the fenced scripts run on one
node; partitions spread over the nodes.
"""

from __future__ import annotations

import asyncio
import subprocess
import time
import uuid
from pathlib import Path

import pytest
import redis
from redis.asyncio.cluster import RedisCluster

from streamdrift.streams.dev.embedded import free_port, redis_server_binary
from streamdrift.streams.settings import Settings
from streamdrift.streams.state.checkpoint import CheckpointStore, Fenced, Save
from streamdrift.streams.state.joins import JoinStore
from streamdrift.streams.state.keys import KeyLayout
from streamdrift.streams.state.pairs import PairStore

TOPIC = "preds"


def _port_pair() -> int:
    """A free port whose cluster-bus port (port + 10000) is free too."""
    while True:
        port = free_port()
        if port + 10000 < 65536:
            try:
                import socket

                with socket.socket() as probe:
                    probe.bind(("127.0.0.1", port + 10000))
                return port
            except OSError:
                continue


@pytest.fixture(scope="module")
def cluster_url(tmp_path_factory) -> str:
    server = redis_server_binary()
    cli = str(Path(server).with_name("redis-cli"))
    folder = tmp_path_factory.mktemp("cluster")
    ports = [_port_pair() for _ in range(3)]
    processes = [
        subprocess.Popen(
            [
                server,
                "--port",
                str(p),
                "--bind",
                "127.0.0.1",
                "--cluster-enabled",
                "yes",
                "--cluster-config-file",
                f"nodes-{p}.conf",
                "--dir",
                str(folder),
                "--save",
                "",
                "--appendonly",
                "no",
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        for p in ports
    ]
    try:
        for p in ports:
            _wait(lambda p=p: redis.Redis(port=p).ping())
        subprocess.run(
            [
                cli,
                "--cluster",
                "create",
                *(f"127.0.0.1:{p}" for p in ports),
                "--cluster-replicas",
                "0",
                "--cluster-yes",
            ],
            check=True,
            capture_output=True,
            timeout=60,
        )
        _wait(lambda: redis.Redis(port=ports[0]).cluster("info")["cluster_state"] == "ok")
        yield f"redis://127.0.0.1:{ports[0]}/0"
    finally:
        for process in processes:
            process.kill()
            process.wait()


def _wait(probe, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            if probe():
                return
        except (redis.RedisError, KeyError):
            pass
        time.sleep(0.1)
    raise AssertionError("Redis Cluster did not come up")


def run(url: str, body):
    async def main():
        client = RedisCluster.from_url(url)
        try:
            return await body(client)
        finally:
            await client.aclose()

    return asyncio.run(main())


def test_settings_give_a_cluster_client(cluster_url):
    settings = Settings(redis_url=cluster_url, redis_cluster=True)
    assert isinstance(settings.redis_client(), RedisCluster)
    assert settings.redis_client(asynchronous=False).ping()


def test_checkpoints_of_many_partitions_land_on_several_nodes_and_stay_fenced(cluster_url):
    group = f"g-{uuid.uuid4().hex[:8]}"

    async def body(client):
        owner, zombie = (
            CheckpointStore(client, group, "owner"),
            CheckpointStore(client, group, "zombie"),
        )
        stale = {p: await zombie.claim(TOPIC, p) for p in range(8)}
        fresh = {p: await owner.claim(TOPIC, p) for p in range(8)}
        saves = [
            Save(TOPIC, p, fresh[p].epoch, 10 + p, 10 + p, {"m\x1fx": b"state-%d" % p}, [b"alert"])
            for p in range(8)
        ]
        assert await owner.save(saves) == [None] * 8
        fenced = await zombie.save([Save(TOPIC, 0, stale[0].epoch, 99, 99, {"m\x1fx": b"zombie"})])
        restored = await owner.claim(TOPIC, 3)
        return fenced, restored

    fenced, restored = run(cluster_url, body)
    assert isinstance(fenced[0], Fenced)
    assert (
        restored.offset == 13
        and restored.fields == {b"m\x1fx": b"state-3"}
        and restored.outbox == [b"alert"]
    )
    client = redis.RedisCluster.from_url(cluster_url)
    slots = {client.keyslot(KeyLayout(group).keys(TOPIC, p)[0]) for p in range(8)}
    nodes = {client.get_node_from_key(KeyLayout(group).keys(TOPIC, p)[0]).name for p in range(8)}
    assert len(slots) == 8 and len(nodes) > 1, "partitions should spread over the cluster's nodes"
    assert client.hget(KeyLayout(group).keys(TOPIC, 0)[1], "m\x1fx") == b"state-0", (
        "the zombie wrote nothing"
    )


def test_label_join_works_on_the_cluster(cluster_url):
    group = f"g-{uuid.uuid4().hex[:8]}"

    async def body(client):
        join = JoinStore(client, group, ttl_s=3600)
        await join.put([("fraud", "e1", b"p1"), ("churn", "e2", b"p2")], now=1000.0)
        return await join.get([("fraud", "e1"), ("churn", "e2"), ("fraud", "missing")], now=1500.0)

    assert run(cluster_url, body) == {("fraud", "e1"): b"p1", ("churn", "e2"): b"p2"}


def test_request_response_pairing_works_on_the_cluster(cluster_url):
    """A batch's pair hashes share the group's hash tag: one script call on one node."""
    from streamdrift.streams.pipeline.pairing import REQUEST, RESPONSE, Ask, Half

    group = f"g-{uuid.uuid4().hex[:8]}"

    def half(kind: str, pair_id: str, offset: int) -> Half:
        event = b'{"model": "fraud", "event_id": "%s", "features": {}}' % pair_id.encode()
        return Half("fraud", pair_id, kind, f"logs:0:{offset}:0", offset, 1.0, event)

    async def body(client):
        pairs = PairStore(client, group)
        first = await pairs.offer(
            [Ask(half(RESPONSE, f"r{i}", i), True, False) for i in range(3)], 5
        )
        second = await pairs.offer([Ask(half(REQUEST, "r1", 9), True, False)], 5)
        return [a.status for a in first], second[0]

    statuses, answer = run(cluster_url, body)
    assert statuses == ["wait"] * 3
    assert (answer.status, answer.action, answer.claimer) == ("claimed", "pair", "logs:0:9:0")


@pytest.mark.e2e
def test_a_worker_keeps_exact_counts_on_the_cluster(cluster_url, broker, topics, start_worker):
    from conftest import produce, wait_for

    from streamdrift.streams.ops.status import read_status

    start_worker(redis_url=cluster_url, redis_cluster="true").wait_ready()
    models = [f"m{i % 4}" for i in range(4_000)]
    produce(
        broker.bootstrap,
        topics.input,
        [
            b'{"model": "%s", "features": {"x": %d}}' % (m.encode(), i % 9)
            for i, m in enumerate(models)
        ],
        keys=models,
    )
    client = redis.RedisCluster.from_url(cluster_url)

    def counts():
        return {
            model: series["x"]["count"]
            for model, series in read_status(client, topics.group_id)["models"].items()
        }

    wait_for(
        lambda: counts() == {f"m{i}": 1_000 for i in range(4)}, 90, "exact counts on the cluster"
    )
