"""Pure batch logic of the worker (streams.pipeline.processor): no broker, no Redis.

Records go in as Kafka would hand them over (offset, timestamp, raw bytes); the tests check the
``Outcome`` (events, duplicates, dead letters, joins, findings) and the partition state.
"""

from __future__ import annotations

import json
from itertools import pairwise
from typing import Any

import msgspec
import numpy as np
import pytest

from streamdrift.detectors import (
    Baseline,
    BaselineBuilder,
    CategoricalMonitor,
    ErrorMonitor,
    MultivariateParams,
    NumericMonitor,
    PCAReconstructionMonitor,
)
from streamdrift.streams.pipeline.codec import Limits, Reason
from streamdrift.streams.pipeline.labels import LabelProcessor, label_error
from streamdrift.streams.pipeline.outcome import Outcome, Record
from streamdrift.streams.pipeline.processor import AdmissionLimits, PredictionProcessor
from streamdrift.streams.state.keys import series_name
from streamdrift.streams.state.partition import Claim, PartitionState, PendingLabel

MODEL = "m"


def series(feature: str, model: str = MODEL, version: str | None = None) -> str:
    return series_name(model, version, feature)


def encode(body: Any) -> bytes:
    return json.dumps(body).encode()


def event(features: dict[str, Any], model: str = MODEL, **extra: Any) -> dict[str, Any]:
    return {"model": model, "features": features, **extra}


def records(bodies: list[Any], first_offset: int = 0) -> list[Record]:
    """One record per body, consecutive offsets, Kafka timestamp 1000 + offset."""
    return [
        Record(first_offset + i, 1000.0 + first_offset + i, encode(body))
        for i, body in enumerate(bodies)
    ]


def new_state(topic: str = "in", partition: int = 0) -> PartitionState:
    return PartitionState(topic, partition, epoch=1, next_offset=None)


def processor(
    config: dict[str, Any] | None = None,
    max_models: int = 1_000,
    max_features_per_model: int = 2_000,
    **admission: Any,
) -> PredictionProcessor:
    return PredictionProcessor(
        config=config or {},
        limits=Limits(),
        admission=AdmissionLimits(
            max_models=max_models, max_features_per_model=max_features_per_model, **admission
        ),
    )


def counts(state: PartitionState) -> dict[str, tuple[int, int]]:
    """(values, missing) of every monitored series."""
    return {name: (m.count, m.missing) for name, m in state.monitors.items()}


def letters(outcome: Outcome) -> list[tuple[int, Reason, int | None]]:
    return [(d.offset, d.reason, d.index) for d in outcome.dead_letters]


def snapshot(state: PartitionState) -> dict[str, Any]:
    """Everything admission and the checkpoint depend on, to check that nothing changed."""
    return {
        "monitors": {name: m.to_bytes() for name, m in state.monitors.items()},
        "features": {model: set(names) for model, names in state.features_by_model.items()},
        "unknown_missing": dict(state.unknown_missing),
        "versions": {model: list(versions) for model, versions in state.versions.items()},
    }


def checkpoint_into(store: dict[bytes, bytes], state: PartitionState) -> None:
    """What a checkpoint does to the Redis state hash: HSET the changed fields, HDEL the retired
    ones (empty values), keys as bytes."""
    for name, blob in state.checkpoint_fields().items():
        if blob:
            store[name.encode()] = blob
        else:
            store.pop(name.encode(), None)
    state.mark_checkpointed()


# --- counting -------------------------------------------------------------------------------


def test_counts_per_series_equal_the_valid_events_and_missing_values_are_counted():
    bodies = [
        event({"amount": 10.0, "country": "DE", "age": None}, prediction=0.1),
        event({"amount": 11.0, "country": "FR", "age": 30}, prediction=0.2),
        event({"amount": None, "country": "DE", "age": 31}),
        b"{not json",  # dead-lettered, counts nothing
        event({"amount": 12.5, "country": None, "age": 32}, prediction=0.3),
    ]
    raw = [
        Record(o, 1000.0 + o, b if isinstance(b, bytes) else encode(b))
        for o, b in enumerate(bodies)
    ]
    state = new_state()
    out = processor().process(state, raw)

    assert out.events == 4
    assert letters(out) == [(3, Reason.MALFORMED_JSON, None)]
    assert counts(state) == {
        series("amount"): (3, 1),
        series("country"): (3, 1),
        series("age"): (3, 1),
        series("prediction"): (3, 0),
    }
    assert isinstance(state.monitors[series("country")], CategoricalMonitor)
    assert isinstance(state.monitors[series("amount")], NumericMonitor)
    assert state.next_offset == 5
    assert state.events_since_checkpoint == 4
    assert out.max_event_time == 1004.0  # the Kafka timestamp of the newest valid event


def test_a_series_seen_only_as_null_is_remembered_and_counted_once_it_gets_a_value():
    proc, state = processor(), new_state()
    proc.process(state, records([event({"x": 1.0, "late": None})] * 3))
    assert series("late") not in state.monitors
    assert state.unknown_missing == {series("late"): 3}
    fields = state.checkpoint_fields()
    assert msgspec.msgpack.decode(fields["\x00unknown_missing"]) == {series("late"): 3}
    assert "late" in state.features_by_model[MODEL]

    proc.process(
        state, records([event({"x": 2.0, "late": None}), event({"x": 3.0, "late": 7.0})], 3)
    )
    assert state.unknown_missing == {}
    assert counts(state)[series("late")] == (1, 4)  # 1 value, 3 + 1 earlier nulls
    assert msgspec.msgpack.decode(state.checkpoint_fields()["\x00unknown_missing"]) == {}
    assert series("late") in state.checkpoint_fields()


