"""Decoding and validation of input messages (pure logic)."""

from __future__ import annotations

import json

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from streamdrift.streams.pipeline.codec import (
    Limits,
    Reason,
    _deeper_by_tokens,
    decode_events,
    decode_labels,
    deeper_than,
    typed_events,
    typed_messages,
)

LIMITS = Limits(
    max_message_bytes=10_000,
    max_events_per_message=5,
    max_features_per_event=3,
    max_name_length=10,
    max_category_length=8,
)


def one(value: bytes, limits: Limits = LIMITS):
    events, rejections = decode_events(value, 100.0, limits)
    return events, [(r.reason, r.index) for r in rejections]


def test_a_valid_event_splits_features_by_kind_and_monitors_the_prediction():
    body = {
        "model": "fraud",
        "model_version": "3",
        "event_id": "e-1",
        "timestamp": 1763719200.25,
        "features": {"amount": 12, "country": "DE", "age": None},
        "prediction": 0.91,
    }
    (event,), rejected = one(json.dumps(body).encode())
    assert rejected == []
    assert event.numeric == {"amount": 12.0, "prediction": 0.91}
    assert event.categorical == {"country": "DE"}
    assert event.missing == ["age"]
    assert (event.model_version, event.event_id, event.timestamp) == ("3", "e-1", 1763719200.25)


def test_booleans_are_categorical_and_the_kafka_timestamp_is_the_default():
    (event,), _ = one(b'{"model": "m", "features": {"flag": true}}')
    assert event.categorical == {"flag": "true"} and event.timestamp == 100.0


@pytest.mark.parametrize(
    ("timestamp", "expected"),
    [("2025-11-21T10:00:00Z", 1763719200.0), ("2025-11-21T11:00:00+01:00", 1763719200.0), (5, 5.0)],
)
def test_timestamps_are_epoch_seconds_or_rfc3339(timestamp, expected):
    (event,), _ = one(json.dumps({"model": "m", "features": {}, "timestamp": timestamp}).encode())
    assert event.timestamp == expected


@pytest.mark.parametrize(
    ("value", "reason"),
    [
        (b"{oops", Reason.MALFORMED_JSON),
        (b"", Reason.MALFORMED_JSON),
        (b"42", Reason.NOT_AN_OBJECT),
        (b'{"features": {}}', Reason.MISSING_MODEL),
        (b'{"model": ["m"], "features": {}}', Reason.INVALID_MODEL),
        (b'{"model": "", "features": {}}', Reason.INVALID_MODEL),
        (b'{"model": "m"}', Reason.MISSING_FEATURES),
        (b'{"model": "m", "features": [1]}', Reason.INVALID_FEATURES),
        (b'{"model": "m", "features": {"a": {}}}', Reason.INVALID_FEATURE_VALUE),
        (b'{"model": "m", "features": {"a": -1e400}}', Reason.NON_FINITE_VALUE),
        (
            b'{"model": "m", "features": {"a": 1' + b"0" * 400 + b"}}",
            Reason.NON_FINITE_VALUE,
        ),  # an integer beyond float
        (b'{"model": "m", "features": {"a": "longer than 8"}}', Reason.CATEGORY_TOO_LONG),
        (b'{"model": "m", "features": {"a": 1, "b": 2, "c": 3, "d": 4}}', Reason.TOO_MANY_FEATURES),
        (b'{"model": "m", "features": {"a name too long": 1}}', Reason.INVALID_FEATURE_NAME),
        (b'{"model": "m", "features": {}, "timestamp": "noon"}', Reason.INVALID_TIMESTAMP),
        (
            b'{"model": "m", "features": {}, "timestamp": "2025-11-21T10:00:00"}',
            Reason.INVALID_TIMESTAMP,
        ),
        (b'{"model": "m", "features": {}, "prediction": [1]}', Reason.INVALID_PREDICTION),
        (
            b'{"model": "m", "features": {"prediction": 1}, "prediction": 1}',
            Reason.INVALID_FEATURES,
        ),
        (b'{"model": "m", "features": {}, "event_id": 5}', Reason.INVALID_EVENT_ID),
        (b"[" + b",".join([b'{"model": "m", "features": {}}'] * 6) + b"]", Reason.TOO_MANY_EVENTS),
        (b'{"model": "m", "features": {"a": "' + b"x" * 10_000 + b'"}}', Reason.OVERSIZE_MESSAGE),
    ],
)
def test_each_kind_of_bad_message_is_rejected_whole_with_its_reason(value, reason):
    events, rejected = one(value)
    assert events == [] and rejected == [(reason, None)]


def test_in_a_batch_only_the_bad_events_are_rejected_and_each_keeps_its_own_bytes():
    value = (
        b'[{"model": "a", "features": {"x": 1}}, {"model": 1, "features": {}}, 7, {"model": "b", '
        b'"features": {}}]'
    )
    events, rejections = decode_events(value, 0.0, LIMITS)
    assert [e.model for e in events] == ["a", "b"] and [e.index for e in events] == [0, 3]
    assert [(r.reason, r.index, r.payload) for r in rejections] == [
        (Reason.INVALID_MODEL, 1, b'{"model":1,"features":{}}'),
        (Reason.NOT_AN_OBJECT, 2, b"7"),
    ]


