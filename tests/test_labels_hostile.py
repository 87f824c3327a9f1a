"""The labels path under hostile or broken input: it can be neither stopped nor exhausted.

Pure logic against ``LabelProcessor`` with a dict standing in for the predictions in Redis, and
one test through the ``Runtime`` with a real Redis (no broker: a fake publisher).
"""

from __future__ import annotations

import asyncio
import json
import time
import uuid
from typing import Any

import msgspec
from conftest import RecordingPublisher

import streamdrift.streams.pipeline.labels as labels_module
import streamdrift.streams.runtime as runtime_module
from streamdrift.streams.pipeline.codec import Limits, Reason
from streamdrift.streams.pipeline.labels import LabelProcessor
from streamdrift.streams.pipeline.outcome import Outcome, Record
from streamdrift.streams.runtime import Runtime
from streamdrift.streams.settings import Settings
from streamdrift.streams.state.keys import series_name
from streamdrift.streams.state.partition import Claim, PartitionState, PendingLabel

MODEL = "m"
TTL = 600.0
PENDING = "\x00pending_labels"
JOINED = "\x00joined_labels:"


def label_records(
    labels: list[tuple[str, Any]], first_offset: int = 0, model: str = MODEL
) -> list[Record]:
    return [
        Record(
            first_offset + i,
            1000.0 + first_offset + i,
            json.dumps({"model": model, "event_id": eid, "label": value}).encode(),
        )
        for i, (eid, value) in enumerate(labels)
    ]


def stored(
    event_ids: list[str], prediction: float = 0.9, model: str = MODEL
) -> dict[tuple[str, str], bytes]:
    """Predictions as the prediction processor packs them for the join store."""
    return {(model, eid): msgspec.msgpack.encode((prediction, None, 990.0)) for eid in event_ids}


def new_state() -> PartitionState:
    return PartitionState("labels", 0, epoch=1, next_offset=None)


def labels_processor(**options: Any) -> LabelProcessor:
    options.setdefault("max_pending", 100)
    return LabelProcessor({}, Limits(), TTL, **options)


def step(
    proc: LabelProcessor, state: PartitionState, raw: list[Record], predictions: dict, now: float
) -> Outcome:
    """What the runtime does: decode, then apply the pending labels plus the new ones, with the
    predictions of the keys due for a look-up only."""
    labels, out = proc.decode(state, raw, now)
    waiting = state.pending + labels
    asked = set(proc.lookups(state, waiting, now))
    return proc.apply(
        state, waiting, {k: v for k, v in predictions.items() if k in asked}, now, out
    )


def reasons(out: Outcome) -> list[tuple[Reason, int]]:
    return [(d.reason, d.offset) for d in out.dead_letters]


def error_count(state: PartitionState, model: str = MODEL) -> int:
    monitor = state.monitors.get(series_name(model, None, "error_rate"))
    return 0 if monitor is None else monitor.count


def restored(state: PartitionState) -> PartitionState:
    fields = {k.encode(): v for k, v in state.checkpoint_fields().items()}
    return PartitionState.from_claim("labels", 0, Claim(2, state.next_offset, fields))


# --- guards ------------------------------------------------------------------------------------


def test_a_record_whose_decoding_raises_is_dead_lettered_and_the_others_go_on(monkeypatch):
    real = labels_module.decode_labels

    def decode_labels(value, *args):
        if b"boom" in (value or b""):
            raise RecursionError("maximum recursion depth exceeded")
        return real(value, *args)

    monkeypatch.setattr(labels_module, "decode_labels", decode_labels)
    proc, state = labels_processor(), new_state()
    raw = label_records([("e0", 1), ("boom", 1), ("e2", 0)])
    out = step(proc, state, raw, stored(["e0", "e2"]), now=0.0)
    assert reasons(out) == [(Reason.INTERNAL_ERROR, 1)]
    assert (
        out.dead_letters[0].payload == raw[1].value
        and "RecursionError" in out.dead_letters[0].detail
    )
    assert out.events == 2 and error_count(state) == 2
    assert state.next_offset == 3  # consumed: a replay does not meet it again


