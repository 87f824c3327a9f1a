"""Admission that a flood of made-up names cannot exhaust (pure processor logic, no I/O)."""

from __future__ import annotations

import json
from typing import Any

from streamdrift.streams.pipeline.admission import MINUTE, AdmissionLimits
from streamdrift.streams.pipeline.codec import Limits, Reason
from streamdrift.streams.pipeline.outcome import Record
from streamdrift.streams.pipeline.processor import PredictionProcessor
from streamdrift.streams.state.keys import series_name
from streamdrift.streams.state.partition import Claim, PartitionState


def records(bodies: list[Any], first: int = 0, at: float = 1_000.0) -> list[Record]:
    return [Record(first + i, at, json.dumps(body).encode()) for i, body in enumerate(bodies)]


def event(model: str, features: dict[str, Any] | None = None, **fields: Any) -> dict[str, Any]:
    return {"model": model, "features": features if features is not None else {"x": 1.0}, **fields}


def processor(config: dict[str, Any] | None = None, **admission: Any) -> PredictionProcessor:
    return PredictionProcessor(config or {}, Limits(), AdmissionLimits(**admission))


def reasons(out) -> list[Reason]:
    return [letter.reason for letter in out.dead_letters]


def test_only_allowed_models_are_admitted():
    proc, state = processor(allowed_models=frozenset({"fraud"})), PartitionState("in", 0, 1, None)
    out = proc.process(state, records([event("fraud"), event("made-up"), event("fraud")]))
    assert out.events == 2 and reasons(out) == [Reason.MODEL_NOT_ALLOWED]
    assert set(state.features_by_model) == {"fraud"}


def test_a_feature_allowlist_monitors_only_its_features_and_the_prediction():
    config = {"models": {"m": {"allow_features": ["amount"]}}}
    proc, state = processor(config), PartitionState("in", 0, 1, None)
    body = event("m", {"amount": 1.0, **{f"junk{i}": float(i) for i in range(50)}}, prediction=0.3)
    out = proc.process(state, records([body] * 10))
    assert out.events == 10 and out.dead_letters == []
    assert set(state.features_by_model["m"]) == {"amount", "prediction"}


def test_a_flood_of_new_models_churns_through_probation_and_never_evicts_an_established_one():
    proc = processor(
        max_models=20, max_probation_models=5, probation_events=10, max_new_series_per_s=1e6
    )
    state = PartitionState("in", 0, 1, None)
    proc.process(state, records([event("real")] * 10))  # established after 10 events
    assert "real" not in state.ledger.probation
    flood = [event(f"made-up-{i}") for i in range(1_000)]
    out = proc.process(state, records(flood, first=10))
    assert out.events + len(out.dead_letters) == 1_000  # every event counted or dead-lettered
    assert len(state.features_by_model) <= 20 and len(state.ledger.probation) <= 5
    assert "real" in state.features_by_model and series_name("real", None, "x") in state.monitors
    assert len(out.evicted_models) == 1_000 - 5  # each newcomer beyond the 5 evicted the oldest
    later = proc.process(state, records([event("legit")] * 3, first=2_000))
    assert later.events == 3 and "legit" in state.features_by_model


def test_when_every_slot_is_established_a_new_model_is_refused():
    proc, state = processor(max_models=2, probation_events=1), PartitionState("in", 0, 1, None)
    proc.process(state, records([event("a"), event("b")]))
    out = proc.process(state, records([event("c")], first=2))
    assert reasons(out) == [Reason.TOO_MANY_MODELS] and "c" not in state.features_by_model


