"""Operator input is input too: every command refuses a wrong setting or option with a short
message that names the variable or flag, never a traceback, and never shows a secret; names
from Kafka, Redis or files are printed literally.

The wrong-input cases need no broker and no Redis: each is refused before any connection (the
few that do connect are pointed at the unreachable loopback port 127.0.0.1:1). They run as
subprocesses, a few at a time, once per module.
"""

from __future__ import annotations

import io
import json
import subprocess
import sys
import uuid
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field

import pytest
from conftest import CLI_TEST_PASSWORD, SASL_TEST_PASSWORD, TEST_SECRETS
from rich.console import Console

from streamdrift.detectors import BaselineBuilder
from streamdrift.streams.ops.cli import baselines_table, format_alert, profile_table, status_tables
from streamdrift.streams.state.keys import KeyLayout

#: Where every case points unless it says otherwise: nothing listens there.
NOWHERE = {
    "STREAMDRIFT_KAFKA_BOOTSTRAP": "127.0.0.1:1",
    "STREAMDRIFT_REDIS_URL": "redis://127.0.0.1:1/0",
}
MOST_LINES = 8  # a usage error is 5 (usage, hint, boxed message); ours are 2


@dataclass(frozen=True)
class Case:
    id: str
    args: tuple[str, ...]
    names: str  # the variable or flag the message must name
    env: dict[str, str] = field(default_factory=dict)
    code: int = 2


def case(id: str, *args: str, names: str, code: int = 2, **env: str) -> Case:
    return Case(id, args, names, env, code)


