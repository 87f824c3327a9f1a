"""KServe payload logs as an input: binary-mode (``ce_*`` headers) and structured-mode
CloudEvents with V1 and V2 (Open Inference Protocol) bodies become native events — requests'
rows their inputs, responses' rows their prediction — and whatever a message holds it is
counted or dead-lettered with a precise reason."""

from __future__ import annotations

import base64
import json
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from streamdrift.streams.pipeline.codec import Limits, Reason
from streamdrift.streams.pipeline.inputs import input_specs
from streamdrift.streams.pipeline.kserve import REQUEST, RESPONSE
from streamdrift.streams.pipeline.mapping import Mapper
from streamdrift.streams.pipeline.outcome import Record
from streamdrift.streams.pipeline.processor import AdmissionLimits, PredictionProcessor
from streamdrift.streams.state.partition import PartitionState


def mapper(mapping: dict[str, Any] | None = None, limits: Limits | None = None) -> Mapper:
    # each half on its own (pairing: tests/test_pairing.py)
    entry: dict[str, Any] = {"topic": "kserve", "format": "kserve", "pairing": False}
    if mapping is not None:
        entry["mapping"] = mapping
    (spec,) = input_specs({"inputs": [entry]})
    return Mapper(spec, limits or Limits())


def binary(kind: str, body: Any, ident: str = "abc", offset: int = 0, **extra: str) -> Record:
    """A record as Knative's Kafka sink writes a KServe CloudEvent in binary mode."""
    headers = [
        ("ce_specversion", b"1.0"),
        ("ce_id", ident.encode()),
        ("ce_type", kind.encode()),
        ("ce_source", b"http://localhost:9081/"),
        ("ce_inferenceservicename", b"sklearn-iris"),
        ("ce_namespace", b"default"),
        ("ce_component", b"predictor"),
        ("ce_endpoint", b"default"),
        ("content-type", b"application/json"),
        *((f"ce_{k}", v.encode()) for k, v in extra.items()),
    ]
    return Record(offset, 1_767_225_600.0, json.dumps(body).encode(), ident.encode(), headers)


def native(records: list[Record], m: Mapper | None = None) -> list[Any]:
    converted, letters = (m or mapper()).convert(records)
    assert not letters, [(d.reason, d.detail) for d in letters]
    return [json.loads(r.value or b"") for r in converted]


def test_v1_request_and_response_in_binary_mode() -> None:
    m = mapper({"names": ["sepal_length", "sepal_width", "petal_length", "petal_width"]})
    request = binary(REQUEST, {"instances": [[6.8, 2.8, 4.8, 1.4], [6.0, 3.4, 4.5, 1.6]]})
    response = binary(RESPONSE, {"predictions": [1, 1]}, offset=1)
    assert native([request, response], m) == [
        [
            {
                "model": "sklearn-iris",
                "features": {
                    "sepal_length": 6.8,
                    "sepal_width": 2.8,
                    "petal_length": 4.8,
                    "petal_width": 1.4,
                },
                "event_id": "abc/0",
            },
            {
                "model": "sklearn-iris",
                "features": {
                    "sepal_length": 6.0,
                    "sepal_width": 3.4,
                    "petal_length": 4.5,
                    "petal_width": 1.6,
                },
                "event_id": "abc/1",
            },
        ],
        [
            {"model": "sklearn-iris", "features": {}, "prediction": 1, "event_id": "abc/0"},
            {"model": "sklearn-iris", "features": {}, "prediction": 1, "event_id": "abc/1"},
        ],
    ]


def test_v2_tensors_name_their_columns_and_the_version_comes_from_an_attribute() -> None:
    m = mapper({"model_version": "header:ce_endpoint"})
    request = binary(
        REQUEST,
        {
            "inputs": [
                {"name": "x", "shape": [2, 3], "datatype": "FP32", "data": [1, 2, 3, 4, 5, 6]},
                {"name": "country", "shape": [2], "datatype": "BYTES", "data": ["DE", "FR"]},
            ]
        },
        time="2026-01-01T00:00:00Z",
    )
    response = binary(
        RESPONSE,
        {"outputs": [{"name": "score", "shape": [1, 1], "datatype": "FP32", "data": [[0.9]]}]},
        offset=1,
    )
    first, second = native([request, response], m)
    assert first[1] == {
        "model": "sklearn-iris",
        "features": {"x[0]": 4, "x[1]": 5, "x[2]": 6, "country": "FR"},
        "model_version": "default",
        "event_id": "abc/1",
        "timestamp": "2026-01-01T00:00:00Z",
    }
    assert second == {
        "model": "sklearn-iris",
        "features": {},
        "prediction": 0.9,
        "model_version": "default",
        "event_id": "abc",
    }