def test_a_label_message_nested_1000_levels_deep_is_dead_lettered_once():
    proc, state = labels_processor(), new_state()
    deep = Record(1, 1001.0, b"[" * 1000 + b"]" * 1000)
    nested = Record(
        2, 1002.0, b'{"model": "m", "event_id": "e9", "label": ' + b"[" * 1000 + b"]" * 1000 + b"}"
    )
    out = step(proc, state, [*label_records([("e0", 1)]), deep, nested], stored(["e0"]), now=0.0)
    assert [offset for _, offset in reasons(out)] == [1, 2]
    assert out.events == 1 and state.pending == []


def test_a_label_that_fails_is_dead_lettered_alone_and_counted_nowhere(monkeypatch):
    real = labels_module.label_error

    def label_error(prediction, label, task="auto"):
        if label == 7.0:
            raise ValueError("a bug")
        return real(prediction, label, task)

    monkeypatch.setattr(labels_module, "label_error", label_error)
    proc, state = labels_processor(), new_state()
    predictions = stored(["e0", "e1", "e3"])
    predictions[(MODEL, "e2")] = b"\xc1 not msgpack"  # a malformed stored prediction
    predictions[(MODEL, "e4")] = msgspec.msgpack.encode(("x", 5, "then"))  # wrong types
    out = step(
        proc,
        state,
        label_records([("e0", 1), ("e1", 7), ("e2", 1), ("e3", 0), ("e4", 1)]),
        predictions,
        now=0.0,
    )
    assert reasons(out) == [
        (Reason.INTERNAL_ERROR, 1),
        (Reason.INTERNAL_ERROR, 2),
        (Reason.INTERNAL_ERROR, 4),
    ]
    assert out.events == 2 and error_count(state) == 2 and state.pending == []
    assert len(out.join_lags) == 2  # e1 failed after the look-up: neither joined nor counted


# --- models that cannot be monitored ----------------------------------------------------------


def test_labels_of_models_not_allowed_or_not_stored_for_joining_are_refused_at_once():
    proc = labels_processor(allowed_models={"m", "unjoined"}, join_models={"m"})
    state = new_state()
    raw = [
        *label_records([("e0", 1)]),
        *label_records([("e1", 1)], 1, model="stranger"),
        *label_records([("e2", 1)], 2, model="unjoined"),
    ]
    labels, out = proc.decode(state, raw, now=0.0)
    assert [label.event_id for label in labels] == ["e0"]
    assert reasons(out) == [(Reason.MODEL_NOT_ALLOWED, 1), (Reason.LABEL_UNMATCHED, 2)]
    assert "STREAMDRIFT_LABEL_JOIN_MODELS" in out.dead_letters[1].detail
    assert json.loads(out.dead_letters[0].payload)["model"] == "stranger"
    assert proc.lookups(state, labels, now=0.0) == [(MODEL, "e0")]  # nothing of theirs is looked up


def test_an_array_message_refuses_only_its_labels_of_models_not_allowed():
    proc, state = labels_processor(allowed_models={"m"}), new_state()
    body = [
        {"model": "m", "event_id": "a", "label": 1},
        {"model": "x", "event_id": "b", "label": 1},
    ]
    labels, out = proc.decode(state, [Record(0, 1000.0, json.dumps(body).encode())], now=0.0)
    assert [label.event_id for label in labels] == ["a"]
    assert [(d.reason, d.index) for d in out.dead_letters] == [(Reason.MODEL_NOT_ALLOWED, 1)]


# --- bounds ------------------------------------------------------------------------------------


def test_pending_labels_are_bounded_per_model_and_in_distinct_models():
    proc, state = (
        labels_processor(max_pending=100, max_pending_per_model=2, max_models=2),
        new_state(),
    )
    raw = [
        *label_records([("a0", 1), ("a1", 1), ("a2", 1)], 0, model="a"),
        *label_records([("b0", 1)], 3, model="b"),
        *label_records([("c0", 1)], 4, model="c"),
    ]
    out = step(proc, state, raw, {}, now=0.0)
    assert reasons(out) == [(Reason.LABEL_BUFFER_FULL, 2), (Reason.LABEL_BUFFER_FULL, 4)]
    assert "of the model" in out.dead_letters[0].detail and "models" in out.dead_letters[1].detail
    assert [p.event_id for p in state.pending] == ["a0", "a1", "b0"]
    # The older keep their place; once one is joined, a newcomer of its model fits again.
    out = step(
        proc,
        state,
        label_records([("a3", 1), ("a4", 1)], 5, model="a"),
        stored(["a0"], model="a"),
        now=5.0,
    )
    assert reasons(out) == [(Reason.LABEL_BUFFER_FULL, 6)]
    assert [p.event_id for p in state.pending] == ["a1", "b0", "a3"]


