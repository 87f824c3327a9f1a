"""Seldon Core 1 request logs written straight to Kafka by its executor: no key; headers
``type`` (``io.seldon.serving.inference.request`` / ``…response``), ``requestid`` (shared by a
request and its response), ``modelid``, ``inferenceservicename`` (the SeldonDeployment),
``namespace``, ``endpoint`` (the predictor), ``protocol`` (``seldon``, ``tensorflow``, ``v2``
or ``kfserving``); the value is the payload.

Bodies: a SeldonMessage (``{"data": {"names": […], "ndarray": [[…], …]}}`` or
``{"data": {"names": […], "tensor": {"shape": [N, k], "values": […]}}}``) for the ``seldon``
protocol, V1 ``instances`` / ``predictions`` for ``tensorflow``, Open Inference Protocol tensors
for ``v2``. Rows as for KServe (:mod:`streams.pipeline.kserve`): a request's rows are its inputs;
a response's, its prediction (one column) or its columns as features (several, e.g. the class
probabilities named ``t:0``, ``t:1``, …).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from streamdrift.streams.pipeline.codec import Invalid, Limits, Reason
from streamdrift.streams.pipeline.kserve import (
    Row,
    instance_features,
    prediction_row,
    tensor_rows,
)

REQUEST = "io.seldon.serving.inference.request"
RESPONSE = "io.seldon.serving.inference.response"


def headers_of(headers: Sequence[tuple[str, bytes | None]] | None) -> dict[str, str]:
    """The record's headers as text (the executor writes UTF-8)."""
    out = {}
    for name, value in headers or ():
        if value is not None:
            try:
                out[name] = value.decode()
            except UnicodeDecodeError:
                raise Invalid(Reason.MAPPING_FAILED, f"header {name}: not UTF-8") from None
    return out


def rows_of(
    headers: dict[str, str], body: Any, names: Sequence[str] | None, limits: Limits
) -> list[Row]:
    """The rows of a logged request or response; ``names``: the columns' names when the
    message has none."""
    kind = headers.get("type")
    if kind not in (REQUEST, RESPONSE):
        raise Invalid(Reason.UNSUPPORTED_EVENT_TYPE, f"type header {str(kind)[:100]!r}")
    if not isinstance(body, dict):
        raise Invalid(Reason.MAPPING_FAILED, "body: expected a JSON object")
    protocol = headers.get("protocol", "seldon")
    if protocol in ("v2", "kfserving"):
        key = "inputs" if kind == REQUEST else "outputs"
        return _shaped(tensor_rows(body.get(key), names, limits), kind)
    if protocol == "tensorflow":
        key = "instances" if kind == REQUEST else "predictions"
        return _shaped(
            [instance_features(r, names, "input") for r in _list(body, key, limits)], kind
        )
    if protocol == "seldon":
        return _shaped(_seldon_rows(body, names, limits), kind)
    raise Invalid(Reason.MAPPING_FAILED, f"protocol header {protocol[:50]!r}")


def _shaped(rows: list[dict[str, Any]], kind: str) -> list[Row]:
    if kind == REQUEST:
        return [Row(columns) for columns in rows]
    return [prediction_row(columns) for columns in rows]


def _list(body: dict[str, Any], key: str, limits: Limits) -> list[Any]:
    rows = body.get(key)
    if not isinstance(rows, list) or not rows:
        raise Invalid(Reason.MAPPING_FAILED, f"{key}: expected a non-empty list")
    if len(rows) > limits.max_events_per_message:
        raise Invalid(Reason.TOO_MANY_EVENTS, f"{len(rows)} {key}")
    return rows


def _seldon_rows(
    body: dict[str, Any], configured: Sequence[str] | None, limits: Limits
) -> list[dict[str, Any]]:
    data = body.get("data")
    if not isinstance(data, dict):
        raise Invalid(Reason.MAPPING_FAILED, "SeldonMessage: no data object")
    names = data.get("names")
    if names is not None and not (
        isinstance(names, list) and all(isinstance(n, str) and n for n in names)
    ):
        raise Invalid(Reason.MAPPING_FAILED, "data.names: expected a list of names")
    names = names or configured
    if "ndarray" in data:
        rows = _list(data, "ndarray", limits)
        return [instance_features(row, names, "input") for row in rows]
    tensor = data.get("tensor")
    if isinstance(tensor, dict):
        shape = tensor.get("shape")
        wrapped = {"name": "input", "shape": shape, "data": tensor.get("values")}
        return tensor_rows([wrapped], names, limits)
    raise Invalid(Reason.MAPPING_FAILED, "SeldonMessage: neither data.ndarray nor data.tensor")
