"""``streamdrift`` command line: worker, demo, simulate, status, alerts, incidents, baseline,
report."""

from __future__ import annotations

import json
import os
import signal
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, NoReturn

import typer
from pydantic import ValidationError
from pydantic_settings import SettingsError
from rich.console import Console
from rich.table import Table

from streamdrift.streams.ops.tail import EVIDENCE_LEGEND, format_alert, number_text
from streamdrift.streams.security import (
    confluent_config,
    masked,
    printable,
    scrub,
    secret_values,
    settings_errors,
    visible,
)
from streamdrift.streams.settings import Settings

if TYPE_CHECKING:  # the module imports confluent-kafka: only the commands that use Kafka load it
    from streamdrift.streams.kafka.admin import KafkaUnreachable


class _FlagsTakeNoValue:
    """Help that shows a flag as a flag: the installed Typer's rich help prints ``<bool>`` after
    every flag (``--json <bool>``, even ``--help <bool>``) although a flag takes no value. An
    empty metavar leaves that column blank; parsing is unchanged."""

    def get_params(self, ctx: Any) -> list[Any]:
        params = super().get_params(ctx)  # type: ignore[misc]
        for param in params:
            if getattr(param, "is_flag", False) and param.metavar is None:
                param.metavar = ""
        return params


class _Command(_FlagsTakeNoValue, typer.core.TyperCommand):
    pass


class _Group(_FlagsTakeNoValue, typer.core.TyperGroup):
    pass


class _Typer(typer.Typer):
    """A Typer whose commands and groups show flags as flags (:class:`_FlagsTakeNoValue`)."""

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(cls=_Group, **kwargs)

    def command(self, *args: Any, **kwargs: Any) -> Any:
        kwargs.setdefault("cls", _Command)
        return super().command(*args, **kwargs)


app = _Typer(
    help="Kafka-native drift detection for ML models in production.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_show_locals=False,
)
# No emoji codes: ":warning:" in a model name must print as typed, not as a symbol.
console = Console(emoji=False)
err = Console(stderr=True, emoji=False)


def version_text() -> str:
    """``streamdrift <version>``: of the installed distribution, else of the source tree."""
    from importlib.metadata import PackageNotFoundError, version

    try:
        return f"streamdrift {version('streamdrift')}"
    except PackageNotFoundError:  # run from a checkout that is not installed
        from streamdrift.streams import __version__

        return f"streamdrift {__version__} (not installed)"


def _print_version(value: bool) -> None:
    if value:
        sys.stdout.write(version_text() + "\n")
        raise typer.Exit()


@app.callback()
def _root(
    version: bool = typer.Option(
        False, "--version", callback=_print_version, is_eager=True, help="Show the version and exit"
    ),
) -> None:
    # The options of `streamdrift` itself, before any command.
    pass


#: Settings that a command-line option overrides, and the option (named in error messages).
FLAGS = {
    "kafka_bootstrap": "--bootstrap",
    "redis_url": "--redis-url",
    "group_id": "--group-id",
    "config": "--config",
}

#: The secrets of the settings this command loaded: scrubbed from every error message.
_secrets: list[str] = []

BootstrapOpt = typer.Option(
    None, "--bootstrap", "-b", help="Kafka bootstrap servers (env STREAMDRIFT_KAFKA_BOOTSTRAP)"
)
RedisOpt = typer.Option(None, "--redis-url", help="Redis URL (env STREAMDRIFT_REDIS_URL)")


def _settings(**overrides: Any) -> Settings:
    """The settings (environment, secrets dir, command-line ``overrides``); a bad one ends the
    command with one line per bad value, naming its variable (and flag), exit code 2."""
    given = {k: v for k, v in overrides.items() if v is not None}
    return _load_settings(given, {k: FLAGS[k] for k in given if k in FLAGS})


def _load_settings(overrides: dict[str, Any], flags: dict[str, str]) -> Settings:
    secrets_dir = os.environ.get("STREAMDRIFT_SECRETS_DIR")
    if secrets_dir and not Path(secrets_dir).is_dir():
        _invalid(
            [f"invalid setting STREAMDRIFT_SECRETS_DIR={printable(secrets_dir)}: no such directory"]
        )
    try:
        settings = Settings.load(**overrides)
    except ValidationError as exc:
        _invalid([printable(line) for line in settings_errors(exc, flags)])
    except (SettingsError, ValueError) as exc:  # e.g. a secrets dir pydantic cannot read
        _invalid(
            [
                "invalid configuration: "
                f"{printable(str(exc).splitlines()[0] if str(exc) else type(exc).__name__)}"
            ]
        )
    _secrets[:] = secret_values(settings)
    return settings


