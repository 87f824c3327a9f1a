"""KServe's payload logs: CloudEvents of inference requests and responses, in Kafka's binary
mode (attributes as ``ce_*`` headers, the payload as the value — what Knative's Kafka broker
and sink write) or structured mode (one JSON envelope with ``data``), with V1
(``{"instances": …}`` → ``{"predictions": …}``) or V2 / Open Inference Protocol bodies
(``{"inputs": [{"name", "shape", "datatype", "data"}]}`` → ``{"outputs": …}``).

Each row of a request is an event of its inputs; each row of a response an event of its
prediction (a response with several output columns: those columns as features). Both halves
carry the CloudEvent ``id`` as ``event_id`` (``<id>/<row>`` for batches), by which
:mod:`streams.pipeline.pairing` makes them one event, and labels join on its prediction.
"""

from __future__ import annotations

import base64
import binascii
from collections.abc import Sequence
from dataclasses import dataclass
from itertools import chain
from typing import Any

import msgspec

from streamdrift.streams.pipeline.codec import Invalid, Limits, Reason
from streamdrift.streams.pipeline.outcome import Record

REQUEST = "org.kubeflow.serving.inference.request"
RESPONSE = "org.kubeflow.serving.inference.response"
MODEL_ATTRIBUTE = "inferenceservicename"


@dataclass(frozen=True, slots=True)
class CloudEvent:
    attributes: dict[str, str]  # type, id, time, the extensions; names without the ce_ prefix
    data: Any


def cloud_event(record: Record, message: Any) -> CloudEvent:
    """The CloudEvent of a record: binary mode when it has a ``ce_type`` header (``message``:
    the decoded value), else structured mode (``message``: the envelope)."""
    headers = {name: value for name, value in record.headers or ()}
    if "ce_type" in headers:
        attributes = {
            name[3:]: _text(value, name)
            for name, value in headers.items()
            if name.startswith("ce_") and value is not None
        }
        return CloudEvent(attributes, message)
    if not isinstance(message, dict) or not isinstance(message.get("type"), str):
        raise Invalid(Reason.MAPPING_FAILED, "not a CloudEvent: no ce_type header, no type")
    attributes = {k: v for k, v in message.items() if isinstance(v, str) and k != "data"}
    if "data_base64" in message:
        try:
            raw = base64.b64decode(str(message["data_base64"]), validate=True)
            return CloudEvent(attributes, msgspec.json.decode(raw))
        except (binascii.Error, ValueError, msgspec.DecodeError) as exc:
            raise Invalid(Reason.MALFORMED_JSON, f"data_base64: {str(exc)[:200]}") from None
    return CloudEvent(attributes, message.get("data"))


def _text(value: bytes, name: str) -> str:
    try:
        return value.decode()
    except UnicodeDecodeError:
        raise Invalid(Reason.MAPPING_FAILED, f"header {name}: not UTF-8") from None


@dataclass(frozen=True, slots=True)
class Row:
    """One row of a request or a response: its features, and a response's prediction."""

    features: dict[str, Any]
    prediction: Any = None


def rows_of(event: CloudEvent, names: Sequence[str] | None, limits: Limits) -> list[Row]:
    """The rows of a request or a response (V1 or V2 body); ``names``: the columns' names of a
    V1 instance list or of a single V2 tensor with several columns."""
    kind, data = event.attributes.get("type"), event.data
    if kind not in (REQUEST, RESPONSE):
        raise Invalid(Reason.UNSUPPORTED_EVENT_TYPE, f"CloudEvent type {str(kind)[:100]!r}")
    if not isinstance(data, dict):
        raise Invalid(Reason.MAPPING_FAILED, "body: expected a JSON object")
    if kind == REQUEST:
        if "instances" in data:
            return [
                Row(instance_features(row, names, "input"))
                for row in _v1_list(data, "instances", limits)
            ]
        if "inputs" in data:
            return [Row(columns) for columns in tensor_rows(data["inputs"], names, limits)]
        raise Invalid(Reason.MAPPING_FAILED, "request: neither instances (V1) nor inputs (V2)")
    if "predictions" in data:
        return [_v1_prediction(p) for p in _v1_list(data, "predictions", limits)]
    if "outputs" in data:
        return [prediction_row(row) for row in tensor_rows(data["outputs"], None, limits)]
    raise Invalid(Reason.MAPPING_FAILED, "response: neither predictions (V1) nor outputs (V2)")


def _v1_list(data: dict[str, Any], key: str, limits: Limits) -> list[Any]:
    rows = data[key]
    if not isinstance(rows, list) or not rows:
        raise Invalid(Reason.MAPPING_FAILED, f"{key}: expected a non-empty list")
    if len(rows) > limits.max_events_per_message:
        raise Invalid(Reason.TOO_MANY_EVENTS, f"{len(rows)} {key}")
    return rows