# --- duplicates --------------------------------------------------------------------------------


def test_a_second_label_for_a_pending_or_joined_event_is_a_duplicate_counted_once():
    proc, state = labels_processor(), new_state()
    out = step(
        proc, state, label_records([("e0", 1), ("e0", 1), ("late", 1)]), stored(["e0"]), now=0.0
    )
    assert reasons(out) == [(Reason.DUPLICATE_LABEL, 1)] and out.events == 1
    # the first, in this batch
    assert out.dead_letters[0].detail == "a label for this event_id is joined already"

    out = step(proc, state, label_records([("late", 0), ("e0", 0)], 3), stored(["e0"]), now=10.0)
    assert reasons(out) == [(Reason.DUPLICATE_LABEL, 3), (Reason.DUPLICATE_LABEL, 4)]
    assert [d.detail for d in out.dead_letters] == [
        "a label for this event_id is already pending",
        "a label for this event_id is joined already",
    ]
    out = step(proc, state, [], stored(["late"]), now=20.0)
    assert out.events == 1  # the pending "late" (label 1), not its copy
    assert error_count(state) == 2 and len(state.joined) == 2 and state.pending == []


def test_the_memory_of_joined_events_is_bounded_and_forgets_after_the_ttl():
    proc, state = labels_processor(max_pending=20), new_state()  # chunks of 2 keys
    ids = [f"e{i}" for i in range(30)]
    step(proc, state, label_records([(eid, 1) for eid in ids]), stored(ids), now=0.0)
    assert 18 <= len(state.joined) <= 20
    assert (MODEL, "e29") in state.joined and (MODEL, "e0") not in state.joined
    out = step(proc, state, label_records([("e0", 1)], 30), stored(["e0"]), now=1.0)
    assert out.events == 1  # forgotten: no longer a duplicate

    step(proc, state, [], {}, now=1.0 + TTL + 1)
    assert len(state.joined) == 0
    fields = state.checkpoint_fields()
    assert all(value == b"" for name, value in fields.items() if name.startswith(JOINED))  # deleted
    state.mark_checkpointed()
    assert not [name for name in state.checkpoint_fields() if name.startswith(JOINED)]


# --- look-ups back off -------------------------------------------------------------------------


def test_a_label_not_found_is_looked_up_again_after_a_doubling_delay_up_to_60_s():
    proc, state = labels_processor(), new_state()
    labels, out = proc.decode(state, label_records([("late", 1)]), now=0.0)
    asked_at = []
    for tenth in range(3000):  # every 0.1 s for 300 s, as ticks would
        now = tenth / 10
        waiting = state.pending + labels
        keys = proc.lookups(state, waiting, now)
        if keys or labels:
            assert proc.due(state, now) or labels
            if keys:
                asked_at.append(now)
            proc.apply(state, waiting, {}, now, out)
            labels = []
        else:
            assert not proc.due(state, now)
    assert asked_at[:9] == [0.0, 1.0, 3.0, 7.0, 15.0, 31.0, 63.0, 123.0, 183.0]
    assert len(asked_at) == 10 and asked_at[-1] == 243.0  # not 3000 times
    assert [p.retry_s for p in state.pending] == [60.0]


def test_a_label_is_joined_as_soon_as_its_due_look_up_finds_the_prediction():
    proc, state = labels_processor(), new_state()
    step(proc, state, label_records([("late", 1)]), {}, now=0.0)
    predictions = stored(["late"])  # the prediction arrives at t=0.5
    assert step(proc, state, [], predictions, now=0.5).events == 0  # not due yet: not asked
    assert step(proc, state, [], predictions, now=1.0).events == 1
    assert state.pending == [] and not proc.due(state, 2.0)


