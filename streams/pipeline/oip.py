"""Seldon Core 2's model topics: Open Inference Protocol (KServe V2) protobuf messages.

Seldon Core 2 writes each model's requests to ``seldon.<namespace>.model.<model>.inputs`` and
its responses to ``….outputs`` (pipelines: ``seldon.<namespace>.pipeline.<name>.…``), the value a
serialized ``inference.ModelInferRequest`` / ``inference.ModelInferResponse``, the key the
request id (also in the ``x-request-id`` header). Tensors carry their values typed in
``contents`` (``fp32_contents``, ``int64_contents``, …) or, all of a message's tensors at once, as
little-endian bytes in ``raw_input_contents`` / ``raw_output_contents``.

The message types are declared here from the protocol's field numbers (the fields streamdrift
reads; others are skipped as unknown fields) and built in a private descriptor pool: no
generated code, no protobuf-version coupling, no clash with another package's OIP classes in the
same process. ``tests/test_seldon2_input.py`` checks every number against Seldon's own
definitions (MLServer's) and decodes messages those build.

Rows as for KServe's V2 JSON (:func:`streams.pipeline.kserve.tensor_rows`): every tensor ``[N]``
or ``[N, k]`` with the same N.
"""

from __future__ import annotations

import struct
from typing import Any

import numpy as np
from google.protobuf import descriptor_pb2, descriptor_pool, message_factory
from google.protobuf.message import DecodeError, Message

from streamdrift.streams.pipeline.codec import Invalid, Limits, Reason
from streamdrift.streams.pipeline.kserve import Row, prediction_row, tensor_rows

_FIELD = descriptor_pb2.FieldDescriptorProto
_STRING, _BYTES, _MESSAGE = _FIELD.TYPE_STRING, _FIELD.TYPE_BYTES, _FIELD.TYPE_MESSAGE
_OPTIONAL, _REPEATED = _FIELD.LABEL_OPTIONAL, _FIELD.LABEL_REPEATED

_Fields = list[tuple[str, int, int, bool, str]]
_TENSOR: _Fields = [  # an input tensor's fields, and an output tensor's
    ("name", 1, _STRING, False, ""),
    ("datatype", 2, _STRING, False, ""),
    ("shape", 3, _FIELD.TYPE_INT64, True, ""),
    ("contents", 5, _MESSAGE, False, "InferTensorContents"),
]
#: (message, [(field, number, type, repeated, message type)]) — the protocol's numbering
MESSAGES: dict[str, _Fields] = {
    "InferTensorContents": [
        ("bool_contents", 1, _FIELD.TYPE_BOOL, True, ""),
        ("int_contents", 2, _FIELD.TYPE_INT32, True, ""),
        ("int64_contents", 3, _FIELD.TYPE_INT64, True, ""),
        ("uint_contents", 4, _FIELD.TYPE_UINT32, True, ""),
        ("uint64_contents", 5, _FIELD.TYPE_UINT64, True, ""),
        ("fp32_contents", 6, _FIELD.TYPE_FLOAT, True, ""),
        ("fp64_contents", 7, _FIELD.TYPE_DOUBLE, True, ""),
        ("bytes_contents", 8, _BYTES, True, ""),
    ],
    "ModelInferRequest.InferInputTensor": _TENSOR,
    "ModelInferRequest": [
        ("model_name", 1, _STRING, False, ""),
        ("model_version", 2, _STRING, False, ""),
        ("id", 3, _STRING, False, ""),
        ("inputs", 5, _MESSAGE, True, "ModelInferRequest.InferInputTensor"),
        ("raw_input_contents", 7, _BYTES, True, ""),
    ],
    "ModelInferResponse.InferOutputTensor": _TENSOR,
    "ModelInferResponse": [
        ("model_name", 1, _STRING, False, ""),
        ("model_version", 2, _STRING, False, ""),
        ("id", 3, _STRING, False, ""),
        ("outputs", 5, _MESSAGE, True, "ModelInferResponse.InferOutputTensor"),
        ("raw_output_contents", 6, _BYTES, True, ""),
    ],
}

#: datatype -> (the contents field holding its values, its little-endian raw dtype)
DATATYPES: dict[str, tuple[str, str]] = {
    "BOOL": ("bool_contents", "?"),
    "UINT8": ("uint_contents", "<u1"),
    "UINT16": ("uint_contents", "<u2"),
    "UINT32": ("uint_contents", "<u4"),
    "UINT64": ("uint64_contents", "<u8"),
    "INT8": ("int_contents", "<i1"),
    "INT16": ("int_contents", "<i2"),
    "INT32": ("int_contents", "<i4"),
    "INT64": ("int64_contents", "<i8"),
    "FP16": ("", "<f2"),  # raw only: no contents field holds halves
    "FP32": ("fp32_contents", "<f4"),
    "FP64": ("fp64_contents", "<f8"),
    "BYTES": ("bytes_contents", ""),
}
_LENGTH = struct.Struct("<I")


def _file() -> descriptor_pb2.FileDescriptorProto:
    proto = descriptor_pb2.FileDescriptorProto(
        name="streamdrift/oip_inference.proto", package="inference", syntax="proto3"
    )
    made: dict[str, descriptor_pb2.DescriptorProto] = {}
    for full_name in sorted(MESSAGES, key=lambda n: n.count(".")):  # outer messages first
        outer, _, inner = full_name.partition(".")
        if inner:
            made[full_name] = made[outer].nested_type.add(name=inner)
        else:
            made[full_name] = proto.message_type.add(name=outer)
    for full_name, fields in MESSAGES.items():
        for name, number, kind, repeated, type_name in fields:
            field = made[full_name].field.add(
                name=name, number=number, type=kind, label=_REPEATED if repeated else _OPTIONAL
            )
            if type_name:  # set even empty, it would make a scalar field a message's
                field.type_name = f".inference.{type_name}"
    return proto


