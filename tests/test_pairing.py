"""Request/response pairing (streams.pipeline.pairing) against a real Redis (streams.state.pairs):
the claim table, the bounds, the unpaired modes, and — under random interleavings, partitions
and crashes that replay what the last checkpoint did not hold — every half accounted for once:
in one paired event, or alone, never both, never lost."""

from __future__ import annotations

import asyncio
import json
import re
import uuid
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import pytest
import redis.asyncio as aioredis
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from streamdrift.streams.pipeline.codec import Reason
from streamdrift.streams.pipeline.inputs import input_specs
from streamdrift.streams.pipeline.outcome import Record
from streamdrift.streams.pipeline.pairing import (
    REQUEST,
    RESPONSE,
    Half,
    Pairing,
    PairingSpec,
    PendingHalf,
    Settled,
)
from streamdrift.streams.state.pairs import PairStore


def half(kind: str, pair_id: str, partition: int = 0, offset: int = 0, **event: Any) -> Half:
    body = {"model": "m", "event_id": pair_id, "features": {}, **event}
    return Half(
        model="m",
        pair_id=pair_id,
        kind=kind,
        identity=f"logs:{partition}:{offset}:0",
        offset=offset,
        timestamp=1.0,
        event=json.dumps(body).encode(),
    )


def request(pair_id: str, x: float = 1.0, **where: int) -> Half:
    return half(REQUEST, pair_id, features={"x": x}, **where)


def response(pair_id: str, p: float = 0.5, **where: int) -> Half:
    return half(RESPONSE, pair_id, prediction=p, **where)


def events(settled: Settled) -> list[dict[str, Any]]:
    return [json.loads(r.value or b"") for r in settled.records]


class Side:
    """One partition's pairing: its pending halves, asked through a real Redis."""

    def __init__(self, store: PairStore, spec: PairingSpec | None = None) -> None:
        self.store = store
        self.pairing = Pairing(spec or PairingSpec(window_s=10), "logs")
        self.pending: list[PendingHalf] = []

    async def step(self, now: float, *new: Half) -> Settled:
        asks = self.pairing.asks(self.pending, new, now)
        answers = await self.store.offer(asks, self.pairing.spec.window_s)
        self.pending, settled = self.pairing.settle(self.pending, asks, answers, now)
        return settled


def run(main: Any) -> Any:
    return asyncio.run(main)


@pytest.fixture
def store_url(redis_server) -> str:
    return redis_server.url


def store(url: str) -> tuple[aioredis.Redis, PairStore]:
    client = aioredis.Redis.from_url(url)
    return client, PairStore(client, f"pairs-{uuid.uuid4().hex[:8]}")


def test_a_request_pairs_with_its_response_read_on_another_partition(store_url):
    """The request claims the pair, whichever half came first: the paired event is applied
    where the request was read."""

    async def main() -> None:
        client, pairs = store(store_url)
        left, right = Side(pairs), Side(pairs)
        waited = await left.step(0.0, request("a", x=3.0, partition=0))
        assert not waited.records and len(left.pending) == 1 and waited.changed
        stored = await right.step(0.1, response("a", p=0.9, partition=1))
        assert not stored.records and len(right.pending) == 1  # a response does not claim
        early = await left.step(0.2)  # not due yet: nothing asked, still waiting
        assert not early.changed and len(left.pending) == 1
        paired = await left.step(0.3)  # due: its response is there, it claims
        assert events(paired) == [
            {"model": "m", "event_id": "a", "features": {"x": 3.0}, "prediction": 0.9}
        ]
        assert paired.counts == {"paired": 1} and not left.pending
        dropped = await right.step(0.4)  # due: the request's event holds it
        assert not dropped.records and not dropped.counts and not right.pending
        first = await Side(pairs).step(1.0, response("b", partition=1))
        claimed = await Side(pairs).step(1.1, request("b", partition=0))  # response came first
        assert not first.records and claimed.counts == {"paired": 1}
        await client.aclose()

    run(main())


def test_halves_read_in_one_batch_pair_at_once_and_leave_nothing_waiting(store_url):
    async def main() -> None:
        client, pairs = store(store_url)
        side = Side(pairs)
        settled = await side.step(0.0, request("g", offset=0), response("g", offset=1))
        assert [e["prediction"] for e in events(settled)] == [0.5]
        assert settled.counts == {"paired": 1} and not side.pending and settled.changed
        await client.aclose()

    run(main())


def test_a_request_alone_past_its_window_is_monitored_and_so_is_its_late_response(store_url):
    async def main() -> None:
        client, pairs = store(store_url)
        left, right = Side(pairs), Side(pairs)
        await left.step(0.0, request("b"))
        for now in (0.5, 1.0, 3.0, 7.0):  # asked in vain, backing off
            assert not (await left.step(now)).records and left.pending
        assert left.pending[0].retry_s == 4.0
        alone = await left.step(10.0)
        assert events(alone) == [{"model": "m", "event_id": "b", "features": {"x": 1.0}}]
        assert alone.counts == {"unpaired_request": 1} and not left.pending
        late = await right.step(11.0, response("b", p=0.2))
        assert events(late)[0]["prediction"] == 0.2 and "x" not in events(late)[0]["features"]
        assert late.counts == {"unpaired_response": 1}
        await client.aclose()

    run(main())


