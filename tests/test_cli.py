"""The command line as a user meets it: help texts, and errors that say what to do."""

from __future__ import annotations

import io
import json
import subprocess
import sys
import uuid

import pytest

from streamdrift.detectors.kernels import API_VERSION
from streamdrift.streams.dev.embedded import free_port

COMMANDS = ["worker", "demo", "simulate", "status", "alerts", "incidents", "baseline", "report"]
BASELINE_COMMANDS = ["build", "upload", "freeze", "list", "show", "delete"]


def streamdrift(*args: str, timeout: float = 60, **env: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "streamdrift.streams", *args],
        capture_output=True,
        text=True,
        timeout=timeout,
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
    assert (
        result.returncode == 0 and "Usage" in result.stdout and len(result.stdout.splitlines()) > 5
    )


@pytest.mark.parametrize("command", BASELINE_COMMANDS)
def test_each_baseline_command_has_help(command):
    result = streamdrift("baseline", command, "--help")
    assert (
        result.returncode == 0 and "Usage" in result.stdout and len(result.stdout.splitlines()) > 5
    )


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


def test_compiled_kernels_that_cannot_load_stop_the_worker_only_when_asked_for(tmp_path):
    """STREAMDRIFT_KERNELS=compiled refuses to start, before connecting anywhere, when the
    extension is of another interface version (left from an older checkout), with what to do;
    auto (the default) goes on with the reference kernels."""
    (tmp_path / "streamdrift_kernels.py").write_text("API_VERSION = 0\n")
    port = free_port()
    address = ("--bootstrap", f"127.0.0.1:{port}", "--redis-url", f"redis://127.0.0.1:{port}")
    result = streamdrift(
        "worker", *address, STREAMDRIFT_KERNELS="compiled", PYTHONPATH=str(tmp_path)
    )
    assert result.returncode == 1 and "Traceback" not in result.stderr
    assert f"have interface version 0, this streamdrift needs {API_VERSION}" in result.stderr
    assert "pip install ./native" in result.stderr and "STREAMDRIFT_KERNELS=auto" in result.stderr
    auto = streamdrift("worker", *address, PYTHONPATH=str(tmp_path))
    assert "interface version" not in auto.stderr
    assert auto.returncode == 1 and "cannot reach Kafka" in auto.stderr


def test_invalid_setting_is_reported_not_a_traceback():
    result = streamdrift("status", STREAMDRIFT_METRICS_PORT="not-a-port")
    assert result.returncode == 2 and "Traceback" not in result.stderr
    assert (
        "invalid setting STREAMDRIFT_METRICS_PORT=not-a-port: expected a whole number"
        in result.stderr
    )


def test_status_json_on_an_empty_group(redis_server):
    result = streamdrift(
        "status", "--json", "--redis-url", redis_server.url, "--group-id", "nobody-here"
    )
    assert result.returncode == 0
    assert json.loads(result.stdout) == {"group_id": "nobody-here", "partitions": [], "models": {}}


def test_baseline_build_list_show_and_delete(redis_server, tmp_path):
    model = f"cli-{uuid.uuid4().hex[:8]}"
    data = tmp_path / "train.jsonl"
    data.write_text(
        "\n".join(
            json.dumps(
                {"model": model, "features": {"x": i / 10, "c": "ab"[i % 2]}, "prediction": 0.5}
            )
            for i in range(300)
        )
    )
    redis = ("--redis-url", redis_server.url)
    built = streamdrift("baseline", "build", "-m", model, "-v", "v1", "--from", str(data), *redis)
    assert built.returncode == 0, built.stderr
    assert f"stored as {model}/v1 r" in built.stdout and "300 rows" in built.stdout
    listed = json.loads(streamdrift("baseline", "list", "--model", model, "--json", *redis).stdout)
    assert [(r["version"], r["rows"], r["numeric"], r["categorical"]) for r in listed] == [
        ("v1", 300, 2, 1)
    ]
    shown = json.loads(
        streamdrift("baseline", "show", "-m", model, "-v", "v1", "--json", *redis).stdout
    )
    assert shown["features"]["x"]["count"] == 300 and shown["features"]["c"]["top"] == {
        "a": 150,
        "b": 150,
    }
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
    from streamdrift.streams.ops.tail import format_alert

    base = {"id": "abc", "time": "t", "subject": "m/x"}
    evidence = {"topic": "in", "partition": 1, "from_offset": 5, "to_offset": 9}
    numeric = {
        "kind": "feature",
        "detector": "cusum",
        "severity": "high",
        "effect_size": 1.2,
        "test": None,
        "p_value": None,
        "reference": {"mean": 0.0},
        "current": {"mean": 1.2},
        "evidence": evidence,
    }
    categorical = {
        **numeric,
        "detector": "window",
        "test": "chi2",
        "p_value": 1e-9,
        "reference": {"count": 5000, "top": []},
        "current": {"count": 500, "top": []},
    }
    assert "reference mean 0 → current 1.2" in format_alert({**base, "data": numeric})
    assert "chi2 test p=1e-09" in format_alert({**base, "data": categorical})