def test_records_below_the_next_offset_are_skipped_as_duplicates():
    proc, state = processor(), new_state()
    batch = records([event({"x": float(i)}, event_id=f"e{i}", prediction=0.5) for i in range(10)])
    first = proc.process(state, batch)
    before = counts(state)
    assert first.events == 10 and first.duplicates == 0 and len(first.joins) == 10

    again = proc.process(state, batch)
    assert (again.events, again.duplicates, again.joins, again.dead_letters) == (0, 10, [], [])
    assert counts(state) == before == {series("x"): (10, 0), series("prediction"): (10, 0)}

    # A batch overlapping the checkpointed position applies only the new records.
    overlap = records([event({"x": float(i)}) for i in range(8, 14)], first_offset=8)
    out = proc.process(state, overlap)
    assert (out.events, out.duplicates) == (4, 2)
    assert counts(state)[series("x")] == (14, 0)
    assert state.next_offset == 14


def test_a_restored_state_skips_what_its_checkpoint_already_holds():
    proc, state = processor(), new_state()
    proc.process(state, records([event({"x": 1.0})] * 5))
    restored = PartitionState.from_claim(
        "in",
        0,
        Claim(2, state.next_offset, {k.encode(): v for k, v in state.checkpoint_fields().items()}),
    )
    out = proc.process(restored, records([event({"x": 1.0})] * 7))  # Kafka redelivers 0..6
    assert (out.events, out.duplicates) == (2, 5)
    assert counts(restored)[series("x")] == (7, 0)


# --- admission limits -----------------------------------------------------------------------


def test_too_many_models_are_dead_lettered_without_a_trace():
    # a and b are established at once
    proc, state = (
        processor(max_models=2, probation_events=1),
        new_state(),
    )
    proc.process(state, records([event({"x": 1.0}, model="a"), event({"x": 1.0}, model="b")]))
    before = snapshot(state)

    out = proc.process(
        state, records([event({"x": 1.0, "y": "k"}, model="c", model_version="9")], 2)
    )
    assert letters(out) == [(2, Reason.TOO_MANY_MODELS, None)]
    assert out.events == 0
    assert snapshot(state) == before
    assert "c" not in state.versions and "c" not in state.features_by_model
    # Known models still get through.
    assert proc.process(state, records([event({"x": 2.0}, model="a")], 3)).events == 1


def test_too_many_features_for_a_model_across_batches_and_inside_one_batch():
    proc, state = processor(max_features_per_model=3), new_state()
    proc.process(state, records([event({"a": 1.0, "b": 1.0})]))
    before = snapshot(state)

    out = proc.process(state, records([event({"c": 1.0, "d": 1.0})], 1))
    assert letters(out) == [(1, Reason.TOO_MANY_FEATURES_FOR_MODEL, None)]
    assert snapshot(state) == before

    # Inside one batch: the first new feature fits, the next event's would be the 4th.
    # Null features count too: they are series of the model.
    out = proc.process(
        state, records([event({"a": 2.0, "c": None}), event({"a": 3.0, "d": 5.0})], 2)
    )
    assert out.events == 1
    assert letters(out) == [(3, Reason.TOO_MANY_FEATURES_FOR_MODEL, None)]
    assert state.features_by_model[MODEL] == {"a", "b", "c"}
    assert series("d") not in state.monitors
    assert counts(state)[series("a")] == (2, 0)
    # Other models have their own budget.
    assert proc.process(state, records([event({"d": 1.0}, model="other")], 4)).events == 1


def test_too_many_categories_across_batches_and_several_new_ones_inside_one_batch():
    proc, state = processor({"defaults": {"max_categories": 3}}), new_state()
    proc.process(state, records([event({"c": "a"}), event({"c": "b"})]))
    before = snapshot(state)

    # One batch brings 3 new categories: only the first fits (a, b + c = 3).
    out = proc.process(state, records([event({"c": v}) for v in ("c", "d", "c", "e", "a")], 2))
    assert letters(out) == [
        (3, Reason.TOO_MANY_CATEGORIES, None),
        (5, Reason.TOO_MANY_CATEGORIES, None),
    ]
    assert out.events == 3
    monitor = state.monitors[series("c")]
    assert dict(monitor.counts.counts) == {"a": 2, "b": 1, "c": 2}

    # A new series, several new categories in its very first batch (no monitor yet).
    out = proc.process(state, records([event({"n": v}) for v in ("p", "q", "r", "s", "p")], 7))
    assert letters(out) == [(10, Reason.TOO_MANY_CATEGORIES, None)]
    assert dict(state.monitors[series("n")].counts.counts) == {"p": 2, "q": 1, "r": 1}
    assert snapshot(state)["monitors"][series("c")] != before["monitors"][series("c")]


def test_a_refused_event_with_a_bad_category_leaves_no_trace():
    proc, state = processor({"defaults": {"max_categories": 2}}), new_state()
    proc.process(
        state, records([event({"x": 1.0, "c": "a", "d": "u"}), event({"c": "b", "d": "v"})])
    )
    before = snapshot(state)
    # x and a known category are fine, the third category of d is not: nothing may change.
    out = proc.process(state, records([event({"x": 2.0, "c": "a", "d": "w", "new": 1.0})], 2))
    assert letters(out) == [(2, Reason.TOO_MANY_CATEGORIES, None)]
    assert snapshot(state) == before
    assert state.next_offset == 3


