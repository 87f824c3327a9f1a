"""Checkpoint store, join store and status against the session's real redis-server.

Every test uses its own group id, so the shared server needs no flushing. The async stores run
under ``asyncio.run`` with a client created inside that loop.
"""

from __future__ import annotations

import asyncio
import json
import uuid
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

import numpy as np
import pytest
import redis
import redis.asyncio as aioredis
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from redis.exceptions import ResponseError

from streamdrift.detectors import MultivariateParams
from streamdrift.streams.ops.status import read_status
from streamdrift.streams.pipeline.codec import Limits
from streamdrift.streams.pipeline.outcome import Record
from streamdrift.streams.pipeline.processor import AdmissionLimits, PredictionProcessor
from streamdrift.streams.state.checkpoint import CheckpointStore, Fenced, Save, StateLost
from streamdrift.streams.state.joins import BUCKETS_PER_TTL, JoinStore
from streamdrift.streams.state.keys import SEP, KeyLayout
from streamdrift.streams.state.partition import Claim, PartitionState

T = TypeVar("T")
TOPIC = "preds"


@pytest.fixture
def group() -> str:
    return f"test-ckpt-{uuid.uuid4().hex[:12]}"


@pytest.fixture
def url(redis_server) -> str:
    return redis_server.url


def run(url: str, body: Callable[[aioredis.Redis], Awaitable[T]]) -> T:
    """Run ``body(client)`` in a fresh event loop with its own async client."""

    async def main() -> T:
        client = aioredis.Redis.from_url(url)
        try:
            return await body(client)
        finally:
            await client.aclose()

    return asyncio.run(main())


def ckpt_hash(client: redis.Redis, group: str, partition: int = 0) -> dict[str, str]:
    ckpt, _ = KeyLayout(group).keys(TOPIC, partition)
    return {k.decode(): v.decode() for k, v in client.hgetall(ckpt).items()}


def state_hash(client: redis.Redis, group: str, partition: int = 0) -> dict[bytes, bytes]:
    _, state = KeyLayout(group).keys(TOPIC, partition)
    return client.hgetall(state)


# --- claim and save -----------------------------------------------------------------------------


def test_a_first_claim_starts_epoch_1_without_an_offset(url, group, redis_client):
    claim = run(url, lambda r: CheckpointStore(r, group, "w1").claim(TOPIC, 0))
    assert claim == Claim(epoch=1, offset=None, fields={})
    stored = ckpt_hash(redis_client, group)
    assert stored["epoch"] == "1" and stored["worker"] == "w1" and int(stored["claimed_at"]) > 0
    assert "offset" not in stored
    assert redis_client.smembers(KeyLayout(group).partitions_key) == {f"{TOPIC}:0".encode()}


def test_a_claim_increments_the_epoch_and_returns_the_stored_offset_and_fields(url, group):
    async def body(r: aioredis.Redis) -> tuple[Claim, list, Claim, Claim]:
        store = CheckpointStore(r, group, "w1")
        first = await store.claim(TOPIC, 0)
        saved = await store.save(
            [Save(TOPIC, 0, first.epoch, 42, 10, {"m\x1fx": b"\x00\x01blob", "\x00meta": b"v"})]
        )
        second = await CheckpointStore(r, group, "w2").claim(TOPIC, 0)
        third = await store.claim(TOPIC, 0)
        return first, saved, second, third

    first, saved, second, third = run(url, body)
    assert saved == [None]
    assert first.epoch == 1
    assert (second.epoch, second.offset) == (2, 42)
    assert second.fields == {b"m\x1fx": b"\x00\x01blob", b"\x00meta": b"v"}
    assert (third.epoch, third.offset) == (3, 42)


