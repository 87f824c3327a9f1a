"""The throughput benchmark's harness (``bench/throughput.py``) end to end on tiny sizes.

It starts its own broker (the embedded Tansu; once Apache Kafka, ``--broker kafka``) and Redis,
every column's processes and a latency run, and checks that each column reported sane numbers.
No timing thresholds: speed is what the benchmark measures, not what the test suite asserts.
"""

from __future__ import annotations

import itertools
import json

import msgspec
import pytest
from servers.kafka_broker import kafka_version

from bench import throughput
from bench.adapters import ADAPTERS, events_of
from bench.load import SERIES_PER_EVENT, bench_models, messages
from streamdrift.streams.pipeline.codec import Limits
from streamdrift.streams.pipeline.inputs import input_specs
from streamdrift.streams.pipeline.mapping import Mapper
from streamdrift.streams.pipeline.outcome import Record

pytestmark = pytest.mark.e2e

TINY = ["--events", "3000", "--partitions", "2", "--batch", "20", "--models", "2", "--drifts", "1"]
TINY += ["--latency-seconds", "1", "--set", "STREAMDRIFT_BATCH_MAX_EVENTS=500"]


def test_a_tiny_run_reports_every_column(tmp_path, capsys):
    out = tmp_path / "throughput.json"
    data = throughput.main([*TINY, "--json", str(out)])
    printed = capsys.readouterr().out

    assert json.loads(out.read_text()) == json.loads(json.dumps(data))
    assert data["broker"]["key"] == "tansu" and data["options"]["broker"] == "tansu"
    assert data["broker"]["product"] == "Tansu" and data["broker"]["version"][0].isdigit()
    assert f"Tansu {data['broker']['version']} (embedded" in printed  # table titles and footer
    [run] = data["runs"]
    assert run["batch"] == 20
    results = run["results"]
    assert list(results) == [column.key for column in throughput.COLUMNS]
    for key, r in results.items():
        assert r["complete"] and 0 < r["events"] <= 3000, key
        assert r["events_per_s"] > 0 and r["seconds"] > 0 and r["cpu_s"] >= 0, key
        assert 10 < r["rss_mb"] < 4096, key
        assert throughput.BY_KEY[key].title in printed
    assert results["river"]["updates"] == 21 * results["river"]["events"]  # 20 numeric + prediction
    assert results["river"]["alarms"] >= 0 and results["limit"]["alarms"] is None
    for key in ("streamdrift-1", "streamdrift-2"):
        r = results[key]
        assert r["processes"] == throughput.BY_KEY[key].workers
        assert r["updates"] == SERIES_PER_EVENT * r["events"]
        assert r["redis"]["commands"] > 0 and r["redis"]["by_command"]
        # (a window this short may hold no checkpoint: they come every 2 s or 20,000 events)
        # and no CPU share when the worker's CPU clock did not tick in a window this short
        share = r["checkpoint"]["cpu_share"]
        assert r["checkpoint"]["checkpoints"] >= 0
        assert share is None if r["cpu_s"] == 0 else 0 <= share < 1, (key, r["checkpoint"])
        latency = r["latency"]
        assert latency["drifts"] == 1 and 1 <= latency["samples"] <= latency["expected_samples"], (
            key
        )
        assert 0 <= latency["p50_ms"] <= latency["p99_ms"] <= latency["max_ms"], key
        assert latency["onset_p50_ms"] >= latency["p50_ms"], key
        names = {t["target"] for t in run["targets"][key]}
        assert {"p99≤250ms", "RSS≤300MB", "ready≤10s"} <= names, key
        assert 0 < r["ready_s"] < throughput.STARTUP_S, key
    assert {"≥0.8×(1)", "≥2.5×(2)"} <= {t["target"] for t in run["targets"]["streamdrift-1"]}
    assert "≥1.7×(4)" in {t["target"] for t in run["targets"]["streamdrift-2"]}
    assert set(run["targets"]) == {"streamdrift-1", "streamdrift-2"}
    native = results["streamdrift-1"]["events_per_s"]
    # (the JSON's events/s are rounded: the ratio of the rounded ones may differ in its 3rd place)
    assert run["vs_streamdrift_1"] == {
        key: pytest.approx(r["events_per_s"] / native, rel=1e-3, abs=2e-3)
        for key, r in results.items()
        if key != "streamdrift-1"
    }
    assert "× (4)" in printed
    for key in ADAPTERS:  # one worker each, on the same events through its adapter
        r = results[key]
        assert throughput.BY_KEY[key].adapter == key and r["processes"] == 1, key
        assert r["updates"] == SERIES_PER_EVENT * r["events"], key
        assert r["redis"]["commands"] > 0 and r["latency"] is None, key
        assert 0 < r["ready_s"] < throughput.STARTUP_S, key
    assert len(data["notes"]) == len(throughput.NOTES)
    assert json.loads(out.read_text())["options"]["worker_settings"] == [
        ["STREAMDRIFT_BATCH_MAX_EVENTS", "500"]
    ]


