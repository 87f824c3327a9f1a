"""The visual report and the drift-score history it plots.

The HTML is checked as a document (well-formed, one SVG per plot, every user-supplied name
escaped); history and state are read back from the session's real redis-server; the command
is run as a user would.
"""

from __future__ import annotations

import asyncio
import subprocess
import sys
import uuid
import xml.etree.ElementTree as ET
from pathlib import Path

import numpy as np
import pytest
import redis
import redis.asyncio as aioredis
from prometheus_client import CollectorRegistry

from streamdrift.detectors import CategoricalMonitor, NumericMonitor
from streamdrift.streams.dev.embedded import free_port
from streamdrift.streams.ops.report import Series, load_series, render_report, select_alerts
from streamdrift.streams.pipeline.incidents import Answer, incident_event
from streamdrift.streams.state.history import (
    HistoryRecorder,
    Point,
    Sample,
    history_key,
    read_history,
)
from streamdrift.streams.state.keys import KeyLayout, series_name
from streamdrift.streams.state.partition import PartitionState

EVIL = '<script>alert("x")</script> & co'
T0 = 1_763_719_200.0


def numeric_monitor(seed: int = 0, shift_at: int = 6_000, n: int = 9_200) -> NumericMonitor:
    rng = np.random.default_rng(seed)
    values = rng.normal(size=n)
    values[shift_at:] += 1.5
    monitor = NumericMonitor()
    monitor.update(values, np.arange(n))
    return monitor


def categorical_monitor() -> CategoricalMonitor:
    rng = np.random.default_rng(1)
    values = list(rng.choice(["web", "app", EVIL], p=[0.6, 0.3, 0.1], size=7_000))
    monitor = CategoricalMonitor()
    monitor.update(values, list(range(len(values))))
    return monitor


def alert(
    feature: str, at: str, event: str = "detected", alert_id: str = "a1", model: str = EVIL
) -> dict:
    return {
        "id": alert_id,
        "time": at,
        "data": {
            "model": model,
            "model_version": "3",
            "feature": feature,
            "detector": "window",
            "event": event,
            "severity": "high",
            "effect_size": 1.5,
            "p_value": 1e-9,
            "test": "ks",
            "evidence": {"topic": "in", "partition": 0, "from_offset": 6000, "to_offset": 6400},
        },
    }


def synthetic_report(alerts: list[dict] | None) -> str:
    series = []
    for feature, monitor in ((EVIL, numeric_monitor()), ("channel", categorical_monitor())):
        s = Series(feature, "3", monitor.kind)
        s.add(monitor)
        series.append(s)
    points = [
        Point(T0 + 10 * i, "in:0", Sample("3", feature, i / 20, 300 * i, i > 15))
        for i in range(30)
        for feature in (EVIL, "channel")
    ]
    return render_report(EVIL, "group<1>", series, points, alerts, T0 + 400)


def parse(html: str) -> ET.Element:
    """The page as XML: the report writes well-formed markup, so a strict parser reads it."""
    doctype, _, document = html.partition("\n")
    assert doctype == "<!DOCTYPE html>"
    return ET.fromstring(document)


SVG = "{http://www.w3.org/2000/svg}svg"


def test_the_page_is_well_formed_with_one_svg_per_plot_and_names_escaped():
    html = synthetic_report([alert(EVIL, "2025-11-21T10:02:10Z")])
    root = parse(html)
    # escaped everywhere, attributes included
    assert "<script" not in html and "group<1>" not in html
    assert root.find("head/title").text == f"streamdrift report: {EVIL}"
    headings = [h.text for h in root.iter("h2")]
    assert headings == ["Features", EVIL, "channel"]  # the feature with an alert first
    # per feature: one distribution plot (CDF, share bars) and one drift-score plot
    assert len(list(root.iter(SVG))) == 4
    section = html[html.index('id="feature-0"') : html.index('id="feature-1"')]
    assert section.count("<svg") == 2 and "<polyline" in section and 'class="open"' in section
    assert section.count('stroke-dasharray="4 2"') == 1  # the alert marker
    assert "&lt;b&gt;" not in html and EVIL not in html


def test_alerts_are_deduplicated_by_id_and_filtered_by_model():
    found = select_alerts(
        [
            alert("x", "2025-11-21T10:00:00Z"),
            alert("x", "2025-11-21T10:00:00Z"),
            alert("x", "2025-11-21T10:01:00Z", alert_id="a2", model="other"),
            {"junk": 1},
        ],
        EVIL,
    )
    assert [a["id"] for a in found] == ["a1"]