def test_structured_mode_with_data_or_data_base64() -> None:
    body = {"instances": [{"amount": 3.5, "country": "DE"}]}
    envelope = {
        "specversion": "1.0",
        "id": "e1",
        "type": REQUEST,
        "source": "s",
        "inferenceservicename": "fraud",
        "datacontenttype": "application/json",
    }
    plain = Record(0, 1.0, json.dumps({**envelope, "data": body}).encode())
    encoded = base64.b64encode(json.dumps(body).encode()).decode()
    based = Record(1, 1.0, json.dumps({**envelope, "data_base64": encoded}).encode())
    expected = {"model": "fraud", "features": {"amount": 3.5, "country": "DE"}, "event_id": "e1"}
    assert native([plain, based]) == [expected, expected]


@pytest.mark.parametrize(
    ("record", "reason", "detail"),
    [
        (binary("org.other.event", {"instances": [[1]]}), Reason.UNSUPPORTED_EVENT_TYPE, "type"),
        (
            binary(REQUEST, {"inputs": [{"name": "x", "shape": [2, 2], "data": [1, 2, 3]}]}),
            Reason.TENSOR_SHAPE_MISMATCH,
            "wants 4 values",
        ),
        (
            binary(
                REQUEST,
                {
                    "inputs": [
                        {"name": "x", "shape": [2], "data": [1, 2]},
                        {"name": "y", "shape": [3], "data": [1, 2, 3]},
                    ]
                },
            ),
            Reason.TENSOR_SHAPE_MISMATCH,
            "3 rows, not 2",
        ),
        (
            binary(REQUEST, {"inputs": [{"name": "x", "shape": [1, 1, 1], "data": [1]}]}),
            Reason.TENSOR_SHAPE_MISMATCH,
            "not [N] or [N, k]",
        ),
        (binary(REQUEST, {"other": 1}), Reason.MAPPING_FAILED, "neither instances"),
        (binary(RESPONSE, {"predictions": []}), Reason.MAPPING_FAILED, "non-empty list"),
        (Record(0, 1.0, b'{"no": "type"}'), Reason.MAPPING_FAILED, "not a CloudEvent"),
        (binary(REQUEST, {"instances": [[1]] * 11}), Reason.TOO_MANY_EVENTS, "11 instances"),
    ],
)
def test_unreadable_payloads_get_a_precise_reason(
    record: Record, reason: Reason, detail: str
) -> None:
    _, letters = mapper(limits=Limits(max_events_per_message=10)).convert([record])
    (letter,) = letters
    assert letter.reason == reason and detail in letter.detail, letter


def test_a_v1_instance_that_does_not_fit_the_names_is_a_shape_mismatch() -> None:
    m = mapper({"names": ["a", "b"]})
    _, letters = m.convert([binary(REQUEST, {"instances": [[1, 2, 3]]})])
    assert [d.reason for d in letters] == [Reason.TENSOR_SHAPE_MISMATCH]


TENSOR = st.fixed_dictionaries(
    {
        "name": st.one_of(st.text(max_size=3), st.integers()),
        "shape": st.lists(st.integers(-1, 4), max_size=3),
        "data": st.recursive(
            st.one_of(st.integers(), st.floats(allow_nan=False), st.text(max_size=2), st.none()),
            lambda inner: st.lists(inner, max_size=6),
            max_leaves=12,
        ),
    }
)


@settings(max_examples=400, deadline=None)
@given(
    st.sampled_from([REQUEST, RESPONSE, "x"]),
    st.one_of(
        st.fixed_dictionaries({"inputs": st.lists(TENSOR, max_size=3)}),
        st.fixed_dictionaries({"outputs": st.lists(TENSOR, max_size=3)}),
        st.fixed_dictionaries({"instances": st.lists(st.lists(st.integers(), max_size=3))}),
        st.fixed_dictionaries(
            {"predictions": st.lists(st.one_of(st.integers(), st.lists(st.integers())))}
        ),
        st.dictionaries(st.text(max_size=3), st.integers(), max_size=2),
    ),
)
def test_whatever_a_kserve_message_holds_it_is_counted_or_dead_lettered_once(
    kind: str, body: dict[str, Any]
) -> None:
    state = PartitionState("kserve", 0, 1, None)
    processor = PredictionProcessor({}, Limits(), AdmissionLimits())
    outcome = mapper().process(processor, state, [binary(kind, body)])
    assert state.next_offset == 1
    assert outcome.events + len(outcome.dead_letters) >= 1