def instance_features(row: Any, names: Sequence[str] | None, prefix: str) -> dict[str, Any]:
    if isinstance(row, dict):
        return row
    if isinstance(row, list):
        if names is not None:
            if len(names) != len(row):
                raise Invalid(
                    Reason.TENSOR_SHAPE_MISMATCH,
                    f"an instance of {len(row)} values for {len(names)} names",
                )
            return dict(zip(names, row, strict=True))
        return {f"{prefix}[{j}]": value for j, value in enumerate(row)}
    return {prefix: row}


def _v1_prediction(prediction: Any) -> Row:
    if isinstance(prediction, (list, dict)):
        return Row(instance_features(prediction, None, "output"))
    return Row({}, prediction)


def prediction_row(columns: dict[str, Any]) -> Row:
    if len(columns) == 1:
        return Row({}, next(iter(columns.values())))
    return Row(columns)


def tensor_rows(tensors: Any, names: Sequence[str] | None, limits: Limits) -> list[dict[str, Any]]:
    """The rows of Open Inference Protocol tensors (each ``[N]`` or ``[N, k]``, data flat in
    row-major order or nested; all with the same N): per row, one value per column, named
    ``<tensor>`` for one column, ``names`` for the k columns of a single tensor when given,
    else ``<tensor>[j]``."""
    if not isinstance(tensors, list) or not tensors:
        raise Invalid(Reason.MAPPING_FAILED, "tensors: expected a non-empty list")
    if len(tensors) > limits.max_features_per_event:
        raise Invalid(Reason.TOO_MANY_FEATURES, f"{len(tensors)} tensors")
    columns: dict[str, list[Any]] = {}
    height: int | None = None
    for tensor in tensors:
        name, n, k, flat = _tensor(tensor, limits)
        if height is not None and n != height:
            raise Invalid(
                Reason.TENSOR_SHAPE_MISMATCH, f"tensor {name!r} has {n} rows, not {height}"
            )
        height = n
        if k == 1:
            labels = [name]
        elif names is not None and len(tensors) == 1:
            if len(names) != k:
                raise Invalid(
                    Reason.TENSOR_SHAPE_MISMATCH,
                    f"tensor {name!r}: {k} columns, {len(names)} names",
                )
            labels = list(names)
        else:
            labels = [f"{name}[{j}]" for j in range(k)]
        for j, label in enumerate(labels):
            columns[label] = flat[j::k]
        if len(columns) > limits.max_features_per_event:
            raise Invalid(Reason.TOO_MANY_FEATURES, f"{len(columns)} columns")
    assert height is not None
    return [{label: values[i] for label, values in columns.items()} for i in range(height)]


def _tensor(tensor: Any, limits: Limits) -> tuple[str, int, int, list[Any]]:
    if not isinstance(tensor, dict):
        raise Invalid(Reason.MAPPING_FAILED, "a tensor: expected an object")
    name, shape, data = tensor.get("name"), tensor.get("shape"), tensor.get("data")
    if not isinstance(name, str) or not name:
        raise Invalid(Reason.MAPPING_FAILED, "a tensor without a name")
    if (
        not isinstance(shape, list)
        or not 1 <= len(shape) <= 2
        or not all(isinstance(d, int) and not isinstance(d, bool) and d >= 0 for d in shape)
    ):
        raise Invalid(
            Reason.TENSOR_SHAPE_MISMATCH,
            f"tensor {name!r}: shape {str(shape)[:50]}, not [N] or [N, k]",
        )
    n, k = shape[0], shape[1] if len(shape) == 2 else 1
    if n == 0 or k == 0:
        raise Invalid(Reason.TENSOR_SHAPE_MISMATCH, f"tensor {name!r}: an empty shape {shape}")
    if n > limits.max_events_per_message:
        raise Invalid(Reason.TOO_MANY_EVENTS, f"tensor {name!r}: {n} rows")
    if k > limits.max_features_per_event:
        raise Invalid(Reason.TOO_MANY_FEATURES, f"tensor {name!r}: {k} columns")
    if not isinstance(data, list):
        raise Invalid(Reason.MAPPING_FAILED, f"tensor {name!r}: data is not a list")
    nested = bool(data) and isinstance(data[0], list)
    if nested and not all(isinstance(row, list) for row in data):
        raise Invalid(Reason.TENSOR_SHAPE_MISMATCH, f"tensor {name!r}: rows of mixed depth")
    flat = list(chain.from_iterable(data)) if nested else data
    if len(flat) != n * k or any(isinstance(v, (list, dict)) for v in flat):
        raise Invalid(
            Reason.TENSOR_SHAPE_MISMATCH,
            f"tensor {name!r}: shape {shape} wants {n * k} values",
        )
    return name, n, k, flat
