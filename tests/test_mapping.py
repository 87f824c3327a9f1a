"""Mapped input topics: the configuration is checked with errors naming the field; a message
in the user's shape becomes native events (rows, headers, key, constants, include/exclude) that
take the native path; whatever a message holds, it is counted or dead-lettered with a reason,
once, and the next offset moves past it."""

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
from streamdrift.streams.state.partition import PartitionState

MAPPING: dict[str, Any] = {
    "rows": "records",
    "model": "const:fraud",
    "model_version": "message:meta.version",
    "event_id": "id",
    "timestamp": "message:meta.ts",
    "features": "inputs",
    "prediction": "output.score",
    "exclude": ["user_id"],
}


def spec(mapping: dict[str, Any] | None = None, topic: str = "logs") -> Any:
    config = {"inputs": [{"topic": topic, "format": "json", "mapping": mapping or MAPPING}]}
    (found,) = input_specs(config)
    return found


def message(rows: int = 2, **meta: Any) -> bytes:
    return json.dumps(
        {
            "meta": {"version": "3", "ts": 1_767_225_600.0, **meta},
            "records": [
                {
                    "id": f"r{i}",
                    "inputs": {"amount": 10.0 + i, "country": "DE", "user_id": "u1"},
                    "output": {"score": 0.25},
                }
                for i in range(rows)
            ],
        }
    ).encode()


def processor() -> PredictionProcessor:
    return PredictionProcessor({}, Limits(), AdmissionLimits())


def test_rows_become_native_events_with_every_field() -> None:
    mapper = Mapper(spec(), Limits())
    converted, letters = mapper.convert([Record(5, 1_767_225_601.0, message(2))])
    assert not letters
    (record,) = converted
    assert (record.offset, record.timestamp) == (5, 1_767_225_601.0)
    assert json.loads(record.value or b"") == [
        {
            "model": "fraud",
            "features": {"amount": 10.0 + i, "country": "DE"},
            "model_version": "3",
            "event_id": f"r{i}",
            "timestamp": 1_767_225_600.0,
            "prediction": 0.25,
        }
        for i in range(2)
    ]


def test_headers_key_named_features_and_include() -> None:
    mapping = {
        "model": "header:ce_inferenceservicename",
        "event_id": "key",
        "features": {"amount": "payload.amount", "age": "payload.customer.age"},
        "include": ["amount"],
    }
    mapper = Mapper(spec(mapping), Limits())
    body = json.dumps({"payload": {"amount": 3.5, "customer": {"age": 41}}}).encode()
    record = Record(0, 1.0, body, b"req-1", [("ce_inferenceservicename", b"fraud-v3")])
    (converted,), letters = mapper.convert([record])
    assert not letters
    assert json.loads(converted.value or b"") == {
        "model": "fraud-v3",
        "features": {"amount": 3.5},
        "event_id": "req-1",
    }


@pytest.mark.parametrize(
    ("mapping", "problem"),
    [
        ({"features": "inputs"}, "inputs[0].mapping: model is required"),
        ({"model": "m", "features": "inputs", "colour": "x"}, "unknown key 'colour'"),
        ({"model": "a[", "features": "inputs"}, "inputs[0].mapping.model: not a JMESPath"),
        ({"model": "m", "features": {}}, "inputs[0].mapping.features: no feature listed"),
        ({"model": "m", "features": {"a": 3}}, "inputs[0].mapping.features.a: expected"),
        ({"model": "m", "features": "x", "include": "a"}, "mapping.include: expected a list"),
        ({"model": "", "features": "x"}, "inputs[0].mapping.model: expected a JMESPath"),
    ],
)
def test_a_wrong_mapping_names_the_field(mapping: dict[str, Any], problem: str) -> None:
    with pytest.raises(ValueError, match="invalid config at") as raised:
        input_specs({"inputs": [{"topic": "logs", "mapping": mapping}]})
    assert problem in str(raised.value)


def test_inputs_must_be_new_topics_of_a_known_format() -> None:
    entry = {"topic": "predictions", "mapping": {"model": "m", "features": "f"}}
    with pytest.raises(ValueError, match="'predictions' is already consumed"):
        input_specs({"inputs": [entry]}, reserved=("predictions", "labels"))
    with pytest.raises(ValueError, match=r"format: expected one of json, .*got 'thrift'"):
        input_specs({"inputs": [{**entry, "topic": "x", "format": "thrift"}]})
    with pytest.raises(ValueError, match="already consumed"):
        input_specs({"inputs": [{**entry, "topic": "x"}, {**entry, "topic": "x"}]})


