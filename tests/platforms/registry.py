"""Messages in the Schema Registry wire format, made by confluent-kafka's own serializers against
a real registry (the tests' Apicurio): what a Confluent producer writes."""

from __future__ import annotations

import tempfile
from importlib.resources import files
from pathlib import Path
from typing import Any

from confluent_kafka.schema_registry import Schema, SchemaRegistryClient
from confluent_kafka.schema_registry.avro import AvroSerializer
from confluent_kafka.schema_registry.json_schema import JSONSerializer
from confluent_kafka.schema_registry.protobuf import ProtobufSerializer
from confluent_kafka.serialization import MessageField, SerializationContext
from google.protobuf import descriptor_pb2, descriptor_pool, message_factory
from grpc_tools import protoc  # type: ignore[import-untyped]


def client(url: str) -> SchemaRegistryClient:
    return SchemaRegistryClient({"url": url})


def avro_values(url: str, topic: str, schema: str, records: list[dict[str, Any]]) -> list[bytes]:
    """``records`` framed with ``schema`` (registered under ``<topic>-value`` on first use)."""
    serialize = AvroSerializer(client(url), schema)
    context = SerializationContext(topic, MessageField.VALUE)
    return [serialize(record, context) for record in records]


def json_values(url: str, topic: str, schema: str, records: list[dict[str, Any]]) -> list[bytes]:
    """``records`` as JSON framed with the JSON Schema ``schema`` (validated, then registered)."""
    serialize = JSONSerializer(schema, client(url))
    context = SerializationContext(topic, MessageField.VALUE)
    return [serialize(record, context) for record in records]


def protobuf_class(source: str, name: str) -> Any:
    """The message class ``name`` of a ``.proto`` source, compiled by protoc into a pool of its
    own (a file named after ``name``: the registry subject's schema)."""
    with tempfile.TemporaryDirectory() as folder:
        root = Path(folder)
        proto = f"{name.lower()}.proto"
        (root / proto).write_text(source)
        out = root / "out.pb"
        include = files("grpc_tools") / "_proto"
        args = ["protoc", f"-I{root}", f"-I{include}", "--include_imports"]
        assert protoc.main([*args, f"--descriptor_set_out={out}", proto]) == 0
        descriptors = descriptor_pb2.FileDescriptorSet.FromString(out.read_bytes())
    pool = descriptor_pool.DescriptorPool()
    for file in descriptors.file:
        pool.Add(file)
    package = descriptors.file[-1].package
    full = f"{package}.{name}" if package else name
    return message_factory.GetMessageClass(pool.FindMessageTypeByName(full))


def protobuf_values(url: str, topic: str, messages: list[Any]) -> list[bytes]:
    """``messages`` (all of one class) framed, their schema registered under ``<topic>-value``."""
    serialize = ProtobufSerializer(type(messages[0]), client(url), {"use.deprecated.format": False})
    context = SerializationContext(topic, MessageField.VALUE)
    return [serialize(message, context) for message in messages]


def register(url: str, subject: str, text: str, kind: str) -> int:
    """Register a schema as it is (``kind``: AVRO, PROTOBUF, JSON); its id."""
    return int(client(url).register_schema(subject, Schema(text, kind)))
