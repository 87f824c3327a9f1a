"""Model-level incidents: the pure event building, and the group's decisions in a real Redis
(one incident per change whatever the partitions, idempotent replays, resolution, bounds)."""

from __future__ import annotations

import asyncio
import json
import uuid
from collections.abc import Awaitable, Callable, Sequence
from pathlib import Path
from typing import Any, TypeVar

import pytest
import redis.asyncio as aioredis
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from jsonschema import Draft202012Validator

from streamdrift.streams.pipeline.incidents import (
    Answer,
    Decision,
    IncidentLedger,
    encode_event,
    incident_event,
    incident_id,
    ranked_features,
)
from streamdrift.streams.state.incidents import IncidentStore

T = TypeVar("T")
SCHEMA = Draft202012Validator(
    json.loads((Path(__file__).parents[1] / "streams/schemas/incident.schema.json").read_text())
)
GROUP = "g"
T0 = 1_767_225_600.0


@pytest.fixture
def url(redis_server) -> str:
    return redis_server.url


def run(url: str, body: Callable[[IncidentStore], Awaitable[T]], **kwargs: Any) -> T:
    async def main() -> T:
        client = aioredis.Redis.from_url(url)
        try:
            store = IncidentStore(
                client,
                kwargs.pop("group", f"g-{uuid.uuid4().hex[:8]}"),
                window_s=kwargs.pop("window_s", 300.0),
                ttl_s=3600,
                max_members=kwargs.pop("max_members", 100),
                max_incidents=kwargs.pop("max_incidents", 20),
            )
            return await body(store)
        finally:
            await client.aclose()

    return asyncio.run(main())


def facts(feature: str, effect: float, partition: int = 0, version: str | None = None) -> str:
    return json.dumps(
        {
            "alert": f"a-{feature}-{partition}",
            "detected_at": "2026-01-01T00:00:00Z",
            "model_version": version,
            "feature": feature,
            "kind": "feature",
            "detector": "adwin",
            "test": None,
            "statistic": 1.0,
            "threshold": 0.5,
            "severity": "high" if effect >= 1 else "low",
            "effect_size": effect,
            "reference": {"mean": 0.0},
            "current": {"mean": effect},
            "evidence": {"topic": "in", "partition": partition, "from_offset": 0, "to_offset": 9},
        }
    )


def detected(
    feature: str,
    time: float,
    partition: int = 0,
    effect: float = 2.0,
    n: int = 0,
    version: str | None = None,
    versions: Sequence[str] = (),
) -> Decision:
    alert = f"det-{feature}-{partition}-{n}-{version}"
    return Decision(
        alert=alert,
        event="detected",
        time=time,
        member=f"in\x1f{partition}\x1f{version or ''}\x1f{feature}",
        facts=facts(feature, effect, partition, version),
        candidate=incident_id(GROUP, "m", alert),
        versions=versions,
    )


def resolved(feature: str, time: float, partition: int = 0, n: int = 0) -> Decision:
    return Decision(
        alert=f"res-{feature}-{partition}-{n}",
        event="resolved",
        time=time,
        member=f"in\x1f{partition}\x1f\x1f{feature}",
        facts="{}",
        candidate="",
    )


def decide_all(url: str, calls: Sequence[Sequence[Decision]], **kwargs: Any) -> list[list[Answer]]:
    async def body(store: IncidentStore) -> list[list[Answer]]:
        return [await store.decide("m", items) for items in calls]

    return run(url, body, **kwargs)


def events(answers: Sequence[Sequence[Answer]]) -> list[dict[str, Any]]:
    """The incident events the answers publish, each checked against the published contract."""
    published = [
        incident_event(GROUP, "m", answer)
        for batch in answers
        for answer in batch
        if answer.publishes
    ]
    for event in published:
        SCHEMA.validate(json.loads(encode_event(event)))
    return published


# --- many features at once: one incident ----------------------------------------------------------


def test_a_shift_of_29_features_over_two_partitions_is_one_incident(url) -> None:
    features = [f"f{i:02d}" for i in range(29)]
    calls = [
        [detected(f, T0 + i, partition=i % 2) for i, f in enumerate(features[:10])],
        [detected(f, T0 + 10 + i, partition=i % 2) for i, f in enumerate(features[10:20])],
        [detected(f, T0 + 20 + i, partition=i % 2) for i, f in enumerate(features[20:])],
    ]
    answers = decide_all(url, calls)
    ids = {a.incident for batch in answers for a in batch}
    assert len(ids) == 1
    published = events(answers)
    assert [e["type"].rsplit(".", 1)[1] for e in published] == ["opened", "updated", "updated"]
    assert [e["data"]["feature_count"] for e in published] == [10, 20, 29]
    assert published[0]["data"]["status"] == "open"
    assert {f["feature"] for f in published[-1]["data"]["features"]} == set(features)
    assert len({e["id"] for e in published}) == 3


