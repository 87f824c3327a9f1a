"""The producer client (``streamdrift.client``, the streamdrift-client distribution in client/):
envelopes, sampling, bounded queue and drop counts (with a fake producer), its configuration from
the workers' variables, the one produce-with-retry step, then the real thing against the embedded
Tansu broker (delivery exactly once, broker down)."""

from __future__ import annotations

import asyncio
import importlib
import importlib.util
import logging
import math
import py_compile
import re
import threading
import time
from decimal import Decimal
from pathlib import Path
from typing import ClassVar

import msgspec
import numpy as np
import pytest
from confluent_kafka import KafkaError, KafkaException
from conftest import Topics, consume_all

import streamdrift.client.client as client_module
from streamdrift.client import (
    DEFAULT_TOPIC,
    MAX_EVENTS_PER_MESSAGE,
    MAX_MESSAGE_BYTES,
    ClientStats,
    DriftClient,
    masked_config,
    produce_with_retry,
    sampled,
    settings_from_env,
)
from streamdrift.client.config import SECRETS_DIR, VARIABLES
from streamdrift.streams.dev.embedded import EmbeddedBroker, free_port
from streamdrift.streams.pipeline.codec import Limits, decode_events
from streamdrift.streams.security import confluent_config
from streamdrift.streams.settings import Settings

ROOT = Path(__file__).resolve().parents[1]


def accounted(stats: ClientStats) -> int:
    """Every emitted event is in exactly one of these."""
    return (
        stats.sent
        + stats.delivery_failed
        + stats.dropped_sampled
        + stats.dropped_queue_full
        + stats.encoding_failed
        + stats.dropped_closed
        + stats.pending
    )


def wait_until(predicate, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.01)


def events_of(value: bytes) -> list[dict]:
    decoded = msgspec.json.decode(value)
    assert isinstance(decoded, list), "envelopes are JSON arrays"
    return decoded


# --- a fake librdkafka producer ---------------------------------------------------------------


class FakeProducer:
    """Records produced messages; acknowledges them on poll unless ``acknowledge`` is off;
    raises BufferError for the next ``refuse`` produce calls."""

    instances: ClassVar[list[FakeProducer]] = []

    def __init__(self, config: dict) -> None:
        self.config = config
        self.messages: list[tuple[str, bytes, bytes]] = []  # (topic, key, value) in produce order
        self.unacked: list = []
        self.acknowledge = True
        self.refuse = 0
        self.lock = threading.Lock()
        FakeProducer.instances.append(self)

    def produce(self, topic, value, key, partition=-1, on_delivery=None, headers=None):
        with self.lock:
            if self.refuse:
                self.refuse -= 1
                raise BufferError("Local: Queue full")
            self.messages.append((topic, key, value))
            self.unacked.append(on_delivery)

    def poll(self, timeout: float = 0) -> int:
        if not self.acknowledge:
            time.sleep(min(timeout, 0.01))
            return 0
        with self.lock:
            callbacks, self.unacked = self.unacked, []
        for callback in callbacks:
            callback(None, None)
        return len(callbacks)

    def flush(self, timeout: float = 0) -> int:
        self.poll(timeout)
        return len(self.unacked)

    def purge(self, in_queue=True, in_flight=True, blocking=True) -> None:
        with self.lock:
            callbacks, self.unacked = self.unacked, []
        for callback in callbacks:
            callback(KafkaError(KafkaError._PURGE_QUEUE), None)


@pytest.fixture
def fake(monkeypatch: pytest.MonkeyPatch):
    """DriftClient factory whose clients talk to a FakeProducer (``client._producer``)."""
    monkeypatch.setattr(client_module, "Producer", FakeProducer)
    clients: list[DriftClient] = []

    def make(**options) -> DriftClient:
        # envelopes leave when full or on flush, unless a test says otherwise
        options.setdefault("linger", 60.0)
        client = DriftClient("127.0.0.1:9", "t", **options)
        clients.append(client)
        return client

    yield make
    for client in clients:
        client.close(timeout=1.0)


