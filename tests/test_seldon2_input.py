"""Seldon Core 2's model topics (streams.pipeline.oip): Open Inference Protocol protobuf messages
built with Seldon's own definitions (tests/platforms/oip.py: MLServer's descriptor, never the
worker's), read into native events; the worker's field numbers are Seldon's; whatever bytes
arrive, each record is counted or dead-lettered once."""

from __future__ import annotations

import json
import re
import struct
from typing import Any

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from platforms import oip as seldon

from streamdrift.streams.pipeline import oip
from streamdrift.streams.pipeline.codec import Limits, Reason
from streamdrift.streams.pipeline.inputs import input_specs
from streamdrift.streams.pipeline.mapping import Mapper
from streamdrift.streams.pipeline.outcome import Record
from streamdrift.streams.pipeline.pairing import REQUEST, RESPONSE

INPUTS = "seldon.prod.model.income.inputs"
OUTPUTS = "seldon.prod.model.income.outputs"


def mapper(topic: str = INPUTS, **entry: Any) -> Mapper:
    (spec,) = input_specs({"inputs": [{"topic": topic, "format": "seldon2", **entry}]})
    return Mapper(spec, Limits())


def request(**tensors: tuple[str, list[int], list[Any]]) -> Any:
    """A ModelInferRequest with each tensor (datatype, shape, values) in its typed contents."""
    message = seldon.message("ModelInferRequest")(model_name="income_1", id="msg-id")
    for name, (datatype, shape, values) in tensors.items():
        tensor = message.inputs.add(name=name, datatype=datatype, shape=shape)
        field, _ = oip.DATATYPES[datatype]
        getattr(tensor.contents, field).extend(values)
    return message


def record(message: Any, key: bytes | None = b"req-1", offset: int = 0, **headers: str) -> Record:
    value = message if isinstance(message, bytes) else message.SerializeToString()
    pairs = [(name.replace("_", "-"), v.encode()) for name, v in headers.items()]
    return Record(offset, 1_700_000_000.0, value, key=key, headers=pairs)


def events(m: Mapper, *records: Record) -> list[dict[str, Any]]:
    converted, letters = m.convert(list(records))
    assert not letters, letters
    out: list[dict[str, Any]] = []
    for r in converted:
        body = json.loads(r.value or b"")
        out += body if isinstance(body, list) else [body]
    return out


@pytest.mark.parametrize(
    "name",
    [
        "InferTensorContents",
        "ModelInferRequest",
        "ModelInferRequest.InferInputTensor",
        "ModelInferResponse",
        "ModelInferResponse.InferOutputTensor",
    ],
)
def test_every_field_the_worker_reads_is_numbered_as_seldon_numbers_it(name):
    theirs = seldon.fields(name)
    for field, number, kind, repeated, _ in oip.MESSAGES[name]:
        assert theirs[field] == (number, kind, repeated), (name, field)


def test_typed_contents_of_every_datatype_become_features_of_each_row():
    message = request(
        age=("INT32", [2], [39, 50]),
        hours=("FP32", [2, 1], [40.0, 12.5]),
        income=("FP64", [2], [1e5, 2.5e4]),
        flags=("BOOL", [2, 2], [True, False, False, True]),
        big=("UINT64", [2], [1, 2**40]),
        country=("BYTES", [2], [b"DE", b"FR"]),
    )
    first, second = events(mapper(), record(message))
    assert first == {
        "model": "income",
        "features": {
            "age": 39,
            "hours": 40.0,
            "income": 1e5,
            "flags[0]": True,
            "flags[1]": False,
            "big": 1,
            "country": "DE",
        },
        "event_id": "req-1/0",  # the record's key (the request id), one row of a batch
    }
    assert second["event_id"] == "req-1/1" and second["features"]["big"] == 2**40
    assert (second["features"]["age"], second["features"]["country"]) == (50, "FR")