def test_every_alert_carries_the_incident_and_only_one_opens_it(url) -> None:
    answers = decide_all(url, [[detected("a", T0), detected("b", T0 + 1), detected("c", T0 + 2)]])
    actions = [a.action for a in answers[0]]
    assert actions == ["opened", "joined", "joined"]
    assert answers[0][0].members and len(answers[0][0].members) == 3


# --- replays: the same answers, the same bytes ----------------------------------------------------


def test_a_replay_after_a_crash_gets_the_same_answers_and_event_bytes(url) -> None:
    first = [detected("a", T0), detected("b", T0 + 1)]
    later = [detected("c", T0 + 5, partition=1)]
    group = f"g-{uuid.uuid4().hex[:8]}"
    original = decide_all(url, [first, later], group=group)
    # the worker of partition 0 died before its checkpoint: it replays its alerts
    replayed = decide_all(url, [first], group=group)
    assert [(a.incident, a.action) for a in replayed[0]] == [
        (a.incident, a.action) for a in original[0]
    ]
    assert events(replayed) == events(original[:1])


def test_a_replayed_resolution_resolves_once(url) -> None:
    group = f"g-{uuid.uuid4().hex[:8]}"
    decide_all(url, [[detected("a", T0), detected("b", T0)]], group=group)
    end = [resolved("a", T0 + 60), resolved("b", T0 + 61)]
    once = decide_all(url, [end], group=group)
    again = decide_all(url, [end], group=group)
    assert [a.action for a in once[0]] == ["joined", "resolved"]
    assert [a.action for a in again[0]] == ["joined", "resolved"]
    assert events(once) == events(again)
    assert events(once)[0]["data"]["status"] == "resolved"
    assert events(once)[0]["data"]["resolved_at"] == "2026-01-01T00:01:01Z"


# --- separate changes, resolution -----------------------------------------------------------------


def test_two_changes_far_apart_are_two_incidents(url) -> None:
    answers = decide_all(
        url,
        [[detected("a", T0)], [detected("b", T0 + 3600)]],
        window_s=300.0,
    )
    assert answers[0][0].action == answers[1][0].action == "opened"
    assert answers[0][0].incident != answers[1][0].incident


def test_after_an_incident_resolved_a_new_detection_opens_another(url) -> None:
    answers = decide_all(
        url, [[detected("a", T0)], [resolved("a", T0 + 10)], [detected("a", T0 + 20, n=1)]]
    )
    assert [batch[0].action for batch in answers] == ["opened", "resolved", "opened"]
    assert answers[0][0].incident != answers[2][0].incident


def test_an_incident_resolves_when_every_member_of_every_partition_has(url) -> None:
    answers = decide_all(
        url,
        [
            [detected("a", T0, partition=0), detected("a", T0, partition=1)],
            [resolved("a", T0 + 30, partition=0)],
            [resolved("a", T0 + 40, partition=1)],
        ],
    )
    assert [batch[0].action for batch in answers] == ["opened", "joined", "resolved"]
    (event,) = events(answers[2:])
    (feature,) = event["data"]["features"]
    assert [e["partition"] for e in feature["evidence"]] == [0, 1]


def test_a_resolution_no_incident_holds_publishes_nothing(url) -> None:
    (batch,) = decide_all(url, [[resolved("x", T0)]])
    assert batch[0].action == "none" and not batch[0].publishes


def test_detections_arriving_out_of_time_order_within_the_window_join(url) -> None:
    answers = decide_all(url, [[detected("a", T0 + 100)], [detected("b", T0)]])
    assert answers[1][0].incident == answers[0][0].incident


# --- triage -------------------------------------------------------------------------------------


def test_a_shift_only_in_the_newest_version_is_a_rollback_candidate(url) -> None:
    traffic = ["v9", "v10"]
    (batch,) = decide_all(
        url, [[detected(f, T0, version="v10", versions=traffic) for f in ("a", "b")]]
    )
    (event,) = events([batch])
    versions = event["data"]["triage"]["versions"]
    assert versions == {
        "affected": ["v10"],
        "active": ["v9", "v10"],
        "verdict": "some_versions",
        "newest": "v10",
        "rollback_candidate": True,
    }
    assert "only in v10, the newest of v9, v10: rollback candidate" in event["data"]["summary"]


def test_a_shift_in_every_version_points_upstream(url) -> None:
    traffic = ["v1", "v2"]
    calls = [[detected("a", T0, version=v, versions=traffic) for v in traffic]]
    (event,) = events(decide_all(url, calls))
    assert event["data"]["triage"]["versions"]["verdict"] == "all_versions"
    assert "in all versions: upstream data change likely" in event["data"]["summary"]


def test_the_versions_in_traffic_accumulate_over_the_incident(url) -> None:
    calls = [
        [detected("a", T0, partition=0, version="v2", versions=["v2"])],
        [detected("b", T0 + 1, partition=1, version="v2", versions=["v1", "v2"])],
    ]
    published = events(decide_all(url, calls))
    assert [e["data"]["triage"]["versions"]["verdict"] for e in published] == [
        "single_version",
        "some_versions",
    ]


