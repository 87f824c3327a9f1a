"""Fuzzing the input decoder: no input raises, and nothing slips through unvalidated."""

from __future__ import annotations

import json
import math

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from streamdrift.streams.pipeline.codec import Limits, Reason, decode_events, decode_labels

LIMITS = Limits(
    max_message_bytes=20_000,
    max_events_per_message=20,
    max_features_per_event=8,
    max_name_length=12,
    max_category_length=16,
)

scalars = st.one_of(
    st.none(), st.booleans(), st.integers(), st.floats(allow_nan=False), st.text(max_size=24)
)
json_values = st.recursive(
    scalars,
    lambda inner: (
        st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4)
    ),
    max_leaves=12,
)
names = st.text(min_size=0, max_size=16)
events = st.fixed_dictionaries(
    {
        "model": st.one_of(names, json_values),
        "features": st.one_of(st.dictionaries(names, json_values, max_size=10), json_values),
    },
    optional={
        "model_version": json_values,
        "event_id": json_values,
        "timestamp": st.one_of(json_values, st.just("2025-11-21T10:00:00Z")),
        "prediction": json_values,
    },
)
fuzz = settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])


def check_valid(event) -> None:
    """Every accepted event satisfies the contract exactly."""
    assert isinstance(event.model, str) and 0 < len(event.model) <= LIMITS.max_name_length
    assert (
        len(event.numeric) + len(event.categorical) + len(event.missing)
        <= LIMITS.max_features_per_event + 1
    )
    for name, value in event.numeric.items():
        assert (
            isinstance(value, float)
            and math.isfinite(value)
            and 0 < len(name) <= LIMITS.max_name_length
        )
    for value in event.categorical.values():
        assert isinstance(value, str) and len(value) <= LIMITS.max_category_length
    assert math.isfinite(event.timestamp)


@fuzz
@given(st.binary(max_size=400))
def test_arbitrary_bytes_never_raise(value):
    for decode in (decode_events, decode_labels):
        accepted, rejected = decode(value, 1.0, LIMITS)
        assert len(accepted) + len(rejected) >= 1 or _is_empty_array(value)  # nothing vanishes
        assert all(isinstance(r.reason, Reason) for r in rejected)


def _is_empty_array(value: bytes) -> bool:
    try:
        return json.loads(value) == []
    except ValueError:
        return False


@fuzz
@given(events)
def test_a_single_event_is_either_valid_by_contract_or_rejected_whole(body):
    value = json.dumps(body).encode()
    accepted, rejected = decode_events(value, 1.0, LIMITS)
    assert len(accepted) + len(rejected) == 1
    for event in accepted:
        check_valid(event)
    for rejection in rejected:
        assert rejection.payload == value and rejection.index is None


@fuzz
@given(st.lists(st.one_of(events, json_values), max_size=8))
def test_a_batch_accounts_for_every_element(items):
    value = json.dumps(items).encode()
    accepted, rejected = decode_events(value, 1.0, LIMITS)
    if len(rejected) == 1 and rejected[0].index is None:
        return  # rejected whole (e.g. an unrepresentable number): the original bytes go to the DLQ
    assert len(accepted) + len(rejected) == len(items)
    assert sorted([e.index for e in accepted] + [r.index for r in rejected]) == list(
        range(len(items))
    )
    for event in accepted:
        check_valid(event)
    for rejection in rejected:
        assert json.loads(rejection.payload) == items[rejection.index]
