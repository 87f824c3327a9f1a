"""End to end: model-level incidents on a real broker and a real Redis, with real workers.

A shift of many features of one model at once is one incident that lists them all (and one
``resolved`` event when every feature is back), whatever partitions and workers monitor the
model, through a kill -9; two changes far apart are two incidents.
"""

from __future__ import annotations

import json
import time
from collections import Counter
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from confluent_kafka import Producer
from conftest import Topics, consume_all, produce, wait_for
from jsonschema import Draft202012Validator, FormatChecker

from streamdrift.streams.ops.status import read_status

pytestmark = pytest.mark.e2e

FEATURES = [f"f{i:02d}" for i in range(12)]
SHIFTED = FEATURES[:6]
INCIDENT_SCHEMA = Draft202012Validator(
    json.loads((Path(__file__).parents[2] / "streams/schemas/incident.schema.json").read_text()),
    format_checker=FormatChecker(),
)


def stream(
    n: int, *, seed: int, shift: float = 0.0, start: int = 0, model: str = "m"
) -> list[dict[str, Any]]:
    """``n`` events of N(0, 1) features, the ``SHIFTED`` ones moved by ``shift`` σ."""
    values = np.random.default_rng(seed).normal(size=(n, len(FEATURES)))
    values[:, : len(SHIFTED)] += shift
    return [
        {
            "model": model,
            "event_id": f"{model}-{start + i}",
            "features": dict(zip(FEATURES, row.tolist(), strict=True)),
        }
        for i, row in enumerate(values)
    ]


def send(broker, topics: Topics, events: list[dict[str, Any]], spread: bool) -> None:
    """Produce the events keyed by model (one partition), or ``spread`` over every partition
    (keyed by event id)."""
    values = [json.dumps(e).encode() for e in events]
    keys = [e["event_id"] if spread else e["model"] for e in events]
    produce(broker.bootstrap, topics.input, values, keys=keys)


def applied(redis_client, topics: Topics, model: str = "m") -> int:
    """Events of the model checkpointed, over all partitions (status merges them)."""
    series = read_status(redis_client, topics.group_id)["models"].get(model, {})
    return series.get(FEATURES[-1], {}).get("count", 0)


def alert_topic(broker, topics: Topics) -> list[dict[str, Any]]:
    time.sleep(3)  # the last checkpoint's alerts
    return [json.loads(m.value) for m in consume_all(broker.bootstrap, topics.alerts)]