# --- bounds ---------------------------------------------------------------------------------------


def test_members_beyond_the_bound_join_without_being_listed(url) -> None:
    answers = decide_all(url, [[detected(f"f{i}", T0 + i) for i in range(5)]], max_members=3)
    assert len({a.incident for a in answers[0]}) == 1
    assert len(answers[0][0].members) == 3


def test_old_incidents_beyond_the_bound_are_forgotten(url) -> None:
    calls = [[detected("a", T0 + 3600 * i, n=i)] for i in range(5)]
    group = f"g-{uuid.uuid4().hex[:8]}"
    answers = decide_all(url, calls, group=group, max_incidents=2)

    async def fields(store: IncidentStore) -> list[bytes]:
        return await store.redis.hkeys(store.layout.incidents_key("m"))

    kept = run(url, fields, group=group)
    incidents = {f for f in kept if f.startswith(b"i:")}
    assert incidents == {f"i:{a[0].incident}".encode() for a in answers[-2:]}
    assert not any(f.startswith(f"a:{calls[0][0].alert}".encode()) for f in kept)


# --- the script against its specification ---------------------------------------------------------

MEMBERS = [f"in\x1f{p}\x1f\x1f{f}" for p in range(2) for f in "abc"]


@st.composite
def histories(draw: st.DrawFn) -> list[list[Decision]]:
    """Calls of random alerts: detections and resolutions of a few members, times moving on with
    jumps beyond the window, some calls replayed."""
    calls: list[list[Decision]] = []
    time, serial = T0, 0
    for _ in range(draw(st.integers(1, 8))):
        if calls and draw(st.integers(0, 4)) == 0:
            calls.append(draw(st.sampled_from(calls)))  # a replay of an earlier call
            continue
        call = []
        for _ in range(draw(st.integers(1, 5))):
            serial += 1
            time += draw(st.sampled_from([0.0, 1.0, 30.0, 200.0, 400.0, -250.0]))
            member = draw(st.sampled_from(MEMBERS))
            versions = draw(st.sampled_from([(), ("v1",), ("v1", "v2")]))
            alert = f"x{serial}"
            call.append(
                Decision(
                    alert=alert,
                    event=draw(st.sampled_from(["detected", "detected", "resolved"])),
                    time=time,
                    member=member,
                    facts=facts(member[-1], draw(st.sampled_from([0.5, 2.0])), 0),
                    candidate=incident_id(GROUP, "m", alert),
                    versions=versions,
                    labelled=draw(st.booleans()),
                )
            )
        calls.append(call)
    return calls


# the url is the same for every example; each example gets its own group (``run``)
@settings(
    max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(histories(), st.integers(1, 3), st.integers(1, 3))
def test_the_script_answers_as_its_python_specification(url, calls, members, incidents) -> None:
    answers = decide_all(url, calls, window_s=300.0, max_members=members, max_incidents=incidents)
    ledger = IncidentLedger(window=300.0, max_members=members, max_incidents=incidents)
    expected = [ledger.decide(call) for call in calls]
    assert answers == expected


# --- the pure part --------------------------------------------------------------------------------


@settings(max_examples=50, deadline=None)
@given(
    st.lists(
        st.tuples(
            st.sampled_from(["a", "b", "c", "d"]),
            st.floats(0, 10, allow_nan=False),
            st.integers(0, 3),
        ),
        min_size=1,
        max_size=20,
    )
)
def test_ranked_features_lists_each_feature_once_largest_first(members) -> None:
    ranked = ranked_features([json.loads(facts(f, e, p)) for f, e, p in members])
    assert sorted(f["feature"] for f in ranked) == sorted({f for f, _, _ in members})
    strengths = [(f["severity"] == "high", f["effect_size"]) for f in ranked]
    assert strengths == sorted(strengths, reverse=True)
    for entry in ranked:
        assert len(entry["evidence"]) == sum(1 for f, _, _ in members if f == entry["feature"])


def test_the_incident_event_is_a_cloudevent_with_a_summary() -> None:
    answer = Answer(
        incident="abc",
        action="opened",
        members=[json.loads(facts("amount", 3.14)), json.loads(facts("age", 0.5))],
        opened=T0,
        latest=T0 + 5,
        resolved=None,
    )
    event = incident_event(GROUP, "fraud", answer)
    assert event["type"] == "io.streamdrift.incident.opened"
    assert event["subject"] == "fraud" and event["incident"] == "abc"
    assert event["time"] == "2026-01-01T00:00:05Z"
    assert event["data"]["summary"] == (
        "fraud: 2 features shifted since 2026-01-01T00:00:00Z; largest: amount 3.1, age 0.5; "
        "no labels"
    )
    assert event["data"]["triage"]["versions"]["verdict"] == "single_version"
    assert incident_event(GROUP, "fraud", answer) == event  # built from the answer alone