def _classes() -> tuple[type[Message], type[Message]]:
    pool = descriptor_pool.DescriptorPool()
    pool.Add(_file())
    request = message_factory.GetMessageClass(
        pool.FindMessageTypeByName("inference.ModelInferRequest")
    )
    response = message_factory.GetMessageClass(
        pool.FindMessageTypeByName("inference.ModelInferResponse")
    )
    return request, response


ModelInferRequest, ModelInferResponse = _classes()


class Inference:
    """What one message says: its model, version and id (empty if unset), and its rows."""

    __slots__ = ("id", "model_name", "model_version", "rows")

    def __init__(self, model_name: str, model_version: str, ident: str, rows: list[Row]) -> None:
        self.model_name = model_name
        self.model_version = model_version
        self.id = ident
        self.rows = rows


def decode(value: bytes, request: bool, limits: Limits) -> Inference:
    """A ``ModelInferRequest`` (``request``) or ``ModelInferResponse`` read from ``value``: its
    rows (a request's inputs; a response's prediction, or its columns as features).
    ``Invalid`` says why a message cannot be read."""
    message = (ModelInferRequest if request else ModelInferResponse)()
    try:
        message.ParseFromString(value)
    except (DecodeError, RuntimeError, ValueError) as exc:
        kind = "ModelInferRequest" if request else "ModelInferResponse"
        raise Invalid(Reason.MAPPING_FAILED, f"not a {kind}: {str(exc)[:200]}") from None
    m: Any = message
    tensors = m.inputs if request else m.outputs
    raw = m.raw_input_contents if request else m.raw_output_contents
    if raw and len(raw) != len(tensors):
        raise Invalid(
            Reason.TENSOR_SHAPE_MISMATCH,
            f"{len(raw)} raw contents for {len(tensors)} tensors",
        )
    if len(tensors) > limits.max_features_per_event:
        raise Invalid(Reason.TOO_MANY_FEATURES, f"{len(tensors)} tensors")
    as_json = [_tensor(tensor, raw[i] if raw else None, limits) for i, tensor in enumerate(tensors)]
    columns = tensor_rows(as_json, None, limits)
    rows = [Row(c) for c in columns] if request else [prediction_row(c) for c in columns]
    return Inference(m.model_name, m.model_version, m.id, rows)


def _tensor(tensor: Any, raw: bytes | None, limits: Limits) -> dict[str, Any]:
    """One tensor as the V2 JSON shape ``{"name", "shape", "data"}`` (data flat)."""
    name, datatype, shape = tensor.name, tensor.datatype, list(tensor.shape)
    if datatype not in DATATYPES:
        raise Invalid(Reason.MAPPING_FAILED, f"tensor {name[:100]!r}: datatype {datatype[:20]!r}")
    if not 1 <= len(shape) <= 2 or any(d <= 0 for d in shape):
        raise Invalid(
            Reason.TENSOR_SHAPE_MISMATCH,
            f"tensor {name[:100]!r}: shape {shape[:4]}, not [N] or [N, k]",
        )
    size = shape[0] * (shape[1] if len(shape) == 2 else 1)
    if (
        shape[0] > limits.max_events_per_message
        or size > limits.max_events_per_message * limits.max_features_per_event
    ):
        raise Invalid(Reason.TOO_MANY_EVENTS, f"tensor {name[:100]!r}: shape {shape}")
    field, dtype = DATATYPES[datatype]
    if raw is not None:
        data = _raw_values(raw, dtype, size, name)
    elif field:
        data = list(getattr(tensor.contents, field))
    else:
        raise Invalid(Reason.MAPPING_FAILED, f"tensor {name[:100]!r}: {datatype} only as raw bytes")
    if datatype == "BYTES":
        data = [_text(v, name) for v in data]
    return {"name": name, "shape": shape, "data": data}


def _raw_values(raw: bytes, dtype: str, size: int, name: str) -> list[Any]:
    if not dtype:  # BYTES: each element a 4-byte little-endian length, then its bytes
        out: list[bytes] = []
        at = 0
        while at < len(raw) and len(out) <= size:
            if at + 4 > len(raw):
                break
            (length,) = _LENGTH.unpack_from(raw, at)
            out.append(raw[at + 4 : at + 4 + length])
            at += 4 + length
        if at != len(raw) or len(out) != size:
            raise Invalid(
                Reason.TENSOR_SHAPE_MISMATCH,
                f"tensor {name[:100]!r}: raw BYTES do not hold {size} elements",
            )
        return out
    itemsize = np.dtype(dtype).itemsize
    if len(raw) != size * itemsize:
        raise Invalid(
            Reason.TENSOR_SHAPE_MISMATCH,
            f"tensor {name[:100]!r}: {len(raw)} raw bytes for {size} values of {itemsize}",
        )
    return np.frombuffer(raw, dtype=dtype).astype(float if dtype != "?" else bool).tolist()


def _text(value: bytes, name: str) -> str:
    try:
        return value.decode()
    except UnicodeDecodeError:
        raise Invalid(Reason.MAPPING_FAILED, f"tensor {name[:100]!r}: BYTES not UTF-8") from None