CASES = [
    # --- settings from the environment -------------------------------------------------------
    case(
        "metrics-port-not-a-number",
        "status",
        names="STREAMDRIFT_METRICS_PORT=abc",
        STREAMDRIFT_METRICS_PORT="abc",
    ),
    case(
        "metrics-port-out-of-range",
        "worker",
        names="STREAMDRIFT_METRICS_PORT=70000",
        STREAMDRIFT_METRICS_PORT="70000",
    ),
    case(
        "metrics-port-negative",
        "config",
        names="STREAMDRIFT_METRICS_PORT",
        STREAMDRIFT_METRICS_PORT="-1",
    ),
    case(
        "log-level-unknown", "worker", names="STREAMDRIFT_LOG_LEVEL", STREAMDRIFT_LOG_LEVEL="loud"
    ),
    case(
        "checkpoint-every-negative",
        "worker",
        names="STREAMDRIFT_CHECKPOINT_EVERY_EVENTS",
        STREAMDRIFT_CHECKPOINT_EVERY_EVENTS="-5",
    ),
    case(
        "checkpoint-interval-zero",
        "simulate",
        names="STREAMDRIFT_CHECKPOINT_INTERVAL_S",
        STREAMDRIFT_CHECKPOINT_INTERVAL_S="0",
    ),
    case(
        "bool-not-a-bool",
        "config",
        names="STREAMDRIFT_MULTIVARIATE",
        STREAMDRIFT_MULTIVARIATE="maybe",
    ),
    case(
        "security-protocol-unknown",
        "alerts",
        names="STREAMDRIFT_KAFKA_SECURITY_PROTOCOL",
        STREAMDRIFT_KAFKA_SECURITY_PROTOCOL="TLS",
    ),
    case(
        "sasl-without-user",
        "simulate",
        names="STREAMDRIFT_KAFKA_SASL_USERNAME",
        STREAMDRIFT_KAFKA_SECURITY_PROTOCOL="SASL_SSL",
        STREAMDRIFT_KAFKA_SASL_PASSWORD=SASL_TEST_PASSWORD,
    ),
    case(
        "ssl-ca-file-missing",
        "alerts",
        names="STREAMDRIFT_KAFKA_SSL_CAFILE",
        STREAMDRIFT_KAFKA_SECURITY_PROTOCOL="SSL",
        STREAMDRIFT_KAFKA_SSL_CAFILE="/nonexistent/ca.pem",
    ),
    case(
        "redis-url-without-scheme",
        "baseline",
        "list",
        names="STREAMDRIFT_REDIS_URL",
        STREAMDRIFT_REDIS_URL="localhost:6379",
    ),
    case(
        "redis-url-port-with-password",
        "report",
        "-m",
        "m",
        "--no-alerts",
        names="STREAMDRIFT_REDIS_URL=redis://:***@",
        STREAMDRIFT_REDIS_URL=f"redis://:{CLI_TEST_PASSWORD}@127.0.0.1:99999/0",
    ),
    case(
        "redis-url-bad-option",
        "baseline",
        "freeze",
        "-m",
        "m",
        names="STREAMDRIFT_REDIS_URL",
        STREAMDRIFT_REDIS_URL="redis://127.0.0.1:1/0?socket_timeout=soon",
    ),
    case(
        "bootstrap-empty-env",
        "simulate",
        names="STREAMDRIFT_KAFKA_BOOTSTRAP",
        STREAMDRIFT_KAFKA_BOOTSTRAP=" ",
    ),
    case(
        "topic-name-with-space",
        "worker",
        names="STREAMDRIFT_INPUT_TOPIC",
        STREAMDRIFT_INPUT_TOPIC="my topic",
    ),
    case("group-id-empty-env", "status", names="STREAMDRIFT_GROUP_ID", STREAMDRIFT_GROUP_ID=""),
    case(
        "secrets-dir-missing",
        "config",
        names="STREAMDRIFT_SECRETS_DIR",
        STREAMDRIFT_SECRETS_DIR="/nonexistent/s",
    ),
    case(
        "detector-config-missing",
        "worker",
        names="STREAMDRIFT_CONFIG",
        STREAMDRIFT_CONFIG="/nonexistent/detectors.yaml",
    ),
    case(
        "demo-checks-the-environment-first",
        "demo",
        names="STREAMDRIFT_LOG_LEVEL",
        STREAMDRIFT_LOG_LEVEL="loud",
    ),
    # --- options -------------------------------------------------------------------------------
    case(
        "redis-url-flag-without-scheme",
        "status",
        "--redis-url",
        "localhost:6379",
        names="--redis-url",
    ),
    case("bootstrap-flag-empty", "alerts", "--bootstrap", "", names="--bootstrap"),
    case("bootstrap-flag-bad-port", "simulate", "-b", "127.0.0.1:notaport", names="--bootstrap"),
    case("group-id-flag-empty", "report", "-m", "m", "--group-id", "", names="--group-id"),
    case("detector-config-bad-yaml", "worker", "--config", "{bad_yaml}", names="--config"),
    case("detector-config-bad-key", "worker", "-c", "{bad_config}", names="--config"),
    case("detector-config-is-a-directory", "worker", "-c", "{folder}", names="--config"),
    case("input-mapping-bad-path", "worker", "-c", "{bad_mapping}", names="--config"),
    case("input-mapping-own-topic", "worker", "-c", "{own_topic_mapping}", names="--config"),
    case("partitions-zero", "worker", "--partitions", "0", names="--partitions"),
    case("rate-negative", "simulate", "--rate", "-5", names="--rate"),
    case("seed-negative", "simulate", "--seed", "-1", names="--seed"),
    case("batch-size-zero", "simulate", "--batch-size", "0", names="--batch-size"),
    case("max-alerts-zero", "alerts", "--max", "0", names="--max"),
    case("demo-duration-negative", "demo", "--duration", "-1", names="--duration"),
    case("demo-rate-not-a-number", "demo", "--rate", "abc", names="--rate"),
    case(
        "build-from-missing",
        "baseline",
        "build",
        "-m",
        "m",
        "--from",
        "/nonexistent/train.csv",
        names="--from",
    ),
    case(
        "build-model-empty",
        "baseline",
        "build",
        "-m",
        "",
        "--from",
        "{train}",
        "--dry-run",
        names="--model",
    ),
    case(
        "build-max-categories-zero",
        "baseline",
        "build",
        "-m",
        "m",
        "--from",
        "{train}",
        "--max-categories",
        "0",
        names="--max-categories",
    ),
    case("upload-from-directory", "baseline", "upload", "--from", "{folder}", names="--from"),
    case(
        "upload-not-statistics",
        "baseline",
        "upload",
        "--from",
        "{bad_json}",
        "--dry-run",
        names="stats.json",
        code=1,
    ),
    case("freeze-model-with-escape", "baseline", "freeze", "-m", "a\x1b[2Jb", names="--model"),
    case("show-version-empty", "baseline", "show", "-m", "m", "-v", "", names="--version"),
    case("delete-model-too-long", "baseline", "delete", "-m", "x" * 200, names="--model"),
    case(
        "list-redis-unreachable",
        "baseline",
        "list",
        "--redis-url",
        f"redis://:{CLI_TEST_PASSWORD}@127.0.0.1:1/0",
        names="--redis-url",
        code=1,
    ),
    case(
        "report-out-directory-missing",
        "report",
        "-m",
        "m",
        "--out",
        "/nonexistent/r.html",
        names="--out",
    ),
    case("report-out-is-a-directory", "report", "-m", "m", "--out", "{folder}", names="--out"),
    case("report-model-empty", "report", "-m", "", names="--model"),
    case("unknown-option", "status", "--colour", names="--colour"),
]


