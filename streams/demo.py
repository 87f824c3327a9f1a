"""``streamdrift demo``: everything on one machine with nothing installed but this package.

Starts an embedded Tansu broker and redis-server on free loopback ports, creates the topics,
starts a worker and the drifting simulator as subprocesses, and prints alerts as they arrive.
"""

from __future__ import annotations

import os
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

from streams.embedded import (
    LOCAL_WORKER_ENV,
    EmbeddedBroker,
    EmbeddedRedis,
    EmbeddedServerError,
    WorkerProcess,
    create_topics,
    free_port,
)
from streams.tail import tail_alerts

PROGRESS_EVERY_S = 10.0
TOPICS = {"predictions": 4, "labels": 2, "drift-alerts": 1, "predictions.dlq": 1}


def run_demo(console: Console, duration: float | None, rate: float, drift_at: int) -> None:
    # The temporary directory outlives the ExitStack: processes stop before their files go.
    with tempfile.TemporaryDirectory(prefix="streamdrift-demo-") as tmp, ExitStack() as stack:
        workdir = Path(tmp)
        with console.status("starting the embedded Kafka-compatible broker (Tansu)…"):
            broker = EmbeddedBroker(workdir=workdir / "broker").start()
            stack.callback(broker.stop, timeout=1)  # memory-only broker: nothing to lose by a fast stop
        with console.status("starting redis-server…"):
            redis = stack.enter_context(EmbeddedRedis(workdir=workdir / "redis"))
        create_topics(broker.bootstrap, TOPICS)
        console.print(f"[green]✓[/green] broker {broker.bootstrap}   redis {redis.url}   topics {', '.join(TOPICS)}")

        port = free_port()
        env = {
            **os.environ,
            "STREAMDRIFT_KAFKA_BOOTSTRAP": broker.bootstrap,
            "STREAMDRIFT_REDIS_URL": redis.url,
            "STREAMDRIFT_METRICS_PORT": str(port),
            **LOCAL_WORKER_ENV,
            "STREAMDRIFT_LOG_LEVEL": "warning",
        }
        worker = stack.enter_context(WorkerProcess(env, workdir / "worker.log"))
        with console.status("starting the worker (joining the consumer group)…"):
            try:
                worker.wait_ready(timeout=90)
            except EmbeddedServerError as exc:
                raise SystemExit(str(exc)) from None
        console.print(f"[green]✓[/green] worker ready — metrics at [link]http://127.0.0.1:{port}/metrics[/link]")

        simulator_cmd = [sys.executable, "-m", "streams", "simulate", "--rate", str(rate), "--drift-at", str(drift_at)]
        if duration is not None:
            simulator_cmd += ["--duration", str(duration)]
        _spawn(stack, simulator_cmd, env, workdir / "simulator.log")
        console.print(
            f"[green]✓[/green] simulator producing {rate:g} events/s; drift starts at event {drift_at:,} "
            f"(~{drift_at / rate:.0f} s). Waiting for alerts — Ctrl-C to stop.\n"
        )
        deadline = None if duration is None else time.monotonic() + duration
        _show_alerts(console, broker.bootstrap, worker, deadline, port)


def _show_alerts(console: Console, bootstrap: str, worker: WorkerProcess, deadline: float | None, port: int) -> None:
    from streams.cli import format_alert

    next_report = time.monotonic() + PROGRESS_EVERY_S

    def stop() -> bool:
        nonlocal next_report
        if time.monotonic() >= next_report:
            next_report += PROGRESS_EVERY_S
            console.print(f"[dim]… {_processed(port)}[/dim]")
        return not worker.running or (deadline is not None and time.monotonic() > deadline)

    count = 0
    try:
        for alert in tail_alerts({"bootstrap.servers": bootstrap}, "drift-alerts", until=stop):
            count += 1
            console.print(format_alert(alert))
    except KeyboardInterrupt:
        pass
    if worker.returncode not in (None, 0):
        console.print(f"[red]the worker exited with code {worker.returncode}; the end of its log:[/red]")
        console.print(worker.log_tail(), markup=False, highlight=False)
    console.print(f"\n{count} alert(s). Stopping…")


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
            if sample.name in ("streamdrift_events_total", "streamdrift_dead_letters_total", "streamdrift_alerts_total"):
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
