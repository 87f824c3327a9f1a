"""Request/response pairing: the two halves of one inference (a serving platform logs the request
and the response as two messages, often on different partitions, read by different workers)
become one event — the request's features with the response's prediction — counted once.

The halves meet in Redis (:mod:`streams.state.pairs`), keyed by (model, pair id: the CloudEvent
``id`` or the request id, ``/<row>`` for a batch's rows). Each half, when read, is *offered*: it
is stored there with its identity (input topic, partition, offset, row) and, if it is a request
and its response is already stored, it claims the pair (so the paired event is applied where the
request was read, whatever the order). A half that cannot claim waits in its partition's state
(checkpointed, like a pending label) and asks again — after 0.25 s, then doubling up to 4 s — until
its partner comes or its window (``window_s`` from its arrival, on the worker clock) is over; then
it claims the pair if its partner is there (a response whose request was read late), else
itself *alone*.

The claim is one field of the pair's Redis hash, set once (a Lua script: first writer wins), so
exactly one half decides, whatever the order, the partitions, the workers or the replays:

============================= ===================================================================
claim found                   this half
============================= ===================================================================
``pair`` by this half         emits the paired event (its own and its partner's event, merged)
``pair`` by its partner       nothing: the partner's event holds it
``alone`` by either           emits itself unpaired (its partner, if ever read, does the same)
============================= ===================================================================

The identity in the claim makes a replay after a crash (the claim made, the checkpoint not) take
the same decision again: a half asks, finds its own claim, and acts on it once more.

Unpaired halves are always counted (``streamdrift_pairs_total``) and, per input (``unpaired``),
monitored alone (``monitor``, the default: inputs without outputs are still input drift),
only counted (``count``) or dead-lettered (``dead_letter``: ``unpaired_request`` /
``unpaired_response``). Bounds: at most ``max_pending`` halves and ``max_pending_bytes`` of
their events wait per partition; a half beyond them is settled at once (paired if its partner is
there, else alone). A half whose id another half of the same kind already holds is dead-lettered
(``duplicate_pair_id``).
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import msgspec

from streamdrift.streams.pipeline.codec import Reason
from streamdrift.streams.pipeline.outcome import DeadLetter, Record

REQUEST = "request"
RESPONSE = "response"
UNPAIRED = ("monitor", "count", "dead_letter")
_PARTNER = {REQUEST: RESPONSE, RESPONSE: REQUEST}
_UNPAIRED_REASON = {REQUEST: Reason.UNPAIRED_REQUEST, RESPONSE: Reason.UNPAIRED_RESPONSE}
_ENCODE = msgspec.json.Encoder().encode
_DECODE = msgspec.json.Decoder(dict[str, Any]).decode


@dataclass(frozen=True, slots=True)
class PairingSpec:
    """How one input pairs its halves (``inputs[].pairing`` in the configuration)."""

    window_s: float = 30.0
    unpaired: str = "monitor"
    max_pending: int = 20_000
    max_pending_bytes: int = 32 * 1024 * 1024
    first_retry_s: float = 0.25
    max_retry_s: float = 4.0


class Half(msgspec.Struct, frozen=True):
    """One half of an inference as read from its record: the native event it maps to (the
    request's inputs, or the response's prediction), and where it was read."""

    model: str
    pair_id: str
    kind: str  # REQUEST | RESPONSE
    identity: str  # topic:partition:offset:row — the same on every replay
    offset: int
    timestamp: float  # the record's Kafka timestamp
    event: bytes  # the native event (JSON)


class PendingHalf(msgspec.Struct):
    """A half waiting for its partner (in the partition's checkpoint)."""

    half: Half
    deadline: float  # worker clock, epoch seconds: claims itself alone from then on
    due: float  # worker clock of its next question
    retry_s: float = 0.0


@dataclass(frozen=True, slots=True)
class Ask:
    """One question to the pair store: offer ``half`` (``store``: first time, store it too) and
    claim the pair if its partner is there, or the half alone if ``alone``."""

    half: Half
    store: bool
    alone: bool


@dataclass(frozen=True, slots=True)
class Answer:
    """What the pair store answered: ``wait`` (no partner, no claim), ``duplicate`` (another
    half of this kind holds the id) or ``claimed`` (the claim's action and claimer; the
    partner's stored event, if any)."""

    status: str  # "wait" | "duplicate" | "claimed"
    action: str = ""  # "pair" | "alone"
    claimer: str = ""
    partner: bytes | None = None


@dataclass
class Settled:
    """What settling a partition's halves gives: the native records to process (paired events,
    monitored unpaired halves), dead letters, and the counts for the metrics."""

    records: list[Record] = field(default_factory=list)
    dead_letters: list[DeadLetter] = field(default_factory=list)
    counts: Counter[str] = field(default_factory=Counter)  # paired, unpaired_request, ...
    changed: bool = False  # a half settled or began to wait: the checkpoint must write them


def merged(request: Mapping[str, Any], response: Mapping[str, Any]) -> dict[str, Any]:
    """One event of a request and its response: the request's fields and features, the
    response's prediction (and its columns as features when it has several; the request's
    features win a name both have).

    >>> merged({"model": "m", "event_id": "a", "features": {"x": 1}},
    ...        {"model": "m", "event_id": "a", "features": {}, "prediction": 0.9})
    {'model': 'm', 'event_id': 'a', 'features': {'x': 1}, 'prediction': 0.9}
    """
    event = dict(request)
    event["features"] = {**response.get("features", {}), **request.get("features", {})}
    if "prediction" in response:
        event["prediction"] = response["prediction"]
    if "model_version" not in event and "model_version" in response:
        event["model_version"] = response["model_version"]
    return event


class Pairing:
    """The pure part of pairing one input's halves (see the module): which questions to ask,
    and what the answers mean for the partition's state."""

    def __init__(self, spec: PairingSpec, topic: str) -> None:
        self.spec = spec
        self.topic = topic

    def asks(self, pending: Sequence[PendingHalf], new: Sequence[Half], now: float) -> list[Ask]:
        """The questions for the pending halves due now (those past their window: alone), then
        for each new half (alone at once if the partition's waiting room is full)."""
        asks = [Ask(p.half, False, now >= p.deadline) for p in pending if p.due <= now]
        room = self.spec.max_pending - len(pending)
        room_bytes = self.spec.max_pending_bytes - sum(len(p.half.event) for p in pending)
        # responses first: a request offered after its response in the same call claims at once
        for half in sorted(new, key=lambda h: h.kind != RESPONSE):
            full = room <= 0 or room_bytes < len(half.event)
            asks.append(Ask(half, True, full))
            room -= 1
            room_bytes -= len(half.event)
        return asks

    def settle(
        self,
        pending: list[PendingHalf],
        asks: Sequence[Ask],
        answers: Sequence[Answer],
        now: float,
        unkeyed: Sequence[Half] = (),
    ) -> tuple[list[PendingHalf], Settled]:
        """The halves still waiting (the old ones in order, then the new), and what the answers
        settled; ``unkeyed``: halves without an id to pair by, settled alone."""
        out = Settled(changed=bool(unkeyed))
        for half in unkeyed:
            self._settle_one(half, Answer("claimed", "alone", half.identity), out)
        answered: dict[str, Answer] = {}
        waiting_new: list[PendingHalf] = []
        # pairs a half of this batch claimed: its partner, answered "wait" earlier in the same
        # call (it was stored, then found), is in that paired event: done, not waiting
        claimed_here = {
            (ask.half.model, ask.half.pair_id)
            for ask, answer in zip(asks, answers, strict=True)
            if answer.action == "pair" and answer.claimer == ask.half.identity
        }
        for ask, answer in zip(asks, answers, strict=True):
            if answer.status == "wait" and (ask.half.model, ask.half.pair_id) in claimed_here:
                answered[ask.half.identity] = Answer("claimed", "pair", "(its partner)")
                out.changed = True
                continue
            if answer.status == "wait":  # (an alone ask is always claimed: never here)
                if ask.store:
                    out.changed = True
                    waiting_new.append(
                        PendingHalf(
                            ask.half,
                            now + self.spec.window_s,
                            now + self.spec.first_retry_s,
                            self.spec.first_retry_s,
                        )
                    )
                else:
                    answered[ask.half.identity] = answer
                continue
            answered[ask.half.identity] = answer
            self._settle_one(ask.half, answer, out)
            out.changed = True
        waiting = []
        for p in pending:
            found = answered.get(p.half.identity)
            if found is None:
                waiting.append(p)
            elif found.status == "wait":  # asked in vain: back off
                retry = min(self.spec.max_retry_s, max(p.retry_s * 2, self.spec.first_retry_s))
                waiting.append(PendingHalf(p.half, p.deadline, min(now + retry, p.deadline), retry))
        return waiting + waiting_new, out

    def _settle_one(self, half: Half, answer: Answer, out: Settled) -> None:
        if answer.status == "duplicate":
            detail = f"input {self.topic}: {half.kind} id {half.pair_id[:200]!r} seen already"
            out.dead_letters.append(
                DeadLetter(half.event, Reason.DUPLICATE_PAIR_ID, detail, half.offset)
            )
            out.counts["duplicate"] += 1
            return
        if answer.action == "pair" and answer.claimer != half.identity:
            return  # the partner's paired event holds this half
        if answer.action == "pair" and answer.partner is not None:
            try:
                mine, theirs = _DECODE(half.event), _DECODE(answer.partner)
                request, response = (mine, theirs) if half.kind == REQUEST else (theirs, mine)
                paired = _ENCODE(merged(request, response))
            except (msgspec.DecodeError, msgspec.ValidationError, TypeError, ValueError):
                out.counts["unreadable_partner"] += 1  # not what a half stores: this one alone
            else:
                out.records.append(Record(half.offset, half.timestamp, paired))
                out.counts["paired"] += 1
                return
        # alone: claimed so by either half (or a pair claimed whose partner has expired)
        out.counts[f"unpaired_{half.kind}"] += 1
        if self.spec.unpaired == "monitor":
            out.records.append(Record(half.offset, half.timestamp, half.event))
        elif self.spec.unpaired == "dead_letter":
            detail = (
                f"input {self.topic}: no {_PARTNER[half.kind]} for id {half.pair_id[:200]!r} "
                f"within {self.spec.window_s:g} s"
            )
            out.dead_letters.append(
                DeadLetter(half.event, _UNPAIRED_REASON[half.kind], detail, half.offset)
            )

    @staticmethod
    def next_due(pending: Sequence[PendingHalf]) -> float:
        """The worker clock at which a pending half is due next (``inf``: none pending)."""
        return min((p.due for p in pending), default=math.inf)