def test_an_empty_value_deletes_a_retired_series_in_the_same_atomic_step(url, group):
    async def body(r: aioredis.Redis) -> Claim:
        store = CheckpointStore(r, group, "w1")
        claim = await store.claim(TOPIC, 0)
        await store.save(
            [Save(TOPIC, 0, claim.epoch, 5, 5, {"m\x1fv1\x1fx": b"old", "m\x1fv2\x1fx": b"new"})]
        )
        await store.save(
            [Save(TOPIC, 0, claim.epoch, 9, 4, {"m\x1fv1\x1fx": b"", "m\x1fv2\x1fx": b"newer"})]
        )
        return await store.claim(TOPIC, 0)

    claim = run(url, body)
    assert (claim.offset, claim.fields) == (9, {b"m\x1fv2\x1fx": b"newer"})


def test_an_offset_of_zero_is_an_offset(url, group):
    async def body(r: aioredis.Redis) -> Claim:
        store = CheckpointStore(r, group, "w1")
        claim = await store.claim(TOPIC, 0)
        assert await store.save([Save(TOPIC, 0, claim.epoch, 0, 0, {})]) == [None]
        return await store.claim(TOPIC, 0)

    assert run(url, body).offset == 0


def test_save_writes_fields_and_offset_and_accumulates_events(url, group, redis_client):
    async def body(r: aioredis.Redis) -> list:
        store = CheckpointStore(r, group, "w1")
        claim = await store.claim(TOPIC, 0)
        results = await store.save([Save(TOPIC, 0, claim.epoch, 100, 60, {"a": b"1", "b": b"2"})])
        results += await store.save([Save(TOPIC, 0, claim.epoch, 175, 75, {"b": b"3", "c": b"4"})])
        return results

    assert run(url, body) == [None, None]
    stored = ckpt_hash(redis_client, group)
    assert (stored["offset"], stored["events"], stored["epoch"], stored["worker"]) == (
        "175",
        "135",
        "1",
        "w1",
    )
    assert int(stored["updated_at"]) >= int(stored["claimed_at"])
    # Fields not in a later save keep their earlier value: saves carry only changed series.
    assert state_hash(redis_client, group) == {b"a": b"1", b"b": b"3", b"c": b"4"}


def test_a_save_with_a_stale_epoch_is_fenced_and_changes_nothing(url, group, redis_client):
    async def body(r: aioredis.Redis) -> tuple[list, list, list]:
        zombie, owner = CheckpointStore(r, group, "zombie"), CheckpointStore(r, group, "owner")
        old = await zombie.claim(TOPIC, 0)
        first = await zombie.save([Save(TOPIC, 0, old.epoch, 10, 10, {"x": b"zombie-1"})])
        new = await owner.claim(TOPIC, 0)
        assert new.epoch == old.epoch + 1
        stale = await zombie.save(
            [Save(TOPIC, 0, old.epoch, 20, 10, {"x": b"zombie-2", "y": b"zombie"})]
        )
        return first, stale, await owner.save([Save(TOPIC, 0, new.epoch, 15, 5, {"x": b"owner"})])

    first, stale, owner = run(url, body)
    assert first == [None] and owner == [None]
    assert len(stale) == 1 and isinstance(stale[0], Fenced)
    stored = ckpt_hash(redis_client, group)
    assert (stored["offset"], stored["events"], stored["worker"], stored["epoch"]) == (
        "15",
        "15",
        "owner",
        "2",
    )
    assert state_hash(redis_client, group) == {b"x": b"owner"}


def test_a_fenced_save_leaves_the_new_owners_checkpoint_untouched(url, group, redis_client):
    async def body(r: aioredis.Redis) -> list:
        zombie, owner = CheckpointStore(r, group, "zombie"), CheckpointStore(r, group, "owner")
        old = await zombie.claim(TOPIC, 0)
        await owner.claim(TOPIC, 0)  # the new owner has not checkpointed yet
        return await zombie.save([Save(TOPIC, 0, old.epoch, 99, 99, {"x": b"zombie"})])

    (result,) = run(url, body)
    assert isinstance(result, Fenced)
    stored = ckpt_hash(redis_client, group)
    assert "offset" not in stored and "events" not in stored and stored["worker"] == "owner"
    assert state_hash(redis_client, group) == {}


