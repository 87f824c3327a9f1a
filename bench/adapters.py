"""The throughput benchmark's adapter columns: the simulator's events in the shapes streamdrift's
input adapters read (docs/contracts.md, "Mapped input topics"), and the ``inputs`` section of
the worker configuration that lists their topics.

``mapped-json``
    A user's own JSON (format ``json``, a JMESPath mapping): one message per simulator message,
    ``{"service": {"model", "version"}, "predictions": [{"request_id", "ts", "request":
    {"inputs": {…}}, "response": {"score"}}, …]}``, keyed by the model.
``kserve``
    KServe V1 payload logs in Knative's binary mode: per simulator message a request record
    (``ce_type`` ``…inference.request``, ``{"instances": [{feature: value, …}, …]}``: object
    instances keep the categorical features) and its response record (``…inference.response``,
    ``{"predictions": […]}``), both with the first event's id as ``ce_id`` and as key; the
    worker pairs them into one event per instance.
``seldon2``
    Seldon Core 2's ``seldon.<namespace>.model.<name>.inputs`` / ``.outputs`` topics, keyed by
    the request id: a ``ModelInferRequest`` of one ``[N]`` tensor per feature (FP64 numbers,
    BYTES categories) and a ``ModelInferResponse`` of one FP64 ``[N]`` tensor, paired across
    the two topics. Seldon writes one topic pair per model; the bench's models (46 by default:
    92 topics, over the 32 inputs a configuration may list) share one, so each message's
    ``model_name`` names the model (the ``topic_pattern`` captures no ``{model}``).

Every record goes to its model's partition as the native column's messages do
(:func:`bench.load.produce`), so every column monitors the same series. The bench's events have
no missing values (a FP64 tensor could not carry them).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, ClassVar, Protocol, cast

import msgspec

from bench.load import Outgoing
from streamdrift.streams.dev.simulate import SimMessage
from streamdrift.streams.pipeline.kserve import REQUEST, RESPONSE
from streamdrift.streams.pipeline.oip import ModelInferRequest, ModelInferResponse

__all__ = ["ADAPTERS", "Adapter", "events_of"]

_EVENTS = msgspec.json.Decoder(list[dict[str, Any]] | dict[str, Any])
_ENCODE = msgspec.json.Encoder().encode


def events_of(message: SimMessage) -> list[dict[str, Any]]:
    """The native events of a simulator message (one object or an array)."""
    found = _EVENTS.decode(message.value)
    return found if isinstance(found, list) else [found]


class Adapter(Protocol):
    def topics(self, stem: str) -> tuple[str, ...]:
        """The input's topics in one run (``stem``: a unique topic-name prefix)."""
        ...

    def inputs(self, topics: Sequence[str]) -> list[dict[str, Any]]:
        """The worker configuration's ``inputs`` listing ``topics``."""
        ...

    def records(self, topics: Sequence[str], message: SimMessage) -> list[Outgoing]:
        """The records of one simulator message."""
        ...


class MappedJson:
    MAPPING: ClassVar[dict[str, str]] = {
        "rows": "predictions",
        "model": "message:service.model",
        "model_version": "message:service.version",
        "event_id": "request_id",
        "timestamp": "ts",
        "features": "request.inputs",
        "prediction": "response.score",
    }

    def topics(self, stem: str) -> tuple[str, ...]:
        return (f"{stem}-log",)

    def inputs(self, topics: Sequence[str]) -> list[dict[str, Any]]:
        return [{"topic": topics[0], "format": "json", "mapping": self.MAPPING}]

    def records(self, topics: Sequence[str], message: SimMessage) -> list[Outgoing]:
        events = events_of(message)
        service = {"model": events[0]["model"], "version": events[0]["model_version"]}
        rows = [
            {
                "request_id": e["event_id"],
                "ts": e["timestamp"],
                "request": {"inputs": e["features"]},
                "response": {"score": e["prediction"]},
            }
            for e in events
        ]
        body = _ENCODE({"service": service, "predictions": rows})
        return [Outgoing(topics[0], message.key, body)]


class KServe:
    def topics(self, stem: str) -> tuple[str, ...]:
        return (f"{stem}-payload-logs",)

    def inputs(self, topics: Sequence[str]) -> list[dict[str, Any]]:
        return [{"topic": topics[0], "format": "kserve"}]

    def records(self, topics: Sequence[str], message: SimMessage) -> list[Outgoing]:
        events = events_of(message)
        ident = str(events[0]["event_id"]).encode()
        model = message.key
        attributes = [
            ("ce_id", ident),
            ("ce_specversion", b"1.0"),
            ("ce_source", b"http://localhost:9081/"),
            ("ce_inferenceservicename", model),
            ("ce_namespace", b"bench"),
            ("ce_component", b"predictor"),
            ("ce_endpoint", model + b"-predictor-default"),
            ("content-type", b"application/json"),
        ]
        request = _ENCODE({"instances": [e["features"] for e in events]})
        response = _ENCODE({"predictions": [e["prediction"] for e in events]})
        return [
            Outgoing(topics[0], ident, request, [("ce_type", REQUEST.encode()), *attributes]),
            Outgoing(topics[0], ident, response, [("ce_type", RESPONSE.encode()), *attributes]),
        ]


class Seldon2:
    PATTERN = "seldon.{namespace}.model.{deployment}.{direction}"

    def topics(self, stem: str) -> tuple[str, ...]:
        return (f"seldon.{stem}.model.bench.inputs", f"seldon.{stem}.model.bench.outputs")

    def inputs(self, topics: Sequence[str]) -> list[dict[str, Any]]:
        return [{"topic": t, "format": "seldon2", "topic_pattern": self.PATTERN} for t in topics]

    def records(self, topics: Sequence[str], message: SimMessage) -> list[Outgoing]:
        events = events_of(message)
        ident = str(events[0]["event_id"])
        names = {
            "model_name": events[0]["model"],
            "model_version": events[0]["model_version"],
            "id": ident,
        }
        request = cast(Any, ModelInferRequest)(**names)
        for name, first in events[0]["features"].items():
            column = [e["features"][name] for e in events]
            _tensor(request.inputs, name, column, categorical=isinstance(first, str))
        response = cast(Any, ModelInferResponse)(**names)
        _tensor(response.outputs, "predict", [e["prediction"] for e in events], categorical=False)
        key = ident.encode()
        return [
            Outgoing(topics[0], key, request.SerializeToString()),
            Outgoing(topics[1], key, response.SerializeToString()),
        ]


def _tensor(tensors: Any, name: str, values: list[Any], *, categorical: bool) -> None:
    """Add a ``[N]`` tensor of ``values`` to ``tensors``: BYTES (UTF-8) or FP64."""
    datatype = "BYTES" if categorical else "FP64"
    tensor = tensors.add(name=name, datatype=datatype, shape=[len(values)])
    if categorical:
        tensor.contents.bytes_contents.extend(v.encode() for v in values)
    else:
        tensor.contents.fp64_contents.extend(values)


ADAPTERS: dict[str, Adapter] = {
    "mapped-json": MappedJson(),
    "kserve": KServe(),
    "seldon2": Seldon2(),
}