def test_a_refused_event_does_not_use_up_category_room_for_later_events_of_the_batch():
    proc = processor({"defaults": {"max_categories": 2}})
    bodies = [
        event({"a": "a1", "b": "b1"}),
        event({"b": "b2"}),
        event({"a": "a2", "b": "b3"}),  # b3 is a 3rd category of b: refused as a whole
        event({"a": "a3"}),  # a holds only a1: a3 fits
    ]
    state = new_state()
    out = proc.process(state, records(bodies))
    # Batch boundaries must not matter: the same records one by one.
    one_by_one = new_state()
    for record in records(bodies):
        proc.process(one_by_one, [record])
    assert dict(one_by_one.monitors[series("a")].counts.counts) == {"a1": 1, "a3": 1}
    assert letters(out) == [(2, Reason.TOO_MANY_CATEGORIES, None)]
    assert dict(state.monitors[series("a")].counts.counts) == {"a1": 1, "a3": 1}


def test_a_feature_changing_type_is_refused_across_batches_and_inside_one_batch():
    proc, state = processor(), new_state()
    proc.process(state, records([event({"x": 1.0, "c": "k"})]))
    before = snapshot(state)

    out = proc.process(
        state, records([event({"x": "one"}), event({"c": 2.0}), event({"x": 2.0, "c": "k"})], 1)
    )
    assert letters(out) == [
        (1, Reason.FEATURE_TYPE_CHANGED, None),
        (2, Reason.FEATURE_TYPE_CHANGED, None),
    ]
    assert out.events == 1
    assert isinstance(state.monitors[series("x")], NumericMonitor)
    assert counts(state) == {series("x"): (2, 0), series("c"): (2, 0)}
    assert before["features"] == snapshot(state)["features"]

    # Inside one batch, before any monitor exists: the first kind seen wins.
    fresh = new_state()
    out = proc.process(
        fresh, records([event({"y": 1.0}), event({"y": "s", "z": 1.0}), event({"y": 2.0})])
    )
    assert letters(out) == [(1, Reason.FEATURE_TYPE_CHANGED, None)]
    assert counts(fresh) == {series("y"): (2, 0)}
    # the refused event's new feature left no trace
    assert "z" not in fresh.features_by_model[MODEL]

    out = proc.process(fresh, records([event({"w": "s"}), event({"w": 1.0})], 3))
    assert letters(out) == [(4, Reason.FEATURE_TYPE_CHANGED, None)]
    assert isinstance(fresh.monitors[series("w")], CategoricalMonitor)


def test_an_event_with_one_invalid_value_changes_nothing():
    proc, state = processor(), new_state()
    proc.process(state, records([event({"x": 1.0})]))
    before = snapshot(state)
    out = proc.process(
        state, records([event({"x": 2.0, "new": 3.0, "bad": {"nested": 1}}, model_version="7")], 1)
    )
    assert letters(out) == [(1, Reason.INVALID_FEATURE_VALUE, None)]
    assert out.events == 0 and out.joins == []
    assert snapshot(state) == before


# --- ignored features ------------------------------------------------------------------------

IGNORING = {"models": {MODEL: {"ignore_features": ["user_id"]}}}


def test_ignored_features_do_not_count_towards_the_feature_limit():
    proc, state = processor(IGNORING, max_features_per_model=1), new_state()
    out = proc.process(
        state, records([event({"x": 1.0, "user_id": 5.0}), event({"x": 2.0, "user_id": None})])
    )
    assert out.events == 2 and out.dead_letters == []
    assert state.features_by_model[MODEL] == {"x"}
    assert counts(state)[series("x")] == (2, 0)
    # Without the ignore list the same events exceed the limit.
    other = new_state()
    refused = processor({}, max_features_per_model=1).process(
        other, records([event({"x": 1.0, "user_id": 5.0})])
    )
    assert letters(refused) == [(0, Reason.TOO_MANY_FEATURES_FOR_MODEL, None)]


def test_ignored_features_are_not_monitored():
    proc, state = processor(IGNORING), new_state()
    out = proc.process(
        state,
        records(
            [
                event({"x": 1.0, "user_id": 5.0}),
                event({"x": 1.0, "user_id": None}),
                event({"x": 1.0, "user_id": "u7"}),
            ]
        ),
    )
    assert out.events == 3 and out.dead_letters == []
    assert set(state.monitors) == {series("x")}
    assert state.unknown_missing == {}
    assert not any("user_id" in name for name in state.checkpoint_fields())


def test_an_ignored_high_cardinality_feature_does_not_break_the_batch():
    proc = processor({"defaults": {"max_categories": 3}, **IGNORING})
    state = new_state()
    out = proc.process(state, records([event({"x": 1.0, "user_id": f"u{i}"}) for i in range(5)]))
    assert out.events == 5 and out.dead_letters == []
    assert counts(state) == {series("x"): (5, 0)}


# --- batched messages and joins ---------------------------------------------------------------


def test_only_the_invalid_elements_of_a_batched_message_are_dead_lettered():
    proc, state = processor({"defaults": {"max_categories": 1}}), new_state()
    elements = [
        event({"x": 1.0, "c": "k"}),
        {"model": 7, "features": {}},  # invalid model
        event({"x": 2.0}),
        event({"x": 3.0, "c": "other"}),  # refused at admission: a 2nd category
        event({"x": "text"}),  # refused at admission: type change
    ]
    out = proc.process(state, [Record(40, 1.0, encode(elements))])
    assert out.events == 2
    assert letters(out) == [
        (40, Reason.INVALID_MODEL, 1),
        (40, Reason.TOO_MANY_CATEGORIES, 3),
        (40, Reason.FEATURE_TYPE_CHANGED, 4),
    ]
    for letter in out.dead_letters:  # each carries its own element, not the whole array
        assert json.loads(letter.payload) == elements[letter.index]
    assert counts(state) == {series("x"): (2, 0), series("c"): (1, 0)}


