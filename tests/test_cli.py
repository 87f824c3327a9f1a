"""The command line as a user meets it: help texts, and errors that say what to do."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from streams.embedded import free_port

COMMANDS = ["worker", "demo", "simulate", "status", "alerts"]


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
    assert result.returncode == 2 and "invalid configuration" in result.stderr and "Traceback" not in result.stderr


def test_status_json_on_an_empty_group(redis_server):
    result = streamdrift("status", "--json", "--redis-url", redis_server.url, "--group-id", "nobody-here")
    assert result.returncode == 0
    assert json.loads(result.stdout) == {"group_id": "nobody-here", "partitions": [], "models": {}}