def test_without_alerts_the_page_says_so_and_still_plots():
    html = synthetic_report(None)
    assert "Alerts not read" in html and len(list(parse(html).iter(SVG))) == 4


def incident(ident: str, features: list[str], status: str = "open") -> dict:
    """The latest event of an incident of model m, as the worker writes it."""
    members = [
        {
            "alert": f"a-{f}",
            "detected_at": f"2025-11-21T10:0{i}:00+00:00",
            "model_version": "3",
            "feature": f,
            "kind": "feature",
            "detector": "cusum",
            "test": None,
            "statistic": 1.0,
            "threshold": 0.5,
            "severity": "high",
            "effect_size": 2.0 - i / 10,
            "reference": {"mean": 0.0},
            "current": {"mean": 1.0},
            "evidence": {"topic": "in", "partition": 0, "from_offset": 0, "to_offset": 9},
        }
        for i, f in enumerate(features)
    ]
    answer = Answer(
        ident,
        "resolved" if status == "resolved" else "updated",
        members,
        T0,
        T0 + 240,
        T0 + 600 if status == "resolved" else None,
        ("2", "3"),
        True,
    )
    return incident_event("g", "m", answer)


def test_incidents_get_a_section_with_each_features_detection_on_a_timeline():
    incidents = [incident("feed" * 8, ["amount", EVIL]), incident("beef" * 8, ["x"], "resolved")]
    alerts = [alert("amount", "2025-11-21T10:00:00Z", model="m")]
    html = render_report("m", "g", [], [], alerts, T0 + 900, incidents=incidents)
    root = parse(html)
    assert [h.text for h in root.iter("h2")][:2] == ["Incidents", "Features"]
    blocks = [h for h in root.iter("h3") if "Incident" in "".join(h.itertext())]
    assert len(blocks) == 2
    section = html[html.index("<h2>Incidents</h2>") : html.index("<h2>Features</h2>")]
    assert section.count("<circle") == 3  # one detection mark per feature listed
    assert "rollback candidate" in section and 'href="#feature-0"' in section
    assert EVIL not in html and "<script" not in html  # hostile names escaped


def test_an_incident_of_unexpected_shape_is_named_and_the_report_goes_on():
    broken = incident("dead" * 8, ["x"])
    broken["data"]["opened_at"] = 12  # not a time
    html = render_report("m", "g", [], [], [], T0, incidents=[broken])
    assert "An unreadable incident" in html and parse(html) is not None


def test_a_feature_known_only_from_an_alert_gets_a_section_without_plots():
    html = render_report("m", "g", [], [], [alert("gone", "2025-11-21T10:00:00Z", model="m")], T0)
    root = parse(html)
    assert [h.text for h in root.iter("h2")] == ["Features", "gone"]
    assert len(list(root.iter(SVG))) == 1  # the alert on the time axis


# -- Redis: history and state ------------------------------------------------------------------


@pytest.fixture
def group() -> str:
    return f"test-report-{uuid.uuid4().hex[:12]}"


def checkpointed_state(
    partition: int, monitors: dict[str, NumericMonitor | CategoricalMonitor]
) -> PartitionState:
    state = PartitionState("in", partition, epoch=1, next_offset=100)
    state.monitors.update(monitors)
    state.dirty |= set(monitors)
    return state


def record(
    url: str, group: str, batches: list[list[PartitionState]], interval_s: float = 0.0
) -> HistoryRecorder:
    async def main() -> HistoryRecorder:
        client = aioredis.Redis.from_url(url)
        recorder = HistoryRecorder(client, group, interval_s, CollectorRegistry())
        try:
            for states in batches:
                await recorder.record(states)
        finally:
            await client.aclose()
        return recorder

    return asyncio.run(main())


def test_history_holds_each_checkpoints_changed_series_and_is_bounded(redis_server, group):
    name = series_name("m", "3", "amount")
    states = [[checkpointed_state(0, {name: numeric_monitor(n=6_500)})] for _ in range(5)]
    states.append([checkpointed_state(0, {})])  # a heartbeat: nothing changed, nothing written
    recorder = record(redis_server.url, group, states)
    client = redis.Redis.from_url(redis_server.url)
    points = read_history(client, group, "m")
    assert len(points) == 5 and client.xlen(history_key(group, "m")) == 5
    sample = points[-1].sample
    assert (points[-1].partition, sample.version, sample.feature, sample.count) == (
        "in:0",
        "3",
        "amount",
        6_500,
    )
    assert sample.drift_score > 0.5 and sample.episode_open
    assert recorder.errors._value.get() == 0
    assert client.xinfo_stream(history_key(group, "m"))["length"] <= recorder.max_entries