def test_events_with_an_event_id_and_a_prediction_are_joined():
    proc, state = processor(), new_state()
    bodies = [
        event({"x": 1.0}, event_id="e1", prediction=0.9, model_version="v3"),
        event({"x": 1.0}, event_id="e2"),  # no prediction: nothing to join
        event({"x": 1.0}, prediction=0.4),  # no event id
        event({"x": 1.0}, model="other", event_id="e3", prediction="cat"),
        event({"x": "bad"}, event_id="e4", prediction=0.1),  # refused: not joined
    ]
    out = proc.process(state, records(bodies))
    joined = {
        (model, event_id): msgspec.msgpack.decode(packed) for model, event_id, packed in out.joins
    }
    # + event time
    assert joined == {
        (MODEL, "e1"): [0.9, "v3", 1000.0],
        ("other", "e3"): ["cat", None, 1003.0],
    }


# --- detection ---------------------------------------------------------------------------------

N_FEATURES = 20
SHIFT_AT = 1200


def drifting_stream(n: int, shifted: str | None, seed: int = 11) -> list[dict[str, Any]]:
    """20 features on different scales; from SHIFT_AT on, ``shifted`` moves by 2 of its sigma."""
    rng = np.random.default_rng(seed)
    bodies = []
    for i in range(n):
        features = {f"f{j:02d}": float(rng.normal(10 * j, 1 + j)) for j in range(N_FEATURES)}
        prediction = float(rng.normal(0.3, 0.1))
        if i >= SHIFT_AT and shifted == "prediction":
            prediction += 2 * 0.1
        elif i >= SHIFT_AT and shifted is not None:
            features[shifted] += 2 * (1 + int(shifted[1:]))
        bodies.append(event(features, prediction=prediction))
    return bodies


def feed(
    proc: PredictionProcessor, state: PartitionState, raw: list[Record], batch: int = 250
) -> list:
    findings = []
    for start in range(0, len(raw), batch):
        findings += proc.process(state, raw[start : start + batch]).findings
    return findings


def test_a_two_sigma_shift_in_one_of_20_features_is_found_for_that_feature_only():
    proc, state = processor(), new_state()
    findings = feed(proc, state, records(drifting_stream(2000, shifted="f07")))
    assert findings, "a 2 sigma shift after 1200 events was not detected"
    assert {(f.model, f.feature, f.kind) for f in findings} == {(MODEL, "f07", "feature")}
    assert all(SHIFT_AT <= f.detection.position < SHIFT_AT + 200 for f in findings)
    assert len(state.monitors) == N_FEATURES + 1


def test_a_stationary_stream_gives_no_findings():
    proc, state = processor(), new_state()
    assert feed(proc, state, records(drifting_stream(2000, shifted=None))) == []


def test_a_shifted_prediction_is_found_with_kind_prediction():
    proc, state = processor(), new_state()
    findings = feed(proc, state, records(drifting_stream(2000, shifted="prediction")))
    assert findings
    assert {(f.feature, f.kind) for f in findings} == {("prediction", "prediction")}


# --- checkpoint and restore ----------------------------------------------------------------------


def without_quantiles(summary: Any) -> Any:
    """A summary or detection dict minus the sketch quantiles (KLL compaction is randomised:
    the same values give slightly different quantiles from run to run, restored or not)."""
    if isinstance(summary, dict):
        return {k: without_quantiles(v) for k, v in summary.items() if k != "quantiles"}
    if isinstance(summary, list):
        return [without_quantiles(v) for v in summary]
    return summary


def comparable(findings: list) -> list[tuple]:
    return [
        (f.model, f.model_version, f.feature, f.kind, without_quantiles(vars(f.detection)))
        for f in findings
    ]


def feed_slices(
    proc: PredictionProcessor, state: PartitionState, raw: list[Record], bounds: list[int]
) -> list:
    findings = []
    for start, stop in pairwise(bounds):
        findings += proc.process(state, raw[start:stop]).findings
    return findings


def test_a_restored_state_continues_exactly_like_an_uninterrupted_one():
    bodies = drifting_stream(2000, shifted="f03", seed=5)
    # Series that appear only before the restore point must come back from the first checkpoint.
    bodies[10]["features"]["rare"] = 4.0
    bodies[20]["features"]["only_null"] = None
    for i in range(0, 2000, 7):
        bodies[i]["features"]["colour"] = "blue" if i % 2 else "red"
    for body in bodies:
        body["model_version"] = "v1"
    raw = records(bodies)
    proc = processor()

    # Same batch boundaries for the applied records in both runs; the restored run's first
    # batch starts with 100 records it had already applied (Kafka redelivers from its commit).
    uninterrupted = new_state()
    expected = feed_slices(
        proc, uninterrupted, raw, [0, 250, 500, 750, 1000, 1100, 1250, 1500, 1750, 2000]
    )

    state = new_state()
    stored: dict[bytes, bytes] = {}
    findings = feed_slices(proc, state, raw, [0, 250, 500])
    checkpoint_into(stored, state)
    findings += feed_slices(proc, state, raw, [500, 750, 1000, 1100])
    checkpoint_into(stored, state)
    assert series("rare", version="v1").encode() in stored and b"\x00unknown_missing" in stored

    restored = PartitionState.from_claim(
        "in", 0, Claim(epoch=2, offset=state.next_offset, fields=stored)
    )
    assert restored.epoch == 2 and restored.next_offset == 1100 and restored.corrupt == []
    assert counts(restored) == counts(state)
    assert (
        restored.unknown_missing == state.unknown_missing == {series("only_null", version="v1"): 1}
    )
    assert restored.features_by_model == state.features_by_model
    assert restored.versions == {MODEL: ["v1"]}
    findings += feed_slices(proc, restored, raw, [1000, 1250, 1500, 1750, 2000])

    assert expected, "the stream was meant to drift"
    assert counts(restored) == counts(uninterrupted)
    assert comparable(findings) == comparable(expected)
    assert set(restored.monitors) == set(uninterrupted.monitors)
    for name, monitor in uninterrupted.monitors.items():
        assert without_quantiles(restored.monitors[name].summary()) == without_quantiles(
            monitor.summary()
        ), name


