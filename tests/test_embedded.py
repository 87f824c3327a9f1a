"""The embedded servers and the test helpers, against real Tansu and redis-server processes."""

from __future__ import annotations

import os
import socket
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path

import pytest
import redis
from confluent_kafka import KafkaException
from confluent_kafka.admin import AdminClient
from conftest import Topics, WorkerProcess, consume_all, produce, unique_name

from streamdrift.streams.dev.embedded import (
    EmbeddedBroker,
    EmbeddedRedis,
    EmbeddedServerError,
    free_port,
)
from streamdrift.streams.kafka.admin import TopicAdminError, create_topics

pytestmark = pytest.mark.e2e


# --- broker --------------------------------------------------------------------------------


def test_broker_answers_metadata(broker: EmbeddedBroker) -> None:
    assert broker.running
    assert broker.bootstrap == f"127.0.0.1:{broker.port}"
    metadata = AdminClient({"bootstrap.servers": broker.bootstrap}).list_topics(timeout=5)
    assert [b.port for b in metadata.brokers.values()] == [broker.port]
    assert broker.log_path.is_file()


def test_create_topics_is_idempotent_and_checks_partitions(
    broker: EmbeddedBroker, request: pytest.FixtureRequest
) -> None:
    wanted = {f"{unique_name(request)}.{n}": n for n in (1, 3)}
    create_topics(broker.bootstrap, wanted)
    create_topics(broker.bootstrap, wanted)  # existing topics are fine
    listed = AdminClient({"bootstrap.servers": broker.bootstrap}).list_topics(timeout=5).topics
    assert {name: len(listed[name].partitions) for name in wanted} == wanted
    name = next(iter(wanted))
    with pytest.raises(TopicAdminError, match=r"already exists .* with 1 partitions, not 2"):
        create_topics(broker.bootstrap, {name: 2})


def test_topics_fixture(broker: EmbeddedBroker, topics: Topics) -> None:
    listed = AdminClient({"bootstrap.servers": broker.bootstrap}).list_topics(timeout=5).topics
    counts = {
        name: len(listed[name].partitions) for name in topics.env().values() if name in listed
    }
    assert counts == {topics.input: 4, topics.labels: 2, topics.alerts: 1, topics.dlq: 1}
    assert topics.group_id.startswith("sd-test_topics_fixture-")


def test_produce_consume_round_trip(broker: EmbeddedBroker, topics: Topics) -> None:
    values = [f'{{"event_id": {i}}}'.encode() for i in range(40)]
    positions = produce(
        broker.bootstrap,
        topics.input,
        values,
        keys=[f"model-{i % 8}" for i in range(40)],
        headers=[("source", b"test")],
    )
    assert len(positions) == 40
    messages = consume_all(broker.bootstrap, topics.input, expect_at_least=40, timeout=20)
    assert sorted(m.value or b"" for m in messages) == sorted(values)
    assert {(m.partition, m.offset) for m in messages} == set(positions)
    assert len({m.partition for m in messages}) > 1  # keys spread over the 4 partitions
    assert all(m.header("source") == b"test" for m in messages)
    by_value = {m.value: m for m in messages}
    assert by_value[values[5]].key == b"model-5"
    assert consume_all(broker.bootstrap, topics.alerts, timeout=10) == []


def test_produce_to_missing_topic_fails_instead_of_auto_creating(
    broker: EmbeddedBroker, request: pytest.FixtureRequest
) -> None:
    missing = unique_name(request)
    with pytest.raises(AssertionError, match="failed"):
        produce(broker.bootstrap, missing, [b"x"], timeout=2)
    assert (
        missing
        not in AdminClient({"bootstrap.servers": broker.bootstrap}).list_topics(timeout=5).topics
    )


def test_tansu_auto_creates_topics_named_in_metadata_requests(
    broker: EmbeddedBroker, request: pytest.FixtureRequest
) -> None:
    """Documents the broker: why create_topics never names topics in metadata requests."""
    asked, not_asked = f"{unique_name(request)}.asked", f"{unique_name(request)}.not-asked"
    strict = AdminClient({"bootstrap.servers": broker.bootstrap, "allow.auto.create.topics": False})
    assert strict.list_topics(topic=not_asked, timeout=5).topics[not_asked].error is not None
    lenient = AdminClient({"bootstrap.servers": broker.bootstrap})  # librdkafka default: True
    created = lenient.list_topics(topic=asked, timeout=5).topics[asked]
    assert created.error is None and len(created.partitions) == 4
    assert not_asked not in strict.list_topics(timeout=5).topics


def test_broker_pause_blocks_requests_until_resume(tmp_path: Path) -> None:
    with EmbeddedBroker(workdir=tmp_path) as broker:
        admin = AdminClient({"bootstrap.servers": broker.bootstrap})
        admin.list_topics(timeout=5)
        broker.pause()
        with pytest.raises(KafkaException):
            admin.list_topics(timeout=1)
        broker.resume()
        admin.list_topics(timeout=5)
        broker.pause()
        started = time.monotonic()
        broker.stop(timeout=1)  # a paused broker still stops (SIGTERM is followed by SIGCONT)
        assert time.monotonic() - started < 5
        assert not broker.running


def test_broker_start_failure_says_why(tmp_path: Path) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        broker = EmbeddedBroker(port=taken.getsockname()[1], workdir=tmp_path)
        with pytest.raises(EmbeddedServerError, match=r"(?s)exited .*before it was ready.*in use"):
            broker.start(timeout=10)
        assert not broker.running


# --- redis ---------------------------------------------------------------------------------


def test_redis_answers(redis_server: EmbeddedRedis, redis_client: redis.Redis) -> None:
    assert redis_server.url == f"redis://127.0.0.1:{redis_server.port}/0"
    assert redis_client.ping()
    assert redis_client.config_get("appendonly") == {"appendonly": "yes"}