def _invalid(lines: list[str]) -> NoReturn:
    """Bad configuration: exit code 2, like a usage error."""
    for line in lines:
        err.print(f"[bold red]error:[/bold red] {line}", soft_wrap=True)
    err.print(
        "[yellow]what to do:[/yellow] fix or unset it; docs/configuration.md lists every "
        "STREAMDRIFT_* variable, `streamdrift COMMAND --help` every option",
        soft_wrap=True,
    )
    raise typer.Exit(2)


def _fail(message: str, hint: str, code: int = 1) -> NoReturn:
    """End the command with what went wrong and what to do: two lines, secrets masked.

    ``message`` may quote names from Kafka or files and library errors: printed literally
    (``soft_wrap``: one line each in a log, however long).
    """
    message, hint = printable(scrub(message, _secrets)), printable(scrub(hint, _secrets))
    err.print(f"[bold red]error:[/bold red] {message}", soft_wrap=True)
    err.print(f"[yellow]what to do:[/yellow] {hint}", soft_wrap=True)
    raise typer.Exit(code)


def _positive(value: float | None) -> float | None:
    """Typer callback: numbers that must be > 0 (typer's ``min`` includes the bound)."""
    if value is not None and not value > 0:  # also refuses nan
        raise typer.BadParameter(f"{value:g} is not greater than 0")
    return value


def _name(value: str | None) -> str | None:
    """Typer callback for --model / --version: as the events spell them (see
    STREAMDRIFT_MAX_NAME_LENGTH)."""
    if value is not None and (not value or not value.isprintable()):
        raise typer.BadParameter(
            f"{visible(repr(value))} is not a model name: 1 or more printable characters"
        )
    return value


def _check_name_length(settings: Settings, **names: str | None) -> None:
    for flag, value in names.items():
        if value is not None and len(value) > settings.max_name_length:
            raise typer.BadParameter(
                f"{len(value)} characters, longer than any monitored name "
                f"(STREAMDRIFT_MAX_NAME_LENGTH={settings.max_name_length})",
                param_hint=f"'--{flag}'",
            )


def check_kafka(settings: Settings, timeout: float = 10.0) -> set[str]:
    """Topics of the cluster; exits with a clear message if it cannot be reached, refuses the
    login or the TLS handshake fails (told at once: librdkafka would retry them forever)."""
    from streamdrift.streams.kafka.admin import ClientConfigError, KafkaUnreachable, cluster_topics

    try:
        return cluster_topics(confluent_config(settings), timeout)
    except ClientConfigError as exc:
        _fail(*_client_config_problem(exc))
    except KafkaUnreachable as exc:
        _fail(*_unreachable(exc, settings))


def _kafka_admin(settings: Settings, timeout: float) -> Any:
    """An admin client with the secured settings for the preflight's requests."""
    from streamdrift.streams.kafka.admin import ClientConfigError, checking_client

    try:
        return checking_client(confluent_config(settings), timeout)
    except ClientConfigError as exc:
        _fail(*_client_config_problem(exc))


def _client_config_problem(exc: Exception) -> tuple[str, str, int]:
    """librdkafka refused its configuration (e.g. an unreadable key): exit code 2, like a usage
    error."""
    return (
        f"cannot configure a Kafka client: {exc}",
        "check the STREAMDRIFT_KAFKA_* settings (`streamdrift config`)",
        2,
    )


def _unreachable(exc: KafkaUnreachable, settings: Settings) -> tuple[str, str]:
    """What went wrong and what to do when the cluster did not list its topics."""
    from streamdrift.streams.kafka.preflight import tls_hint

    bootstrap = settings.kafka_bootstrap
    if exc.why == "login":
        return (
            f"Kafka at {bootstrap} refused the login ({exc})",
            "check STREAMDRIFT_KAFKA_SASL_USERNAME, STREAMDRIFT_KAFKA_SASL_PASSWORD and "
            "STREAMDRIFT_KAFKA_SASL_MECHANISM, and that the user exists on the brokers",
        )
    if exc.why == "tls":
        return f"TLS with Kafka at {bootstrap} failed ({exc})", tls_hint(str(exc), settings)
    return (
        f"cannot reach Kafka at {bootstrap} ({exc})",
        "check STREAMDRIFT_KAFKA_BOOTSTRAP (or --bootstrap), that the broker is running, that "
        "its advertised listener is reachable from here, and STREAMDRIFT_KAFKA_SECURITY_PROTOCOL",
    )