def test_the_model_comes_from_the_topic_the_version_and_id_from_the_message():
    message = request(x=("FP32", [1], [0.5]))
    message.model_version = "3"
    [event] = events(mapper(), record(message, key=None))
    assert event == {
        "model": "income",  # the topic's, not the message's income_1
        "features": {"x": 0.5},
        "model_version": "3",
        "event_id": "msg-id",  # no key, no x-request-id: the message's id
    }
    [event] = events(mapper(), record(message, key=None, x_request_id="hdr"))
    assert event["event_id"] == "hdr"
    mapped = mapper(mapping={"model": "const:income-eu", "model_version": "header:rev"})
    [event] = events(mapped, record(message, rev="v9"))
    assert (event["model"], event["model_version"]) == ("income-eu", "v9")
    assert event["event_id"] == "req-1"  # the record's key first


def test_raw_contents_are_read_little_endian_by_datatype():
    message = seldon.message("ModelInferRequest")(id="r")
    for name, datatype, shape in (
        ("f16", "FP16", [2]),
        ("f32", "FP32", [2]),
        ("i64", "INT64", [2]),
        ("u8", "UINT8", [2]),
        ("s", "BYTES", [2]),
    ):
        message.inputs.add(name=name, datatype=datatype, shape=shape)
    message.raw_input_contents.extend(
        [
            np.array([1.5, -2.0], dtype="<f2").tobytes(),
            np.array([0.25, 3.0], dtype="<f4").tobytes(),
            np.array([7, -9], dtype="<i8").tobytes(),
            bytes([3, 250]),
            b"".join(struct.pack("<I", len(v)) + v for v in (b"DE", b"USA")),
        ]
    )
    first, second = events(mapper(), record(message))
    assert first["features"] == {"f16": 1.5, "f32": 0.25, "i64": 7.0, "u8": 3.0, "s": "DE"}
    assert second["features"] == {"f16": -2.0, "f32": 3.0, "i64": -9.0, "u8": 250.0, "s": "USA"}


def test_a_response_gives_the_prediction_or_its_columns():
    response = seldon.message("ModelInferResponse")(model_name="income_1", id="r")
    out = response.outputs.add(name="predict", datatype="FP32", shape=[2])
    out.contents.fp32_contents.extend([0.25, 0.75])
    m = mapper(OUTPUTS)
    assert m.spec.half == RESPONSE and mapper().spec.half == REQUEST
    assert [e["prediction"] for e in events(m, record(response))] == [0.25, 0.75]
    proba = seldon.message("ModelInferResponse")(id="r")
    both = proba.outputs.add(name="proba", datatype="FP64", shape=[1, 2])
    both.contents.fp64_contents.extend([0.1, 0.9])
    [event] = events(m, record(proba))
    assert event["features"] == {"proba[0]": 0.1, "proba[1]": 0.9} and "prediction" not in event


@pytest.mark.parametrize(
    ("value", "reason", "detail"),
    [
        (b"\xff\xff\xff", Reason.MAPPING_FAILED, "not a ModelInferRequest"),
        (request(x=("FP32", [3], [1.0, 2.0])), Reason.TENSOR_SHAPE_MISMATCH, "wants 3 values"),
        (request(x=("FP32", [1, 2, 3], [1.0] * 6)), Reason.TENSOR_SHAPE_MISMATCH, "not [N] or"),
        (request(x=("FP32", [0], [])), Reason.TENSOR_SHAPE_MISMATCH, "not [N] or"),
        (request(x=("FP32", [20_000], [0.0] * 20_000)), Reason.TOO_MANY_EVENTS, "shape"),
        (request(x=("BYTES", [1], [b"\xff"])), Reason.MAPPING_FAILED, "not UTF-8"),
        (
            request(a=("FP32", [1], [1.0]), b=("FP32", [2], [1.0, 2.0])),
            Reason.TENSOR_SHAPE_MISMATCH,
            "rows",
        ),
        (seldon.message("ModelInferRequest")(id="x"), Reason.MAPPING_FAILED, "tensors"),
    ],
)
def test_what_cannot_be_read_is_dead_lettered_with_its_reason(value, reason, detail):
    converted, [letter] = mapper().convert([record(value)])
    assert not converted and letter.reason is reason and detail in letter.detail, letter