def incident_events(found: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The incident events, each once (delivery is at-least-once, ids deterministic), checked
    against the published schema."""
    unique = {e["id"]: e for e in found if e["type"].startswith("io.streamdrift.incident.")}
    for event in unique.values():
        INCIDENT_SCHEMA.validate(event)
    return list(unique.values())


def detections(found: list[dict[str, Any]]) -> list[dict[str, Any]]:
    unique = {a["id"]: a for a in found if a["type"] == "io.streamdrift.drift.detected"}
    return list(unique.values())


def story(found: list[dict[str, Any]]) -> list[tuple[str, ...]]:
    """What the alert topic says, in order, for failure messages."""
    return [
        (
            e["type"].removeprefix("io.streamdrift."),
            e["subject"],
            e["time"],
            e.get("incident", ""),
            e["data"].get("detector", ""),
            str(e["data"].get("evidence", "")),
        )
        for e in found
    ]


def latest_listing(events: list[dict[str, Any]]) -> set[str]:
    widest = max(events, key=lambda e: e["data"]["feature_count"])
    return {f["feature"] for f in widest["data"]["features"]}


ROUTING = """
models:
  m:
    owner: payments-ml
    runbook_url: https://runbooks.example.com/m-drift
    priority: {high: page, medium: ticket}
"""


def test_a_shift_of_six_features_is_one_incident_that_resolves(
    broker, topics, start_worker, redis_client, tmp_path
):
    """With the model's owner, runbook and severity policy configured: every alert and the
    incident carry them, and /metrics has the model's info series to route by."""
    config = tmp_path / "routing.yaml"
    config.write_text(ROUTING)
    worker = start_worker(config=config).wait_ready()
    before, during, after = 6_000, 6_000, 6_000
    events = (
        stream(before, seed=1)
        + stream(during, seed=2, shift=2.0, start=before)
        + stream(after, seed=3, start=before + during)
    )
    send(broker, topics, events, spread=False)
    total = before + during + after
    wait_for(lambda: applied(redis_client, topics) == total, 180, f"{total} events checkpointed")
    found = alert_topic(broker, topics)
    incidents = incident_events(found)
    kinds = Counter(e["type"].rsplit(".", 1)[1] for e in incidents)
    assert kinds["opened"] == 1, "\n".join(map(str, story(found)))
    (incident,) = {e["data"]["incident"] for e in incidents}
    assert set(SHIFTED) <= latest_listing(incidents), incidents
    shifted_alerts = [a for a in detections(found) if a["data"]["feature"] in SHIFTED]
    assert {a["data"]["feature"] for a in shifted_alerts} == set(SHIFTED)
    assert {a.get("incident") for a in detections(found)} == {incident}
    assert kinds["resolved"] == 1, (kinds, [a["subject"] for a in found])
    (resolved,) = [e for e in incidents if e["type"].endswith("resolved")]
    assert resolved["data"]["status"] == "resolved" and resolved["data"]["resolved_at"]
    summary = resolved["data"]["summary"]
    assert summary.startswith("m: ") and "features" in summary, summary
    for message in [*incidents, *detections(found)]:
        assert message["owner"] == "payments-ml", message
        assert message["runbookurl"] == "https://runbooks.example.com/m-drift"
    assert {a["priority"] for a in shifted_alerts} == {"page"}  # 2 sigma: high severity
    assert resolved["data"]["routing"] == {
        "owner": "payments-ml",
        "runbook_url": "https://runbooks.example.com/m-drift",
        "priority": "page",
    }
    info = worker.metrics_text(names=["streamdrift_model_info"])
    assert (
        'streamdrift_model_info{model="m",owner="payments-ml",'
        'runbook_url="https://runbooks.example.com/m-drift"} 1.0'
    ) in info


def test_a_model_spread_over_partitions_and_two_workers_is_still_one_incident(
    broker, topics, start_worker, redis_client
):
    """Events keyed by id land on every partition; two workers share them; one of them is
    killed mid-shift and restarted: still one incident, opened once, with every feature."""
    first = start_worker(checkpoint_every_events=1_000).wait_ready()
    second = start_worker(checkpoint_every_events=1_000).wait_ready()
    before, during = 8_000, 8_000
    send(broker, topics, stream(before, seed=4), spread=True)
    wait_for(lambda: applied(redis_client, topics) == before, 180, "the reference checkpointed")
    send(broker, topics, stream(during, seed=5, shift=2.0, start=before), spread=True)
    wait_for(lambda: applied(redis_client, topics) >= before + 2_000, 120, "the shift under way")
    first.kill()  # kill -9: its partitions move to the other worker, which replays them
    total = before + during
    wait_for(lambda: applied(redis_client, topics) == total, 240, f"{total} events checkpointed")
    assert second.running
    found = alert_topic(broker, topics)
    incidents = incident_events(found)
    kinds = Counter(e["type"].rsplit(".", 1)[1] for e in incidents)
    assert kinds["opened"] == 1, kinds
    (incident,) = {e["data"]["incident"] for e in incidents}
    assert set(SHIFTED) <= latest_listing(incidents)
    partitions = {a["data"]["evidence"]["partition"] for a in detections(found)}
    assert len(partitions) > 1, partitions  # the members came from several partitions
    assert {a.get("incident") for a in detections(found)} == {incident}


def test_a_shift_only_in_the_new_version_is_a_rollback_candidate(
    broker, topics, start_worker, redis_client
):
    """Versions 1 and 2 serve side by side; only version 2's inputs move."""
    start_worker().wait_ready()
    old = stream(10_000, seed=10)
    new = stream(6_000, seed=11, start=10_000) + stream(4_000, seed=12, shift=2.0, start=16_000)
    events = [
        event | {"model_version": version}
        for pair in zip(old, new, strict=True)
        for event, version in zip(pair, ("1", "2"), strict=True)
    ]
    send(broker, topics, events, spread=False)
    wait_for(lambda: applied(redis_client, topics) == len(events), 180, "every event checkpointed")
    incidents = incident_events(alert_topic(broker, topics))
    assert [e["type"].rsplit(".", 1)[1] for e in incidents].count("opened") == 1, incidents
    latest = max(incidents, key=lambda e: e["data"]["feature_count"])["data"]
    assert latest["triage"]["versions"] == {
        "affected": ["2"],
        "active": ["1", "2"],
        "verdict": "some_versions",
        "newest": "2",
        "rollback_candidate": True,
    }, latest["triage"]
    assert "rollback candidate" in latest["summary"]


def test_two_changes_far_apart_are_two_incidents(broker, topics, start_worker, redis_client):
    """Record times an hour apart (the window is 300 s): two incidents."""
    start_worker().wait_ready()
    hour_ms = 3_600_000
    now_ms = int(time.time() * 1000) - 2 * hour_ms
    first = stream(6_000, seed=6) + stream(4_000, seed=7, shift=2.0, start=6_000)
    back = stream(6_000, seed=8, start=10_000)
    second = stream(4_000, seed=9, shift=-2.0, start=16_000)
    producer = Producer({"bootstrap.servers": broker.bootstrap, "linger.ms": 5})
    for events, at in ((first, now_ms), (back, now_ms + hour_ms), (second, now_ms + 2 * hour_ms)):
        for i, event in enumerate(events):  # record times: an hour between the parts
            producer.produce(topics.input, json.dumps(event).encode(), b"m", timestamp=at + i)
            producer.poll(0)
    assert producer.flush(30) == 0
    total = 20_000
    wait_for(lambda: applied(redis_client, topics) == total, 180, f"{total} events checkpointed")
    incidents = incident_events(alert_topic(broker, topics))
    opened = [e for e in incidents if e["type"].endswith("opened")]
    assert len(opened) == 2, [(e["type"], e["time"]) for e in incidents]
    assert len({e["data"]["incident"] for e in opened}) == 2


SEGMENTS = """
models:
  m:
    segments: [country]
"""
COUNTRIES = ["DE", "FR", "US", "IT"]


def by_country(
    n: int, *, seed: int, shifted: str | None = None, start: int = 0
) -> list[dict[str, Any]]:
    """``stream``'s events with a ``country``; the ``SHIFTED`` features move by 2 σ only in the
    events of ``shifted``."""
    rng = np.random.default_rng(seed + 100)
    events = stream(n, seed=seed, start=start)
    for event in events:
        country = COUNTRIES[int(rng.integers(len(COUNTRIES)))]
        event["features"]["country"] = country
        if country == shifted:
            for name in SHIFTED:
                event["features"][name] += 2.0
    return events


def test_a_shift_confined_to_one_country_names_it_through_a_kill(
    broker, topics, start_worker, redis_client, tmp_path
):
    """``models.m.segments: [country]``; only German traffic moves. Two workers share the
    partitions, one is killed mid-shift: one incident, whose triage and summary name
    country=DE, whose alerts say DE carries the shift, and the bias indicator of DE stands out."""
    config = tmp_path / "segments.yaml"
    config.write_text(SEGMENTS)
    first = start_worker(config=config, checkpoint_every_events=1_000).wait_ready()
    second = start_worker(config=config, checkpoint_every_events=1_000).wait_ready()
    before, during = 12_000, 12_000
    send(broker, topics, by_country(before, seed=20), spread=True)
    wait_for(lambda: applied(redis_client, topics) == before, 180, "the reference checkpointed")
    send(broker, topics, by_country(during, seed=21, shifted="DE", start=before), spread=True)
    wait_for(lambda: applied(redis_client, topics) >= before + 3_000, 120, "the shift under way")
    first.kill()  # kill -9: its partitions move to the other worker, which replays them
    total = before + during
    wait_for(lambda: applied(redis_client, topics) == total, 240, f"{total} events checkpointed")
    found = alert_topic(broker, topics)
    incidents = incident_events(found)
    kinds = Counter(e["type"].rsplit(".", 1)[1] for e in incidents)
    assert kinds["opened"] == 1, "\n".join(map(str, story(found)))
    latest = max(incidents, key=lambda e: e["data"]["feature_count"])["data"]
    assert set(SHIFTED) <= latest_listing(incidents)
    (country,) = latest["triage"]["segments"]
    assert country["segment"] == "country" and country["verdict"] == "one_value", country
    assert country["carriers"][0]["value"] == "DE" and len(country["carriers"]) == 1
    assert "only in country=DE" in latest["summary"], latest["summary"]
    moved = [a for a in detections(found) if a["data"]["feature"] in SHIFTED]
    named = Counter(tuple(t["carriers"]) for a in moved for t in a["data"]["details"]["segments"])
    # every shifted feature's detection that judged the countries named DE alone
    assert set(named) <= {("DE",), ()} and named[("DE",)] >= len(SHIFTED), named
    metrics = second.metrics_text(names=["streamdrift_segment_shift"])
    shifts = {
        value: float(line.rsplit(" ", 1)[1])
        for line in metrics.splitlines()
        if line.startswith("streamdrift_segment_shift{")
        for value in [line.split('value="', 1)[1].split('"', 1)[0]]
    }
    assert shifts["DE"] > 1.0 > max(v for k, v in shifts.items() if k != "DE"), shifts
