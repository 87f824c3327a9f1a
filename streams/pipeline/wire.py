"""Messages in the Confluent wire format, written with a Schema Registry: a magic byte ``0``, the
schema id (4 bytes, big-endian), for Protobuf the message indexes (zig-zag varints, a count then
the indexes; one ``0`` byte for the file's first message), then the Avro binary, Protobuf or JSON
payload.

Pure: :mod:`streams.registry` fetches the registry's schemas; here a schema's text (and the texts
it references) becomes a :class:`Schema` that decodes payloads into plain Python values, which the
input's JSON mapping then reads. Avro is read with fastavro, Protobuf with the protobuf runtime
from descriptors the protocol compiler (grpcio-tools) makes of the ``.proto`` text — the format
every registry serves (Confluent's, Apicurio's ccompat API).

Bounded whatever arrives: a payload is at most the input's message size, and a schema that would
let a small payload cost unbounded work — an Avro array of items that take no bytes (``null``, an
empty record, ``fixed`` of size 0): a count of 2^62 would loop without reading — is refused when
it is loaded, not when a message uses it.
"""

from __future__ import annotations

import base64
import binascii
import importlib
import io
import json
import struct
import tempfile
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any, Protocol

import msgspec

from streamdrift.streams.pipeline.codec import Invalid, Limits, Reason, deeper_than

MAGIC = 0
FORMATS = ("avro", "protobuf", "jsonschema")
_HEADER = struct.Struct(">bI")
_MAX_INDEXES = 64


class SchemaUnusable(Exception):
    """The registry's schema cannot be used to read messages; ``str()`` says why."""


class Schema(Protocol):
    def decode(self, payload: bytes, indexes: Sequence[int]) -> Any: ...


class Unusable:
    """A schema the registry has but that cannot read messages (``reason`` says why)."""

    def __init__(self, reason: str) -> None:
        self.reason = reason


MISSING = "missing"  # the registry does not know the id
Entry = Schema | Unusable | str  # a usable schema, an unusable one, or MISSING
Lookup = Callable[[int], "Entry | None"]  # what the registry said of a schema id (None: not asked)


def schema_id(value: bytes | None) -> int | None:
    """The schema id a framed message names (None if it is not framed)."""
    if value is None or len(value) < _HEADER.size or value[0] != MAGIC:
        return None
    return int(_HEADER.unpack_from(value)[1])


def decode(value: bytes, kind: str, lookup: Lookup) -> Any:
    """The plain value of a framed message of format ``kind``; ``Invalid`` says why not."""
    found_id, indexes, payload = frame(value, kind == "protobuf")
    entry = lookup(found_id)
    if entry is None or entry == MISSING:
        raise Invalid(Reason.SCHEMA_NOT_FOUND, f"schema id {found_id} is not in the registry")
    if isinstance(entry, Unusable):
        raise Invalid(Reason.SCHEMA_UNUSABLE, f"schema id {found_id}: {entry.reason}")
    assert not isinstance(entry, str)
    return entry.decode(payload, indexes)


def frame(value: bytes, protobuf: bool) -> tuple[int, list[int], bytes]:
    """The schema id, the Protobuf message indexes and the payload of a framed message."""
    if len(value) < _HEADER.size or value[0] != MAGIC:
        raise Invalid(
            Reason.MISSING_SCHEMA_ID,
            "not in the Schema Registry wire format (magic byte 0, then a 4-byte schema id)",
        )
    _, schema_id = _HEADER.unpack_from(value)
    at, indexes = _HEADER.size, []
    if protobuf:
        count, at = _varint(value, at)
        if count > _MAX_INDEXES:
            raise Invalid(Reason.SCHEMA_MISMATCH, f"{count} message indexes")
        for _ in range(count):
            index, at = _varint(value, at)
            indexes.append(index)
    return schema_id, indexes or [0], value[at:]


def _varint(value: bytes, at: int) -> tuple[int, int]:
    """A zig-zag varint at ``at`` (as the wire format writes message indexes), and what follows."""
    result = shift = 0
    while True:
        if at >= len(value) or shift > 63:
            raise Invalid(Reason.SCHEMA_MISMATCH, "message indexes cut short")
        byte = value[at]
        at += 1
        result |= (byte & 0x7F) << shift
        shift += 7
        if not byte & 0x80:
            return (result >> 1) ^ -(result & 1), at


def load(kind: str, text: str, references: Mapping[str, str]) -> Schema:
    """The :class:`Schema` of the registry's ``text`` (``references``: the texts it imports,
    by the name it imports them as); ``SchemaUnusable`` if it cannot read messages."""
    if kind == "avro":
        return AvroSchema(text, references)
    if kind == "protobuf":
        return ProtobufSchema(text, references)
    return JsonPayload()