# --- contract with the worker -----------------------------------------------------------------


def test_defaults_are_the_workers_defaults():
    assert DEFAULT_TOPIC == Settings.model_fields["input_topic"].default
    assert (
        MAX_EVENTS_PER_MESSAGE
        == Limits().max_events_per_message
        == Settings.model_fields["max_events_per_message"].default
    )
    assert (
        MAX_MESSAGE_BYTES
        == Limits().max_message_bytes
        == Settings.model_fields["max_message_bytes"].default
    )


@pytest.mark.parametrize(
    "options",
    [
        {"envelope_size": 0},
        {"envelope_size": MAX_EVENTS_PER_MESSAGE + 1},
        {"sample_rate": 1.5},
        {"linger": -1},
        {"max_queue": 0},
        {"shards": 0},
        {"max_envelope_bytes": MAX_MESSAGE_BYTES + 1},
    ],
)
def test_bad_arguments_raise_at_construction(fake, options):
    with pytest.raises(ValueError):
        fake(**options)


def test_envelopes_are_valid_input_messages_of_one_model_and_at_most_envelope_size(fake):
    client = fake(envelope_size=100)
    for i in range(1050):
        assert client.emit(
            f"m{i % 3}",
            {"x": i * 0.5, "c": "DE", "z": None},
            prediction=0.1,
            model_version="3",
            event_id=f"e{i}",
            tenant="acme",
        )
    assert client.flush(5.0) == 0
    messages = client._producer.messages
    seen = []
    for topic, key, value in messages:
        assert topic == "t"
        events, rejections = decode_events(value, 0.0, Limits())
        assert rejections == [] and 1 <= len(events) <= 100
        assert {e.model for e in events} == {key.decode()}
        assert all(
            e.model_version == "3" and e.prediction == 0.1 and e.timestamp > 0 for e in events
        )
        assert events_of(value)[0]["tenant"] == "acme"  # extra fields are carried
        seen += [e.event_id for e in events]
    assert sorted(seen) == sorted(f"e{i}" for i in range(1050))
    # a model's events keep their order across its envelopes
    for model in ("m0", "m1", "m2"):
        ids = [
            int(e["event_id"][1:])
            for _, key, value in messages
            if key == model.encode()
            for e in events_of(value)
        ]
        assert ids == sorted(ids)
    stats = client.stats()
    assert (stats.emitted, stats.sent, stats.pending, stats.messages_sent) == (
        1050,
        1050,
        0,
        len(messages),
    )
    assert len(messages) == 3 * 4  # 350 events per model: 100 + 100 + 100 + 50


def test_an_unfilled_envelope_leaves_after_linger(fake):
    client = fake(envelope_size=1000, linger=0.05)
    for i in range(3):
        client.emit("m", {"x": float(i)})
    wait_until(lambda: client.stats().sent == 3)  # no flush: the linger sent it
    (message,) = client._producer.messages
    assert len(events_of(message[2])) == 3


def test_envelopes_stay_within_max_envelope_bytes(fake):
    client = fake(envelope_size=1000, max_envelope_bytes=1000)
    for i in range(200):
        client.emit("m", {"x": float(i), "pad": "p" * 100})
    assert client.flush(5.0) == 0
    values = [value for _, _, value in client._producer.messages]
    assert len(values) > 1 and all(len(v) <= 1000 for v in values)
    assert sum(len(events_of(v)) for v in values) == 200


