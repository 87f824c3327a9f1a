"""Open Inference Protocol messages built from Seldon's own definitions: the descriptor MLServer
(Seldon's inference server, whose messages Seldon Core 2 writes to its model topics) ships in
its generated ``mlserver/grpc/dataplane_pb2.py``, read out of the wheel ``make platform-wheels``
fetches — never imported (its package pulls in a web server) and never installed — and built in
a private descriptor pool, so these classes share nothing with the worker's decoder.
"""

from __future__ import annotations

import ast
import zipfile
from functools import cache
from pathlib import Path
from typing import Any

from google.protobuf import descriptor_pb2, descriptor_pool, message_factory

ROOT = Path(__file__).resolve().parents[2]
MLSERVER_WHEEL = ROOT / ".cache" / "wheels" / "mlserver-1.7.1-py3-none-any.whl"
MEMBER = "mlserver/grpc/dataplane_pb2.py"


def serialized_file(source: str) -> bytes:
    """The serialized FileDescriptorProto a generated ``_pb2.py`` adds to its pool."""
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Call) and getattr(node.func, "attr", "") == "AddSerializedFile":
            value = ast.literal_eval(node.args[0])
            assert isinstance(value, bytes)
            return value
    raise ValueError("no serialized file descriptor in the module")


@cache
def file_descriptor() -> descriptor_pb2.FileDescriptorProto:
    if not MLSERVER_WHEEL.exists():
        raise FileNotFoundError(f"{MLSERVER_WHEEL} is missing: run make platform-wheels")
    with zipfile.ZipFile(MLSERVER_WHEEL) as wheel:
        source = wheel.read(MEMBER).decode()
    return descriptor_pb2.FileDescriptorProto.FromString(serialized_file(source))


@cache
def _pool() -> descriptor_pool.DescriptorPool:
    pool = descriptor_pool.DescriptorPool()
    pool.Add(file_descriptor())
    return pool


def message(name: str) -> Any:
    """The class of ``inference.<name>`` (e.g. ``ModelInferRequest``) as Seldon defines it."""
    return message_factory.GetMessageClass(_pool().FindMessageTypeByName(f"inference.{name}"))


def fields(name: str) -> dict[str, tuple[int, int, bool]]:
    """Each field of ``inference.<name>``: (number, type, repeated)."""
    descriptor = _pool().FindMessageTypeByName(f"inference.{name}")
    return {f.name: (f.number, f.type, _repeated(f)) for f in descriptor.fields}


def _repeated(field: Any) -> bool:
    # protobuf 7 dropped FieldDescriptor.label for is_repeated (which 5.x lacks)
    repeated = getattr(field, "is_repeated", None)
    return bool(repeated) if repeated is not None else field.label == field.LABEL_REPEATED
