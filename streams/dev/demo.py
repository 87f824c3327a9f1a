"""``streamdrift demo``: everything on one machine with nothing installed but this package.

Starts an embedded Tansu broker and redis-server on free loopback ports, creates the topics,
starts a worker and the drifting simulator as subprocesses, and prints alerts as they arrive.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import urllib.request
from contextlib import ExitStack
from pathlib import Path

from prometheus_client.parser import text_string_to_metric_families
from rich.console import Console

from streamdrift.streams.dev.embedded import (
    LOCAL_WORKER_ENV,
    EmbeddedBroker,
    EmbeddedRedis,
    EmbeddedServerError,
    WorkerProcess,
    free_port,
)
from streamdrift.streams.kafka.admin import create_topics
from streamdrift.streams.ops.tail import tail_alerts

PROGRESS_EVERY_S = 10.0
TOPICS = {"predictions": 4, "labels": 2, "drift-alerts": 1, "predictions.dlq": 1}


def run_demo(
    console: Console, duration: float | None, rate: float, drift_at: int, keep: bool = False
) -> None:
    """Run the demo until ``duration`` seconds of simulation have passed, the worker exits or
    Ctrl-C.

    Every file (logs, Redis' data, the worker's data directory) lives in one temporary
    directory, removed at the end: nothing is left in the working directory. With ``keep``,
    the broker, Redis and the worker keep running when the simulation ends (only the simulator
    stops), the closing lines give the ``status``, ``alerts`` and ``report`` commands to run
    against them, and a second Ctrl-C stops them and leaves the directory in place; without,
    the closing lines say what ``--keep`` gives.
    """
    workdir = Path(tempfile.mkdtemp(prefix="streamdrift-demo-"))
    try:
        # Processes stop before their files go; the worker stops (and checkpoints) before Redis.
        with ExitStack() as stack:
            with console.status("starting the embedded Kafka-compatible broker (Tansu)…"):
                broker = EmbeddedBroker(workdir=workdir / "broker").start()
                # memory-only broker: nothing to lose by a fast stop
                stack.callback(broker.stop, timeout=1)
            with console.status("starting redis-server…"):
                redis = stack.enter_context(EmbeddedRedis(workdir=workdir / "redis"))
            create_topics(broker.bootstrap, TOPICS)
            console.print(
                f"[green]✓[/green] broker {broker.bootstrap}   redis {redis.url}   topics "
                f"{', '.join(TOPICS)}"
            )
            console.print(
                f"[dim]  logs and data in {workdir} "
                f"({'kept: --keep' if keep else 'removed at the end'})[/dim]",
                highlight=False,
                soft_wrap=True,
            )

            port = free_port()
            env = {
                **os.environ,
                "STREAMDRIFT_KAFKA_BOOTSTRAP": broker.bootstrap,
                "STREAMDRIFT_REDIS_URL": redis.url,
                "STREAMDRIFT_METRICS_PORT": str(port),
                **LOCAL_WORKER_ENV,
                "STREAMDRIFT_LOG_LEVEL": "warning",
                # Faust's data directory (else `<group id>-data` in the working directory).
                "F_DATADIR": str(workdir / "worker-data"),
            }
            worker = stack.enter_context(WorkerProcess(env, workdir / "worker.log"))
            with console.status("starting the worker (joining the consumer group)…"):
                try:
                    worker.wait_ready(timeout=90)
                except EmbeddedServerError as exc:
                    raise SystemExit(str(exc)) from None
            console.print(
                f"[green]✓[/green] worker ready — metrics at [link]http://127.0.0.1:{port}/metrics[/link]"
            )

            simulator_cmd = [
                sys.executable,
                "-m",
                "streamdrift.streams",
                "simulate",
                "--rate",
                str(rate),
                "--drift-at",
                str(drift_at),
            ]
            if duration is not None:
                simulator_cmd += ["--duration", str(duration)]
            simulator = _spawn(stack, simulator_cmd, env, workdir / "simulator.log")
            console.print(
                f"[green]✓[/green] simulator producing {rate:g} events/s; drift starts at event "
                f"{drift_at:,} (~{drift_at / rate:.0f} s). Waiting for alerts — Ctrl-C to stop.\n"
            )
            deadline = None if duration is None else time.monotonic() + duration
            _show_alerts(console, broker.bootstrap, worker, deadline, port)
            _stop(simulator)
            if keep and worker.running:
                _kept_hint(console, workdir, broker.bootstrap, redis.url)
                _wait_for_ctrl_c(console, worker)
            console.print("[dim]stopping the worker, Redis and the broker…[/dim]")
        if keep:
            console.print(
                f"Stopped. Logs and Redis' append-only file stay in {workdir}",
                highlight=False,
                soft_wrap=True,
            )
        else:
            _next_hint(console)
    finally:
        if not keep:
            shutil.rmtree(workdir, ignore_errors=True)


def _kept_hint(console: Console, workdir: Path, bootstrap: str, redis_url: str) -> None:
    """What to try against the broker, Redis and worker that ``--keep`` keeps running."""
    b, r = f"--bootstrap {bootstrap}", f"--redis-url {redis_url}"
    console.print(
        f"\nThe broker, Redis and the worker keep running (--keep); logs and data in {workdir}.\n"
        f"Try, in another terminal:\n"
        f"  streamdrift status {r}\n"
        f"  streamdrift alerts {b}    [dim]# follows the alert topic; Ctrl-C to stop[/dim]\n"
        f"  streamdrift report --model fraud --out report.html {r} {b}\n"
        f"  streamdrift simulate {b} --duration 30    [dim]# more events for the worker[/dim]\n"
        f"Ctrl-C here stops them.",
        highlight=False,
        soft_wrap=True,
    )


def _wait_for_ctrl_c(console: Console, worker: WorkerProcess) -> None:
    try:
        while worker.running:
            time.sleep(0.5)
    except KeyboardInterrupt:
        return
    console.print(
        f"[red]the worker exited with code {worker.returncode}; the end of its log:[/red]"
    )
    console.print(worker.log_tail(), markup=False, highlight=False)


def _next_hint(console: Console) -> None:
    """What to try next when everything has stopped."""
    console.print(
        "\nStopped; the broker, Redis and the demo's files are gone. Next:\n  streamdrift demo "
        "--keep    [dim]# at the end, keeps the broker, Redis and the worker running and "
        "prints[/dim]\n                             [dim]# the status, alerts and report --model "
        "fraud commands to try on them[/dim]\n  docs/own-kafka.md          [dim]# (in the source "
        "repository) run a worker on your own Kafka and Redis[/dim]",
        highlight=False,
        soft_wrap=True,
    )


def _show_alerts(
    console: Console, bootstrap: str, worker: WorkerProcess, deadline: float | None, port: int
) -> None:
    from streamdrift.streams.ops.tail import EVIDENCE_LEGEND, format_alert
    from streamdrift.streams.pipeline.incidents import INCIDENT_TYPE_PREFIX

    next_report = time.monotonic() + PROGRESS_EVERY_S

    def stop() -> bool:
        nonlocal next_report
        if time.monotonic() >= next_report:
            next_report += PROGRESS_EVERY_S
            console.print(f"[dim]… {_processed(port)}[/dim]")
        return not worker.running or (deadline is not None and time.monotonic() > deadline)

    count = incidents = 0
    try:
        for alert in tail_alerts({"bootstrap.servers": bootstrap}, "drift-alerts", until=stop):
            if not count + incidents:
                console.print(EVIDENCE_LEGEND)
            if str(alert.get("type", "")).startswith(INCIDENT_TYPE_PREFIX):
                incidents += str(alert["type"]).endswith(".opened")
            else:
                count += 1
            console.print(format_alert(alert))
    except KeyboardInterrupt:
        pass
    if worker.returncode not in (None, 0):
        console.print(
            f"[red]the worker exited with code {worker.returncode}; the end of its log:[/red]"
        )
        console.print(worker.log_tail(), markup=False, highlight=False)
    console.print(f"\n{count} alert(s) in {incidents} incident(s). Stopping the simulator…")


def _processed(port: int) -> str:
    """One line of progress from the worker's own metrics."""
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=2) as response:
            text = response.read().decode()
    except OSError:
        return "worker metrics unavailable"
    totals: dict[str, float] = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.name in (
                "streamdrift_events_total",
                "streamdrift_dead_letters_total",
                "streamdrift_alerts_total",
            ):
                totals[sample.name] = totals.get(sample.name, 0.0) + sample.value
    return (
        f"{totals.get('streamdrift_events_total', 0):,.0f} events and labels processed, "
        f"{totals.get('streamdrift_alerts_total', 0):,.0f} alerts, "
        f"{totals.get('streamdrift_dead_letters_total', 0):,.0f} dead letters"
    )


def _spawn(stack: ExitStack, cmd: list[str], env: dict[str, str], log: Path) -> subprocess.Popen:
    handle = stack.enter_context(log.open("wb"))
    process = subprocess.Popen(cmd, env=env, stdout=handle, stderr=subprocess.STDOUT)
    stack.callback(_stop, process)
    return process


def _stop(process: subprocess.Popen) -> None:
    if process.poll() is None:
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(timeout=20)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