def test_values_the_worker_reads_and_values_that_cannot_be_encoded(fake):
    client = fake()
    assert client.emit(
        "m",
        {
            "f32": np.float32(1.5),
            "i64": np.int64(3),
            "b": np.bool_(True),
            "d": Decimal("2.5"),
            "nan": math.nan,
        },
        prediction=np.float64(0.25),
        timestamp=1_763_719_200.5,
    )
    bad = [
        dict(model="m", features={"x": object()}),
        dict(model="m", features={"x": np.zeros(3)}),  # an array is no scalar: not encoded as one
        dict(model="", features={}),
        dict(model=7, features={}),
        dict(model="m", features=[1, 2]),
        dict(
            model="m", features={"x": 1}, timestamp=__import__("datetime").datetime(2026, 1, 1)
        ),  # naive
        dict(model="m", features={"big": "x" * (600 * 1024)}),  # bigger than max_envelope_bytes
    ]
    for kwargs in bad:
        assert client.emit(**kwargs) is False  # never raises into the inference path
    assert client.flush(5.0) == 0
    ((_, _, value),) = client._producer.messages
    events, rejections = decode_events(value, 0.0, Limits())
    assert rejections == []
    (event,) = events
    assert event.numeric == {"f32": 1.5, "i64": 3.0, "d": 2.5, "prediction": 0.25}
    assert (
        event.categorical == {"b": "true"}
        and event.missing == ["nan"]
        and event.timestamp == 1_763_719_200.5
    )
    stats = client.stats()
    assert (stats.emitted, stats.sent, stats.encoding_failed) == (1 + len(bad), 1, len(bad))
    assert "encoding failed" in stats.last_error and accounted(stats) == stats.emitted


def test_the_callers_dicts_can_change_after_emit(fake):
    client = fake()
    features = {"x": 1.0}
    client.emit("m", features)
    features["x"] = 2.0
    client.flush(5.0)
    assert events_of(client._producer.messages[0][2])[0]["features"] == {"x": 1.0}


# --- sampling -------------------------------------------------------------------------------


def test_sampling_by_event_id_is_deterministic_nested_and_at_the_rate():
    ids = [f"req-{i}" for i in range(20_000)]
    for rate in (0.01, 0.3, 0.9):
        kept = [i for i in ids if sampled(i, rate)]
        n, sd = len(ids), math.sqrt(len(ids) * rate * (1 - rate))
        assert abs(len(kept) - n * rate) < 5 * sd, (rate, len(kept))
        assert kept == [i for i in ids if sampled(i, rate)]  # same decision every time
    # nested
    assert set(i for i in ids if sampled(i, 0.1)) <= set(i for i in ids if sampled(i, 0.3))


def test_two_clients_sample_the_same_event_ids(fake):
    first, second = fake(sample_rate=0.25), fake(sample_rate=0.25)
    for i in range(4000):
        first.emit("m", {"x": 1.0}, event_id=f"e{i}")
        second.emit("m", {"x": 1.0}, event_id=f"e{i}")
    for client in (first, second):
        assert client.flush(5.0) == 0
    ids = [
        [e["event_id"] for _, _, v in c._producer.messages for e in events_of(v)]
        for c in (first, second)
    ]
    assert ids[0] == ids[1] == [f"e{i}" for i in range(4000) if sampled(f"e{i}", 0.25)]
    stats = first.stats()
    assert stats.dropped_sampled + stats.sent == stats.emitted == 4000


def test_events_without_id_are_sampled_at_random_at_the_rate(fake):
    client = fake(sample_rate=0.2)
    accepted = sum(client.emit("m", {"x": 1.0}) for _ in range(20_000))
    assert abs(accepted - 4000) < 5 * math.sqrt(20_000 * 0.2 * 0.8)
    assert client.stats().dropped_sampled == 20_000 - accepted


def test_shards_spread_one_model_over_keys_by_event_id(fake):
    client = fake(shards=4, envelope_size=10)
    for i in range(400):
        client.emit("m", {"x": 1.0}, event_id=f"e{i % 100}")
    client.flush(5.0)
    keys: dict[str, set[bytes]] = {}
    for _, key, value in client._producer.messages:
        for event in events_of(value):
            keys.setdefault(event["event_id"], set()).add(key)
    assert all(len(k) == 1 for k in keys.values())  # one event id: one key
    assert set().union(*keys.values()) == {b"m/0", b"m/1", b"m/2", b"m/3"}


# --- bounded queue, drops, lifecycle ------------------------------------------------------------


