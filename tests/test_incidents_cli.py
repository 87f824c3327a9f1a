"""`streamdrift incidents` on a real broker: the incidents the alert topic tells, each as it
stands now, among drift alerts and foreign messages; one shown in full; wrong input explained."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest
from conftest import produce

from streamdrift.streams.pipeline.incidents import Answer, encode_event, incident_event

pytestmark = pytest.mark.e2e

T0 = 1_767_225_600.0


def member(feature: str, effect: float) -> dict:
    return {
        "alert": f"alert-{feature}",
        "detected_at": "2026-01-01T00:00:00Z",
        "model_version": "3",
        "feature": feature,
        "kind": "feature",
        "detector": "adwin",
        "test": None,
        "statistic": 1.0,
        "threshold": 0.5,
        "severity": "high",
        "effect_size": effect,
        "reference": {"mean": 0.0},
        "current": {"mean": effect},
        "evidence": {"topic": "in", "partition": 0, "from_offset": 0, "to_offset": 9},
    }


def event(incident: str, action: str, features: list[str], opened: float) -> bytes:
    answer = Answer(
        incident=incident,
        action=action,
        members=[member(f, 1.0 + i) for i, f in enumerate(features)],
        opened=opened,
        latest=opened + 5,
        resolved=opened + 60 if action == "resolved" else None,
        active_versions=("2", "3"),
    )
    return encode_event(incident_event("g", "fraud", answer))


def streamdrift(topics, broker, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "streamdrift.streams", "incidents", *args],
        capture_output=True,
        text=True,
        timeout=60,
        env={
            "PATH": "/usr/bin:/bin",
            "COLUMNS": "250",
            "STREAMDRIFT_KAFKA_BOOTSTRAP": broker.bootstrap,
            **topics.env(),
        },
    )


def test_incidents_lists_each_incident_as_it_stands_and_shows_one(broker, topics):
    produce(
        broker.bootstrap,
        topics.alerts,
        [
            event("aaaa1111", "opened", ["amount"], T0),
            json.dumps({"type": "io.streamdrift.drift.detected", "data": {}}).encode(),
            b"not json",
            event("bbbb2222", "opened", ["age"], T0 + 3600),
            event("aaaa1111", "updated", ["amount", "country"], T0),
            event("aaaa1111", "resolved", ["amount", "country"], T0),
            event("aaaa1111", "updated", ["amount", "country"], T0),  # a late duplicate
        ],
        key="fraud",
    )
    listed = streamdrift(topics, broker, "--json")
    assert listed.returncode == 0, listed.stderr
    found = json.loads(listed.stdout)
    assert [(e["data"]["incident"], e["data"]["status"]) for e in found] == [
        ("bbbb2222", "open"),
        ("aaaa1111", "resolved"),
    ]
    table = streamdrift(topics, broker)
    assert table.returncode == 0 and "aaaa1111" in table.stdout and "bbbb2222" in table.stdout
    shown = streamdrift(topics, broker, "aaaa")
    assert shown.returncode == 0, shown.stderr
    assert "country" in shown.stdout and "rollback candidate" in shown.stdout
    assert shown.stdout.index("country") < shown.stdout.index("amount")  # largest effect first


def test_an_unknown_incident_says_what_to_do(broker, topics):
    produce(broker.bootstrap, topics.alerts, [event("cccc3333", "opened", ["x"], T0)])
    result = streamdrift(topics, broker, "dddd")
    assert result.returncode == 1
    assert "no incidents match 'dddd'" in result.stderr and "streamdrift incidents" in result.stderr