def test_a_replay_takes_the_decision_its_claim_recorded(store_url):
    """The claim made, the checkpoint not: the same half read again pairs again (once per
    replay: the state that emitted it the first time was lost with the crash)."""

    async def main() -> None:
        client, pairs = store(store_url)
        await Side(pairs).step(0.0, response("c", partition=1))
        first = await Side(pairs).step(0.1, request("c", partition=0))
        replayed = await Side(pairs).step(5.0, request("c", partition=0))
        assert events(first) == events(replayed) and replayed.counts == {"paired": 1}
        # the response's replay finds the pair claimed by its partner: nothing to emit
        again = await Side(pairs).step(6.0, response("c", partition=1))
        assert not again.records and not again.counts and again.changed
        await client.aclose()

    run(main())


@pytest.mark.parametrize("stored", [b"logs:1:0:0\nnot json", b'logs:1:0:0\n{"features": [1]}'])
def test_a_partner_that_is_not_a_half_leaves_this_half_alone(store_url, stored):
    """Whatever the pair's hash holds (another writer, a corrupted value), settling never raises:
    the half that claimed the pair is monitored alone."""

    async def main() -> None:
        client, pairs = store(store_url)
        key = pairs.layout.pair_key("m", "h")
        await client.hset(key, RESPONSE, stored)
        settled = await Side(pairs).step(0.0, request("h"))
        assert settled.counts == {"unreadable_partner": 1, "unpaired_request": 1}
        assert [e["features"] for e in events(settled)] == [{"x": 1.0}]
        await client.aclose()

    run(main())


def test_a_second_half_of_one_kind_with_the_same_id_is_dead_lettered(store_url):
    async def main() -> None:
        client, pairs = store(store_url)
        side = Side(pairs)
        await side.step(0.0, request("d", offset=1))
        twin = await side.step(0.1, request("d", offset=2))
        [letter] = twin.dead_letters
        assert letter.reason is Reason.DUPLICATE_PAIR_ID and letter.offset == 2
        assert "request id 'd' seen already" in letter.detail and len(side.pending) == 1
        await client.aclose()

    run(main())


def test_a_full_waiting_room_settles_newcomers_at_once(store_url):
    async def main() -> None:
        client, pairs = store(store_url)
        side = Side(pairs, PairingSpec(window_s=10, max_pending=2))
        settled = await side.step(0.0, *(request(f"e{i}", offset=i) for i in range(4)))
        assert len(side.pending) == 2 and settled.counts == {"unpaired_request": 2}
        assert [e["event_id"] for e in events(settled)] == ["e2", "e3"]
        # their responses, whenever they come, are then alone too
        late = await Side(pairs).step(1.0, response("e3"))
        assert late.counts == {"unpaired_response": 1}
        await client.aclose()

    run(main())


@pytest.mark.parametrize(
    ("mode", "records", "letters"),
    [("monitor", 1, []), ("count", 0, []), ("dead_letter", 0, [Reason.UNPAIRED_RESPONSE])],
)
def test_what_an_unpaired_half_becomes_is_the_inputs_choice(store_url, mode, records, letters):
    async def main() -> None:
        client, pairs = store(store_url)
        side = Side(pairs, PairingSpec(window_s=1, unpaired=mode))
        await side.step(0.0, response("f"))
        settled = await side.step(1.0)
        assert len(settled.records) == records
        assert [d.reason for d in settled.dead_letters] == letters
        assert settled.counts == {"unpaired_response": 1}
        if letters:
            assert "no request for id 'f' within 1 s" in settled.dead_letters[0].detail
        await client.aclose()

    run(main())


@pytest.mark.parametrize(
    ("pairing", "error"),
    [
        ({"window": 3}, "inputs[0].pairing: unknown key 'window'"),
        ({"window_s": 0.1}, "inputs[0].pairing.window_s: expected 0.5 to 3600 seconds"),
        ({"window_s": "1s"}, "inputs[0].pairing.window_s: expected seconds"),
        ({"unpaired": "drop"}, "inputs[0].pairing.unpaired: expected one of monitor, count"),
        ({"max_pending": 0}, "inputs[0].pairing.max_pending: expected an integer ≥ 1"),
        ("yes", "inputs[0].pairing: expected true, false or a mapping"),
    ],
)
def test_a_wrong_pairing_section_is_named(pairing, error):
    entry = {"topic": "logs", "format": "kserve", "pairing": pairing}
    with pytest.raises(ValueError, match=re.escape(error)):
        input_specs({"inputs": [entry]})


