"""End to end: real Tansu broker, real redis-server, real worker processes.

Each test produces a known stream, lets a worker process it, and checks what came out: alerts on
the alert topic, dead letters on the DLQ topic, and the state checkpointed in Redis.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path
from typing import Any

import jsonschema
import numpy as np
import pytest
import redis
from conftest import Topics, consume_all, produce, wait_for

from streamdrift.streams.ops.status import read_status
from streamdrift.streams.state.baselines import BaselineStore

pytestmark = pytest.mark.e2e

FEATURES = [f"f{i:02d}" for i in range(20)]
ALERT_SCHEMA = json.loads(
    (Path(__file__).parents[2] / "streams" / "schemas" / "drift-alert.schema.json").read_text()
)


def events(
    n: int,
    *,
    model: str = "m",
    seed: int = 0,
    shift: dict[str, float] | None = None,
    shift_at: int = 0,
    start: int = 0,
) -> list[dict[str, Any]]:
    """``n`` events of 20 N(0, 1) features; features in ``shift`` move by that many σ from
    ``shift_at``."""
    rng = np.random.default_rng(seed)
    values = rng.normal(size=(n, len(FEATURES)))
    for name, sigmas in (shift or {}).items():
        values[shift_at:, FEATURES.index(name)] += sigmas
    return [
        {
            "model": model,
            "event_id": f"{model}-{start + i}",
            "features": dict(zip(FEATURES, row.tolist(), strict=True)),
        }
        for i, row in enumerate(values)
    ]


def encode(items: list[dict[str, Any]], batch: int = 1) -> list[bytes]:
    if batch == 1:
        return [json.dumps(e).encode() for e in items]
    return [json.dumps(items[i : i + batch]).encode() for i in range(0, len(items), batch)]


def counts(client: redis.Redis, topics: Topics) -> dict[tuple[str, str], int]:
    status = read_status(client, topics.group_id)
    return {(m, f): s["count"] for m, series in status["models"].items() for f, s in series.items()}


def alert_topic(broker, topics: Topics, settle: float = 3.0) -> list[dict[str, Any]]:
    """Everything on the alert topic: drift alerts and incident events."""
    time.sleep(settle)  # alerts are flushed before each checkpoint; give the last one time
    return [json.loads(m.value) for m in consume_all(broker.bootstrap, topics.alerts)]


def alerts(broker, topics: Topics, settle: float = 3.0) -> list[dict[str, Any]]:
    """The drift alerts on the alert topic (not the incident events)."""
    found = alert_topic(broker, topics, settle)
    return [a for a in found if a["type"].startswith("io.streamdrift.drift.")]


@pytest.mark.brokers("tansu", "kafka")
def test_abrupt_shift_alerts_once_for_that_feature_only(broker, topics, start_worker, redis_client):
    worker = start_worker().wait_ready()
    stream = events(20_000, seed=1, shift={"f07": 1.5}, shift_at=10_000)
    produce(broker.bootstrap, topics.input, encode(stream), key="m")
    wait_for(
        lambda: counts(redis_client, topics).get(("m", "f00")) == 20_000,
        120,
        "20,000 events checkpointed",
    )
    found = alerts(broker, topics)
    assert [a["subject"] for a in found] == ["m/f07"], found
    alert = found[0]
    jsonschema.validate(alert, ALERT_SCHEMA)  # the published contract
    assert alert["specversion"] == "1.0" and alert["type"] == "io.streamdrift.drift.detected"
    data = alert["data"]
    assert data["feature"] == "f07" and data["model"] == "m"
    # detected soon after the shift
    assert 10_000 <= data["evidence"]["to_offset"] < 11_000, data["evidence"]
    assert data["current"]["mean"] - data["reference"]["mean"] > 0.5
    assert worker.running


@pytest.mark.brokers("tansu", "kafka")
def test_stationary_stream_of_100k_events_raises_no_alert(
    broker, topics, start_worker, redis_client
):
    start_worker().wait_ready()
    stream = events(100_000, seed=2)
    produce(broker.bootstrap, topics.input, encode(stream, batch=50), key="m")
    wait_for(
        lambda: counts(redis_client, topics).get(("m", "f19")) == 100_000,
        240,
        "100,000 events checkpointed",
    )
    assert alerts(broker, topics) == []
    assert all(count == 100_000 for count in counts(redis_client, topics).values())


BAD_MESSAGES: list[tuple[bytes, str]] = [
    (b"{not json", "malformed_json"),
    (b'{"model": 3, "features": {}}', "invalid_model"),
    (b'{"features": {"a": 1}}', "missing_model"),
    (b'{"model": "m"}', "missing_features"),
    (b'{"model": "m", "features": {"a": {"nested": 1}}}', "invalid_feature_value"),
    (b'{"model": "m", "features": {"a": [1, 2]}}', "invalid_feature_value"),
    (b'{"model": "m", "features": {"a": 1e999}}', "non_finite_value"),
    (b'{"model": "m", "features": {"a": NaN}}', "malformed_json"),
    (b'"just a string"', "not_an_object"),
    (
        json.dumps({"model": "m", "features": {f"x{i}": i for i in range(600)}}).encode(),
        "too_many_features",
    ),
    (json.dumps({"model": "m", "features": {"f00": "x" * 150_000}}).encode(), "oversize_message"),
    (b'{"model": "m", "features": {"f00": "text"}}', "feature_type_changed"),
]


@pytest.mark.brokers("tansu", "kafka")
def test_bad_input_goes_to_the_dead_letter_topic_and_valid_events_continue(
    broker, topics, start_worker, redis_client
):
    worker = start_worker(max_message_bytes=100_000).wait_ready()
    good = events(3_000, seed=3)
    bad_batch = json.dumps(
        [
            good[0] | {"event_id": "ok-1"},
            {"model": "m", "features": {"f00": {}}},
            good[1] | {"event_id": "ok-2"},
        ]
    ).encode()
    values = (
        encode(good[:1_500])
        + [value for value, _ in BAD_MESSAGES]
        + [bad_batch]
        + encode(good[1_500:])
    )
    produce(broker.bootstrap, topics.input, values, key="m")
    valid = 3_000 + 2
    wait_for(
        lambda: counts(redis_client, topics).get(("m", "f00")) == valid,
        120,
        f"{valid} valid events checkpointed",
    )

    letters = consume_all(broker.bootstrap, topics.dlq, expect_at_least=len(BAD_MESSAGES) + 1)
    assert len(letters) == len(BAD_MESSAGES) + 1
    by_payload = {m.value: m for m in letters}
    for value, reason in BAD_MESSAGES:
        letter = by_payload[value]  # the original bytes, unchanged
        assert letter.header("streamdrift-reason") == reason.encode(), (reason, letter.headers)
        assert letter.header("streamdrift-source-topic") == topics.input.encode()
        assert letter.header("streamdrift-source-offset") is not None
    element = [m for m in letters if m.header("streamdrift-batch-index") == b"1"]
    assert len(element) == 1 and json.loads(element[0].value) == {
        "model": "m",
        "features": {"f00": {}},
    }
    assert element[0].header("streamdrift-reason") == b"invalid_feature_value"

    metrics = worker.metrics_text()
    assert 'streamdrift_dead_letters_total{reason="malformed_json"} 2.0' in metrics
    # ?name[]= narrows the page to the metrics asked for (the bench's probes)
    only = worker.metrics_text(names=["streamdrift_dead_letters_total"])
    assert 'streamdrift_dead_letters_total{reason="malformed_json"} 2.0' in only
    assert "streamdrift_events_total" in metrics and "streamdrift_events_total" not in only
    assert worker.running


@pytest.mark.brokers("tansu", "kafka")
def test_kill_9_and_restart_count_every_valid_event_exactly_once(
    broker, topics, start_worker, redis_client
):
    worker = start_worker(checkpoint_every_events=2_000).wait_ready()
    total = 40_000
    stream = [e | {"model": f"m{i % 3}"} for i, e in enumerate(events(total, seed=4))]
    expected = Counter(e["model"] for e in stream)
    produce(broker.bootstrap, topics.input, encode(stream), keys=[e["model"] for e in stream])

    def processed() -> int:
        return sum(
            c for (model, feature), c in counts(redis_client, topics).items() if feature == "f00"
        )

    wait_for(lambda: processed() >= 8_000, 120, "a first part checkpointed")
    worker.kill()  # SIGKILL mid-stream: no final checkpoint, no LeaveGroup
    assert processed() < total, "the kill came too late to test anything"
    start_worker(checkpoint_every_events=2_000).wait_ready(timeout=90)
    wait_for(lambda: processed() == total, 180, f"all {total} events after the restart")
    time.sleep(2)  # anything double-applied would show up in a later checkpoint
    final = counts(redis_client, topics)
    for (model, feature), count in final.items():  # the PCA monitor counts rows: events too
        assert count == expected[model], (model, feature, count, expected[model])
    assert len(final) == 3 * (len(FEATURES) + 1)  # + each model's multivariate monitor


@pytest.mark.brokers("tansu", "kafka")
def test_error_rate_jump_raises_a_performance_drift_alert(
    broker, topics, start_worker, redis_client
):
    """A rise of the error rate that lasts 12,000 labels is one alert (labels come far faster
    than the cool-down's events), and its end one ``resolved`` event."""
    start_worker().wait_ready()
    rng = np.random.default_rng(5)
    n, jump, back = 24_000, 4_000, 16_000
    predictions = rng.uniform(size=n)
    index = np.arange(n)
    error_rate = np.where((jump <= index) & (index < back), 0.40, 0.10)
    wrong = rng.uniform(size=n) < error_rate
    labels = np.where(wrong, predictions < 0.5, predictions >= 0.5).astype(int)
    stream = [
        {
            "model": "clf",
            "event_id": f"e{i}",
            "features": {"x": float(rng.normal())},
            "prediction": float(predictions[i]),
        }
        for i in range(n)
    ]
    produce(broker.bootstrap, topics.input, encode(stream), key="clf")
    wait_for(
        lambda: counts(redis_client, topics).get(("clf", "x")) == n, 120, "predictions checkpointed"
    )
    label_values = [
        json.dumps({"model": "clf", "event_id": f"e{i}", "label": int(labels[i])}).encode()
        for i in range(n)
    ]
    produce(broker.bootstrap, topics.labels, label_values, key="clf")
    wait_for(
        lambda: counts(redis_client, topics).get(("clf", "error_rate")) == n, 120, "labels joined"
    )
    found = [a for a in alerts(broker, topics) if a["data"]["kind"] == "performance"]
    assert [(a["subject"], a["data"]["event"]) for a in found] == [
        ("clf/error_rate", "detected"),
        ("clf/error_rate", "resolved"),
    ], found
    detected, resolved = (a["data"] for a in found)
    assert detected["evidence"]["topic"] == resolved["evidence"]["topic"] == topics.labels
    reference, current = detected["reference"], detected["current"]
    assert reference["error_rate"] < 0.2 < current["error_rate"], (reference, current)
    assert resolved["test"] == "error_rate" and resolved["current"]["error_rate"] < 0.2
    assert resolved["evidence"]["from_offset"] > detected["evidence"]["to_offset"]


def test_a_variance_change_is_caught_by_the_reference_window_tests(
    broker, topics, start_worker, redis_client, tmp_path
):
    """The mean stays put, the spread grows 2.5x: ADWIN on the mean is blind, the window tests
    compare each window's distribution with the reference and alert once. (With the defaults,
    the CUSUM bank and the multivariate monitor see it too.)"""
    config = tmp_path / "adwin-window.yaml"
    config.write_text("defaults:\n  detectors: [adwin, window]\n")
    start_worker(config=config, multivariate="false").wait_ready()
    stream = events(16_000, seed=6)
    rng = np.random.default_rng(60)
    for event in stream[9_000:]:
        event["features"]["f05"] = float(rng.normal(0.0, 2.5))
    produce(broker.bootstrap, topics.input, encode(stream), key="m")
    wait_for(
        lambda: counts(redis_client, topics).get(("m", "f00")) == 16_000,
        120,
        "16,000 events checkpointed",
    )
    found = alerts(broker, topics)
    assert [(a["subject"], a["data"]["detector"]) for a in found] == [("m/f05", "window")], found
    data = found[0]["data"]
    jsonschema.validate(found[0], ALERT_SCHEMA)
    assert data["p_value"] < data["threshold"] and data["test"] in ("ks", "chi2")
    assert 9_000 <= data["evidence"]["to_offset"] < 11_000, data["evidence"]


def test_a_stored_baseline_is_the_reference_of_its_model_version_from_the_first_event(
    broker, topics, start_worker, redis_client, redis_server, tmp_path
):
    """Training data -> `streamdrift baseline build` -> Redis; the worker compares version v7's
    window with it from the first event, so a shift present since deployment is caught. Version
    v8 (no baseline) warms up on the shifted data itself and cannot see it."""
    model = f"bm-{topics.group_id[-12:]}"
    rng = np.random.default_rng(8)
    training = tmp_path / "train.csv"
    training.write_text(
        "\n".join(
            [",".join([*FEATURES, "label"])]
            + [
                ",".join(f"{v:.6f}" for v in row) + ",1"
                for row in rng.normal(size=(20_000, len(FEATURES)))
            ]
        )
    )
    env = {**os.environ, "STREAMDRIFT_REDIS_URL": redis_server.url}
    built = subprocess.run(
        [
            sys.executable,
            "-m",
            "streamdrift.streams.ops.cli",
            "baseline",
            "build",
            "-m",
            model,
            "-v",
            "v7",
            "--from",
            str(training),
            "-x",
            "label",
        ],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert built.returncode == 0, built.stderr
    revision = BaselineStore(redis_client).get(model, "v7").revision
    assert f"stored as {model}/v7 r{revision}" in built.stdout

    config = tmp_path / "window-only.yaml"
    config.write_text("defaults:\n  detectors: [window]\n")
    start_worker(config=config).wait_ready()
    stream = []
    for version, seed in (("v7", 81), ("v8", 82)):
        for event in events(6_000, model=model, seed=seed, shift={"f03": 0.5}):
            stream.append(
                {**event, "model_version": version, "event_id": f"{version}-{event['event_id']}"}
            )
    produce(broker.bootstrap, topics.input, encode(stream, batch=20), key=model)
    wait_for(
        lambda: counts(redis_client, topics).get((model, "f00")) == 12_000,
        120,
        "12,000 events checkpointed",
    )

    found = alerts(broker, topics)
    assert [(a["subject"], a["data"]["model_version"]) for a in found] == [
        (f"{model}/f03", "v7")
    ], found
    data = found[0]["data"]
    jsonschema.validate(found[0], ALERT_SCHEMA)
    assert data["reference_source"] == f"{model}/v7 r{revision}"
    assert data["detector"] == "window" and data["p_value"] < data["threshold"]
    assert data["reference"]["count"] == 20_000  # the baseline's rows, not the stream's
    status = read_status(redis_client, topics.group_id)
    assert status["models"][model]["f03"]["versions"] == ["v7", "v8"]