def test_a_save_to_a_partition_with_no_checkpoint_reports_lost_state_and_writes_nothing(
    url, group, redis_client
):
    # No claim at all: what a worker sees after Redis restarted without its data.
    (result,) = run(
        url, lambda r: CheckpointStore(r, group, "w").save([Save(TOPIC, 3, 1, 5, 5, {"x": b"1"})])
    )
    assert isinstance(result, StateLost)
    assert ckpt_hash(redis_client, group, 3) == {} and state_hash(redis_client, group, 3) == {}


def test_an_offset_regression_is_rejected(url, group, redis_client):
    async def body(r: aioredis.Redis) -> tuple[list, list]:
        store = CheckpointStore(r, group, "w1")
        claim = await store.claim(TOPIC, 0)
        await store.save([Save(TOPIC, 0, claim.epoch, 50, 50, {"x": b"at-50"})])
        back = await store.save([Save(TOPIC, 0, claim.epoch, 49, 1, {"x": b"at-49"})])
        same = await store.save([Save(TOPIC, 0, claim.epoch, 50, 0, {"y": b"no new events"})])
        return back, same

    back, same = run(url, body)
    assert len(back) == 1 and isinstance(back[0], ResponseError) and not isinstance(back[0], Fenced)
    assert "REGRESSION" in str(back[0])
    assert same == [None]  # an unchanged offset is not a regression
    stored = ckpt_hash(redis_client, group)
    assert (stored["offset"], stored["events"]) == ("50", "50")
    assert state_hash(redis_client, group) == {b"x": b"at-50", b"y": b"no new events"}


def test_one_fenced_partition_does_not_stop_the_others_of_the_same_call(url, group, redis_client):
    async def body(r: aioredis.Redis) -> list:
        store = CheckpointStore(r, group, "w1")
        claims = [await store.claim(TOPIC, p) for p in range(3)]
        await CheckpointStore(r, group, "w2").claim(TOPIC, 1)  # partition 1 moved on
        return await store.save(
            [
                Save(TOPIC, p, claims[p].epoch, 10 + p, 1 + p, {"x": f"p{p}".encode()})
                for p in range(3)
            ]
        )

    results = run(url, body)
    assert results[0] is None and results[2] is None
    assert isinstance(results[1], Fenced)
    for p in (0, 2):
        assert ckpt_hash(redis_client, group, p)["offset"] == str(10 + p)
        assert state_hash(redis_client, group, p) == {b"x": f"p{p}".encode()}
    assert "offset" not in ckpt_hash(redis_client, group, 1)
    assert state_hash(redis_client, group, 1) == {}
    assert redis_client.smembers(KeyLayout(group).partitions_key) == {
        f"{TOPIC}:{p}".encode() for p in range(3)
    }


def test_groups_do_not_share_checkpoints(url, group):
    async def body(r: aioredis.Redis) -> Claim:
        mine = CheckpointStore(r, group, "w1")
        claim = await mine.claim(TOPIC, 0)
        await mine.save([Save(TOPIC, 0, claim.epoch, 7, 7, {"x": b"1"})])
        return await CheckpointStore(r, f"{group}-other", "w1").claim(TOPIC, 0)

    assert run(url, body) == Claim(1, None, {})


# --- the processor's state through Redis -------------------------------------------------------


def events(offsets: range, **features: Any) -> list[Record]:
    return [
        Record(
            o,
            1000.0 + o,
            json.dumps({"model": "m", "features": {**features, "x": float(o)}}).encode(),
        )
        for o in offsets
    ]


