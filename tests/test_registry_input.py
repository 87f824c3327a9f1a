"""Inputs in the Schema Registry wire format (streams.pipeline.wire, streams.kafka.registry)
against a real registry (Apicurio, Confluent-compatible API), with messages framed by
confluent-kafka's own serializers: Avro and Protobuf (registered serialized, as Confluent's
clients do, or as .proto text) read into the input's JSON mapping; a schema evolved mid-stream;
unknown ids, unframed values, payloads their schema does not read and schemas that would cost
unbounded work refused with their reason; a registry that stops answering waited out."""

from __future__ import annotations

import asyncio
import json
import struct
import uuid
from typing import Any

import pytest
from confluent_kafka.schema_registry import AsyncSchemaRegistryClient
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from platforms import registry

from streamdrift.streams.kafka.registry import SchemaCache
from streamdrift.streams.pipeline import wire
from streamdrift.streams.pipeline.codec import Limits, Reason
from streamdrift.streams.pipeline.inputs import input_specs
from streamdrift.streams.pipeline.mapping import Mapper
from streamdrift.streams.pipeline.outcome import Record

AVRO_V1 = {
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
                "fields": [
                    {"name": "amount", "type": "double"},
                    {"name": "country", "type": "string"},
                ],
            },
        },
        {"name": "score", "type": "float"},
    ],
}
PROTO = """
syntax = "proto3";
package acme;
message Inference {
  string model = 1;
  int64 count = 2;
  double amount = 3;
  map<string, double> extra = 4;
  enum Channel { WEB = 0; APP = 1; }
  Channel channel = 5;
}
"""
MAPPING = {"model": "model", "event_id": "request_id", "features": "inputs", "prediction": "score"}


def subject() -> str:
    return f"reg-{uuid.uuid4().hex[:10]}"


def avro_v2() -> dict[str, Any]:
    """V1 with a field added (with a default: a backward-compatible evolution)."""
    schema = json.loads(json.dumps(AVRO_V1))
    schema["fields"][2]["type"]["fields"].append(
        {"name": "tenure", "type": "double", "default": 0.0}
    )
    return schema


def read(url: str, kind: str, values: list[bytes], mapping: dict[str, Any]) -> tuple[list, list]:
    """The events and dead letters of ``values`` on an input of format ``kind``, the schemas
    looked up first as the runtime does."""
    (spec,) = input_specs({"inputs": [{"topic": "t", "format": kind, "mapping": mapping}]})
    client = AsyncSchemaRegistryClient({"url": url, "timeout": 10, "max.retries": 0})
    cache = SchemaCache(client, url)
    mapper = Mapper(spec, Limits(), cache.get)
    records = [Record(i, 1.0, value) for i, value in enumerate(values)]
    ids = {wire.schema_id(v) for v in values} - {None}
    asyncio.run(cache.ensure([i for i in ids if i is not None], kind))
    converted, letters = mapper.convert(records)
    events = [json.loads(r.value or b"") for r in converted]
    return events, letters


def test_avro_records_are_mapped_and_a_field_added_mid_stream_is_read(schema_registry):
    topic = subject()
    old = [
        {"model": "fraud", "request_id": f"r{i}", "inputs": {"amount": 1.5 * i, "country": "DE"},
         "score": 0.25}
        for i in range(3)
    ]  # fmt: skip
    new = [{**old[0], "request_id": "r9", "inputs": {**old[0]["inputs"], "tenure": 4.0}}]
    values = registry.avro_values(schema_registry.url, topic, json.dumps(AVRO_V1), old)
    values += registry.avro_values(schema_registry.url, topic, json.dumps(avro_v2()), new)
    assert wire.schema_id(values[0]) != wire.schema_id(values[-1])  # a new version, a new id
    events, letters = read(schema_registry.url, "avro", values, MAPPING)
    assert not letters
    assert events[1] == {
        "model": "fraud",
        "features": {"amount": 1.5, "country": "DE"},
        "event_id": "r1",
        "prediction": 0.25,
    }
    assert events[-1]["features"] == {"amount": 0.0, "country": "DE", "tenure": 4.0}


@pytest.mark.parametrize("registered", ["serialized", "text"])
def test_protobuf_messages_keep_zeros_and_int64_numbers(schema_registry, registered):
    topic = subject()
    inference = registry.protobuf_class(PROTO, "Inference")
    message = inference(model="fraud", count=2**40, amount=0.0, channel=1)
    message.extra["tenure"] = 3.5
    if registered == "serialized":  # Confluent's serializer registers the descriptor, base64
        [value] = registry.protobuf_values(schema_registry.url, topic, [message])
    else:  # registered by hand as .proto text: the worker compiles it
        schema_id = registry.register(schema_registry.url, f"{topic}-value", PROTO, "PROTOBUF")
        value = struct.pack(">bI", 0, schema_id) + b"\x00" + message.SerializeToString()
    mapping = {"model": "model", "features": "{count: count, amount: amount, channel: channel}"}
    events, letters = read(schema_registry.url, "protobuf", [value], mapping)
    assert not letters
    assert events == [
        {"model": "fraud", "features": {"count": 2**40, "amount": 0.0, "channel": "APP"}}
    ]