def test_new_series_are_budgeted_per_message_and_per_second_of_kafka_time():
    proc = processor(max_new_series_per_message=10, max_new_series_per_s=20)
    state = PartitionState("in", 0, 1, None)
    wide = [event(f"m{i}", {f"f{j}": 1.0 for j in range(4)}) for i in range(5)]  # 4 new series each
    out = proc.process(state, [Record(0, 1_000.0, json.dumps(wide).encode())])
    assert out.events == 2 and reasons(out) == [Reason.TOO_MANY_NEW_SERIES] * 3  # 10 per message
    more = proc.process(
        state,
        records([event(f"n{i}", {f"f{j}": 1.0 for j in range(4)}) for i in range(5)], 1, 1_000.0),
    )
    assert more.events == 3  # the bucket (20) had 12 left: three models of 4
    later = proc.process(
        state,
        records([event(f"k{i}", {f"f{j}": 1.0 for j in range(4)}) for i in range(5)], 6, 1_001.0),
    )
    assert later.events == 5  # one second of Kafka time later the bucket is full again


def test_one_record_stamped_far_ahead_cannot_make_every_model_idle():
    proc = PredictionProcessor({}, Limits(max_future_skew_s=60), AdmissionLimits(idle_evict_s=600))
    state = PartitionState("in", 0, 1, None)
    proc.process(state, records([event("real")], at=1_000.0), now=1_000.0)
    proc.process(state, records([event("other")], first=1, at=4e9), now=1_001.0)  # year 2096
    assert "real" in state.features_by_model


def test_idle_models_and_series_are_evicted_with_their_state():
    proc, state = processor(idle_evict_s=600), PartitionState("in", 0, 1, None)
    proc.process(state, records([event("old", {"x": 1.0, "gone": 1.0}), event("busy")], at=1_000.0))
    proc.process(state, records([event("old", {"x": 1.0})], first=2, at=1_000.0 + 5 * MINUTE))
    out = proc.process(
        state, records([event("busy"), event("old", {"x": 2.0})], first=3, at=1_000.0 + 12 * MINUTE)
    )
    assert (
        series_name("old", None, "gone") in state.retired
        and series_name("old", None, "gone") not in state.monitors
    )
    assert state.features_by_model["old"] == {"x"}
    proc.process(state, records([event("busy")], first=5, at=1_000.0 + 21 * MINUTE))
    out = proc.process(state, records([event("busy")], first=6, at=1_000.0 + 30 * MINUTE))
    assert (
        out.evicted_models == ["old"]
        and "old" not in state.features_by_model
        and "busy" in state.features_by_model
    )
    assert series_name("old", None, "x") in state.retired


def test_the_admission_ledger_survives_a_checkpoint():
    proc, state = (
        processor(max_probation_models=2, probation_events=5),
        PartitionState("in", 0, 1, None),
    )
    proc.process(state, records([event("a"), event("b"), event("a")]))
    fields = {name.encode(): blob for name, blob in state.checkpoint_fields().items() if blob}
    restored = PartitionState.from_claim("in", 0, Claim(2, state.next_offset, fields))
    assert restored.ledger == state.ledger and restored.ledger.probation == {"b": 1, "a": 2}
    out = proc.process(restored, records([event("c")], first=3))
    assert out.evicted_models == ["b"]  # the least recently seen on probation


def test_a_monitor_failing_in_a_batch_is_reported_for_restoration_and_the_rest_goes_on(monkeypatch):
    from streamdrift.detectors import NumericMonitor

    proc, state = processor(), PartitionState("in", 0, 1, None)
    proc.process(state, records([event("m", {"x": 1.0, "y": 2.0})] * 3))
    original = NumericMonitor.update

    def explode(self, values, *args, **kwargs):
        if self is state.monitors.get(series_name("m", None, "x")):
            raise FloatingPointError("boom")
        return original(self, values, *args, **kwargs)

    monkeypatch.setattr(NumericMonitor, "update", explode)
    out = proc.process(state, records([event("m", {"x": 1.0, "y": 2.0})] * 3, first=3))
    assert out.failed_series == [series_name("m", None, "x")] and out.events == 3
    assert state.monitors[series_name("m", None, "y")].count == 6