def test_a_restored_state_enforces_max_models_like_an_uninterrupted_one():
    proc = processor(max_models=1, probation_events=1)
    first = records([event({}, model="a", model_version="1")])
    second = records([event({"x": 1.0}, model="b")], 1)

    uninterrupted = new_state()
    proc.process(uninterrupted, first)
    assert letters(proc.process(uninterrupted, second)) == [(1, Reason.TOO_MANY_MODELS, None)]

    state = new_state()
    proc.process(state, first)
    stored: dict[bytes, bytes] = {}
    checkpoint_into(stored, state)
    restored = PartitionState.from_claim("in", 0, Claim(2, state.next_offset, stored))
    assert letters(proc.process(restored, second)) == [(1, Reason.TOO_MANY_MODELS, None)]


def test_checkpoint_fields_hold_only_series_changed_since_the_last_checkpoint():
    proc, state = processor(), new_state()
    proc.process(state, records([event({"a": 1.0, "b": 1.0})]))
    assert {series("a"), series("b")} <= set(state.checkpoint_fields())
    state.mark_checkpointed()
    assert state.events_since_checkpoint == 0
    proc.process(state, records([event({"a": 2.0})], 1))
    names = {name for name in state.checkpoint_fields() if not name.startswith("\x00")}
    assert names == {series("a")}


def test_a_corrupt_monitor_blob_is_reported_instead_of_raising():
    proc, state = processor(), new_state()
    proc.process(state, records([event({"good": 1.0, "bad": 1.0}, model_version="v1")] * 3))
    fields = {k.encode(): v for k, v in state.checkpoint_fields().items()}
    good, bad = series("good", version="v1"), series("bad", version="v1")
    fields[bad.encode()] = b"\x93not msgpack of a monitor"

    restored = PartitionState.from_claim("in", 0, Claim(2, 3, fields))
    assert restored.corrupt == [bad]
    assert counts(restored) == {good: (3, 0)}
    assert restored.versions == {MODEL: ["v1"]}
    # The corrupt series starts afresh with the next events.
    out = proc.process(restored, records([event({"good": 2.0, "bad": 2.0}, model_version="v1")], 3))
    assert out.events == 1
    assert counts(restored) == {good: (4, 0), bad: (1, 0)}


# --- labels -------------------------------------------------------------------------------------

TTL = 60.0


def label_records(
    labels: list[tuple[str, Any]], first_offset: int = 0, model: str = MODEL
) -> list[Record]:
    return records(
        [{"model": model, "event_id": eid, "label": value} for eid, value in labels], first_offset
    )


def apply_labels(
    proc: LabelProcessor,
    state: PartitionState,
    raw: list[Record],
    predictions: dict[tuple[str, str], bytes],
    now: float,
) -> Outcome:
    """What the runtime does: decode, then apply the pending labels plus the new ones."""
    labels, out = proc.decode(state, raw, now)
    return proc.apply(state, state.pending + labels, predictions, now, out)


def predictions_for(bodies: list[dict[str, Any]]) -> dict[tuple[str, str], bytes]:
    """The join entries the prediction processor emits for ``bodies``."""
    out = processor().process(new_state("predictions"), records(bodies))
    return {(model, event_id): packed for model, event_id, packed in out.joins}


def test_matched_labels_feed_the_error_monitor_and_unmatched_ones_wait():
    joined = predictions_for(
        [
            event({}, event_id=f"e{i}", prediction=0.9 if i % 2 else 0.1, model_version="v2")
            for i in range(6)
        ]
    )
    proc, state = LabelProcessor({}, Limits(), ttl_s=TTL, max_pending=100), new_state("labels")
    raw = label_records([(f"e{i}", 1) for i in range(6)] + [("later1", 1), ("later2", 0)])
    out = apply_labels(proc, state, raw, joined, now=0.0)

    assert out.events == 6 and out.dead_letters == []
    monitor = state.monitors[series("error_rate", version="v2")]
    assert isinstance(monitor, ErrorMonitor)
    assert monitor.count == 6
    assert monitor.stats.mean == pytest.approx(0.5)  # e0, e2, e4 predicted 0.1 for label 1
    assert state.versions == {MODEL: ["v2"]}
    assert [(p.event_id, p.label, p.offset) for p in state.pending] == [
        ("later1", 1.0, 6),
        ("later2", 0.0, 7),
    ]
    assert "\x00pending_labels" in state.checkpoint_fields()

    # The prediction of one pending label arrives: it is applied on the next batch.
    joined.update(
        predictions_for([event({}, event_id="later1", prediction=0.8, model_version="v2")])
    )
    out = apply_labels(proc, state, label_records([("e9", 0)], 8), joined, now=10.0)
    assert out.events == 1
    assert monitor.count == 7
    assert [p.event_id for p in state.pending] == ["later2", "e9"]