def check_redis(settings: Settings) -> None:
    import redis

    try:
        settings.redis_client(asynchronous=False, socket_connect_timeout=5).ping()
    except (
        ValueError
    ) as exc:  # the settings validate the URL; this catches what redis-py adds later
        _fail(
            f"STREAMDRIFT_REDIS_URL / --redis-url {settings.redis_url_redacted}: {exc}",
            "it must look like redis://[:password@]host:port/db or rediss://… (TLS)",
            code=2,
        )
    except redis.RedisError as exc:
        _fail(
            f"cannot reach Redis at {settings.redis_url_redacted} ({exc})",
            "check STREAMDRIFT_REDIS_URL (or --redis-url), that Redis is running and the password "
            "is right; for rediss:// (TLS), that ssl_ca_certs= names the CA that signed Redis' "
            "certificate (and ssl_certfile= / ssl_keyfile= if Redis requires client certificates)",
        )


@app.command()
def worker(
    bootstrap: str | None = BootstrapOpt,
    redis_url: str | None = RedisOpt,
    config: Path | None = typer.Option(
        None, "--config", "-c", help="Detector config YAML (env STREAMDRIFT_CONFIG)"
    ),
    create_topics: bool = typer.Option(
        False, help="Create missing topics (for local use; production topics are managed)"
    ),
    partitions: int = typer.Option(
        8, min=1, help="Partitions for topics created with --create-topics"
    ),
) -> None:
    """Run a drift-detection worker (a Faust worker in the consumer group).

    All settings come from STREAMDRIFT_* environment variables (docs/configuration.md); options override them.
    """  # noqa: E501
    settings = _settings(kafka_bootstrap=bootstrap, redis_url=redis_url, config=config)
    # a bad file is refused before any connection
    mapped = _detector_config(settings, from_flag=config is not None)
    _check_libraries()
    _check_kernels(settings)
    existing = check_kafka(settings)
    # the broker's protocol and the worker's permissions (streams.kafka.preflight)
    _preflight(settings, mapped)
    check_redis(settings)
    wanted = {settings.input_topic, settings.labels_topic, settings.alert_topic, settings.dlq_topic}
    missing = wanted - existing
    if missing and create_topics:
        from streamdrift.streams.kafka.admin import TopicAdminError
        from streamdrift.streams.kafka.admin import create_topics as create

        try:  # with the same security settings as every other client
            create(
                settings.kafka_bootstrap,
                {name: partitions for name in missing},
                config=confluent_config(settings),
            )
        except TopicAdminError as exc:
            reason = str(exc).splitlines()[0].removesuffix(" Is a Kafka broker running there?")
            _fail(
                reason,
                "create the topics with your usual tool (docs/own-kafka.md), or grant the worker's "
                "principal CREATE on them",
            )
    elif missing:
        _fail(
            f"topics {sorted(missing)} do not exist on {settings.kafka_bootstrap}",
            "create them, or pass --create-topics",
        )
    absent = sorted(set(mapped) - existing)
    if absent:  # the users' own topics: never created here
        _fail(
            f"the mapped input topics {absent} (the configuration's inputs) do not exist on "
            f"{settings.kafka_bootstrap}",
            "check the topic names under inputs, or create the topics where their producers write",
        )

    from streamdrift.streams.kafka.app import run_worker

    run_worker(settings)


def _preflight(settings: Settings, mapped: Sequence[str] = (), timeout: float = 10.0) -> None:
    """Log the broker's protocol level; end the command if it lacks an API the worker needs or
    the worker's principal lacks a permission (``streams.kafka.preflight``)."""
    from streamdrift.streams.kafka import preflight

    try:
        lines = preflight.run(settings, _kafka_admin(settings, timeout), timeout, mapped)
    except preflight.PreflightError as exc:
        _fail(exc.message, exc.hint, exc.code)
    for line in lines:
        err.print(printable(scrub(line, _secrets)), soft_wrap=True, highlight=False)


def _check_libraries() -> None:
    """The worker relies on internals of faust-streaming and aiokafka (streams.kafka.compat)."""
    from streamdrift.streams.kafka import compat

    try:
        compat.check()
    except compat.IncompatibleLibrary as exc:
        _fail(exc.problem, exc.remedy)


def _check_kernels(settings: Settings) -> None:
    """STREAMDRIFT_KERNELS=compiled: the compiled kernels must be installed (and of this
    version), or the worker does not start."""
    from streamdrift.detectors import kernels

    try:
        kernels.use(settings.kernels)
    except kernels.KernelsUnavailable as exc:
        _fail(exc.problem, exc.remedy)