def test_expiry_is_unchanged_by_the_backoff():
    proc, state = labels_processor(), new_state()
    step(proc, state, label_records([("lost", 1)]), {}, now=0.0)
    assert step(proc, state, [], {}, now=TTL).dead_letters == []
    assert proc.due(state, TTL + 0.5)  # its expiry is due even though its next look-up is not
    out = step(proc, state, [], {}, now=TTL + 0.5)
    assert reasons(out) == [(Reason.LABEL_UNMATCHED, 0)] and state.pending == []


# --- checkpoints -------------------------------------------------------------------------------


def test_pending_labels_are_written_only_when_they_changed():
    proc, state = labels_processor(), new_state()
    assert PENDING not in state.checkpoint_fields()
    step(proc, state, label_records([("a", 1), ("b", 1)]), {}, now=0.0)
    assert PENDING in state.checkpoint_fields()
    state.mark_checkpointed()

    step(proc, state, [], {}, now=0.5)  # nothing due
    step(proc, state, [], {}, now=1.0)  # looked up in vain: only the schedule moved
    assert PENDING not in state.checkpoint_fields()

    out = step(proc, state, [], stored(["a"]), now=3.0)  # one joined
    assert out.events == 1
    fields = state.checkpoint_fields()
    assert msgspec.msgpack.decode(fields[PENDING], type=list[PendingLabel]) == state.pending
    assert [name for name in fields if name.startswith(JOINED)] == [f"{JOINED}0"]
    state.mark_checkpointed()
    assert label_fields(state) == []


def test_a_prediction_partition_writes_no_label_fields():
    assert label_fields(PartitionState("predictions", 0, epoch=1, next_offset=5)) == []


def label_fields(state: PartitionState) -> list[str]:
    return [
        name for name in state.checkpoint_fields() if name == PENDING or name.startswith(JOINED)
    ]


def test_pending_and_joined_labels_survive_a_checkpoint_and_judge_a_replay_the_same():
    proc, state = labels_processor(max_pending=40), new_state()  # chunks of 4 keys
    ids = [f"e{i}" for i in range(10)]
    step(
        proc, state, label_records([(eid, 1) for eid in ids] + [("late", 1)]), stored(ids), now=0.0
    )
    back = restored(state)
    assert back.pending == state.pending and back.pending[0].due == 1.0
    assert sorted(back.joined.chunks) == [0, 1, 2] and back.joined.where == state.joined.where
    assert not back.pending_dirty and not back.joined.changed

    # Records after the checkpoint, replayed after a crash, get the same answers.
    later = label_records([("e3", 0), ("late", 1), ("new", 1)], 11)
    predictions = stored([*ids, "late"])
    first, replay = (step(proc, s, later, predictions, now=2.0) for s in (state, back))
    assert (
        reasons(first)
        == reasons(replay)
        == [(Reason.DUPLICATE_LABEL, 11), (Reason.DUPLICATE_LABEL, 12)]
    )
    assert first.events == replay.events == 1  # the pending "late"
    assert back.pending == state.pending and back.joined.where == state.joined.where
    assert error_count(back) == error_count(state) == 11


def test_unreadable_label_fields_are_reported_and_rewritten():
    fields = {PENDING.encode(): b"\xc1", f"{JOINED}3".encode(): b"junk"}
    state = PartitionState.from_claim("labels", 0, Claim(2, 7, fields))
    assert sorted(state.corrupt) == [f"{JOINED}3", PENDING]
    assert state.pending == [] and len(state.joined) == 0
    assert state.checkpoint_fields()[PENDING] == msgspec.msgpack.encode([])
    assert state.checkpoint_fields()[f"{JOINED}3"] == b""


def test_a_lost_checkpoint_rewrites_every_label_field():
    proc, state = labels_processor(max_pending=40), new_state()
    step(
        proc,
        state,
        label_records([(f"e{i}", 1) for i in range(6)] + [("late", 1)]),
        stored([f"e{i}" for i in range(6)]),
        now=0.0,
    )
    state.mark_checkpointed()
    state.unsave_pending()
    fields = state.checkpoint_fields()
    assert PENDING in fields and sorted(n for n in fields if n.startswith(JOINED)) == [
        f"{JOINED}0",
        f"{JOINED}1",
    ]