def test_json_schema_payloads_are_mapped_as_json(schema_registry):
    schema = {
        "$schema": "http://json-schema.org/draft-07/schema#",
        "title": "Inference",
        "type": "object",
        "properties": {"model": {"type": "string"}, "inputs": {"type": "object"}},
        "required": ["model", "inputs"],
    }
    values = registry.json_values(
        schema_registry.url,
        subject(),
        json.dumps(schema),
        [{"model": "fraud", "inputs": {"amount": 3.5, "country": "DE"}}],
    )
    deep = values[0][:5] + b"[" * 100_000 + b"]" * 100_000
    events, letters = read(
        schema_registry.url, "jsonschema", [*values, values[0][:5] + b"{no", deep], MAPPING
    )
    assert events == [{"model": "fraud", "features": {"amount": 3.5, "country": "DE"}}]
    assert [d.reason for d in letters] == [Reason.MALFORMED_JSON, Reason.TOO_DEEP]


def test_what_cannot_be_read_is_dead_lettered_with_its_reason(schema_registry):
    topic = subject()
    [good] = registry.avro_values(
        schema_registry.url,
        topic,
        json.dumps(AVRO_V1),
        [{"model": "m", "request_id": "r", "inputs": {"amount": 1.0, "country": "FR"}, "score": 1}],
    )
    zero_width = json.dumps(
        {"type": "array", "items": {"type": "record", "name": "E", "fields": []}}
    )
    unusable = registry.register(schema_registry.url, f"{topic}-bomb", zero_width, "AVRO")
    values = [
        b'{"model": "m"}',  # plain JSON: no framing
        struct.pack(">bI", 0, 987_654_321) + good[5:],  # an id the registry does not have
        good[:-3],  # cut short
        good + b"\x00\x00",  # bytes left over
        struct.pack(">bI", 0, unusable) + b"\x02\x00",
    ]
    _, letters = read(schema_registry.url, "avro", values, MAPPING)
    assert [(d.offset, d.reason) for d in letters] == [
        (0, Reason.MISSING_SCHEMA_ID),
        (1, Reason.SCHEMA_NOT_FOUND),
        (2, Reason.SCHEMA_MISMATCH),
        (3, Reason.SCHEMA_MISMATCH),
        (4, Reason.SCHEMA_UNUSABLE),
    ]
    assert "items that take no bytes" in letters[4].detail
    assert "987654321" in letters[1].detail


def test_a_registry_that_stops_answering_is_waited_for(schema_registry):
    topic = subject()
    [value] = registry.avro_values(
        schema_registry.url,
        topic,
        json.dumps(AVRO_V1),
        [{"model": "m", "request_id": "r", "inputs": {"amount": 2.0, "country": "FR"}, "score": 0}],
    )
    states: list[bool] = []

    async def main() -> None:
        conf = {"url": schema_registry.url, "timeout": 1, "max.retries": 0}
        client = AsyncSchemaRegistryClient(conf)
        cache = SchemaCache(client, schema_registry.url, states.append)
        schema_registry.pause()
        try:
            waiting = asyncio.create_task(cache.ensure([wire.schema_id(value) or 0], "avro"))
            await asyncio.sleep(3.0)
            assert not waiting.done() and cache.get(wire.schema_id(value) or 0) is None
        finally:
            schema_registry.resume()
        await asyncio.wait_for(waiting, 30)
        assert wire.decode(value, "avro", cache.get)["inputs"]["amount"] == 2.0

    asyncio.run(main())
    assert states[0] is False and states[-1] is True


def test_a_wire_format_input_needs_a_registry_url():
    from streamdrift.streams.kafka.registry import schema_cache
    from streamdrift.streams.settings import Settings

    specs = input_specs({"inputs": [{"topic": "t", "format": "avro", "mapping": MAPPING}]})
    with pytest.raises(ValueError, match="set STREAMDRIFT_SCHEMA_REGISTRY_URL"):
        schema_cache(Settings(), specs, lambda up: None)


@settings(
    max_examples=200, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(st.binary(max_size=200), st.sampled_from(["avro", "protobuf"]))
def test_any_payload_after_a_known_id_is_read_or_dead_lettered(schema_registry, payload, kind):
    known = _known_ids(schema_registry.url)
    schema_id = known[kind]
    value = struct.pack(">bI", 0, schema_id) + payload
    events, letters = read(schema_registry.url, kind, [value], _mappings[kind])
    assert len(events) + len(letters) == 1


_ids: dict[str, dict[str, int]] = {}
_mappings = {
    "avro": MAPPING,
    "protobuf": {"model": "model", "features": "{amount: amount, count: count}"},
}


def _known_ids(url: str) -> dict[str, int]:
    if url not in _ids:
        topic = subject()
        _ids[url] = {
            "avro": registry.register(url, f"{topic}-a", json.dumps(AVRO_V1), "AVRO"),
            "protobuf": registry.register(url, f"{topic}-p", PROTO, "PROTOBUF"),
        }
    return _ids[url]