def test_a_full_queue_drops_and_counts_instead_of_blocking(fake):
    client = fake(max_queue=1000, envelope_size=100)
    client._producer.acknowledge = False  # nothing is ever acknowledged: the queue fills for good
    results = [client.emit("m", {"x": float(i)}) for i in range(5000)]
    stats = client.stats()
    assert sum(results) == 1000 == stats.pending
    assert stats.dropped_queue_full == 5000 - 1000 == results.count(False)
    assert results[:1000] == [True] * 1000  # the first ones got in
    final = client.close(timeout=1.0)
    assert final.pending == 0 and final.sent == 0
    # produced ones purged, the rest never produced
    assert final.delivery_failed + final.dropped_closed == 1000
    assert accounted(final) == final.emitted == 5000


def test_librdkafka_queue_full_is_retried_in_order_without_losing_events(fake):
    client = fake(envelope_size=10)
    client._producer.refuse = 5
    for i in range(200):
        client.emit("m", {"x": float(i)}, event_id=str(i))
    assert client.flush(5.0) == 0
    ids = [int(e["event_id"]) for _, _, v in client._producer.messages for e in events_of(v)]
    assert ids == list(range(200))
    stats = client.stats()
    assert stats.sent == 200 and stats.producer_queue_full == 5


def test_a_message_librdkafka_refuses_is_counted_as_failed(fake):
    client = fake(envelope_size=5)

    def refuse(*args, **kwargs):
        raise KafkaException(KafkaError(KafkaError.MSG_SIZE_TOO_LARGE))

    client._producer.produce = refuse
    for _ in range(12):
        client.emit("m", {"x": 1.0})
    assert client.flush(5.0) == 0
    stats = client.stats()
    assert stats.delivery_failed == 12 and stats.sent == 0 and "produce failed" in stats.last_error


def test_close_is_idempotent_and_later_emits_are_counted(fake):
    with fake() as client:
        client.emit("m", {"x": 1.0})
    assert client.closed
    assert client.close().sent == 1 and client.close(timeout=0).sent == 1
    assert client.emit("m", {"x": 1.0}) is False
    stats = client.stats()
    assert (stats.emitted, stats.sent, stats.dropped_closed, stats.pending) == (2, 1, 1, 0)
    assert client.flush(0.1) == 0


def test_aclose_from_an_event_loop(fake):
    client = fake()

    async def handler_then_shutdown():
        client.emit("m", {"x": 1.0})  # fine inside a coroutine: never blocks
        return await client.aclose(timeout=2.0)

    assert asyncio.run(handler_then_shutdown()).sent == 1