# --- through the runtime, with a real Redis ----------------------------------------------------


def _decoded(sent: tuple) -> tuple:
    topic, key, value, headers = sent
    return topic, key, value, {name: header.decode() for name, header in headers}


class _Clock:
    """``time`` as the runtime module sees it, with a settable wall clock."""

    def __init__(self, now: float) -> None:
        self.now = now

    def time(self) -> float:
        return self.now

    def __getattr__(self, name: str) -> Any:
        return getattr(time, name)


def test_the_runtime_refuses_at_once_dedupes_and_backs_off_its_redis_look_ups(
    redis_server, monkeypatch
):
    clock = _Clock(1_000_000.0)
    monkeypatch.setattr(runtime_module, "time", clock)
    settings = Settings(
        redis_url=redis_server.url,
        group_id=f"test-labels-{uuid.uuid4().hex[:12]}",
        input_topic="preds",
        labels_topic="labels",
        allowed_models="m,unjoined",
        label_join_models="m",
        label_ttl_s=TTL,
        checkpoint_interval_s=3600.0,
    )
    key = ("labels", 0)

    async def body() -> None:
        publisher = RecordingPublisher()
        runtime = Runtime(settings, {}, publisher)
        asked: list[list[tuple[str, str]]] = []
        real_get = runtime.join.get

        async def get(keys, now):
            if keys:
                asked.append(list(keys))
            return await real_get(keys, now)

        runtime.join.get = get
        await runtime.on_assigned([key])
        await runtime.join.put(
            [(MODEL, f"e{i}", msgspec.msgpack.encode((0.9, "v1", clock.now))) for i in range(5)],
            clock.now,
        )
        raw = [
            *label_records([(f"e{i}", 1) for i in range(5)] + [("e0", 1), ("late", 0)]),
            *label_records([("x", 1)], 7, model="stranger"),
            *label_records([("y", 1)], 8, model="unjoined"),
        ]
        await runtime.handle("labels", {0: raw})
        state = runtime.states[key]
        assert state.monitors[series_name(MODEL, "v1", "error_rate")].count == 5
        assert [
            (h["streamdrift-reason"], int(h["streamdrift-source-offset"]))
            for _, _, _, h in map(_decoded, publisher.sent)
        ] == [
            ("model_not_allowed", 7),
            ("label_unmatched", 8),
            ("duplicate_label", 5),  # refused at once, then joined
        ]
        assert asked == [[(MODEL, f"e{i}") for i in range(5)] + [(MODEL, "late")]]

        for dt in (0.2, 0.5, 0.9):  # ticks before the first retry is due ask nothing
            clock.now = 1_000_000.0 + dt
            await runtime.tick()
        assert len(asked) == 1
        clock.now = 1_000_001.0
        await runtime.tick()
        assert asked[1:] == [[(MODEL, "late")]]
        await runtime.join.put(
            [(MODEL, "late", msgspec.msgpack.encode((0.9, "v1", clock.now)))], clock.now
        )
        clock.now = 1_000_002.5  # due at +3 s
        await runtime.tick()
        assert len(asked) == 2
        clock.now = 1_000_003.0
        await runtime.tick()
        assert len(asked) == 3 and state.pending == []
        assert state.monitors[series_name(MODEL, "v1", "error_rate")].count == 6
        await runtime.close()

        # A new owner restores the joined memory: a copy of a joined label is still a duplicate.
        publisher = RecordingPublisher()
        successor = Runtime(settings, {}, publisher)
        await successor.on_assigned([key])
        await successor.handle("labels", {0: label_records([("late", 0)], 9)})
        assert [h["streamdrift-reason"] for _, _, _, h in map(_decoded, publisher.sent)] == [
            "duplicate_label"
        ]
        assert successor.states[key].monitors[series_name(MODEL, "v1", "error_rate")].count == 6
        await successor.close()

    asyncio.run(body())
