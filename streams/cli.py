"""``streamdrift`` command line: worker, demo, simulate, status, alerts."""

from __future__ import annotations

import json
import signal
import sys
import time
from pathlib import Path
from typing import Any, Optional

import typer
from rich.console import Console
from rich.table import Table

from streams.security import confluent_config, masked
from streams.settings import Settings

app = typer.Typer(
    help="Kafka-native drift detection for ML models in production.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_show_locals=False,
)
console = Console()
err = Console(stderr=True)

BootstrapOpt = typer.Option(None, "--bootstrap", "-b", help="Kafka bootstrap servers [env STREAMDRIFT_KAFKA_BOOTSTRAP]")
RedisOpt = typer.Option(None, "--redis-url", help="Redis URL [env STREAMDRIFT_REDIS_URL]")


def _settings(**overrides: Any) -> Settings:
    try:
        return Settings.load(**{k: v for k, v in overrides.items() if v is not None})
    except ValueError as exc:
        err.print(f"[red]invalid configuration:[/red] {exc}")
        raise typer.Exit(2) from None


def _fail(message: str, hint: str) -> None:
    err.print(f"[bold red]error:[/bold red] {message}\n[yellow]what to do:[/yellow] {hint}")
    raise typer.Exit(1)


def check_kafka(settings: Settings, timeout: float = 10.0) -> set[str]:
    """Topics of the cluster; exits with a clear message if it cannot be reached."""
    import logging

    from confluent_kafka.admin import AdminClient

    bootstrap = settings.kafka_bootstrap
    quiet = logging.getLogger("streamdrift.kafka-check")  # librdkafka retries loudly while the broker is down
    quiet.setLevel(logging.CRITICAL)
    admin = AdminClient({**confluent_config(settings), "socket.timeout.ms": int(timeout * 1000), "logger": quiet})
    try:
        return set(admin.list_topics(timeout=timeout).topics)
    except Exception as exc:  # confluent-kafka raises KafkaException with a transport error
        _fail(
            f"cannot reach Kafka at {bootstrap} ({exc})",
            "check STREAMDRIFT_KAFKA_BOOTSTRAP (or --bootstrap), that the broker is running, that "
            "its advertised listener is reachable from here, and STREAMDRIFT_KAFKA_SECURITY_PROTOCOL",
        )
        raise  # unreachable, _fail exits


def check_redis(settings: Settings) -> None:
    import redis

    try:
        settings.redis_client(asynchronous=False, socket_connect_timeout=5).ping()
    except redis.RedisError as exc:
        _fail(
            f"cannot reach Redis at {settings.redis_url_redacted} ({exc})",
            "check STREAMDRIFT_REDIS_URL (or --redis-url), that Redis is running and the password is right",
        )


@app.command()
def worker(
    bootstrap: Optional[str] = BootstrapOpt,
    redis_url: Optional[str] = RedisOpt,
    config: Optional[Path] = typer.Option(None, "--config", "-c", help="Detector config YAML [env STREAMDRIFT_CONFIG]"),
    create_topics: bool = typer.Option(False, help="Create missing topics (for local use; production topics are managed)"),
    partitions: int = typer.Option(8, help="Partitions for topics created with --create-topics"),
) -> None:
    """Run a drift-detection worker (a Faust worker in the consumer group).

    All settings come from STREAMDRIFT_* environment variables (see README); options override them.
    """
    settings = _settings(kafka_bootstrap=bootstrap, redis_url=redis_url, config=config)
    existing = check_kafka(settings)
    check_redis(settings)
    wanted = {settings.input_topic, settings.labels_topic, settings.alert_topic, settings.dlq_topic}
    missing = wanted - existing
    if missing and create_topics:
        from streams.embedded import create_topics as create

        create(settings.kafka_bootstrap, {name: partitions for name in missing})
    elif missing:
        _fail(f"topics {sorted(missing)} do not exist on {settings.kafka_bootstrap}", "create them, or pass --create-topics")

    from faust.worker import Worker

    from streams.app import create_app

    faust_app, _ = create_app(settings)
    Worker(faust_app, loglevel=settings.log_level, quiet=True).execute_from_commandline()


@app.command()
def simulate(
    bootstrap: Optional[str] = BootstrapOpt,
    rate: float = typer.Option(2000.0, help="Events per second"),
    duration: Optional[float] = typer.Option(None, help="Stop after this many seconds"),
    max_events: Optional[int] = typer.Option(None, help="Stop after this many events"),
    drift_at: int = typer.Option(20_000, help="Event index at which the scheduled drift starts"),
    batch_size: int = typer.Option(1, help="Events per Kafka message (1 = single-event messages)"),
    seed: int = typer.Option(7, help="Random seed (the stream is deterministic per seed)"),
) -> None:
    """Produce simulated prediction events (with a scheduled drift) and labels to Kafka."""
    from streams.simulate import Scenario, run

    settings = _settings(kafka_bootstrap=bootstrap)
    check_kafka(settings)
    scenario = Scenario(rate=rate, drift_at=drift_at, batch_size=batch_size, seed=seed)
    if duration is None and max_events is None:
        err.print("[dim]no --duration/--max-events: producing until Ctrl-C[/dim]")
    security = {k: v for k, v in confluent_config(settings).items() if k != "bootstrap.servers"}
    counts = run(
        settings.kafka_bootstrap, scenario, settings.input_topic, settings.labels_topic,
        duration_s=duration, max_events=max_events, producer_config=security,
    )
    console.print(f"produced {counts}")