def test_pairing_is_on_for_serving_logs_and_refused_for_plain_json():
    (kserve, seldon, off) = input_specs(
        {
            "inputs": [
                {"topic": "a", "format": "kserve"},
                {"topic": "b", "format": "seldon", "pairing": {"window_s": 5}},
                {"topic": "c", "format": "kserve", "pairing": False},
            ]
        }
    )
    assert kserve.pairing == PairingSpec() and seldon.pairing == PairingSpec(window_s=5.0)
    assert off.pairing is None
    json_entry = {"topic": "d", "format": "json", "pairing": True}
    json_entry["mapping"] = {"model": "const:m", "features": "inputs"}
    with pytest.raises(ValueError, match="only inputs of format kserve, seldon, seldon2 pair"):
        input_specs({"inputs": [json_entry]})


# -- every half once, whatever the interleaving and the crashes ---------------------------------


@dataclass
class Partition:
    """One partition of the logs topic: its records, read by a side that checkpoints and
    crashes (back to its last checkpoint: pending halves, position, emitted events)."""

    number: int
    records: list[Half] = field(default_factory=list)
    position: int = 0
    emitted: list[Record] = field(default_factory=list)
    counts: Counter[str] = field(default_factory=Counter)
    saved: tuple[int, list[PendingHalf], int, Counter[str]] = field(
        default_factory=lambda: (0, [], 0, Counter())
    )

    def checkpoint(self, side: Side) -> None:
        self.saved = (self.position, list(side.pending), len(self.emitted), Counter(self.counts))

    def crash(self, side: Side) -> None:
        self.position, pending, emitted, counts = self.saved
        side.pending, self.emitted = list(pending), self.emitted[:emitted]
        self.counts = Counter(counts)


async def play(url: str, plan: list[tuple[str, int]], steps: Sequence[tuple[str, int]]) -> None:
    client, pairs = store(url)
    spec = PairingSpec(window_s=3.0, max_pending=4)  # small: the room overflows too
    partitions = [Partition(p) for p in range(3)]
    sides = [Side(pairs, spec) for _ in partitions]
    for n, (kind, p) in enumerate(plan):  # the halves, each on its partition, ids by pair
        part = partitions[p]
        make = request if kind == REQUEST else response
        part.records.append(make(f"id{n // 2}", partition=p, offset=len(part.records)))
    now = 0.0
    for action, p in steps:
        part, side = partitions[p], sides[p]
        now += 0.4
        if action.startswith("read") and part.position < len(part.records):
            taken = part.records[part.position : part.position + (2 if action == "read2" else 1)]
            settled = await side.step(now, *taken)  # read2: a batch of two records
            part.position += len(taken)
        elif action == "crash":
            part.crash(side)
            continue
        else:
            settled = await side.step(now)
        part.emitted += settled.records
        part.counts += settled.counts
        if action == "checkpoint":
            part.checkpoint(side)
    for part, side in zip(partitions, sides, strict=True):  # read the rest, then wait it out
        while part.position < len(part.records):
            settled = await side.step(now, part.records[part.position])
            part.position += 1
            part.emitted += settled.records
            part.counts += settled.counts
    for _ in range(12):
        now += 1.0
        for part, side in zip(partitions, sides, strict=True):
            settled = await side.step(now)
            part.emitted += settled.records
            part.counts += settled.counts
    assert not any(side.pending for side in sides)
    seen: Counter[tuple[str, str]] = Counter()  # (pair id, "x" | "p"): features, prediction
    for part in partitions:
        for record in part.emitted:
            event = json.loads(record.value or b"")
            seen[(event["event_id"], "x")] += "x" in event["features"]
            seen[(event["event_id"], "p")] += "prediction" in event
    halves = {(h.pair_id, "x" if h.kind == REQUEST else "p") for p in partitions for h in p.records}
    assert {key for key, count in seen.items() if count} == halves
    assert set(seen.values()) <= {0, 1}, [key for key, count in seen.items() if count > 1]
    total = sum((p.counts for p in partitions), Counter())
    assert 2 * total["paired"] + total["unpaired_request"] + total["unpaired_response"] == len(
        halves
    )
    await client.aclose()


@settings(
    max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(
    # the partition of each half: request then response of each id (an odd last: a lone request)
    st.lists(st.integers(0, 2), max_size=24).map(
        lambda parts: [((REQUEST, RESPONSE)[n % 2], p) for n, p in enumerate(parts)]
    ),
    st.lists(
        st.tuples(
            st.sampled_from(["read", "read", "read2", "tick", "checkpoint", "crash"]),
            st.integers(0, 2),
        ),
        max_size=60,
    ),
)
def test_every_half_is_counted_once_through_any_interleaving_and_crash(store_url, plan, steps):
    run(play(store_url, plan, steps))