def test_a_batch_failing_only_in_validation_keeps_its_valid_events():
    value = (
        b'[{"model": "a", "features": {"x": 1}}, {"model": "b", "features": {"x": "too long a '
        b'value"}}]'
    )
    events, rejections = decode_events(value, 0.0, LIMITS)
    assert [e.model for e in events] == ["a"]
    assert [(r.reason, r.index) for r in rejections] == [(Reason.CATEGORY_TOO_LONG, 1)]
    assert json.loads(rejections[0].payload)["model"] == "b"


def test_an_integer_beyond_the_float_range_rejects_only_its_event():
    value = (
        b'[{"model": "a", "features": {"x": 1}}, {"model": "b", "features": {}, "prediction": 1'
        + b"0" * 400
        + b"}]"
    )
    events, rejections = decode_events(value, 0.0, LIMITS)
    assert [e.model for e in events] == ["a"]
    assert [(r.reason, r.index) for r in rejections] == [(Reason.NON_FINITE_VALUE, 1)]


def test_labels_decode_and_bad_labels_are_rejected():
    labels, rejections = decode_labels(
        b'[{"model": "m", "event_id": "e", "label": 0}, {"model": "m", "label": 1}]', 9.0, LIMITS
    )
    assert [(label.event_id, label.label, label.timestamp) for label in labels] == [("e", 0.0, 9.0)]
    assert [(r.reason, r.index) for r in rejections] == [(Reason.INVALID_EVENT_ID, 1)]


_JSON = st.recursive(
    st.none() | st.integers() | st.text(alphabet='[]{}"\\ab'),
    lambda children: st.lists(children) | st.dictionaries(st.text(alphabet='[]{}"\\ab'), children),
    max_leaves=40,
)


def _depth(value: object) -> int:
    if isinstance(value, list):
        return 1 + max(map(_depth, value), default=0)
    if isinstance(value, dict):
        return 1 + max(map(_depth, value.values()), default=0)
    return 0


@settings(max_examples=500, deadline=None)
@given(_JSON, st.integers(0, 8))
def test_the_nesting_depth_check_agrees_with_the_decoded_structure(value, limit):
    """Brackets and escaped quotes inside strings never count (both the vectorised and the token
    scan)."""
    raw = json.dumps(value).encode()
    assert deeper_than(raw, limit) == (_depth(value) > limit)
    assert _deeper_by_tokens(raw, limit) == (_depth(value) > limit)


def test_nesting_beyond_the_limit_or_the_decoder_is_a_too_deep_dead_letter_at_linear_cost():
    for body in (
        b'{"model": "m", "features": {"x": ' + b"[" * 100 + b"]" * 100_000 + b"}}",
        b"[" * 100_000 + b"]" * 100_000,
    ):
        events, rejections = decode_events(body, 1.0, Limits(max_message_bytes=1_000_000))
        assert events == [] and [r.reason for r in rejections] == [Reason.TOO_DEEP]
    # Deep but within the typed decoder's reach in an unknown field: the event is fine.
    ok = b'{"model": "m", "features": {"x": 1}, "extra": ' + b"[" * 100 + b"]" * 100 + b"}"
    events, _ = decode_events(ok, 1.0, Limits(max_json_depth=64))
    assert len(events) == 1  # unknown fields are skipped by the typed decoder, whatever their depth


_MESSAGES = [
    b'{"model": "m", "features": {"x": 1, "c": "DE", "z": null}}',
    b'[{"model": "m", "features": {"x": 1}}, {"model": "n", "features": {}}]',
    b"[]",
    b"[1, 2]",
    b'{"model": 7, "features": {}}',
    b"{not json",
    b"",
    None,
    b'{"model": "m", "features": {"x": 1e999}}',
    json.dumps([{"model": "m", "features": {}}] * 6).encode(),  # one event too many
    json.dumps({"model": "m", "features": {"x": "y" * 10_000}}).encode(),  # oversize
    b"[" * 5_000 + b"]" * 5_000,  # beyond the decoder's recursion limit
]


@settings(max_examples=200, deadline=None)
@given(st.lists(st.sampled_from(_MESSAGES), max_size=12))
def test_a_batch_of_messages_decodes_as_each_message_alone(values):
    """``typed_messages`` (the processor's one pass over a batch) gives what ``typed_events``
    gives each message: a failing message leaves None and the next ones still decode."""
    expected = [typed_events(value, LIMITS) for value in values]
    got = [
        None
        if typed is None
        else [(None, typed)]
        if not isinstance(typed, list)
        else list(enumerate(typed))
        for typed in typed_messages(values, LIMITS)
    ]
    assert got == expected