def test_unreadable_messages_are_dead_lettered_with_the_field_and_the_offset_moves_on() -> None:
    mapper = Mapper(spec(), Limits(max_events_per_message=3))
    state = PartitionState("logs", 0, 1, None)
    records = [
        Record(0, 1.0, b"{not json"),
        Record(1, 1.0, json.dumps({"records": "no list"}).encode()),
        Record(2, 1.0, message(5)),  # more rows than a message may hold
        Record(3, 1.0, json.dumps({"records": [{"inputs": [1, 2]}]}).encode()),
        Record(4, 1.0, message(2)),
        Record(5, 1.0, None),
        Record(6, 1.0, b"[" * 100 + b"]" * 100),
    ]
    outcome = mapper.process(processor(), state, records)
    reasons = [(d.offset, d.reason) for d in outcome.dead_letters]
    assert reasons == [
        (0, Reason.MALFORMED_JSON),
        (1, Reason.MAPPING_FAILED),
        (2, Reason.TOO_MANY_EVENTS),
        (3, Reason.MAPPING_FAILED),
        (5, Reason.MALFORMED_JSON),
        (6, Reason.TOO_DEEP),
    ]
    assert "input logs: rows: expected a non-empty list" in outcome.dead_letters[1].detail
    assert "features: expected an object, got list" in outcome.dead_letters[3].detail
    assert outcome.events == 2 and state.next_offset == 7
    # a replay of the same records: duplicates, nothing counted or dead-lettered again
    again = mapper.process(processor(), state, records)
    assert again.duplicates == len(records) and not again.dead_letters and again.events == 0


def test_mapped_events_get_the_native_checks() -> None:
    """A model the path does not find is the mapping's failure; a value of the wrong kind is
    the native contract's (the event as mapped goes to the dead-letter topic)."""
    mapper = Mapper(spec({"model": "m", "features": "f"}), Limits())
    state = PartitionState("logs", 0, 1, None)
    records = [
        Record(0, 1.0, json.dumps({"m": None, "f": {"x": 1.0}}).encode()),
        Record(1, 1.0, json.dumps({"m": 7, "f": {"x": 1.0}}).encode()),
        Record(2, 1.0, json.dumps({"m": "model", "f": {"x": {"nested": 1}}}).encode()),
        Record(3, 1.0, json.dumps({"m": "model", "f": {"x": 1.0}}).encode()),
    ]
    outcome = mapper.process(processor(), state, records)
    assert [(d.offset, d.reason) for d in outcome.dead_letters] == [
        (0, Reason.MAPPING_FAILED),
        (1, Reason.INVALID_MODEL),
        (2, Reason.INVALID_FEATURE_VALUE),
    ]
    assert json.loads(outcome.dead_letters[1].payload)["model"] == 7  # as mapped
    assert outcome.events == 1


JSON = st.recursive(
    st.none() | st.booleans() | st.floats(allow_nan=False) | st.integers() | st.text(max_size=5),
    lambda inner: (
        st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=4), inner, max_size=4)
    ),
    max_leaves=20,
)


@settings(max_examples=400, deadline=None)
@given(
    st.one_of(JSON.map(lambda v: json.dumps(v).encode()), st.binary(max_size=64)),
    st.lists(st.tuples(st.text(max_size=8), st.binary(max_size=8)), max_size=3),
    st.one_of(st.none(), st.binary(max_size=8)),
)
def test_whatever_a_message_holds_it_is_counted_or_dead_lettered_once(
    value: bytes, headers: list[tuple[str, bytes]], key: bytes | None
) -> None:
    mapping = dict(MAPPING, event_id="key", model="header:m")
    mapper = Mapper(spec(mapping), Limits())
    state = PartitionState("logs", 0, 1, None)
    outcome = mapper.process(processor(), state, [Record(0, 1.0, value, key, headers)])
    assert state.next_offset == 1
    assert outcome.events + len(outcome.dead_letters) >= 1
    assert all(d.offset == 0 for d in outcome.dead_letters)


def test_a_bug_in_a_mapping_dead_letters_the_message_instead_of_stopping_the_worker(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    mapper = Mapper(spec(), Limits())

    def broken(record: Record) -> list[dict[str, Any]]:
        raise KeyError("a bug")

    monkeypatch.setattr(mapper, "_events", broken)
    state = PartitionState("logs", 0, 1, None)
    outcome = mapper.process(processor(), state, [Record(0, 1.0, message(1))])
    assert [(d.offset, d.reason) for d in outcome.dead_letters] == [(0, Reason.INTERNAL_ERROR)]
    assert state.next_offset == 1