def _detector_config(settings: Settings, from_flag: bool) -> list[str]:
    """Check the configuration file; return the mapped input topics it lists."""
    from streamdrift.streams.kafka.app import load_config
    from streamdrift.streams.kafka.registry import check_wire_inputs
    from streamdrift.streams.pipeline.inputs import input_specs

    try:
        config = load_config(settings.config)
        try:
            specs = input_specs(config, reserved=settings.own_topics())
            check_wire_inputs(settings, specs)
            return [spec.topic for spec in specs]
        except ValueError as exc:
            raise SystemExit(f"invalid STREAMDRIFT_CONFIG={settings.config}: {exc}") from None
    except SystemExit as exc:
        where = "--config / STREAMDRIFT_CONFIG" if from_flag else "STREAMDRIFT_CONFIG"
        _fail(
            str(exc.code),
            f"fix the file named by {where} (docs/configuration.md: Detector configuration)",
            code=2,
        )


@app.command()
def simulate(
    bootstrap: str | None = BootstrapOpt,
    rate: float = typer.Option(2000.0, callback=_positive, help="Events per second"),
    duration: float | None = typer.Option(
        None, callback=_positive, help="Stop after this many seconds"
    ),
    max_events: int | None = typer.Option(None, min=1, help="Stop after this many events"),
    drift_at: int = typer.Option(
        20_000, min=0, help="Event index at which the scheduled drift starts"
    ),
    batch_size: int = typer.Option(
        1, min=1, help="Events per Kafka message (1 = single-event messages)"
    ),
    seed: int = typer.Option(7, min=0, help="Random seed (the stream is deterministic per seed)"),
) -> None:
    """Produce simulated prediction events (with a scheduled drift) and labels to Kafka."""
    # before the heavy imports: a bad setting is told at once
    settings = _settings(kafka_bootstrap=bootstrap)
    from streamdrift.streams.dev.simulate import Scenario, run

    check_kafka(settings)
    scenario = Scenario(rate=rate, drift_at=drift_at, batch_size=batch_size, seed=seed)
    if duration is None and max_events is None:
        err.print("[dim]no --duration/--max-events: producing until Ctrl-C[/dim]")
    security = {k: v for k, v in confluent_config(settings).items() if k != "bootstrap.servers"}
    counts = run(
        settings.kafka_bootstrap,
        scenario,
        settings.input_topic,
        settings.labels_topic,
        duration_s=duration,
        max_events=max_events,
        producer_config=security,
    )
    console.print(f"produced {printable(counts)}")


@app.command()
def status(
    redis_url: str | None = RedisOpt,
    group_id: str | None = typer.Option(
        None, help="Consumer group / app id (env STREAMDRIFT_GROUP_ID)"
    ),
    as_json: bool = typer.Option(False, "--json", help="Print JSON for scripts"),
) -> None:
    """Show partitions (owner, epoch, offset, checkpoint age) and per-(model, feature) state from Redis."""  # noqa: E501
    settings = _settings(redis_url=redis_url, group_id=group_id)  # before the heavy imports
    from streamdrift.streams.ops.status import read_status

    check_redis(settings)
    report = read_status(settings.redis_client(asynchronous=False), settings.group_id)
    if as_json:
        sys.stdout.write(json.dumps(report, indent=2, default=str) + "\n")
        return
    if not report["partitions"]:
        console.print(f"no checkpoints for group {printable(repr(settings.group_id))} in Redis yet")
        return
    for table in status_tables(report, time.time() * 1000):
        console.print(table)


def status_tables(report: dict[str, Any], now_ms: float) -> list[Table]:
    """The partitions and the monitored series of ``read_status``'s report, as printed.

    Every name is printed literally (``printable``): topics, workers, models and features come
    from whoever can write to Kafka.
    """
    table = Table(title=f"partitions of group {printable(repr(report['group_id']))}")
    for column in (
        "topic",
        "partition",
        "worker",
        "epoch",
        "next offset",
        "events",
        "checkpoint age",
    ):
        table.add_column(column)
    for p in report["partitions"]:
        updated = p.get("updated_at")
        age = f"{(now_ms - updated) / 1000:.1f}s" if isinstance(updated, (int, float)) else "never"
        table.add_row(
            *map(
                printable,
                (
                    p["topic"],
                    p["partition"],
                    p.get("worker", ""),
                    p.get("epoch", ""),
                    p.get("offset", ""),
                    p.get("events", 0),
                    age,
                ),
            )
        )
    features = Table(title="monitored series")
    for column in (
        "model",
        "feature",
        "kind",
        "count",
        "missing",
        "mean",
        "std",
        "drift score",
        "episodes",
    ):
        features.add_column(column)
    for model, series in report["models"].items():
        for feature, s in series.items():
            episodes = sum(p.get("episodes", 0) for p in s.get("partitions", []))
            names = map(printable, (model, feature, s["kind"], s["count"], s["missing"]))
            features.add_row(
                *names,
                number_text(s.get("mean")),
                number_text(s.get("std")),
                number_text(s.get("drift_score")),
                str(episodes),
            )
    return [table, features]