def test_raw_contents_that_do_not_fit_are_dead_lettered():
    message = seldon.message("ModelInferRequest")(id="r")
    message.inputs.add(name="x", datatype="FP32", shape=[2])
    message.raw_input_contents.append(b"\x00" * 7)
    _, [letter] = mapper().convert([record(message)])
    assert letter.reason is Reason.TENSOR_SHAPE_MISMATCH and "7 raw bytes" in letter.detail
    message.raw_input_contents.append(b"")
    _, [letter] = mapper().convert([record(message)])
    assert "2 raw contents for 1 tensors" in letter.detail


@pytest.mark.parametrize(
    ("entry", "error"),
    [
        ({"topic": "income-requests"}, "inputs[0].mapping.half: expected request or response"),
        (
            {"topic": "logs.fraud", "topic_pattern": "logs.{model}.in"},
            "inputs[0].topic_pattern: 'logs.fraud' does not match 'logs.{model}.in'",
        ),
        (
            {"topic": "x", "mapping": {"model": "topic:model", "half": "request"}},
            "inputs[0].mapping.model: the topic name captures no 'model'",
        ),
        ({"topic": "x", "topic_pattern": "no-capture"}, "inputs[0].topic_pattern: expected"),
        ({"topic": INPUTS, "mapping": {"half": "both"}}, "inputs[0].mapping.half: expected"),
    ],
)
def test_a_wrong_seldon2_input_is_named(entry, error):
    with pytest.raises(ValueError, match=re.escape(error)):
        input_specs({"inputs": [{"format": "seldon2", **entry}]})


def test_topic_captures_feed_any_field_of_any_format():
    entry = {
        "topic": "acme.fraud.v7.predictions",
        "topic_pattern": "acme.{model}.{version}.predictions",
        "format": "json",
        "mapping": {"model": "topic:model", "model_version": "topic:version", "features": "x"},
    }
    (spec,) = input_specs({"inputs": [entry]})
    [event] = events(Mapper(spec, Limits()), Record(0, 1.0, b'{"x": {"a": 1}}'))
    assert event == {"model": "fraud", "features": {"a": 1}, "model_version": "v7"}


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=300), st.sampled_from([INPUTS, OUTPUTS]))
def test_whatever_bytes_arrive_each_record_is_counted_or_dead_lettered_once(value, topic):
    converted, letters = mapper(topic).convert([record(value)])
    assert len(converted) + len(letters) == 1


@settings(max_examples=200, deadline=None)
@given(
    st.lists(
        st.tuples(
            st.sampled_from(sorted(oip.DATATYPES)),
            st.lists(st.integers(-2, 5), min_size=0, max_size=3),
            st.lists(st.integers(0, 255), max_size=12),
        ),
        max_size=4,
    ),
    st.booleans(),
)
def test_hostile_tensors_are_counted_or_dead_lettered_once(tensors, raw):
    message = seldon.message("ModelInferRequest")(id="h")
    for i, (datatype, shape, values) in enumerate(tensors):
        tensor = message.inputs.add(name=f"t{i}", datatype=datatype, shape=shape)
        if raw:
            message.raw_input_contents.append(bytes(values))
        elif oip.DATATYPES[datatype][0] == "bytes_contents":
            tensor.contents.bytes_contents.extend(bytes([v]) for v in values)
        elif oip.DATATYPES[datatype][0]:
            field = getattr(tensor.contents, oip.DATATYPES[datatype][0])
            field.extend(bool(v) if datatype == "BOOL" else v for v in values)
    converted, letters = mapper().convert([record(message)])
    assert len(converted) + len(letters) == 1


def test_another_topic_prefix_is_read_through_a_topic_pattern():
    m = mapper(
        "acme.prod.model.income.outputs",
        topic_pattern="acme.{namespace}.model.{model}.{direction}",
    )
    assert m.spec.half == RESPONSE
    response = seldon.message("ModelInferResponse")(id="r")
    out = response.outputs.add(name="predict", datatype="FP32", shape=[1])
    out.contents.fp32_contents.append(0.5)
    [event] = events(m, record(response))
    assert (event["model"], event["prediction"]) == ("income", 0.5)
