"""Seldon Core 1 request logs as an input (its executor's Kafka logger: ``type`` /
``requestid`` / ``inferenceservicename`` / ``protocol`` headers, SeldonMessage, TensorFlow or V2
bodies): rows become native events; bad ones get a precise reason."""

from __future__ import annotations

import json
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from streamdrift.streams.pipeline.codec import Limits, Reason
from streamdrift.streams.pipeline.inputs import input_specs
from streamdrift.streams.pipeline.mapping import Mapper
from streamdrift.streams.pipeline.outcome import Record
from streamdrift.streams.pipeline.processor import AdmissionLimits, PredictionProcessor
from streamdrift.streams.pipeline.seldon import REQUEST, RESPONSE
from streamdrift.streams.state.partition import PartitionState


def mapper(mapping: dict[str, Any] | None = None) -> Mapper:
    entry: dict[str, Any] = {"topic": "seldon", "format": "seldon", "mapping": mapping or {}}
    entry["pairing"] = False  # each half on its own (pairing: tests/test_pairing.py)
    (spec,) = input_specs({"inputs": [entry]})
    return Mapper(spec, Limits())


def logged(kind: str, body: Any, protocol: str = "seldon", offset: int = 0) -> Record:
    """A record as Seldon Core 1's executor writes it to Kafka (no key)."""
    headers = [
        ("type", kind.encode()),
        ("content-type", b"application/json"),
        ("modelid", b"classifier"),
        ("requestid", b"r-42"),
        ("inferenceservicename", b"income"),
        ("namespace", b"seldon"),
        ("endpoint", b"default"),
        ("protocol", protocol.encode()),
    ]
    return Record(offset, 1.0, json.dumps(body).encode(), None, headers)


def native(records: list[Record], m: Mapper | None = None) -> list[Any]:
    converted, letters = (m or mapper()).convert(records)
    assert not letters, [(d.reason, d.detail) for d in letters]
    return [json.loads(r.value or b"") for r in converted]


def test_seldon_messages_with_names_ndarray_and_tensor() -> None:
    request = logged(REQUEST, {"data": {"names": ["age", "hours"], "ndarray": [[39, 40]]}})
    response = logged(
        RESPONSE, {"data": {"names": ["t:0", "t:1"], "ndarray": [[0.8, 0.2]]}}, offset=1
    )
    tensor = logged(
        REQUEST, {"data": {"tensor": {"shape": [2, 2], "values": [1, 2, 3, 4]}}}, offset=2
    )
    m = mapper({"names": ["age", "hours"], "model_version": "header:endpoint"})
    first, second, third = native([request, response, tensor], m)
    assert first == {
        "model": "income",
        "features": {"age": 39, "hours": 40},
        "model_version": "default",
        "event_id": "r-42",
    }
    assert second["features"] == {"t:0": 0.8, "t:1": 0.2} and "prediction" not in second
    assert [row["features"] for row in third] == [{"age": 1, "hours": 2}, {"age": 3, "hours": 4}]
    assert [row["event_id"] for row in third] == ["r-42/0", "r-42/1"]


def test_a_single_column_response_is_the_prediction_and_other_protocols_are_read() -> None:
    response = logged(RESPONSE, {"data": {"names": ["score"], "ndarray": [[0.7]]}})
    tf = logged(REQUEST, {"instances": [[1.0, 2.0]]}, protocol="tensorflow", offset=1)
    v2 = logged(
        RESPONSE,
        {"outputs": [{"name": "p", "shape": [1], "datatype": "FP32", "data": [0.3]}]},
        protocol="v2",
        offset=2,
    )
    first, second, third = native([response, tf, v2])
    assert first["prediction"] == 0.7 and first["features"] == {}
    assert second["features"] == {"input[0]": 1.0, "input[1]": 2.0}
    assert third["prediction"] == 0.3


@pytest.mark.parametrize(
    ("record", "reason"),
    [
        (logged("io.seldon.serving.feedback", {"data": {}}), Reason.UNSUPPORTED_EVENT_TYPE),
        (logged(REQUEST, {"jsonData": {"a": 1}}), Reason.MAPPING_FAILED),
        (
            logged(REQUEST, {"data": {"names": ["a"], "ndarray": [[1, 2]]}}),
            Reason.TENSOR_SHAPE_MISMATCH,
        ),
        (
            logged(REQUEST, {"data": {"tensor": {"shape": [2, 2], "values": [1]}}}),
            Reason.TENSOR_SHAPE_MISMATCH,
        ),
        (logged(REQUEST, {"data": {"names": "a", "ndarray": [[1]]}}), Reason.MAPPING_FAILED),
    ],
)
def test_unreadable_logs_get_a_precise_reason(record: Record, reason: Reason) -> None:
    _, letters = mapper().convert([record])
    assert [d.reason for d in letters] == [reason], letters


@settings(max_examples=300, deadline=None)
@given(
    st.sampled_from([REQUEST, RESPONSE, "other"]),
    st.sampled_from(["seldon", "tensorflow", "v2", "?"]),
    st.recursive(
        st.none() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=3),
        lambda inner: (
            st.lists(inner, max_size=4)
            | st.dictionaries(
                st.sampled_from(
                    ["data", "names", "ndarray", "tensor", "shape", "values", "inputs"]
                ),
                inner,
                max_size=4,
            )
        ),
        max_leaves=16,
    ),
)
def test_whatever_a_seldon_log_holds_it_is_counted_or_dead_lettered_once(
    kind: str, protocol: str, body: Any
) -> None:
    state = PartitionState("seldon", 0, 1, None)
    processor = PredictionProcessor({}, Limits(), AdmissionLimits())
    outcome = mapper().process(processor, state, [logged(kind, body, protocol)])
    assert state.next_offset == 1
    assert outcome.events + len(outcome.dead_letters) >= 1