def test_a_processor_state_survives_a_checkpoint_and_a_new_claim(url, group):
    proc = PredictionProcessor({}, Limits(), AdmissionLimits())

    async def body(r: aioredis.Redis) -> tuple[PartitionState, PartitionState]:
        store = CheckpointStore(r, group, "w1")
        claim = await store.claim(TOPIC, 0)
        state = PartitionState.from_claim(TOPIC, 0, claim)
        for batch in (range(0, 30), range(30, 50)):
            proc.process(state, events(batch, c="k", z=None))
            saved = await store.save(
                [
                    Save(
                        TOPIC,
                        0,
                        state.epoch,
                        state.next_offset,
                        state.events_since_checkpoint,
                        state.checkpoint_fields(),
                    )
                ]
            )
            assert saved == [None]
            state.mark_checkpointed()
        proc.process(state, events(range(50, 60)))  # applied but never checkpointed
        restored = PartitionState.from_claim(
            TOPIC, 0, await CheckpointStore(r, group, "w2").claim(TOPIC, 0)
        )
        return state, restored

    state, restored = run(url, body)
    assert (restored.epoch, restored.next_offset) == (2, 50)
    counts = {name: (m.count, m.missing) for name, m in restored.monitors.items()}
    assert counts == {f"m{SEP}x": (50, 0), f"m{SEP}c": (50, 0)}
    assert restored.unknown_missing == {f"m{SEP}z": 50}
    # Kafka redelivers from offset 50: the 10 uncheckpointed events are applied once.
    out = proc.process(restored, events(range(40, 60)))
    assert (out.events, out.duplicates) == (10, 10)
    assert restored.monitors[f"m{SEP}x"].count == state.monitors[f"m{SEP}x"].count == 60


# --- join store ----------------------------------------------------------------------------------

TTL = 240.0


def test_join_round_trip_missing_keys_and_older_buckets(url, group, redis_client):
    now = 1_000_000.0
    width = TTL / BUCKETS_PER_TTL

    async def body(r: aioredis.Redis) -> tuple[dict, dict, dict]:
        store = JoinStore(r, group, TTL)
        await store.put([("m", "e1", b"p1"), ("m", "e2", b"p2"), ("n", "e1", b"n1")], now)
        await store.put([("m", "e3", b"p3")], now + 5 * width)  # a newer bucket
        await store.put([("m", "e2", b"p2-new")], now + 5 * width)  # newest wins
        keys = [("m", "e1"), ("m", "e2"), ("m", "e3"), ("n", "e1"), ("n", "e2"), ("x", "e1")]
        same = await store.get(keys, now + 5 * width)
        later = await store.get(keys, now + TTL)  # e1 and n/e1 now sit in an old bucket
        gone = await store.get(keys, now + TTL + 3 * width)  # past the TTL: no longer looked up
        return same, later, gone

    same, later, gone = run(url, body)
    expected = {("m", "e1"): b"p1", ("m", "e2"): b"p2-new", ("m", "e3"): b"p3", ("n", "e1"): b"n1"}
    assert same == expected
    assert later == expected
    assert gone == {("m", "e2"): b"p2-new", ("m", "e3"): b"p3"}  # only the newer bucket is left

    keys = list(redis_client.scan_iter(match=f"sd:{{{group}}}:join:*"))
    assert len(keys) == 3  # (m, bucket 0), (n, bucket 0), (m, bucket 5)
    for key in keys:
        ttl = redis_client.ttl(key)
        assert 0 < ttl <= TTL + width + 1, (key, ttl)