@pytest.mark.parametrize("batch", [1, 7])
@pytest.mark.parametrize("adapter", sorted(ADAPTERS))
def test_an_adapter_carries_the_native_events(adapter, batch):
    """What the worker's mapping reads from an adapter's records are the simulator's events, one
    id each: a request's features and its response's prediction (two halves of one id, unpaired
    here), or the whole event."""
    shaper = ADAPTERS[adapter]
    topics = shaper.topics("bench-test")
    specs = input_specs({"inputs": shaper.inputs(topics)})
    mappers = {spec.topic: Mapper(spec, Limits()) for spec in specs}
    for message in itertools.islice(messages(bench_models(3), 40, batch, seed=batch), 5):
        merged: dict[str, dict] = {}
        for offset, out in enumerate(shaper.records(topics, message)):
            record = Record(offset, 1.7e9, out.value, key=out.key, headers=out.headers)
            natives, dead = mappers[out.topic].convert([record])
            assert not dead, dead
            decoded = msgspec.json.decode(natives[0].value)
            for event in decoded if isinstance(decoded, list) else [decoded]:
                into = merged.setdefault(event["event_id"], {"model": event["model"]})
                assert into["model"] == event["model"]
                into.setdefault("features", {}).update(event["features"])
                if "prediction" in event:
                    into["prediction"] = event["prediction"]
        expected = [
            {"model": e["model"], "features": e["features"], "prediction": e["prediction"]}
            for e in events_of(message)
        ]
        assert list(merged.values()) == expected


def test_worker_settings_must_be_streamdrift_variables(capsys):
    with pytest.raises(SystemExit):
        throughput.main(["--set", "BATCH=5"])
    assert "--set takes STREAMDRIFT_NAME=VALUE" in capsys.readouterr().err


def test_a_tiny_run_on_apache_kafka(tmp_path, capsys):
    """--broker kafka: a single-node Apache Kafka from the cached jars. Two columns only (~30 s):
    a peer consumer group, and two workers sharing a group (joins and a rebalance on Kafka's
    coordinator) with a latency run that reads the alerts back."""
    out = tmp_path / "throughput-kafka.json"
    argv = [*TINY, "--broker", "kafka", "--only", "limit", "streamdrift-2", "--json", str(out)]
    data = throughput.main(argv)
    printed = capsys.readouterr().out

    broker = data["broker"]
    assert broker["key"] == "kafka" and data["options"]["broker"] == "kafka"
    assert (broker["product"], broker["version"]) == ("Apache Kafka", kafka_version())
    assert f"Apache Kafka {kafka_version()} (single-node KRaft" in printed
    [run] = data["runs"]
    assert list(run["results"]) == ["limit", "streamdrift-2"]
    for key, r in run["results"].items():
        assert r["complete"] and 0 < r["events"] <= 3000 and r["events_per_s"] > 0, key
    latency = run["results"]["streamdrift-2"]["latency"]
    assert 1 <= latency["samples"] <= latency["expected_samples"]
    assert json.loads(out.read_text()) == json.loads(json.dumps(data))


def test_the_broker_is_tansu_or_kafka(capsys):
    with pytest.raises(SystemExit):
        throughput.main(["--broker", "redpanda"])
    assert "invalid choice: 'redpanda'" in capsys.readouterr().err
    assert throughput.Options().broker == "tansu"
    assert throughput.DEFAULT_JSON["tansu"] != throughput.DEFAULT_JSON["kafka"]