def test_pending_labels_survive_a_checkpoint():
    proc, state = LabelProcessor({}, Limits(), ttl_s=TTL, max_pending=100), new_state("labels")
    apply_labels(proc, state, label_records([("a", 1), ("b", "cat")]), {}, now=5.0)
    fields = {k.encode(): v for k, v in state.checkpoint_fields().items()}
    restored = PartitionState.from_claim("labels", 0, Claim(2, state.next_offset, fields))
    assert restored.pending == state.pending
    assert restored.pending == [  # looked up once in vain: next at 5 + 1 s
        PendingLabel(MODEL, "a", 1.0, 1000.0, 0, 5.0, due=6.0, retry_s=1.0),
        PendingLabel(MODEL, "b", "cat", 1001.0, 1, 5.0, due=6.0, retry_s=1.0),
    ]


def test_pending_labels_expire_after_the_ttl_into_dead_letters():
    proc, state = LabelProcessor({}, Limits(), ttl_s=TTL, max_pending=100), new_state("labels")
    apply_labels(proc, state, label_records([("lost", 1), ("found", 0)]), {}, now=100.0)
    assert len(state.pending) == 2

    out = apply_labels(proc, state, [], {}, now=100.0 + TTL)  # exactly the TTL: still waiting
    assert out.dead_letters == [] and len(state.pending) == 2

    joined = predictions_for([event({}, event_id="found", prediction=0.2)])
    out = apply_labels(proc, state, [], joined, now=100.0 + TTL + 1)
    assert out.events == 1
    assert [(d.reason, d.offset) for d in out.dead_letters] == [(Reason.LABEL_UNMATCHED, 0)]
    assert json.loads(out.dead_letters[0].payload) == {
        "model": MODEL,
        "event_id": "lost",
        "label": 1.0,
        "timestamp": 1000.0,
    }
    assert state.pending == []


def test_pending_labels_beyond_max_pending_are_dead_lettered():
    proc, state = LabelProcessor({}, Limits(), ttl_s=TTL, max_pending=3), new_state("labels")
    out = apply_labels(proc, state, label_records([(f"u{i}", 1) for i in range(5)]), {}, now=0.0)
    assert [(d.reason, d.offset) for d in out.dead_letters] == [
        (Reason.LABEL_BUFFER_FULL, 3),
        (Reason.LABEL_BUFFER_FULL, 4),
    ]
    assert [p.event_id for p in state.pending] == ["u0", "u1", "u2"]
    # Older pending labels keep their place; the newcomer overflows.
    out = apply_labels(proc, state, label_records([("u5", 1)], 5), {}, now=1.0)
    assert [(d.reason, d.offset) for d in out.dead_letters] == [(Reason.LABEL_BUFFER_FULL, 5)]
    assert [p.event_id for p in state.pending] == ["u0", "u1", "u2"]


def test_labels_below_the_next_offset_are_duplicates():
    proc, state = LabelProcessor({}, Limits(), ttl_s=TTL, max_pending=100), new_state("labels")
    joined = predictions_for([event({}, event_id="e0", prediction=0.9)])
    raw = label_records([("e0", 1)])
    apply_labels(proc, state, raw, joined, now=0.0)
    out = apply_labels(proc, state, raw, joined, now=0.0)
    assert (out.events, out.duplicates) == (0, 1)
    assert state.monitors[series("error_rate")].count == 1


def test_a_mismatched_label_type_is_dead_lettered():
    unbounded = Limits(max_abs_value=float("inf"))  # the error itself overflows: |1e308 - -1e308|
    proc, state = LabelProcessor({}, unbounded, ttl_s=TTL, max_pending=100), new_state("labels")
    # as a worker of no bound packed it
    joined = {(MODEL, "e0"): msgspec.msgpack.encode((1e308, None, 0.0))}
    out = apply_labels(proc, state, label_records([("e0", -1e308)]), joined, now=0.0)
    assert [(d.reason, d.offset) for d in out.dead_letters] == [(Reason.INVALID_LABEL, 0)]
    assert out.events == 0 and series("error_rate") not in state.monitors


def test_an_error_rate_jump_from_10_to_40_percent_is_a_performance_finding():
    rng = np.random.default_rng(4)
    n, jump_at = 2000, 1000
    wrong = np.concatenate([rng.random(jump_at) < 0.1, rng.random(n - jump_at) < 0.4])
    bodies = [event({}, event_id=f"e{i}", prediction=0.9, model_version="v1") for i in range(n)]
    joined = predictions_for(bodies)
    raw = label_records([(f"e{i}", 0 if wrong[i] else 1) for i in range(n)])

    proc, state = LabelProcessor({}, Limits(), ttl_s=TTL, max_pending=100), new_state("labels")
    findings = []
    for start in range(0, n, 200):
        findings += apply_labels(proc, state, raw[start : start + 200], joined, now=0.0).findings
    assert state.monitors[series("error_rate", version="v1")].count == n
    assert findings, "a 10% -> 40% error rate jump was not detected"
    first = findings[0]
    assert (first.model, first.model_version, first.feature, first.kind) == (
        MODEL,
        "v1",
        "error_rate",
        "performance",
    )
    assert jump_at <= first.detection.position < jump_at + 300
    assert first.detection.reference["error_rate"] == pytest.approx(0.1, abs=0.05)