def test_version_prints_the_installed_version():
    from importlib.metadata import version

    result = streamdrift("--version")
    assert result.returncode == 0, result.stderr
    assert result.stdout == f"streamdrift {version('streamdrift')}\n"


def _command_paths() -> list[tuple[str, ...]]:
    """Every command and group of the CLI, as the words that name it (``()``: streamdrift
    itself)."""
    import typer

    from streamdrift.streams.ops.cli import app

    paths, todo = [], [((), typer.main.get_command(app))]
    while todo:
        path, command = todo.pop()
        paths.append(path)
        todo += [((*path, name), sub) for name, sub in getattr(command, "commands", {}).items()]
    return sorted(paths)


def _flags(path: tuple[str, ...]) -> list[str]:
    """The options of the command at ``path`` that take no value (including --help)."""
    import typer

    from streamdrift.streams.ops.cli import app

    command = typer.main.get_command(app)
    ctx = command.make_context("streamdrift", [*path], resilient_parsing=True)
    for name in path:
        command = command.commands[name]
        ctx = command.make_context(name, [], parent=ctx, resilient_parsing=True)
    return [
        opt
        for param in command.get_params(ctx)
        if getattr(param, "is_flag", False)
        for opt in (*param.opts, *param.secondary_opts)
        if opt.startswith("--")
    ]


def test_every_command_and_group_is_walked():
    paths = _command_paths()
    assert {(), ("status",), ("alerts",), ("demo",), ("baseline",), ("baseline", "list")} <= set(
        paths
    )
    assert len(paths) >= 15


@pytest.mark.parametrize("path", _command_paths(), ids=lambda p: " ".join(p) or "streamdrift")
def test_help_shows_flags_as_flags_and_they_take_no_value(path):
    """A flag must not be shown as expecting a value (``--json <bool>``, ``BOOLEAN``), and must
    not take one: ``FLAG --help`` prints the help (a value-taking option would swallow it)."""
    from typer.testing import CliRunner

    from streamdrift.streams.ops.cli import app

    runner = CliRunner()
    shown = runner.invoke(app, [*path, "--help"], env={"COLUMNS": "200"})
    assert shown.exit_code == 0 and "Usage" in shown.output, shown.output
    assert "<bool>" not in shown.output and "BOOLEAN" not in shown.output, shown.output
    flags = _flags(path)
    assert "--help" in flags
    for flag in set(flags) - {"--help", "--version"}:  # both eager: they act, whatever follows
        result = runner.invoke(app, [*path, flag, "--help"], env={"COLUMNS": "200"})
        assert result.exit_code == 0 and "Usage" in result.output, f"{flag}: {result.output}"


def test_json_is_a_flag_without_a_value():
    result = streamdrift("config", "--json")
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout)["group_id"] == "streamdrift"
    given = streamdrift("config", "--json", "true")
    assert given.returncode == 2 and "unexpected extra argument" in given.stderr.lower()


def test_every_boolean_option_is_a_flag():
    """A ``bool`` parameter anywhere in the CLI is declared as a flag (its help-column is blank)."""
    flags = {flag for path in _command_paths() for flag in _flags(path)}
    assert {
        "--json",
        "--create-topics",
        "--no-create-topics",
        "--keep",
        "--dry-run",
        "--no-alerts",
        "--follow",
        "--no-follow",
        "--from-beginning",
        "--no-from-beginning",
        "--version",
    } <= flags


def test_the_evidence_notation_is_explained_above_the_alert_lines():
    from rich.console import Console

    from streamdrift.streams.ops.tail import EVIDENCE_LEGEND, format_alert

    console = Console(width=300, record=True, file=io.StringIO())
    console.print(EVIDENCE_LEGEND)
    assert console.export_text().startswith("evidence: topic[partition] first..last offset")
    evidence = {"topic": "predictions", "partition": 2, "from_offset": 500, "to_offset": 15059}
    data = {
        "kind": "feature",
        "detector": "cusum",
        "severity": "high",
        "effect_size": 1.2,
        "test": None,
        "p_value": None,
        "reference": {"mean": 0.0},
        "current": {"mean": 1.2},
        "evidence": evidence,
    }
    console.print(format_alert({"id": "abc", "time": "t", "subject": "m/x", "data": data}))
    assert "evidence predictions[2] 500..15059" in console.export_text()