@pytest.fixture(scope="module")
def files(tmp_path_factory: pytest.TempPathFactory) -> dict[str, str]:
    folder = tmp_path_factory.mktemp("operator-input")
    made = {
        "bad_yaml": "defaults: [unclosed\n",
        "bad_config": "models:\n  fraud:\n    task: clasification\n",
        "train": "\n".join(json.dumps({"features": {"x": i}}) for i in range(10)),
        "bad_json": "{not json",
        "bad_mapping": "inputs:\n  - topic: logs\n    mapping: {model: 'a[', features: x}\n",
        "own_topic_mapping": (
            "inputs:\n  - topic: predictions\n    mapping: {model: m, features: x}\n"
        ),
    }
    names = {
        "bad_yaml": "d.yaml",
        "bad_config": "c.yaml",
        "train": "train.jsonl",
        "bad_json": "stats.json",
        "bad_mapping": "mapping.yaml",
        "own_topic_mapping": "own.yaml",
    }
    paths = {"folder": str(folder)}
    for key, text in made.items():
        (folder / names[key]).write_text(text)
        paths[key] = str(folder / names[key])
    return paths


def streamdrift(
    args: list[str], env: dict[str, str], timeout: float = 60
) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "streamdrift.streams", *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        env={"PATH": "/usr/bin:/bin", "COLUMNS": "200", **NOWHERE, **env},
    )


@pytest.fixture(scope="module")
def results(files: dict[str, str]) -> dict[str, subprocess.CompletedProcess]:
    """Every case's outcome; four at a time (each is mostly interpreter start-up)."""

    def run(c: Case) -> subprocess.CompletedProcess:
        return streamdrift([arg.format(**files) for arg in c.args], c.env)

    with ThreadPoolExecutor(4) as pool:
        return dict(zip((c.id for c in CASES), pool.map(run, CASES), strict=True))


def test_there_are_cases_for_every_command():
    commands = {c.args[0] if c.args[0] != "baseline" else f"baseline {c.args[1]}" for c in CASES}
    assert commands >= {
        "worker",
        "simulate",
        "status",
        "alerts",
        "config",
        "demo",
        "report",
        *(f"baseline {name}" for name in ("build", "upload", "freeze", "list", "show", "delete")),
    }
    assert len(CASES) >= 25


@pytest.mark.parametrize("case", CASES, ids=lambda c: c.id)
def test_wrong_input_gets_a_short_message_naming_it(case: Case, results):
    result = results[case.id]
    output = result.stdout + result.stderr
    assert result.returncode == case.code, output
    assert case.names in result.stderr, result.stderr
    assert "Traceback" not in output
    assert len(result.stderr.strip().splitlines()) <= MOST_LINES, result.stderr
    for secret in TEST_SECRETS:
        assert secret not in output