def test_history_samples_a_partition_at_most_once_per_interval_without_losing_series(
    redis_server, group
):
    a, b = series_name("m", None, "a"), series_name("m", None, "b")
    first = checkpointed_state(0, {a: numeric_monitor(n=600), b: numeric_monitor(n=600)})
    only_a, only_b = (
        checkpointed_state(0, {a: first.monitors[a]}),
        checkpointed_state(0, {b: first.monitors[b]}),
    )
    only_a.monitors[b] = first.monitors[b]  # b exists but did not change
    record(redis_server.url, group, [[first], [only_a], [only_b]], interval_s=3600)
    points = read_history(redis.Redis.from_url(redis_server.url), group, "m")
    # the first checkpoint only; later ones wait
    assert [p.sample.feature for p in points] == [
        "a",
        "b",
    ]


def test_a_history_write_that_fails_is_counted_and_never_raised(group):
    async def main() -> float:
        client = aioredis.Redis.from_url(
            f"redis://127.0.0.1:{free_port()}/0", socket_connect_timeout=1
        )
        recorder = HistoryRecorder(client, group, 0.0, CollectorRegistry())
        await recorder.record(
            [checkpointed_state(0, {series_name("m", None, "a"): numeric_monitor(n=600)})]
        )
        await client.aclose()
        return recorder.errors._value.get()

    assert asyncio.run(main()) == 1


def store_state(client: redis.Redis, group: str, partition: int, fields: dict[str, bytes]) -> None:
    layout = KeyLayout(group)
    client.sadd(layout.partitions_key, f"in:{partition}")
    client.hset(layout.keys("in", partition)[1], mapping=fields)


def test_series_are_read_for_one_model_and_merged_over_partitions(redis_server, group):
    client = redis.Redis.from_url(redis_server.url)
    for partition in (0, 1):
        store_state(
            client,
            group,
            partition,
            {
                series_name("m", "3", "amount"): numeric_monitor(seed=partition).to_bytes(),
                series_name("other", None, "amount"): numeric_monitor().to_bytes(),
                series_name("m", "3", "broken"): b"not a monitor",
            },
        )
    series, unreadable = load_series(client, group, "m")
    assert [(s.feature, s.version, s.count) for s in series] == [("amount", "3", 18_400)]
    assert set(series[0].numeric) == {"reference", "latest window", "all values"}
    assert series[0].numeric["all values"][1].count == 18_400 and unreadable == ["broken", "broken"]


# -- the command -------------------------------------------------------------------------------


def streamdrift(*args: str, timeout: float = 60) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "streamdrift.streams", *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        env={"PATH": "/usr/bin:/bin", "COLUMNS": "200"},
    )


def test_report_writes_the_page_without_kafka_when_told_to(redis_server, group, tmp_path: Path):
    store_state(
        redis.Redis.from_url(redis_server.url),
        group,
        0,
        {series_name("m", None, "amount"): numeric_monitor().to_bytes()},
    )
    out = tmp_path / "report.html"
    result = streamdrift(
        "report",
        "-m",
        "m",
        "--out",
        str(out),
        "--group-id",
        group,
        "--redis-url",
        redis_server.url,
        "--no-alerts",
    )
    assert result.returncode == 0, result.stderr
    assert "1 features" in result.stdout and len(list(parse(out.read_text()).iter(SVG))) == 1


def test_report_on_an_unknown_model_says_what_to_check(redis_server, group, tmp_path: Path):
    result = streamdrift(
        "report",
        "-m",
        "nope",
        "--out",
        str(tmp_path / "r.html"),
        "--group-id",
        group,
        "--redis-url",
        redis_server.url,
        "--no-alerts",
    )
    assert (
        result.returncode == 1
        and "nothing about model 'nope'" in result.stderr
        and "streamdrift status" in result.stderr
    )
    assert not (tmp_path / "r.html").exists()


def test_report_with_kafka_unreachable_suggests_no_alerts(redis_server, group, tmp_path: Path):
    port = free_port()
    result = streamdrift(
        "report",
        "-m",
        "m",
        "--out",
        str(tmp_path / "r.html"),
        "--group-id",
        group,
        "--redis-url",
        redis_server.url,
        "--bootstrap",
        f"127.0.0.1:{port}",
    )
    assert result.returncode == 1
    assert (
        f"cannot reach Kafka at 127.0.0.1:{port}" in result.stderr
        and "--no-alerts" in result.stderr
    )