@app.command()
def alerts(
    bootstrap: str | None = BootstrapOpt,
    from_beginning: bool = typer.Option(
        True, help="Start at the oldest alert (else only new ones)"
    ),
    follow: bool = typer.Option(True, help="Keep waiting for new alerts"),
    max_alerts: int | None = typer.Option(None, "--max", min=1, help="Stop after this many alerts"),
    as_json: bool = typer.Option(False, "--json", help="Print each alert as one JSON line"),
) -> None:
    """Tail the alert topic."""
    from streamdrift.streams.ops.tail import tail_alerts

    settings = _settings(kafka_bootstrap=bootstrap)
    check_kafka(settings)
    try:

        def skipped(where: str) -> None:
            err.print(f"[yellow]skipped a message that is not JSON:[/yellow] {printable(where)}")

        shown = 0
        for alert in tail_alerts(
            confluent_config(settings),
            settings.alert_topic,
            from_beginning,
            follow,
            max_alerts,
            on_unreadable=skipped,
        ):
            if as_json:
                sys.stdout.write(json.dumps(alert) + "\n")
                sys.stdout.flush()
                continue
            if not shown:
                console.print(EVIDENCE_LEGEND)
            shown += 1
            console.print(format_alert(alert))
    except RuntimeError as exc:  # the consumer's error, e.g. the topic is not readable
        _fail(str(exc), "check the broker, STREAMDRIFT_ALERT_TOPIC and the Kafka credentials")


@app.command()
def incidents(
    incident: str | None = typer.Argument(
        None, help="Show this incident in full (its id, or the start of it)"
    ),
    model: str | None = typer.Option(None, help="Only this model's incidents"),
    bootstrap: str | None = BootstrapOpt,
    as_json: bool = typer.Option(False, "--json", help="Print JSON for scripts"),
) -> None:
    """List the incidents on the alert topic, newest first, each as it stands now; or show one."""
    from streamdrift.streams.ops.incidents import (
        incident_detail,
        incidents_table,
        latest_incidents,
    )
    from streamdrift.streams.ops.tail import read_alerts

    settings = _settings(kafka_bootstrap=bootstrap)
    _check_name_length(settings, model=model)
    check_kafka(settings)
    try:
        found = latest_incidents(
            read_alerts(confluent_config(settings), settings.alert_topic), model
        )
    except (RuntimeError, TimeoutError) as exc:
        _fail(str(exc), "check the broker, STREAMDRIFT_ALERT_TOPIC and the Kafka credentials")
    if incident is not None:
        found = [m for m in found if m["data"]["incident"].startswith(incident.lower())]
        if len(found) != 1:
            _fail(
                f"{'no' if not found else len(found)} incidents match {printable(incident)!r}",
                "run `streamdrift incidents` to list them, and give more of the id",
            )
    if as_json:
        shown: Any = found[0] if incident is not None else found
        sys.stdout.write(json.dumps(shown, indent=2) + "\n")
        return
    if incident is not None:
        for part in incident_detail(found[0]):
            console.print(part)
    elif not found:
        console.print(
            "no incidents on the alert topic"
            + (f" for model {printable(model)!r}" if model else "")
        )
    else:
        console.print(incidents_table(found))


@app.command("config")
def show_config(
    as_json: bool = typer.Option(False, "--json", help="Print JSON for scripts"),
) -> None:
    """Show the effective settings (environment, secrets dir, defaults) with secrets masked."""
    shown = masked(_settings())
    if as_json:
        sys.stdout.write(json.dumps(shown, indent=2) + "\n")
        return
    table = Table(title="effective settings")
    table.add_column("variable")
    table.add_column("value")
    for name, value in shown.items():
        table.add_row(f"STREAMDRIFT_{name.upper()}", printable(value))
    console.print(table)