class JsonPayload:
    """JSON Schema: the payload is JSON (the mapping checks what it needs), nested at most
    ``max_depth`` deep like a native message."""

    max_depth = Limits().max_json_depth

    def decode(self, payload: bytes, indexes: Sequence[int]) -> Any:
        if deeper_than(payload, self.max_depth):
            raise Invalid(Reason.TOO_DEEP, f"nested deeper than {self.max_depth}")
        try:
            return msgspec.json.decode(payload)
        except (msgspec.DecodeError, RecursionError) as exc:
            raise Invalid(Reason.MALFORMED_JSON, str(exc)[:200]) from None


class AvroSchema:
    def __init__(self, text: str, references: Mapping[str, str]) -> None:
        import fastavro  # an optional dependency (the registry extra)

        named: dict[str, Any] = {}
        try:
            for reference in references.values():
                fastavro.parse_schema(json.loads(reference), named_schemas=named)
            self.parsed = fastavro.parse_schema(json.loads(text), named_schemas=named)
        except (ValueError, TypeError, KeyError, fastavro.schema.SchemaParseException) as exc:
            raise SchemaUnusable(f"Avro schema: {str(exc)[:200]}") from None
        _refuse_free_items(self.parsed, named)
        self._read = fastavro.schemaless_reader

    def decode(self, payload: bytes, indexes: Sequence[int]) -> Any:
        buffer = io.BytesIO(payload)
        try:
            value = self._read(buffer, self.parsed, None)
        except Exception as exc:  # fastavro raises what the bytes make it: all mean "not this"
            raise Invalid(
                Reason.SCHEMA_MISMATCH, f"Avro: {type(exc).__name__}: {str(exc)[:200]}"
            ) from None
        if buffer.tell() != len(payload):
            raise Invalid(
                Reason.SCHEMA_MISMATCH,
                f"Avro: {len(payload) - buffer.tell()} bytes left after the record",
            )
        return value


def _refuse_free_items(schema: Any, named: dict[str, Any]) -> None:
    """``SchemaUnusable`` if an array's items can take no bytes (see the module)."""
    seen: set[int] = set()

    def walk(node: Any) -> None:
        if isinstance(node, str):
            node = named.get(node, node)
        if isinstance(node, list):
            for branch in node:
                walk(branch)
            return
        if not isinstance(node, dict) or id(node) in seen:
            return
        seen.add(id(node))
        if node.get("type") == "array" and _free(node.get("items"), named, set()):
            raise SchemaUnusable("Avro schema: an array of items that take no bytes")
        for child in (node.get("items"), node.get("values"), *_fields(node)):
            if child is not None:
                walk(child)

    walk(schema)


def _fields(node: dict[str, Any]) -> list[Any]:
    return [field.get("type") for field in node.get("fields", []) if isinstance(field, dict)]


def _free(node: Any, named: dict[str, Any], seen: set[int]) -> bool:
    """Whether a value of this type is written in zero bytes."""
    if isinstance(node, str):
        if node in named:
            return _free(named[node], named, seen)
        return node == "null"
    if isinstance(node, dict) and id(node) not in seen:
        seen.add(id(node))
        kind = node.get("type")
        if kind == "record":
            return all(_free(child, named, seen) for child in _fields(node))
        if kind == "fixed":
            return node.get("size") == 0
        return kind == "null"
    return False


class ProtobufSchema:
    def __init__(self, text: str, references: Mapping[str, str]) -> None:
        from google.protobuf import descriptor_pb2, descriptor_pool, message_factory

        serialized = [_serialized(t) for t in (*references.values(), text)]
        if all(proto is not None for proto in serialized):  # as Confluent's clients register
            files = [p for p in serialized if p is not None]
            files[:0] = _well_known(files)
        elif any(proto is not None for proto in serialized):
            raise SchemaUnusable("Protobuf schema: .proto text and serialized files mixed")
        else:  # .proto text
            compiled = descriptor_pb2.FileDescriptorSet.FromString(_compile(text, references))
            files = list(compiled.file)
            files[-1].name = _MAIN
        pool = descriptor_pool.DescriptorPool()
        try:
            for proto in files:
                pool.Add(proto)
            main = pool.FindFileByName(files[-1].name)
        except (TypeError, KeyError) as exc:
            raise SchemaUnusable(f"Protobuf schema: {str(exc)[:200]}") from None
        self.messages = list(main.message_types_by_name.values())
        if not self.messages:
            raise SchemaUnusable("Protobuf schema: no message")
        self._class = message_factory.GetMessageClass

    def decode(self, payload: bytes, indexes: Sequence[int]) -> Any:
        from google.protobuf.message import DecodeError

        descriptor: Any = None
        options = self.messages
        for index in indexes:  # the first index picks a top-level message, the next nested ones
            if not 0 <= index < len(options):
                raise Invalid(Reason.SCHEMA_MISMATCH, f"message index {index} not in the schema")
            descriptor = options[index]
            options = list(descriptor.nested_types)
        message = self._class(descriptor)()
        try:
            message.ParseFromString(payload)
        except (DecodeError, RuntimeError, ValueError) as exc:
            raise Invalid(Reason.SCHEMA_MISMATCH, f"Protobuf: {str(exc)[:200]}") from None
        return plain(message)