@app.command()
def status(
    redis_url: Optional[str] = RedisOpt,
    group_id: Optional[str] = typer.Option(None, help="Consumer group / app id [env STREAMDRIFT_GROUP_ID]"),
    as_json: bool = typer.Option(False, "--json", help="Print JSON for scripts"),
) -> None:
    """Show partitions (owner, epoch, offset, checkpoint age) and per-(model, feature) state from Redis."""
    from streams.status import read_status

    settings = _settings(redis_url=redis_url, group_id=group_id)
    check_redis(settings)
    report = read_status(settings.redis_client(asynchronous=False), settings.group_id)
    if as_json:
        sys.stdout.write(json.dumps(report, indent=2, default=str) + "\n")
        return
    if not report["partitions"]:
        console.print(f"no checkpoints for group {settings.group_id!r} in Redis yet")
        return
    now_ms = time.time() * 1000
    table = Table(title=f"partitions of group {settings.group_id!r}")
    for column in ("topic", "partition", "worker", "epoch", "next offset", "events", "checkpoint age"):
        table.add_column(column)
    for p in report["partitions"]:
        age = f"{(now_ms - p['updated_at']) / 1000:.1f}s" if "updated_at" in p else "never"
        table.add_row(p["topic"], str(p["partition"]), str(p.get("worker", "")), str(p.get("epoch", "")),
                      str(p.get("offset", "")), str(p.get("events", 0)), age)
    console.print(table)
    features = Table(title="monitored series")
    for column in ("model", "feature", "kind", "count", "missing", "mean", "std", "drift score", "episodes"):
        features.add_column(column)
    for model, series in report["models"].items():
        for feature, s in series.items():
            episodes = sum(p.get("episodes", 0) for p in s.get("partitions", []))
            features.add_row(model, feature, s["kind"], str(s["count"]), str(s["missing"]), _num(s.get("mean")),
                             _num(s.get("std")), _num(s.get("drift_score")), str(episodes))
    console.print(features)


def _num(value: Any) -> str:
    return f"{value:.4g}" if isinstance(value, (int, float)) else "-"


@app.command()
def alerts(
    bootstrap: Optional[str] = BootstrapOpt,
    from_beginning: bool = typer.Option(True, help="Start at the oldest alert (else only new ones)"),
    follow: bool = typer.Option(True, help="Keep waiting for new alerts"),
    max_alerts: Optional[int] = typer.Option(None, "--max", help="Stop after this many alerts"),
    as_json: bool = typer.Option(False, "--json", help="Print each alert as one JSON line"),
) -> None:
    """Tail the alert topic."""
    from streams.tail import tail_alerts

    settings = _settings(kafka_bootstrap=bootstrap)
    check_kafka(settings)
    for alert in tail_alerts(confluent_config(settings), settings.alert_topic, from_beginning, follow, max_alerts):
        if as_json:
            sys.stdout.write(json.dumps(alert) + "\n")
            sys.stdout.flush()
        else:
            console.print(format_alert(alert))


def format_alert(alert: dict[str, Any]) -> str:
    d = alert["data"]
    what = "error rate" if d["kind"] == "performance" else "mean"
    key = "error_rate" if d["kind"] == "performance" else "mean"
    return (
        f"[bold red]DRIFT[/bold red] {alert['time']} [bold]{alert['subject']}[/bold] "
        f"({d['kind']}, {d['detector']}, severity {d['severity']}) effect {d['effect_size']:.2f}σ, "
        f"reference {what} {_num(d['reference'].get(key))} → current {_num(d['current'].get(key))}; "
        f"evidence {d['evidence']['topic']}[{d['evidence']['partition']}] "
        f"{d['evidence']['from_offset']}..{d['evidence']['to_offset']}  [dim]id {alert['id']}[/dim]"
    )


@app.command("config")
def show_config(as_json: bool = typer.Option(False, "--json", help="Print JSON for scripts")) -> None:
    """Show the effective settings (environment, secrets dir, defaults) with secrets masked."""
    shown = masked(_settings())
    if as_json:
        sys.stdout.write(json.dumps(shown, indent=2) + "\n")
        return
    table = Table(title="effective settings")
    table.add_column("variable")
    table.add_column("value")
    for name, value in shown.items():
        table.add_row(f"STREAMDRIFT_{name.upper()}", value)
    console.print(table)


@app.command()
def demo(
    duration: Optional[float] = typer.Option(None, help="Stop after this many seconds (default: until Ctrl-C)"),
    rate: float = typer.Option(2000.0, help="Simulated events per second"),
    drift_at: int = typer.Option(30_000, help="Event index at which the drift starts"),
) -> None:
    """Start an embedded broker and Redis, a worker and a drifting simulator; show alerts live."""
    from streams.demo import run_demo

    signal.signal(signal.SIGTERM, signal.default_int_handler)  # stop cleanly on SIGTERM too
    run_demo(console, duration=duration, rate=rate, drift_at=drift_at)


def main() -> None:
    app()


if __name__ == "__main__":
    main()
