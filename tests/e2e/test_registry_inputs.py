"""End to end: topics in the Schema Registry wire format — Avro and Protobuf framed by
confluent-kafka's own serializers against a real registry — consumed by a real worker on a real
broker and Redis: a drift in a mapped feature is alerted, a schema evolved mid-stream is read, a
registry frozen for 20 s loses and dead-letters nothing (its records wait), and an unframed
message is dead-lettered with its reason."""

from __future__ import annotations

import json
import time
import uuid

import numpy as np
import pytest
from conftest import consume_all, produce, told_once, wait_for
from platforms import registry

from streamdrift.streams.kafka.admin import create_topics
from streamdrift.streams.ops.status import read_status

pytestmark = pytest.mark.e2e

CONFIG = """
inputs:
  - topic: {avro}
    format: avro
    mapping:
      model: model
      event_id: request_id
      features: inputs
      prediction: score
  - topic: {protobuf}
    format: protobuf
    mapping:
      model: const:payments
      features: "{{amount: amount, items: items}}"
"""
AVRO = {
    "type": "record",
    "name": "Inference",
    "namespace": "acme",
    "fields": [
        {"name": "model", "type": "string"},
        {"name": "request_id", "type": "string"},
        {
            "name": "inputs",
            "type": {
                "type": "record",
                "name": "Inputs",
                "fields": [{"name": "amount", "type": "double"}, {"name": "age", "type": "double"}],
            },
        },
        {"name": "score", "type": "double"},
    ],
}
PROTO = """
syntax = "proto3";
package acme;
message Payment { double amount = 1; int64 items = 2; }
"""


def evolved(*added: str) -> str:
    """The Avro schema with ``added`` fields in its inputs (defaults: backward compatible)."""
    schema = json.loads(json.dumps(AVRO))
    for name in added:
        schema["fields"][2]["type"]["fields"].append({"name": name, "type": "double", "default": 0})
    return json.dumps(schema)


def records(n: int, *, seed: int, shift: float = 0.0, added: tuple[str, ...] = ()) -> list[dict]:
    rng = np.random.default_rng(seed)
    return [
        {
            "model": "fraud",
            "request_id": f"r-{seed}-{i}",
            "inputs": {
                "amount": float(rng.normal() + shift),
                "age": float(rng.normal(40, 5)),
                **{name: float(rng.exponential(3)) for name in added},
            },
            "score": float(rng.uniform()),
        }
        for i in range(n)
    ]


def test_avro_and_protobuf_topics_through_an_evolution_and_a_frozen_registry(
    broker, topics, start_worker, redis_client, schema_registry, tmp_path
):
    avro, protobuf = f"{topics.input}-avro", f"{topics.input}-protobuf"
    create_topics(broker.bootstrap, {avro: 2, protobuf: 2})
    config = tmp_path / "registry.yaml"
    config.write_text(CONFIG.format(avro=avro, protobuf=protobuf))
    worker = start_worker(config=config, schema_registry_url=schema_registry.url).wait_ready()
    url = schema_registry.url

    def send(topic: str, values: list[bytes]) -> None:
        produce(broker.bootstrap, topic, values, keys=[str(uuid.uuid4()) for _ in values])

    def counts(model: str) -> dict[str, int]:
        series = read_status(redis_client, topics.group_id)["models"].get(model, {})
        return {feature: s.get("count", 0) for feature, s in series.items()}

    payment = registry.protobuf_class(PROTO, "Payment")
    rng = np.random.default_rng(7)
    payments = [
        payment(amount=float(rng.gamma(2.0)), items=int(rng.integers(0, 5))) for _ in range(1_500)
    ]
    send(protobuf, registry.protobuf_values(url, protobuf, payments))
    send(avro, [b'{"model": "fraud"}'])  # JSON where Avro is expected: dead-lettered
    send(avro, registry.avro_values(url, avro, json.dumps(AVRO), records(3_000, seed=1)))
    shifted = records(2_000, seed=2, shift=2.0, added=("tenure",))
    send(avro, registry.avro_values(url, avro, evolved("tenure"), shifted))  # evolved mid-stream
    wait_for(lambda: counts("fraud").get("amount", 0) == 5_000, 120, "5,000 Avro events")
    assert counts("fraud").get("tenure") == 2_000, counts("fraud")
    assert {counts("payments")[f] for f in ("amount", "items")} == {1_500}, counts("payments")

    # a new version the worker has never seen, then the registry freezes for 20 s
    later = records(500, seed=3, added=("tenure", "balance"))
    frozen = registry.avro_values(url, avro, evolved("tenure", "balance"), later)
    schema_registry.pause()
    try:
        send(avro, frozen)
        time.sleep(20)
        assert counts("fraud").get("amount") == 5_000  # waiting, neither read nor dead-lettered
        assert "streamdrift_schema_registry_up 0.0" in worker.metrics_text(
            names=["streamdrift_schema_registry_up"]
        )
    finally:
        schema_registry.resume()
    wait_for(lambda: counts("fraud").get("amount", 0) == 5_500, 120, "the records that waited")
    time.sleep(2)
    fraud = counts("fraud")
    assert {fraud[f] for f in ("amount", "age", "prediction")} == {5_500}, fraud
    assert (fraud["tenure"], fraud["balance"]) == (2_500, 500), fraud  # each from its version on
    alerts = [json.loads(m.value) for m in consume_all(broker.bootstrap, topics.alerts)]
    moved = {a["data"]["feature"] for a in alerts if a["type"] == "io.streamdrift.drift.detected"}
    assert "amount" in moved and not moved & {"age", "prediction"}, moved
    told_once(broker, topics, "fraud")
    letters = consume_all(broker.bootstrap, topics.dlq, expect_at_least=1)
    assert [
        (m.header("streamdrift-reason"), m.header("streamdrift-source-topic")) for m in letters
    ] == [(b"missing_schema_id", avro.encode())]