@pytest.mark.parametrize(
    ("prediction", "label", "task", "expected"),
    [
        (0.91, 1.0, "auto", 0.0),  # binary classification, threshold 0.5
        (0.2, 1.0, "auto", 1.0),
        (0.5, 1.0, "auto", 0.0),
        (0.49, 0.0, "auto", 0.0),
        (3.5, 2.0, "auto", 1.5),  # regression: absolute error
        (0.5, 2.0, "auto", 1.5),  # label outside {0, 1}: regression
        (1.5, 1.0, "auto", 0.5),  # prediction outside [0, 1]: regression
        ("cat", "dog", "auto", 1.0),  # classes
        ("cat", "cat", "auto", 0.0),
        ("3", 3.0, "auto", 0.0),  # a numeric label against a class name
        (2.0, "2", "auto", 0.0),
        (0.7, 1.0, "regression", pytest.approx(0.3)),  # forced regression
        (0.2, 0.0, "regression", pytest.approx(0.2)),
        (3.0, 2.0, "classification", 1.0),  # forced classification: exact class match
        (2.0, 2.0, "classification", 0.0),
        (0.7, 1.0, "classification", 0.0),
        (1e308, -1e308, "auto", None),  # no finite error
    ],
)
def test_label_error(prediction, label, task, expected):
    assert label_error(prediction, label, task) == expected


def test_the_model_task_from_the_config_decides_the_error():
    joined = predictions_for([event({}, event_id="e0", prediction=0.7)])
    for task, error in (("classification", 0.0), ("regression", 0.3)):
        proc = LabelProcessor(
            {"models": {MODEL: {"task": task}}}, Limits(), ttl_s=TTL, max_pending=10
        )
        state = new_state("labels")
        apply_labels(proc, state, label_records([("e0", 1)]), joined, now=0.0)
        assert state.monitors[series("error_rate")].stats.mean == pytest.approx(error), task


def test_a_boolean_prediction_matching_a_boolean_label_is_no_error():
    joined = predictions_for(
        [event({}, event_id="e0", prediction=True), event({}, event_id="e1", prediction=False)]
    )
    proc, state = LabelProcessor({}, Limits(), ttl_s=TTL, max_pending=10), new_state("labels")
    out = apply_labels(proc, state, label_records([("e0", True), ("e1", False)]), joined, now=0.0)
    assert out.events == 2
    assert state.monitors[series("error_rate")].stats.mean == 0.0


# --- model versions and baselines ---------------------------------------------------------------


def baseline_of(values: np.ndarray, version: str | None, revision: int = 1) -> Baseline:
    builder = BaselineBuilder()
    builder.add_columns({"x": values.tolist()})
    return msgspec.structs.replace(builder.build(MODEL, version, source="unit"), revision=revision)


def test_each_model_version_is_monitored_apart_and_the_oldest_beyond_the_limit_is_retired():
    proc = PredictionProcessor({}, Limits(), AdmissionLimits(max_versions_per_model=2))
    state, stored = new_state(), {}
    bodies = [event({"x": float(i)}, model_version=v) for i in range(3) for v in ("v1", "v2")]
    proc.process(state, records(bodies))
    assert counts(state) == {series("x", version="v1"): (3, 0), series("x", version="v2"): (3, 0)}
    checkpoint_into(stored, state)
    proc.process(state, records([event({"x": 1.0}, model_version="v1"), event({"x": 1.0})], 6))
    assert state.versions == {MODEL: ["v1", None]}  # v2, least recently seen, is retired
    assert set(counts(state)) == {series("x", version="v1"), series("x")}
    checkpoint_into(stored, state)
    assert series("x", version="v2").encode() not in stored
    restored = PartitionState.from_claim("in", 0, Claim(2, 8, stored))
    assert counts(restored) == counts(state) and restored.versions == state.versions


def test_a_version_with_a_stored_baseline_is_compared_with_it_from_its_first_event():
    rng = np.random.default_rng(11)
    baselines = {(MODEL, "v1"): baseline_of(rng.normal(size=20_000), "v1")}
    proc = PredictionProcessor({}, Limits(), AdmissionLimits(), baselines)
    state = new_state()
    shifted = [
        event({"x": float(v)}, model_version=v_)
        for v in rng.normal(0.6, 1, 1_500)
        for v_ in ("v1", "v2")
    ]
    findings = []
    for start in range(0, len(shifted), 500):
        findings += proc.process(state, records(shifted[start : start + 500], start)).findings
    # v2 has no baseline: it takes the shifted data as its own reference and sees no change.
    assert [(f.model_version, f.detection.event, f.reference_source) for f in findings] == [
        ("v1", "detected", "m/v1 r1")
    ]
    monitors = {version: state.monitors[series("x", version=version)] for version in ("v1", "v2")}
    assert monitors["v1"].reference_source == "m/v1 r1" and monitors["v2"].reference_source is None

    # A new revision of the baseline is picked up by the series with its next values.
    baselines[(MODEL, "v1")] = baseline_of(rng.normal(0.6, 1, 20_000), "v1", revision=2)
    proc.process(state, records([event({"x": 0.5}, model_version="v1")], len(shifted)))
    assert monitors["v1"].reference_source == "m/v1 r2"
    assert monitors["v1"].reference.mean == pytest.approx(0.6, abs=0.05)


def test_a_baseline_of_the_wrong_kind_is_ignored_and_the_series_warms_up():
    baselines = {(MODEL, None): baseline_of(np.arange(100.0), None)}
    proc = PredictionProcessor({}, Limits(), AdmissionLimits(), baselines)
    state = new_state()
    out = proc.process(state, records([event({"x": "red"}) for _ in range(5)]))
    assert out.events == 5 and out.dead_letters == []
    assert state.monitors[series("x")].reference_source is None


