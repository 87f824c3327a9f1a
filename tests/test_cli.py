"""The command line as a user meets it: help texts, and errors that say what to do."""

from __future__ import annotations

import json
import subprocess
import sys
import uuid

import pytest

from streams.embedded import free_port

COMMANDS = ["worker", "demo", "simulate", "status", "alerts", "baseline", "report"]
BASELINE_COMMANDS = ["build", "upload", "freeze", "list", "show", "delete"]


def streamdrift(*args: str, timeout: float = 60, **env: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "streams", *args], capture_output=True, text=True, timeout=timeout,
        env={"PATH": "/usr/bin:/bin", "COLUMNS": "200", **env},
    )


def test_top_level_help_lists_every_command():
    result = streamdrift("--help")
    assert result.returncode == 0
    for command in COMMANDS:
        assert command in result.stdout


@pytest.mark.parametrize("command", COMMANDS)
def test_each_command_has_help(command):
    result = streamdrift(command, "--help")
    assert result.returncode == 0 and "Usage" in result.stdout and len(result.stdout.splitlines()) > 5


@pytest.mark.parametrize("command", BASELINE_COMMANDS)
def test_each_baseline_command_has_help(command):
    result = streamdrift("baseline", command, "--help")
    assert result.returncode == 0 and "Usage" in result.stdout and len(result.stdout.splitlines()) > 5


def test_unreachable_redis_names_the_address_without_the_password():
    port = free_port()
    result = streamdrift("status", "--redis-url", f"redis://:hunter2@127.0.0.1:{port}/0")
    assert result.returncode == 1
    assert f"127.0.0.1:{port}" in result.stderr and "what to do" in result.stderr
    assert "hunter2" not in result.stderr + result.stdout


def test_unreachable_broker_names_the_address_and_what_to_check():
    port = free_port()
    result = streamdrift("alerts", "--bootstrap", f"127.0.0.1:{port}", timeout=60)
    assert result.returncode == 1
    assert f"cannot reach Kafka at 127.0.0.1:{port}" in result.stderr
    assert "STREAMDRIFT_KAFKA_BOOTSTRAP" in result.stderr


def test_invalid_setting_is_reported_not_a_traceback():
    result = streamdrift("status", STREAMDRIFT_METRICS_PORT="not-a-port")
    assert result.returncode == 2 and "Traceback" not in result.stderr
    assert "invalid setting STREAMDRIFT_METRICS_PORT=not-a-port: expected a whole number" in result.stderr


def test_status_json_on_an_empty_group(redis_server):
    result = streamdrift("status", "--json", "--redis-url", redis_server.url, "--group-id", "nobody-here")
    assert result.returncode == 0
    assert json.loads(result.stdout) == {"group_id": "nobody-here", "partitions": [], "models": {}}


def test_baseline_build_list_show_and_delete(redis_server, tmp_path):
    model = f"cli-{uuid.uuid4().hex[:8]}"
    data = tmp_path / "train.jsonl"
    data.write_text("\n".join(json.dumps({"model": model, "features": {"x": i / 10, "c": "ab"[i % 2]}, "prediction": 0.5})
                              for i in range(300)))
    redis = ("--redis-url", redis_server.url)
    built = streamdrift("baseline", "build", "-m", model, "-v", "v1", "--from", str(data), *redis)
    assert built.returncode == 0, built.stderr
    assert f"stored as {model}/v1 r" in built.stdout and "300 rows" in built.stdout
    listed = json.loads(streamdrift("baseline", "list", "--model", model, "--json", *redis).stdout)
    assert [(r["version"], r["rows"], r["numeric"], r["categorical"]) for r in listed] == [("v1", 300, 2, 1)]
    shown = json.loads(streamdrift("baseline", "show", "-m", model, "-v", "v1", "--json", *redis).stdout)
    assert shown["features"]["x"]["count"] == 300 and shown["features"]["c"]["top"] == {"a": 150, "b": 150}
    assert streamdrift("baseline", "delete", "-m", model, "-v", "v1", *redis).returncode == 0
    missing = streamdrift("baseline", "show", "-m", model, "-v", "v1", *redis)
    assert missing.returncode == 1 and "baseline list" in missing.stderr


def test_baseline_build_explains_a_bad_file(tmp_path):
    data = tmp_path / "train.csv"
    data.write_text("x,y\n1,2\n3\n")
    result = streamdrift("baseline", "build", "-m", "m", "--from", str(data), "--dry-run")
    assert result.returncode == 1 and "train.csv:3: 1 cells, the header has 2" in result.stderr
    assert "what to do" in result.stderr and "Traceback" not in result.stderr


def test_alert_lines_say_what_changed_for_numeric_and_categorical_features():
    from streams.cli import format_alert

    base = {"id": "abc", "time": "t", "subject": "m/x"}
    evidence = {"topic": "in", "partition": 1, "from_offset": 5, "to_offset": 9}
    numeric = {"kind": "feature", "detector": "cusum", "severity": "high", "effect_size": 1.2, "test": None,
               "p_value": None, "reference": {"mean": 0.0}, "current": {"mean": 1.2}, "evidence": evidence}
    categorical = {**numeric, "detector": "window", "test": "chi2", "p_value": 1e-9,
                   "reference": {"count": 5000, "top": []}, "current": {"count": 500, "top": []}}
    assert "reference mean 0 → current 1.2" in format_alert({**base, "data": numeric})
    assert "chi2 test p=1e-09" in format_alert({**base, "data": categorical})