def test_a_bad_setting_is_one_line_with_what_is_expected(results):
    lines = results["metrics-port-not-a-number"].stderr.splitlines()
    assert lines[0].startswith(
        "error: invalid setting STREAMDRIFT_METRICS_PORT=abc: expected a whole number"
    )
    assert lines[1].startswith("what to do:") and len(lines) == 2
    level = results["log-level-unknown"].stderr
    assert (
        "invalid setting STREAMDRIFT_LOG_LEVEL=loud: expected one of 'debug', 'info', 'warning' "
        "or 'error'" in level
    )
    flag = results["redis-url-flag-without-scheme"].stderr
    assert "--redis-url 'localhost:6379' (STREAMDRIFT_REDIS_URL): must look like redis://" in flag


def test_a_bad_detector_config_is_one_line_naming_the_problem(results, files):
    yaml_error = results["detector-config-bad-yaml"].stderr.splitlines()
    assert (
        len(yaml_error) == 2
        and f"invalid YAML in STREAMDRIFT_CONFIG={files['bad_yaml']}" in yaml_error[0]
    )
    assert "at line 1" in yaml_error[0] or "at line 2" in yaml_error[0]
    assert "models.fraud.task" in results["detector-config-bad-key"].stderr
    mapping = results["input-mapping-bad-path"].stderr
    assert "inputs[0].mapping.model: not a JMESPath expression" in mapping, mapping
    own = results["input-mapping-own-topic"].stderr
    assert "inputs[0].topic: 'predictions' is already consumed" in own, own


def test_the_log_level_is_case_insensitive():
    result = streamdrift(["config", "--json"], {"STREAMDRIFT_LOG_LEVEL": "INFO"})
    assert result.returncode == 0 and json.loads(result.stdout)["log_level"] == "info"


def test_config_masks_every_secret(tmp_path):
    (tmp_path / "streamdrift_kafka_ssl_key_password").write_text("k3y-pass")
    env = {
        "STREAMDRIFT_KAFKA_SECURITY_PROTOCOL": "SASL_PLAINTEXT",
        "STREAMDRIFT_KAFKA_SASL_USERNAME": "svc",
        "STREAMDRIFT_KAFKA_SASL_PASSWORD": SASL_TEST_PASSWORD,
        "STREAMDRIFT_HTTP_TOKEN": "status-t0ken-xyz",
        "STREAMDRIFT_REDIS_URL": f"rediss://u:{CLI_TEST_PASSWORD}@127.0.0.1:1/0?password=r3dis-pw",
        "STREAMDRIFT_SECRETS_DIR": str(tmp_path),
    }
    for args in (["config"], ["config", "--json"]):
        result = streamdrift(args, env)
        assert result.returncode == 0, result.stderr
        assert "svc" in result.stdout and "KAFKA_SASL_PASSWORD" in result.stdout.upper()
        for secret in TEST_SECRETS:
            assert secret not in result.stdout + result.stderr


def test_a_connection_error_masks_the_password_wherever_it_is():
    url = f"redis://:{CLI_TEST_PASSWORD}@127.0.0.1:1/0?password={CLI_TEST_PASSWORD}"
    result = streamdrift(["status", "--redis-url", url], {})
    assert (
        result.returncode == 1
        and "cannot reach Redis at redis://:***@127.0.0.1:1/0?password=***" in result.stderr
    )
    assert CLI_TEST_PASSWORD not in result.stdout + result.stderr


# --- names printed literally ------------------------------------------------------------------

HOSTILE = [
    "fraud[/bold]",
    "[link=x]click",
    "[red]x",
    "\x1b[31mred",
    "two\nlines",
    "cr\rover",
    "back\\",
    ":warning:",
    "bidi\u202eevil",
    "long" * 100,
]


def shown(name: str) -> str:
    """How a name must appear: as typed, control characters as Python escapes."""
    return name.encode("unicode_escape").decode() if not name.isprintable() else name


def render(*renderables: object) -> str:
    # as streams.ops.cli's
    console = Console(file=io.StringIO(), record=True, width=1000, emoji=False)
    for renderable in renderables:
        console.print(renderable)
    return console.export_text()