@pytest.mark.parametrize("cooldown_s", [0.0, 600.0])
def test_a_correlation_flip_is_a_multivariate_finding_and_the_pca_state_restores(cooldown_s):
    """Each feature keeps its N(0, 1) marginal; only the joint structure changes. With a
    cool-down in seconds the rows' record times reach the monitor's lifecycle."""
    params = MultivariateParams(
        reference_events=1_000, calibration_events=1_000, events=200, cooldown_s=cooldown_s
    )
    proc = PredictionProcessor({}, Limits(), AdmissionLimits(), multivariate=params)
    rng = np.random.default_rng(12)
    n, flip = 4_000, 3_000
    common = rng.normal(size=n)
    rows = 0.9 * common[:, None] + np.sqrt(1 - 0.81) * rng.normal(size=(n, 6))
    rows[flip:, 3:] *= -1  # half the features now move against the others
    bodies = [
        event({f"x{j}": float(v) for j, v in enumerate(row)}, prediction=0.5, model_version="v1")
        for row in rows
    ]
    state, stored, findings = new_state(), {}, []
    for start in range(0, n, 500):
        findings += proc.process(state, records(bodies[start : start + 500], start)).findings
        if start == 2_000:  # a checkpoint and a restart in the middle
            checkpoint_into(stored, state)
            state = PartitionState.from_claim("in", 0, Claim(2, start + 500, stored))
    pca = state.monitors[series("multivariate", version="v1")]
    assert isinstance(pca, PCAReconstructionMonitor) and pca.count == n
    assert pca.features == [f"x{j}" for j in range(6)]  # the prediction is not an input
    assert [(f.feature, f.kind, f.detection.event) for f in findings] == [
        ("multivariate", "multivariate", "detected")
    ]
    assert flip <= findings[0].detection.position < flip + 400
    opened_at = pca.lifecycle.last_time
    assert opened_at is None if not cooldown_s else opened_at == findings[0].time


class Exploding(NumericMonitor):
    def update(self, values, positions):
        raise RuntimeError("a bug in one monitor")


def test_a_monitor_that_raises_is_restarted_and_the_other_series_go_on():
    proc, state, stored = processor(), new_state(), {}
    proc.process(state, records([event({"x": 1.0, "y": 2.0})]))
    checkpoint_into(stored, state)
    state.monitors[series("x")] = Exploding()
    out = proc.process(state, records([event({"x": 1.0, "y": 2.0})] * 3, 1))
    assert out.events == 3 and out.failed_series == [series("x")]
    assert counts(state) == {series("y"): (4, 0)}  # x is gone, y went on
    checkpoint_into(stored, state)
    assert series("x").encode() not in stored  # its stored state is dropped too
    proc.process(state, records([event({"x": 5.0})], 4))  # and the next value starts it afresh
    assert counts(state)[series("x")] == (1, 0)
    checkpoint_into(stored, state)
    assert series("x").encode() in stored


def test_event_time_windows_get_each_events_own_timestamp():
    config = {
        "defaults": {
            "detectors": ["window"],
            "warmup_events": 50,
            "window": {"seconds": 10, "allowed_lateness_s": 2, "reference_events": 100},
        }
    }
    proc, state = processor(config), new_state()
    bodies = [event({"x": float(i % 7)}, timestamp=5_000 + i * 0.1) for i in range(300)]
    bodies.append(event({"x": 1.0}, timestamp=5_000.0))  # 30 s late: its window closed long ago
    proc.process(state, records(bodies))
    windows = state.monitors[series("x")].windows
    assert windows.by_time and windows.late == 1
    assert windows.evaluated == 1  # [5010, 5020) closed by the watermark; [5020, 5030) is open
    assert sorted(windows.open) == [502]


def test_a_series_whose_adwin_another_river_wrote_keeps_its_monitor_and_is_rewritten():
    """State of another river release with a layout today's river cannot restore: the partition
    keeps the series (reference, sketches, other detectors), restarts ADWIN, reports it and
    writes the series again at the next checkpoint; a series of today's river is untouched."""
    from streamdrift.detectors import MonitorParams

    params = MonitorParams(detectors=("adwin", "cusum"))
    monitors = {}
    for feature in ("amount", "age"):
        monitor = NumericMonitor(params)
        monitor.update(np.random.default_rng(len(feature)).normal(size=3_000), np.arange(3_000))
        monitors[series_name("fraud", None, feature)] = monitor
    stored = {name: m.to_bytes() for name, m in monitors.items()}
    old = msgspec.msgpack.decode(stored[series_name("fraud", None, "amount")])
    old["river"] = "0.19.0"
    old["monitor"]["detectors"]["adwin"]["window"] = b"\x00" * 64  # not today's layout
    stored[series_name("fraud", None, "amount")] = msgspec.msgpack.encode(old)

    restored = PartitionState.from_claim(
        "in", 0, Claim(2, 3_000, {name.encode(): blob for name, blob in stored.items()})
    )

    assert restored.corrupt == []
    ((name, detectors, written_by),) = restored.rewarmed
    assert name == series_name("fraud", None, "amount") and detectors == ("adwin",)
    assert written_by["river"] == "0.19.0"
    kept = restored.monitors[name]
    assert kept.stats.count == monitors[name].stats.count  # the rest of the monitor is kept
    assert name in restored.checkpoint_fields()  # written again, as today's river has it
    assert series_name("fraud", None, "age") not in restored.checkpoint_fields()