@settings(
    max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(
    st.lists(
        st.tuples(
            st.sampled_from(["m", "n", "模型"]),
            st.text(min_size=1, max_size=40) | st.sampled_from(["e1", "e2"]),  # repeats too
            st.binary(max_size=64),
        ),
        max_size=60,
    ),
    st.integers(0, 5000),
)
def test_the_join_script_writes_the_hash_an_hset_would(url, group, redis_client, items, bulk):
    """Whatever the ids and packed predictions (empty, any bytes, any text, repeated in one
    batch: the last wins), and batches past Lua's unpack() limit, the script's hash is the one
    ``HSET key id packed ...`` gives."""
    items = [*items, *(("bulk", f"b{i}", str(i).encode()) for i in range(bulk))]

    async def body(r: aioredis.Redis) -> None:
        await JoinStore(r, group, TTL).put(items, 100.0)

    run(url, body)
    expected: dict[bytes, dict[bytes, bytes]] = {}
    for model, event_id, packed in items:
        expected.setdefault(model.encode(), {})[event_id.encode()] = packed
    layout = JoinStore(redis_client, group, TTL)  # type: ignore[arg-type]  # key naming only
    bucket = int(100.0 // layout.width)
    for model, fields in expected.items():
        key = layout._key(model.decode(), bucket)
        assert redis_client.hgetall(key) == fields
        assert 0 < redis_client.ttl(key) <= TTL + layout.width + 1
    for key in redis_client.scan_iter(match=f"sd:{{{group}}}:join:*"):
        redis_client.delete(key)


def test_join_of_nothing_asks_nothing(url, group, redis_client):
    async def body(r: aioredis.Redis) -> dict:
        store = JoinStore(r, group, TTL)
        await store.put([], 0.0)
        return await store.get([], 0.0)

    assert run(url, body) == {}
    assert list(redis_client.scan_iter(match=f"sd:{{{group}}}:*")) == []


def test_joins_from_the_processor_are_found_by_event_id(url, group):
    proc = PredictionProcessor({}, Limits(), AdmissionLimits())
    state = PartitionState(TOPIC, 0, 1, None)
    bodies = [
        {"model": "m", "event_id": f"e{i}", "features": {}, "prediction": i / 10} for i in range(5)
    ]
    out = proc.process(
        state, [Record(i, 0.0, json.dumps(b).encode()) for i, b in enumerate(bodies)]
    )

    async def body(r: aioredis.Redis) -> dict:
        store = JoinStore(r, group, TTL)
        await store.put(out.joins, 500.0)
        return await store.get([("m", f"e{i}") for i in range(6)], 510.0)

    found = run(url, body)
    assert set(found) == {("m", f"e{i}") for i in range(5)}
    assert found == {(model, event_id): packed for model, event_id, packed in out.joins}


# --- status --------------------------------------------------------------------------------------


async def _process_and_save(
    r: aioredis.Redis, group: str, proc: PredictionProcessor, batches: dict[int, list[list[Record]]]
) -> list:
    """Each partition's batches processed on its own claimed state, then checkpointed."""
    store, results = CheckpointStore(r, group, "w1"), []
    for partition, records in batches.items():
        state = PartitionState.from_claim(TOPIC, partition, await store.claim(TOPIC, partition))
        for batch in records:
            proc.process(state, batch)
        save = Save(
            TOPIC,
            partition,
            state.epoch,
            state.next_offset,
            state.events_since_checkpoint,
            state.checkpoint_fields(),
        )
        results += await store.save([save])
    return results


def test_status_merges_a_series_over_two_partitions(url, group, redis_client):
    proc = PredictionProcessor({}, Limits(), AdmissionLimits())
    per_partition = {0: (30, 2), 1: (45, 5)}  # (values, nulls)
    batches = {
        partition: [
            events(range(n), c=f"v{partition}"),
            [
                Record(n + i, 0.0, json.dumps({"model": "m", "features": {"x": None}}).encode())
                for i in range(nulls)
            ],
        ]
        for partition, (n, nulls) in per_partition.items()
    }

    async def body(r: aioredis.Redis) -> list:
        return await _process_and_save(r, group, proc, batches)

    assert run(url, body) == [None, None]
    status = read_status(redis_client, group)
    assert status["group_id"] == group
    assert [
        (p["partition"], p["offset"], p["events"], p["epoch"]) for p in status["partitions"]
    ] == [(0, 32, 32, 1), (1, 50, 50, 1)]
    x = status["models"]["m"]["x"]
    assert (x["kind"], x["count"], x["missing"]) == ("numeric", 75, 7)
    assert [p["count"] for p in x["partitions"]] == [30, 45]
    assert (x["min"], x["max"]) == (0.0, 44.0)
    # Offsets 0..29 and 0..44: mean of both ranges together.
    assert x["mean"] == pytest.approx((sum(range(30)) + sum(range(45))) / 75)
    c = status["models"]["m"]["c"]
    assert (c["kind"], c["count"], c["distinct"]) == ("categorical", 75, 2)
    assert {t["value"]: t["count"] for t in c["top"]} == {"v0": 30, "v1": 45}
    assert set(status["models"]) == {"m"}  # meta fields are not series


def test_status_lists_each_partitions_pca_monitor_under_one_multivariate_entry(
    url, group, redis_client
):
    params = MultivariateParams(reference_events=100, calibration_events=100, events=50)
    proc = PredictionProcessor({}, Limits(), AdmissionLimits(), multivariate=params)
    rng = np.random.default_rng(5)

    def rows(n: int) -> list[Record]:
        values = rng.normal(size=(n, 3))
        return [
            Record(
                o,
                1000.0 + o,
                json.dumps({"model": "m", "features": dict(zip("abc", row, strict=True))}).encode(),
            )
            for o, row in enumerate(values.tolist())
        ]

    async def body(r: aioredis.Redis) -> list:
        return await _process_and_save(r, group, proc, {0: [rows(300)], 1: [rows(250)]})

    assert run(url, body) == [None, None]
    pca = read_status(redis_client, group)["models"]["m"]["multivariate"]
    assert (pca["kind"], pca["count"]) == ("pca_reconstruction", 550)
    # Each partition fits its own PCA on its own rows: listed, not merged.
    assert [p["count"] for p in pca["partitions"]] == [300, 250]
    assert pca["drift_score"] == max(p["drift_score"] for p in pca["partitions"])


def test_status_skips_a_malformed_partition_entry_and_shows_the_rest(url, group, redis_client):
    proc = PredictionProcessor({}, Limits(), AdmissionLimits())

    async def body(r: aioredis.Redis) -> list:
        return await _process_and_save(r, group, proc, {0: [events(range(10))]})

    assert run(url, body) == [None]
    partitions_key = KeyLayout(group).partitions_key
    redis_client.sadd(partitions_key, b"no-partition", b"\xff\xfe:1", b"t:-2", b":3")
    status = read_status(redis_client, group)
    assert [(p["topic"], p["partition"]) for p in status["partitions"]] == [(TOPIC, 0)]
    assert status["models"]["m"]["x"]["count"] == 10


def test_status_of_an_unknown_group_is_empty(redis_client, group):
    assert read_status(redis_client, group) == {"group_id": group, "partitions": [], "models": {}}


# --- the alert outbox -----------------------------------------------------------------------------


def test_alerts_enter_the_outbox_in_the_same_step_as_state_and_a_claim_returns_them(url, group):
    async def body(client):
        store = CheckpointStore(client, group, "w1")
        first = await store.claim(TOPIC, 0)
        (error,) = await store.save(
            [Save(TOPIC, 0, first.epoch, 10, 10, {"f": b"1"}, [b"alert-1", b"alert-2"])]
        )
        assert error is None
        return await store.claim(TOPIC, 0)  # e.g. a restart after a crash before publishing

    second = run(url, body)
    assert second.outbox == [b"alert-1", b"alert-2"] and second.offset == 10


def test_a_fenced_checkpoint_adds_no_alert_and_a_fenced_trim_removes_none(url, group):
    async def body(client):
        old = CheckpointStore(client, group, "old")
        new = CheckpointStore(client, group, "new")
        stale = await old.claim(TOPIC, 0)
        fresh = await new.claim(TOPIC, 0)
        assert (await new.save([Save(TOPIC, 0, fresh.epoch, 5, 5, {}, [b"new-owner"])])) == [None]
        (fenced,) = await old.save([Save(TOPIC, 0, stale.epoch, 9, 9, {}, [b"zombie"])])
        trim = await old.trim_outbox(TOPIC, 0, stale.epoch, 1)
        return fenced, trim, await client.lrange(new.outbox_key(TOPIC, 0), 0, -1)

    fenced, trim, outbox = run(url, body)
    assert isinstance(fenced, Fenced) and isinstance(trim, Fenced)
    assert outbox == [b"new-owner"]


def test_trim_drops_only_the_published_head(url, group):
    async def body(client):
        store = CheckpointStore(client, group, "w1")
        claim = await store.claim(TOPIC, 0)
        await store.save([Save(TOPIC, 0, claim.epoch, 3, 3, {}, [b"a", b"b", b"c"])])
        assert await store.trim_outbox(TOPIC, 0, claim.epoch, 2) is None
        return await client.lrange(store.outbox_key(TOPIC, 0), 0, -1)

    assert run(url, body) == [b"c"]