@app.command()
def demo(
    duration: float | None = typer.Option(
        None, callback=_positive, help="Stop after this many seconds (default: until Ctrl-C)"
    ),
    rate: float = typer.Option(2000.0, callback=_positive, help="Simulated events per second"),
    drift_at: int = typer.Option(30_000, min=0, help="Event index at which the drift starts"),
    keep: bool = typer.Option(
        False,
        "--keep",
        help="Keep the broker and Redis running at the end (and the demo's "
        "temporary directory), to try `status`, `alerts` and `report` against them",
    ),
) -> None:
    """Start an embedded broker and Redis, a worker and a drifting simulator; show alerts live.

    Its files live in a temporary directory, removed at the end unless --keep is given.
    """
    from streamdrift.streams.dev.demo import run_demo

    # The demo's worker inherits the environment, except the addresses the demo sets itself:
    # refuse a bad STREAMDRIFT_* now, not after starting the servers.
    _load_settings(
        {
            "kafka_bootstrap": "127.0.0.1:9092",
            "redis_url": "redis://127.0.0.1:6379/0",
            "metrics_port": 9464,
        },
        flags={},
    )

    signal.signal(signal.SIGTERM, signal.default_int_handler)  # stop cleanly on SIGTERM too
    run_demo(console, duration=duration, rate=rate, drift_at=drift_at, keep=keep)


# -- reference baselines ---------------------------------------------------------------------

baseline_app = _Typer(
    help="Reference baselines per model version, stored in Redis and used by every worker "
    "automatically.",
    no_args_is_help=True,
)
app.add_typer(baseline_app, name="baseline")
ModelOpt = typer.Option(
    ..., "--model", "-m", callback=_name, help="Model name, as in the events' `model`"
)
VersionOpt = typer.Option(
    None,
    "--version",
    "-v",
    callback=_name,
    help="Model version, as in the events' `model_version` (omit: events without one)",
)


def _baseline_store(redis_url: str | None, **names: str | None) -> Any:
    settings = _settings(redis_url=redis_url)  # before the heavy imports
    _check_name_length(settings, **names)
    from streamdrift.streams.state.baselines import BaselineStore

    check_redis(settings)
    return BaselineStore(settings.redis_client(asynchronous=False))


def _show_profile(baseline: Any) -> None:
    console.print(profile_table(baseline))


def profile_table(baseline: Any) -> Table:
    """A baseline feature by feature; names and categories (from training data) printed
    literally."""
    summary = baseline.summary()
    title = (
        f"baseline of {baseline.model} version {baseline.version or '(none)'}: {baseline.rows} rows"
    )
    table = Table(title=printable(title))
    for column in ("feature", "kind", "count", "missing", "mean", "std", "p50 / top"):
        table.add_column(column)
    for name, f in summary["features"].items():
        middle = (
            number_text(f.get("p50"))
            if f["kind"] == "numeric"
            else ", ".join(map(str, list(f["top"])[:3]))
        )
        table.add_row(
            *map(printable, (name, f["kind"], f["count"], f["missing"])),
            number_text(f.get("mean")),
            number_text(f.get("std")),
            printable(middle),
        )
    return table


def _store_baseline(store: Any, baseline: Any) -> None:
    """Show the profile; store it unless ``store`` is None (a dry run)."""
    _show_profile(baseline)
    if store is None:
        console.print("[yellow]--dry-run: not stored[/yellow]")
        return
    revision = store.put(baseline)
    console.print(
        f"stored as [bold]{printable(baseline.model)}/{printable(baseline.version or '-')} "
        f"r{revision}[/bold]; workers use it within STREAMDRIFT_BASELINE_REFRESH_S"
    )