def plain(message: Any) -> dict[str, Any]:
    """A message as plain values: every field without presence (a proto3 scalar: 0 is a value,
    not an absence), those with presence when set; int64 stay numbers (the JSON mapping of
    Protobuf would make them strings), enums their names, maps dicts."""
    out: dict[str, Any] = {}
    for field in message.DESCRIPTOR.fields:
        if field.has_presence and not message.HasField(field.name):
            continue
        value = getattr(message, field.name)
        if _is_map(field):
            value_field = field.message_type.fields_by_name["value"]
            out[field.name] = {key: _one(value_field, item) for key, item in value.items()}
        elif _repeated(field):
            out[field.name] = [_one(field, item) for item in value]
        else:
            out[field.name] = _one(field, value)
    return out


def _one(field: Any, value: Any) -> Any:
    if field.message_type is not None:
        return plain(value)
    if field.enum_type is not None:
        known = field.enum_type.values_by_number.get(value)
        return known.name if known is not None else value
    return value


def _repeated(field: Any) -> bool:
    repeated = getattr(field, "is_repeated", None)  # protobuf 7; 5 and 6 have label
    return bool(repeated) if repeated is not None else field.label == field.LABEL_REPEATED


def _is_map(field: Any) -> bool:
    message = field.message_type
    return message is not None and _repeated(field) and message.GetOptions().map_entry


_MAIN = "streamdrift_registry_schema.proto"


def _serialized(text: str) -> Any:
    """The FileDescriptorProto of a schema registered serialized (base64), else None."""
    from google.protobuf import descriptor_pb2
    from google.protobuf.message import DecodeError

    try:
        raw = base64.b64decode(text, validate=True)
        proto = descriptor_pb2.FileDescriptorProto.FromString(raw)
    except (binascii.Error, ValueError, DecodeError):
        return None
    return proto if proto.name else None


def _well_known(files: Sequence[Any]) -> list[Any]:
    """The FileDescriptorProtos of the well-known types (google/protobuf/*.proto) the files
    import and do not carry, from the protobuf runtime's own."""
    from google.protobuf import descriptor_pb2, descriptor_pool

    carried = {proto.name for proto in files}
    out = []
    for name in dict.fromkeys(d for proto in files for d in proto.dependency):
        if name in carried:
            continue
        if not name.startswith("google/protobuf/"):
            raise SchemaUnusable(f"Protobuf schema: imports {name[:100]!r}, not referenced")
        module = "google.protobuf." + name.removeprefix("google/protobuf/")[:-6].replace("/", ".")
        try:
            importlib.import_module(f"{module}_pb2")
            found = descriptor_pool.Default().FindFileByName(name)
        except (ImportError, KeyError):
            raise SchemaUnusable(f"Protobuf schema: unknown import {name[:100]!r}") from None
        proto = descriptor_pb2.FileDescriptorProto()
        found.CopyToProto(proto)
        out.append(proto)
    return out


def _compile(text: str, references: Mapping[str, str]) -> bytes:
    """A FileDescriptorSet (imports included) of the ``.proto`` text, compiled by protoc."""
    try:
        from importlib.resources import files

        from grpc_tools import protoc  # type: ignore[import-untyped]
    except ImportError:  # pragma: no cover - the start-up check names the extra first
        raise SchemaUnusable(
            "Protobuf schemas need grpcio-tools: pip install 'streamdrift[registry]'"
        ) from None
    with tempfile.TemporaryDirectory(prefix="streamdrift-proto-") as folder:
        root = Path(folder)
        for name, source in {**references, _MAIN: text}.items():
            target = (root / name).resolve()
            if root not in target.parents:
                raise SchemaUnusable(f"Protobuf schema: reference name {name[:100]!r}")
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_text(source)
        out = root / "out.pb"
        status = protoc.main(
            [
                "protoc",
                f"-I{root}",
                f"-I{files('grpc_tools') / '_proto'}",
                "--include_imports",
                f"--descriptor_set_out={out}",
                _MAIN,
            ]
        )
        if status != 0 or not out.exists():
            raise SchemaUnusable("Protobuf schema: protoc could not compile it")
        return out.read_bytes()