def test_emit_from_many_threads_counts_exactly(fake):
    client = fake(max_queue=3000, envelope_size=50)
    client._producer.acknowledge = False

    def burst():
        for i in range(1000):
            client.emit("m", {"x": float(i)})

    threads = [threading.Thread(target=burst) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    stats = client.stats()
    assert stats.pending == 3000 and stats.dropped_queue_full == 5000 and stats.emitted == 8000


def test_secrets_are_never_logged_or_shown(fake, caplog):
    caplog.set_level(logging.DEBUG, logger="streamdrift.client")
    config = {
        "security.protocol": "SASL_SSL",
        "sasl.mechanism": "SCRAM-SHA-512",
        "sasl.username": "svc",
        "sasl.password": "hunter2-secret",
        "ssl.key.password": "k3y-pass",
    }
    client = fake(config=config)
    assert client._producer.config["sasl.password"] == "hunter2-secret"  # librdkafka gets it...
    shown = caplog.text + repr(client) + str(client.stats())
    # ...nobody sees it
    assert "svc" in caplog.text and "hunter2" not in shown and "k3y-pass" not in shown
    assert masked_config(config)["sasl.password"] == "**********"


# --- configured like the workers: the same STREAMDRIFT_* variables -----------------------------


def test_from_env_uses_the_workers_kafka_variables(fake):
    environ = {
        "STREAMDRIFT_KAFKA_BOOTSTRAP": "kafka://k1:9093",
        "STREAMDRIFT_KAFKA_SECURITY_PROTOCOL": "SASL_PLAINTEXT",
        "STREAMDRIFT_KAFKA_SASL_MECHANISM": "SCRAM-SHA-256",
        "STREAMDRIFT_KAFKA_SASL_USERNAME": "svc",
        "STREAMDRIFT_KAFKA_SASL_PASSWORD": "pw",
        "STREAMDRIFT_INPUT_TOPIC": "preds",
        "STREAMDRIFT_REDIS_URL": "redis://:other-secret@r:6379/0",  # a worker setting: not read
    }
    client = DriftClient.from_env(environ, config={"linger.ms": 20}, linger=0.5)
    try:
        config = client._producer.config
        assert (
            config["bootstrap.servers"] == "k1:9093" and config["sasl.mechanism"] == "SCRAM-SHA-256"
        )
        assert (config["sasl.username"], config["sasl.password"], config["linger.ms"]) == (
            "svc",
            "pw",
            20,
        )
        assert client.topic == "preds" and client.linger == 0.5
        assert "other-secret" not in repr(config)
    finally:
        client.close(timeout=1.0)
    # a topic given to from_env wins over STREAMDRIFT_INPUT_TOPIC; os.environ by default
    with DriftClient.from_env(environ, topic="mine") as client:
        assert client.topic == "mine"


def test_from_env_reads_os_environ_by_default(fake, monkeypatch):
    for name in VARIABLES:
        monkeypatch.delenv(name, raising=False)
    monkeypatch.delenv(SECRETS_DIR, raising=False)
    monkeypatch.setenv("STREAMDRIFT_KAFKA_BOOTSTRAP", "b1:9092,b2:9092")
    with DriftClient.from_env() as client:
        assert client._producer.config["bootstrap.servers"] == "b1:9092,b2:9092"
        assert client._producer.config["security.protocol"] == "PLAINTEXT"
        assert client.topic == DEFAULT_TOPIC


def _client_source() -> str:
    return "\n".join(path.read_text() for path in sorted((ROOT / "client" / "src").rglob("*.py")))


def test_every_variable_the_client_reads_is_a_worker_setting():
    """The client reads the workers' variables itself (it must not import the worker): the same
    names, so that one environment configures both and they cannot drift apart."""
    settings = {f"STREAMDRIFT_{name.upper()}" for name in Settings.model_fields}
    assert set(VARIABLES) <= settings, f"not worker settings: {set(VARIABLES) - settings}"
    # Settings.load's secrets folder is not a setting itself: the same variable, read there
    assert f'"{SECRETS_DIR}"' in (ROOT / "streams" / "settings.py").read_text()
    # every STREAMDRIFT_* name in the client's code (and docstrings) is a worker setting too
    named = set(re.findall(r"STREAMDRIFT_[A-Z0-9_]*[A-Z0-9](?![A-Z0-9_]*\*)", _client_source()))
    assert set(VARIABLES) <= named
    assert named <= settings | {SECRETS_DIR}, sorted(named - settings - {SECRETS_DIR})
    # and every Kafka connection setting of the workers is one the client reads
    kafka = {name for name in settings if name.startswith("STREAMDRIFT_KAFKA_")}
    assert kafka | {"STREAMDRIFT_INPUT_TOPIC"} == set(VARIABLES)


def _environments(tmp_path: Path) -> list[dict[str, str]]:
    ca, cert, key = (tmp_path / name for name in ("ca.pem", "client.pem", "client.key"))
    for path in (ca, cert, key):
        path.write_text("not read here")
    secrets = tmp_path / "secrets"
    secrets.mkdir()
    (secrets / "streamdrift_kafka_sasl_password").write_text("from-a-file\n")
    (secrets / "STREAMDRIFT_KAFKA_SSL_KEY_PASSWORD").write_text("key-pass")
    return [
        {},
        {"STREAMDRIFT_KAFKA_BOOTSTRAP": "kafka://a:1,b:2 ", "STREAMDRIFT_INPUT_TOPIC": "in.put"},
        {"STREAMDRIFT_KAFKA_SECURITY_PROTOCOL": "SSL", "STREAMDRIFT_KAFKA_SSL_CAFILE": str(ca)},
        {
            "STREAMDRIFT_KAFKA_SECURITY_PROTOCOL": "SSL",
            "STREAMDRIFT_KAFKA_SSL_CAFILE": str(ca),
            "STREAMDRIFT_KAFKA_SSL_CERTFILE": str(cert),
            "STREAMDRIFT_KAFKA_SSL_KEYFILE": str(key),
            "STREAMDRIFT_KAFKA_SSL_KEY_PASSWORD": "k",
        },
        {
            "STREAMDRIFT_KAFKA_SECURITY_PROTOCOL": "SASL_SSL",
            "STREAMDRIFT_KAFKA_SASL_MECHANISM": "SCRAM-SHA-512",
            "streamdrift_kafka_sasl_username": "svc",  # names in any case, as the worker reads them
            "STREAMDRIFT_KAFKA_SASL_PASSWORD": "pw",
            "STREAMDRIFT_KAFKA_SSL_CAFILE": str(ca),
        },
        # files are not read without TLS (the worker does not refuse missing ones then)
        {
            "STREAMDRIFT_KAFKA_SECURITY_PROTOCOL": "SASL_PLAINTEXT",
            "STREAMDRIFT_KAFKA_SASL_USERNAME": "svc",
            "STREAMDRIFT_KAFKA_SASL_PASSWORD": "pw",
            "STREAMDRIFT_KAFKA_SSL_CAFILE": str(tmp_path / "missing.pem"),
        },
        # the secrets folder: its files, under the variables set in the environment
        {
            SECRETS_DIR: str(secrets),
            "STREAMDRIFT_KAFKA_SECURITY_PROTOCOL": "SASL_SSL",
            "STREAMDRIFT_KAFKA_SASL_USERNAME": "svc",
            "STREAMDRIFT_KAFKA_SSL_CERTFILE": str(cert),
            "STREAMDRIFT_KAFKA_SSL_KEYFILE": str(key),
        },
        {
            SECRETS_DIR: str(secrets),
            "STREAMDRIFT_KAFKA_SECURITY_PROTOCOL": "SSL",
            "STREAMDRIFT_KAFKA_SSL_KEY_PASSWORD": "env-wins",
        },
    ]


def test_the_client_and_the_worker_make_the_same_kafka_properties(tmp_path, monkeypatch):
    for environ in _environments(tmp_path):
        for name in (*VARIABLES, SECRETS_DIR):
            monkeypatch.delenv(name, raising=False)
        for name, value in environ.items():
            monkeypatch.setenv(name, value)
        worker = Settings.load()
        client = settings_from_env()
        assert client.config == confluent_config(worker), environ
        assert client.topic == worker.input_topic
        assert "pw" not in repr(client) and "key-pass" not in repr(client)


@pytest.mark.parametrize(
    "environ, named",
    [
        ({"STREAMDRIFT_KAFKA_BOOTSTRAP": "k:notaport"}, "STREAMDRIFT_KAFKA_BOOTSTRAP"),
        ({"STREAMDRIFT_KAFKA_SECURITY_PROTOCOL": "TLS"}, "STREAMDRIFT_KAFKA_SECURITY_PROTOCOL"),
        (
            {
                "STREAMDRIFT_KAFKA_SECURITY_PROTOCOL": "SASL_SSL",
                "STREAMDRIFT_KAFKA_SASL_MECHANISM": "GSSAPI",
                "STREAMDRIFT_KAFKA_SASL_USERNAME": "svc",
                "STREAMDRIFT_KAFKA_SASL_PASSWORD": "hunter2-secret",
            },
            "STREAMDRIFT_KAFKA_SASL_MECHANISM",
        ),
        (
            {
                "STREAMDRIFT_KAFKA_SECURITY_PROTOCOL": "SASL_SSL",
                "STREAMDRIFT_KAFKA_SASL_PASSWORD": "hunter2-secret",
            },
            "STREAMDRIFT_KAFKA_SASL_USERNAME",
        ),
        (
            {
                "STREAMDRIFT_KAFKA_SECURITY_PROTOCOL": "SSL",
                "STREAMDRIFT_KAFKA_SSL_CERTFILE": "/nonexistent/c.pem",
                "STREAMDRIFT_KAFKA_SSL_KEY_PASSWORD": "hunter2-secret",
            },
            "STREAMDRIFT_KAFKA_SSL_KEYFILE",
        ),
        (
            {
                "STREAMDRIFT_KAFKA_SECURITY_PROTOCOL": "SSL",
                "STREAMDRIFT_KAFKA_SSL_CAFILE": "/no/ca",
            },
            "STREAMDRIFT_KAFKA_SSL_CAFILE",
        ),
        ({"STREAMDRIFT_INPUT_TOPIC": "a topic"}, "STREAMDRIFT_INPUT_TOPIC"),
    ],
)
def test_a_bad_variable_is_named_and_no_secret_is_shown(fake, environ, named):
    with pytest.raises(ValueError) as raised:
        DriftClient.from_env(environ)
    message = str(raised.value)
    assert named in message and "hunter2" not in message
    with pytest.raises(ValueError):  # the worker refuses the same environment
        Settings(**{k.removeprefix("STREAMDRIFT_").lower(): v for k, v in environ.items()})


# --- the one produce-with-retry step ------------------------------------------------------------


def test_produce_with_retry_serves_deliveries_until_the_queue_has_room():
    producer = FakeProducer({})
    producer.refuse = 3
    full: list[int] = []
    delivered = []
    assert produce_with_retry(
        producer,
        "t",
        b"v",
        b"k",
        poll_timeout=0.0,
        on_delivery=lambda error, message: delivered.append(error),
        on_queue_full=lambda: full.append(1),
    )
    assert producer.messages == [("t", b"k", b"v")] and len(full) == 3
    producer.poll(0)
    assert delivered == [None]


def test_produce_with_retry_gives_up_after_its_attempts_and_raises_other_errors():
    producer = FakeProducer({})
    producer.refuse = 5
    assert produce_with_retry(producer, "t", b"v", attempts=2, poll_timeout=0.0) is False
    assert producer.refuse == 3 and producer.messages == []
    with pytest.raises(ValueError):
        produce_with_retry(producer, "t", b"v", attempts=0)

    def refuse(*args, **kwargs):
        raise KafkaException(KafkaError(KafkaError.MSG_SIZE_TOO_LARGE))

    producer.produce = refuse
    with pytest.raises(KafkaException):
        produce_with_retry(producer, "t", b"v")


def test_produce_with_retry_passes_partition_and_headers_to_librdkafka():
    seen = {}

    class Recorder(FakeProducer):
        def produce(self, topic, value, key, partition=-1, on_delivery=None, headers=None):
            seen.update(partition=partition, headers=headers)

    produce_with_retry(Recorder({}), "t", b"v", partition=2, headers=[("h", b"1")])
    assert seen == {"partition": 2, "headers": [("h", b"1")]}


def test_the_only_produce_loops_are_the_clients_helper():
    """One implementation: no other code retries ``produce`` on BufferError itself."""
    offenders = [
        path.relative_to(ROOT).as_posix()
        for folder in ("streams", "bench", "tests", "client")
        for path in sorted((ROOT / folder).rglob("*.py"))
        if "except BufferError" in path.read_text() and path.name != "test_client.py"
    ]
    assert offenders == ["client/src/producer.py"]


# --- the FastAPI example (FastAPI is not installed: its core logic is plain Python) -------------


def test_the_fastapi_example_compiles_and_its_handler_emits_one_event(fake):
    path = ROOT / "examples" / "fastapi_service.py"
    py_compile.compile(str(path), doraise=True)
    spec = importlib.util.spec_from_file_location("fastapi_service_example", path)
    example = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(example)  # must not need fastapi at import time
    client = fake()
    answer = example.predict(
        client, example.PredictRequest(features={"amount": 120.0, "country": "US"}, request_id="r1")
    )
    assert answer["event_id"] == "r1" and 0 < answer["fraud_probability"] < 1
    client.flush(5.0)
    (event,) = events_of(client._producer.messages[0][2])
    assert (event["model"], event["event_id"], event["prediction"]) == (
        "fraud",
        "r1",
        answer["fraud_probability"],
    )


# --- against the embedded Tansu broker ----------------------------------------------------------


@pytest.mark.timeout(60)
def test_every_event_arrives_exactly_once_in_valid_envelopes(
    broker: EmbeddedBroker, topics: Topics
):
    models = ["fraud", "pricing", "churn"]
    with DriftClient(broker.bootstrap, topics.input, envelope_size=50, linger=0.2) as client:
        for i in range(3000):
            assert client.emit(
                models[i % 3], {"x": float(i), "c": "DE"}, prediction=0.5, event_id=f"e{i}"
            )
    stats = client.stats()
    assert (stats.sent, stats.pending, stats.delivery_failed, stats.dropped_queue_full) == (
        3000,
        0,
        0,
        0,
    )
    messages = consume_all(broker.bootstrap, topics.input, expect_at_least=stats.messages_sent)
    assert len(messages) == stats.messages_sent
    ids, partitions = [], {}
    for message in messages:
        events, rejections = decode_events(message.value, 0.0, Limits())
        assert rejections == [] and 1 <= len(events) <= 50
        assert {e.model for e in events} == {message.key.decode()}  # keyed by model
        partitions.setdefault(message.key, set()).add(message.partition)
        ids += [e.event_id for e in events]
    assert sorted(ids) == sorted(f"e{i}" for i in range(3000))  # each exactly once
    # one partition per model
    assert all(len(p) == 1 for p in partitions.values()) and len(partitions) == 3


@pytest.mark.timeout(60)
def test_a_burst_beyond_the_queue_is_dropped_and_counted_and_the_rest_delivered(
    broker: EmbeddedBroker, topics: Topics
):
    client = DriftClient(
        broker.bootstrap, topics.input, envelope_size=100, linger=0.05, max_queue=500
    )
    slowest = 0.0
    for i in range(20_000):
        start = time.perf_counter()
        client.emit("m", {"x": float(i)}, event_id=f"e{i}")
        slowest = max(slowest, time.perf_counter() - start)
    stats = client.close(timeout=20.0)
    # never waits for the broker (each call is microseconds; generous for a busy machine)
    assert slowest < 0.5
    accepted = stats.emitted - stats.dropped_queue_full
    assert stats.dropped_queue_full > 0 and stats.sent == accepted and stats.pending == 0
    messages = consume_all(broker.bootstrap, topics.input, expect_at_least=stats.messages_sent)
    assert sum(len(events_of(m.value)) for m in messages) == accepted


@pytest.mark.timeout(60)
@pytest.mark.parametrize("message_timeout_ms, close_timeout", [(500, 3.0), (60_000, 1.0)])
def test_broker_down_emit_returns_at_once_and_close_keeps_its_budget(
    message_timeout_ms, close_timeout
):
    port = free_port()  # nothing listens there
    client = DriftClient(
        f"127.0.0.1:{port}",
        "t",
        envelope_size=20,
        linger=0.05,
        max_queue=300,
        config={"message.timeout.ms": message_timeout_ms},
    )
    slowest = 0.0
    for i in range(500):
        start = time.perf_counter()
        client.emit("m", {"x": float(i)})
        slowest = max(slowest, time.perf_counter() - start)
    assert slowest < 0.5
    start = time.monotonic()
    stats = client.close(timeout=close_timeout)
    assert time.monotonic() - start < close_timeout + 0.25
    assert (
        stats.sent == 0
        and stats.pending == 0
        and stats.emitted == 500
        and stats.dropped_queue_full > 0
    )
    assert stats.delivery_failed + stats.dropped_closed == 500 - stats.dropped_queue_full
    assert accounted(stats) == 500 and stats.last_error