@baseline_app.command("build")
def baseline_build(
    model: str = ModelOpt,
    version: str | None = VersionOpt,
    source: Path = typer.Option(
        ..., "--from", exists=True, dir_okay=False, help="Training data: .csv, .jsonl or .parquet"
    ),
    exclude: list[str] = typer.Option(
        [],
        "--exclude",
        "-x",
        help="Columns that are not features (labels, ids); repeat or comma-separate",
    ),
    prediction: str | None = typer.Option(
        None,
        "--prediction-column",
        help="Column holding the model's output (monitored as `prediction`)",
    ),
    max_categories: int = typer.Option(
        200,
        min=1,
        help="Most distinct values of a categorical feature (as "
        "STREAMDRIFT_MAX_CATEGORIES_PER_FEATURE)",
    ),
    dry_run: bool = typer.Option(False, "--dry-run", help="Show the profile without storing it"),
    redis_url: str | None = RedisOpt,
) -> None:
    """Build a baseline from training data (sketches and counts per feature, never raw rows) and store it."""  # noqa: E501
    from rich.progress import Progress

    from streamdrift.detectors import BaselineBuilder
    from streamdrift.streams.ops.datafiles import DataFileError, read_columns

    store = None if dry_run else _baseline_store(redis_url, model=model, version=version)
    excluded = frozenset(
        name.strip() for item in exclude for name in item.split(",") if name.strip()
    )
    builder = BaselineBuilder(max_categories=max_categories)
    try:
        with Progress(console=err, transient=True) as progress:
            task = progress.add_task(f"reading {printable(source.name)}", total=None)
            for rows, columns in read_columns(source, exclude=excluded, prediction=prediction):
                builder.add_columns(columns, rows)
                progress.update(
                    task, description=f"reading {printable(source.name)}: {builder.rows:,} rows"
                )
    except (DataFileError, ValueError) as exc:
        _fail(str(exc), "fix the file, or leave the column out with --exclude")
    if not builder.rows:
        _fail(f"{source} has no rows", "point --from at the training data")
    _store_baseline(store, builder.build(model, version, source=source.name))


@baseline_app.command("upload")
def baseline_upload(
    source: Path = typer.Option(
        ..., "--from", exists=True, dir_okay=False, help="JSON document of precomputed statistics"
    ),
    dry_run: bool = typer.Option(False, "--dry-run", help="Show the profile without storing it"),
    redis_url: str | None = RedisOpt,
) -> None:
    """Store a baseline from precomputed statistics (counts, moments, quantiles, category counts; see docs/baselines.md)."""  # noqa: E501
    from streamdrift.detectors import baseline_from_statistics

    try:
        baseline = baseline_from_statistics(source.read_bytes(), source=source.name)
    except ValueError as exc:
        _fail(f"{source}: {exc}", "see the statistics document format in docs/baselines.md")
    _store_baseline(None if dry_run else _baseline_store(redis_url), baseline)


@baseline_app.command("freeze")
def baseline_freeze(
    model: str = ModelOpt,
    version: str | None = VersionOpt,
    group_id: str | None = typer.Option(
        None, help="Consumer group / app id (env STREAMDRIFT_GROUP_ID)"
    ),
    redis_url: str | None = RedisOpt,
) -> None:
    """Store what the workers have seen of this model version so far as its baseline."""
    settings = _settings(redis_url=redis_url, group_id=group_id)
    store = _baseline_store(redis_url, model=model, version=version)
    from streamdrift.streams.state.baselines import freeze_baseline

    try:
        baseline = freeze_baseline(
            store.client, settings.group_id, model, version, source=f"stream:{settings.group_id}"
        )
    except LookupError as exc:
        _fail(
            str(exc),
            "check --model/--version and --group-id (STREAMDRIFT_GROUP_ID); `streamdrift status` "
            "lists what is monitored",
        )
    _store_baseline(store, baseline)


@baseline_app.command("list")
def baseline_list(
    model: str | None = typer.Option(None, "--model", "-m", callback=_name, help="Only this model"),
    as_json: bool = typer.Option(False, "--json", help="Print JSON for scripts"),
    redis_url: str | None = RedisOpt,
) -> None:
    """List stored baselines (model, version, revision, rows, features, source)."""
    rows = _baseline_store(redis_url, model=model).list(model)
    if as_json:
        sys.stdout.write(json.dumps(rows, indent=2) + "\n")
        return
    if not rows:
        console.print("no baselines stored yet: `streamdrift baseline build --help`")
        return
    console.print(baselines_table(rows))


def baselines_table(rows: list[dict[str, Any]]) -> Table:
    """``BaselineStore.list`` as printed; names and sources printed literally."""
    table = Table(title="baselines")
    for column in (
        "model",
        "version",
        "revision",
        "rows",
        "numeric",
        "categorical",
        "source",
        "created",
    ):
        table.add_column(column)
    for r in rows:
        created = time.strftime("%Y-%m-%d %H:%M:%S", time.gmtime(r["created_at"]))
        table.add_row(
            *map(
                printable,
                (
                    r["model"],
                    r["version"] or "-",
                    r["revision"],
                    r["rows"],
                    r["numeric"],
                    r["categorical"],
                    r["source"],
                    created,
                ),
            )
        )
    return table