def test_redis_with_a_password_puts_it_in_its_url_and_refuses_anonymous_clients(
    tmp_path: Path,
) -> None:
    with EmbeddedRedis(workdir=tmp_path, password="p@ss word") as server:
        assert server.url == f"redis://:p%40ss%20word@127.0.0.1:{server.port}/0"
        assert redis.Redis.from_url(server.url).ping()
        with pytest.raises(redis.AuthenticationError):
            redis.Redis(host="127.0.0.1", port=server.port).ping()


def test_redis_data_survives_kill_and_restart(tmp_path: Path) -> None:
    server = EmbeddedRedis(workdir=tmp_path)
    with server:
        client = redis.Redis.from_url(server.url)
        client.set("checkpoint", b"state-1")
        client.hset("offsets", mapping={"0": 10, "1": 20})
        server.kill()
        assert server.returncode == -9
        url = server.url
        server.restart(keep_data=True)
        assert server.url == url  # same port: existing clients reconnect
        assert client.get("checkpoint") == b"state-1"
        assert client.hgetall("offsets") == {b"0": b"10", b"1": b"20"}
        server.restart(keep_data=False)
        assert client.get("checkpoint") is None
        client.close()
    assert not server.running and server.returncode == 0
    assert server.log_path.is_file()  # a given workdir is kept


def test_redis_pause_blocks_commands_until_resume(tmp_path: Path) -> None:
    with EmbeddedRedis(workdir=tmp_path) as server:
        client = redis.Redis.from_url(server.url, socket_timeout=10)
        client.ping()
        server.pause()
        done = threading.Event()

        def write() -> None:
            client.set("k", "v")
            done.set()

        thread = threading.Thread(target=write, daemon=True)
        thread.start()
        assert not done.wait(0.5), "a command succeeded while Redis was paused"
        server.resume()
        assert done.wait(5)
        thread.join(5)
        assert client.get("k") == b"v"
        client.close()


def test_temporary_workdir_is_removed_by_stop() -> None:
    server = EmbeddedRedis().start()
    assert server.log_path.is_file()
    server.stop()
    assert not server.workdir.exists()


def test_free_port_is_bindable() -> None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", free_port()))


# --- WorkerProcess, against a stand-in for the worker's HTTP contract ----------------------

FAKE_WORKER = """
import http.server, os, signal, sys, time
mode = sys.argv[1]
if mode == "crash":
    print("boom: invalid configuration", flush=True)
    sys.exit(3)
ready_at = time.monotonic() + (0.3 if mode == "ready" else 1e9)

class Handler(http.server.BaseHTTPRequestHandler):
    def do_GET(self):
        if self.path == "/readyz":
            code = 200 if time.monotonic() >= ready_at else 503
            body = b"ok" if code == 200 else b"starting"
        elif self.path == "/metrics":
            code, body = 200, b"streamdrift_events_total 3\\n"
        else:
            code, body = 404, b""
        self.send_response(code)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args):
        pass

signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
port = int(os.environ["STREAMDRIFT_METRICS_PORT"])
http.server.HTTPServer(("127.0.0.1", port), Handler).serve_forever()
"""


def fake_worker(tmp_path: Path, mode: str) -> WorkerProcess:
    script = tmp_path / "fake_worker.py"
    script.write_text(FAKE_WORKER)
    env = {**os.environ, "STREAMDRIFT_METRICS_PORT": str(free_port())}
    return WorkerProcess(env, tmp_path / f"{mode}.log", command=[sys.executable, str(script), mode])


def test_worker_process_waits_for_readyz(tmp_path: Path) -> None:
    worker = fake_worker(tmp_path, "ready").start()
    try:
        assert worker.readyz() in (None, 503)
        worker.wait_ready(timeout=10)
        assert worker.readyz() == 200
        assert "streamdrift_events_total 3" in worker.metrics_text()
        assert worker.terminate(timeout=5) == 0
    finally:
        worker.kill()


def test_worker_process_reports_a_crash_with_its_log(tmp_path: Path) -> None:
    worker = fake_worker(tmp_path, "crash").start()
    with pytest.raises(EmbeddedServerError, match=r"(?s)status 3 .*boom: invalid configuration"):
        worker.wait_ready(timeout=10)


def test_worker_process_times_out_with_last_status(tmp_path: Path) -> None:
    worker = fake_worker(tmp_path, "never-ready").start()
    try:
        with pytest.raises(EmbeddedServerError, match="last /readyz status: 503"):
            worker.wait_ready(timeout=1.5)
    finally:
        worker.kill()
    assert worker.returncode == -9


def test_start_worker_environment(
    start_worker: Callable[..., WorkerProcess], broker: EmbeddedBroker, topics: Topics
) -> None:
    worker = start_worker(
        checkpoint_every_events=100, STREAMDRIFT_LOG_LEVEL="debug", heartbeat_interval_s=None
    )
    worker.kill()  # only the environment is checked here; the worker has its own tests
    env = worker.env
    assert env["STREAMDRIFT_KAFKA_BOOTSTRAP"] == broker.bootstrap
    assert env["STREAMDRIFT_INPUT_TOPIC"] == topics.input
    assert env["STREAMDRIFT_GROUP_ID"] == topics.group_id
    assert env["STREAMDRIFT_METRICS_PORT"] == str(worker.metrics_port)
    assert env["STREAMDRIFT_SESSION_TIMEOUT_S"] == "6"
    assert env["STREAMDRIFT_CHECKPOINT_EVERY_EVENTS"] == "100"
    assert env["STREAMDRIFT_LOG_LEVEL"] == "debug"
    assert "STREAMDRIFT_HEARTBEAT_INTERVAL_S" not in env