@pytest.mark.parametrize("name", HOSTILE, ids=repr)
def test_status_tables_print_hostile_names_literally(name):
    report = {
        "group_id": name,
        "partitions": [
            {
                "topic": name,
                "partition": 0,
                "worker": name,
                "epoch": 1,
                "offset": 5,
                "events": 9,
                "updated_at": 0,
            }
        ],
        "models": {
            name: {
                name: {
                    "kind": "numeric",
                    "count": 3,
                    "missing": 0,
                    "mean": 1.0,
                    "std": 0.5,
                    "drift_score": 0.1,
                }
            }
        },
    }
    text = render(*status_tables(report, now_ms=1000.0))
    assert text.count(shown(name)) >= 4 and "\x1b" not in text and "\r" not in text


@pytest.mark.parametrize("name", HOSTILE, ids=repr)
def test_alert_lines_print_hostile_names_literally(name):
    evidence = {"topic": name, "partition": 0, "from_offset": 1, "to_offset": 2}
    alert = {
        "id": name,
        "time": "t",
        "subject": f"{name}/{name}",
        "data": {
            "kind": "feature",
            "detector": name,
            "severity": "high",
            "effect_size": 1.0,
            "test": name,
            "p_value": 0.01,
            "reference": {},
            "current": {},
            "evidence": evidence,
        },
    }
    text = render(format_alert(alert))
    assert text.count(shown(name)) >= 5 and "\x1b" not in text


@pytest.mark.parametrize(
    "junk", [[1, 2], {"data": 3}, {"data": {"kind": "[/bold]"}}, "x"], ids=repr
)
def test_a_message_without_an_alerts_shape_is_shown_not_fatal(junk):
    assert "not an alert" in render(format_alert(junk))


@pytest.mark.parametrize("name", HOSTILE, ids=repr)
def test_baseline_tables_print_hostile_names_literally(name):
    builder = BaselineBuilder(max_categories=10)
    builder.add_columns({name: [1.0, 2.0, 3.0], "c": [name, name, "b"]}, 3)
    baseline = builder.build(name, name, source=name)
    row = {
        "model": name,
        "version": name,
        "revision": 1,
        "rows": 3,
        "numeric": 1,
        "categorical": 1,
        "source": name,
        "created_at": 0,
    }
    text = render(profile_table(baseline), baselines_table([row]))
    assert text.count(shown(name)) >= 4 and "\x1b" not in text


def test_status_and_baseline_commands_print_hostile_names(redis_server, redis_client, tmp_path):
    """The commands themselves, against the session Redis: names that crashed Rich before."""
    group, model = f"hostile-{uuid.uuid4().hex[:8]}", f"fraud[/bold]{uuid.uuid4().hex[:6]}"
    layout = KeyLayout(group)
    redis_client.sadd(layout.partitions_key, "[red]topic:0")
    redis_client.hset(
        layout.keys("[red]topic", 0)[0],
        mapping={"worker": "[link=x]w\x1b[2J", "epoch": 1, "offset": 3},
    )
    status = streamdrift(["status", "--redis-url", redis_server.url, "--group-id", group], {})
    assert status.returncode == 0, status.stderr
    assert (
        "[red]topic" in status.stdout
        and "[link=x]w\\x1b[2J" in status.stdout
        and "\x1b" not in status.stdout
    )

    data = tmp_path / "train.jsonl"
    data.write_text(
        "\n".join(json.dumps({"features": {"[red]x": i, "c": "\x1b[31m"}}) for i in range(20))
    )
    redis = ["--redis-url", redis_server.url]
    built = streamdrift(
        ["baseline", "build", "-m", model, "-v", "[link=v]", "--from", str(data), *redis], {}
    )
    assert built.returncode == 0, built.stderr
    assert (
        f"stored as {model}/[link=v]" in built.stdout
        and "[red]x" in built.stdout
        and "\\x1b[31m" in built.stdout
    )
    listed = streamdrift(["baseline", "list", "-m", model, *redis], {})
    assert listed.returncode == 0 and model in listed.stdout and "[link=v]" in listed.stdout
    shown_ = streamdrift(["baseline", "show", "-m", model, "-v", "[link=v]", *redis], {})
    assert shown_.returncode == 0 and "[red]x" in shown_.stdout and "\x1b" not in shown_.stdout
    assert (
        streamdrift(["baseline", "delete", "-m", model, "-v", "[link=v]", *redis], {}).returncode
        == 0
    )