@baseline_app.command("show")
def baseline_show(
    model: str = ModelOpt,
    version: str | None = VersionOpt,
    as_json: bool = typer.Option(False, "--json", help="Print JSON for scripts"),
    redis_url: str | None = RedisOpt,
) -> None:
    """Show one stored baseline, feature by feature."""
    store = _baseline_store(redis_url, model=model, version=version)
    baseline = store.get(model, version)
    if baseline is None:
        _fail(
            f"no baseline of {model} version {version or '(none)'}",
            "`streamdrift baseline list` shows what is stored",
        )
    if as_json:
        sys.stdout.write(json.dumps(baseline.summary(), indent=2) + "\n")
        return
    _show_profile(baseline)
    console.print(f"revision {baseline.revision}, from {printable(baseline.source)}")


@baseline_app.command("delete")
def baseline_delete(
    model: str = ModelOpt, version: str | None = VersionOpt, redis_url: str | None = RedisOpt
) -> None:
    """Delete a stored baseline (series already seeded with it keep their reference)."""
    if not _baseline_store(redis_url, model=model, version=version).delete(model, version):
        _fail(
            f"no baseline of {model} version {version or '(none)'}",
            "`streamdrift baseline list` shows what is stored",
        )
    console.print(
        f"deleted the baseline of {printable(model)} version {printable(version or '(none)')}"
    )


@app.command()
def report(
    model: str = ModelOpt,
    out: Path = typer.Option(
        Path("report.html"), "--out", "-o", dir_okay=False, help="HTML file to write"
    ),
    group_id: str | None = typer.Option(
        None, help="Consumer group / app id (env STREAMDRIFT_GROUP_ID)"
    ),
    redis_url: str | None = RedisOpt,
    bootstrap: str | None = BootstrapOpt,
    no_alerts: bool = typer.Option(
        False,
        "--no-alerts",
        help="Do not read the alert topic (e.g. Kafka is not reachable from here)",
    ),
) -> None:
    """Write a self-contained HTML report of a model: per feature, reference vs current
    distribution, drift score over time and alerts (static: opens offline, no server)."""
    settings = _settings(redis_url=redis_url, group_id=group_id, kafka_bootstrap=bootstrap)
    _check_name_length(settings, model=model)
    _check_writable(out)  # all before the heavy imports and any connection
    from streamdrift.streams.ops.incidents import latest_incidents
    from streamdrift.streams.ops.report import load_series, render_report, select_alerts
    from streamdrift.streams.ops.tail import read_alerts
    from streamdrift.streams.state.history import read_history

    check_redis(settings)
    client = settings.redis_client(asynchronous=False)
    series, unreadable = load_series(client, settings.group_id, model)
    points = read_history(client, settings.group_id, model)
    alerts, incidents = None, []
    if not no_alerts:
        try:
            check_kafka(settings)
        except typer.Exit:
            err.print("[yellow]or:[/yellow] pass --no-alerts for a report without the alerts")
            raise
        try:
            messages = read_alerts(confluent_config(settings), settings.alert_topic)
            alerts = select_alerts(messages, model)
            incidents = latest_incidents(messages, model)
        except (RuntimeError, TimeoutError) as exc:
            _fail(str(exc), "check the broker and STREAMDRIFT_ALERT_TOPIC, or pass --no-alerts")
    if not (series or points or alerts):
        _fail(
            f"nothing about model {model!r} in group {settings.group_id!r}",
            "check --model and --group-id (STREAMDRIFT_GROUP_ID); `streamdrift status` lists the "
            "monitored models",
        )
    try:
        out.write_text(
            render_report(
                model,
                settings.group_id,
                series,
                points,
                alerts,
                time.time(),
                unreadable,
                incidents,
            ),
            encoding="utf-8",
        )
    except OSError as exc:  # e.g. the disk filled up while the report was read
        _fail(f"cannot write {out}: {exc.strerror or exc}", "choose another --out")
    features = len({s.feature for s in series})
    console.print(
        f"wrote {printable(out)}: {features} features, {len(points)} history samples, "
        f"{'alerts not read' if alerts is None else f'{len(alerts)} alerts'}"
        f"{f', {len(incidents)} incidents' if incidents else ''}"
    )


def _check_writable(out: Path) -> None:
    """--out must name a file in an existing, writable directory: checked before the report is
    read (minutes of Redis and Kafka reads), not when it is written."""
    folder = out.parent
    if not folder.is_dir():
        raise typer.BadParameter(
            f"directory {visible(folder)} does not exist", param_hint="'--out' / '-o'"
        )
    if not os.access(folder, os.W_OK):
        raise typer.BadParameter(
            f"directory {visible(folder)} is not writable", param_hint="'--out' / '-o'"
        )


def main() -> None:
    app()


if __name__ == "__main__":
    main()
