"""Where a worker's CPU goes, per stage: py-spy samples of a live worker, summed by stage.

A development tool (like the rest of ``bench/``): the worker never imports it. py-spy is not a
dependency of the project; install it into a virtualenv of its own, e.g. ``python -m venv
/tmp/pyspy && /tmp/pyspy/bin/pip install py-spy``, and pass its path with ``--py-spy``.

Sample the worker of a bench run (one per message size; ``attach`` waits for it)::

    .venv/bin/python -m bench.throughput --only streamdrift-1 --events 300000 --batch 1 100 \\
        --drifts 0 --json /tmp/prof/bench.json &
    .venv/bin/python -m bench.profile_stages attach --py-spy /tmp/pyspy/bin/py-spy \\
        --topic-contains=-b1- --out /tmp/prof/b1
    .venv/bin/python -m bench.profile_stages attach --py-spy /tmp/pyspy/bin/py-spy \\
        --topic-contains=-b100- --out /tmp/prof/b100
    .venv/bin/python -m bench.profile_stages table /tmp/prof/b1 /tmp/prof/b100

``attach`` finds the ``streamdrift.streams worker`` process whose input topic contains
``--topic-contains``, waits until it has applied ``--skip`` events (the monitors' warm-up and
calibration are behind it), then runs ``py-spy record --native --threads --format raw`` on it
until ``--seconds`` passed or the events stop growing, and stores ``OUT.raw`` (the folded
stacks) and ``OUT.json``: the window's events (``streamdrift_events_total``) and each thread's
CPU seconds (``/proc/PID/task/TID/stat``), measured at the window's two ends.

``table`` turns them into µs of CPU per event per stage: within each thread, a stage's share of
that thread's samples times the thread's measured CPU per event (samples alone would count time
spent waiting for a core on a busy machine). A sample belongs to the stage of its most specific
frame (:data:`RULES`, highest level wins, the outermost on a tie); samples waiting for the GIL or
for I/O are dropped. Threads py-spy cannot see (native only) are listed by name.

``inprocess`` is the cross-check without Kafka: ``PredictionProcessor.process`` on prepared
batches of one partition's share of the bench's load (``bench.load``, the worker's settings),
timed bare and then under cProfile, the stages taken from cumulative times of their entry
functions; garbage collection is timed with ``gc.callbacks``.

``intake`` measures what fetching alone costs per record: a bare ``aiokafka`` ``getmany`` loop
next to the bare confluent-kafka consumer (``bench.peers limit``) over the same topic of an
embedded broker, each in its own process, both with and without msgspec decoding.
"""

from __future__ import annotations

import argparse
import asyncio
import cProfile
import gc
import json
import os
import pstats
import re
import signal
import subprocess
import sys
import tempfile
import time
import urllib.request
import uuid
from collections import Counter, defaultdict
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

__all__ = ["RULES", "Rule", "main", "stage_of"]

# --- frames to stages --------------------------------------------------------------------------


@dataclass(frozen=True)
class Rule:
    """A stage and the frames that belong to it: ``path`` is a regular expression searched in a
    frame's file, ``name`` one matched against its (qualified) function name from the start."""

    stage: str
    level: int
    path: str
    name: str = ""


NUMERIC = "numeric monitor: "
METRICS = "metrics: counters and gauges"
#: Events the columnar path leaves (a model or name not known yet, an odd value): decoded,
#: validated and admitted one by one.
PER_EVENT = "per-event path (new models or names, odd values)"
#: Once per series, when its warm-up ends: not a steady-state cost.
CALIBRATION = "warm-up end: calibration (once per series)"
#: Highest level wins; on a tie the outermost frame. A checkpoint claims the monitors it
#: serialises, a categorical monitor its window tests, window tests their sketches.
RULES: tuple[Rule, ...] = (
    Rule("GC", 90, r"libpython[^/]*$", r"(gc_collect_main|gc_collect_with_callback|collect)$"),
    Rule("checkpoint", 80, r"/streams/state/checkpoint\.py$"),
    Rule(
        "checkpoint",
        80,
        r"/streams/runtime\.py$",
        r"Runtime\.(checkpoint|_checkpoint|_checkpoint_if_due|_settle|_publish_outbox)$",
    ),
    Rule("checkpoint", 80, r"/streams/state/partition\.py$", r"PartitionState\.checkpoint"),
    Rule("Redis join store (event_id → prediction)", 80, r"/streams/state/joins\.py$"),
    Rule(METRICS, 80, r"/prometheus_client/"),
    Rule(METRICS, 80, r"/streams/metrics\.py$"),
    Rule(METRICS, 80, r"/streams/runtime\.py$", r"Runtime\._publish$"),
    Rule("Kafka fetch: main-thread hand-off", 70, r"/faust/transport/"),
    Rule("Kafka fetch: main-thread hand-off", 70, r"/aiokafka/"),
    Rule("Kafka fetch: main-thread hand-off", 70, r"/mode/threads\.py$"),
    Rule(CALIBRATION, 65, r"/detectors/monitor\.py$", r"_StreamMonitor\._calibrate$"),
    Rule(PER_EVENT, 58, r"/streams/pipeline/processor\.py$", r"PredictionProcessor\._accept$"),
    Rule("categorical monitors", 60, r"/detectors/monitor\.py$", r"CategoricalMonitor\."),
    Rule("multivariate PCA", 60, r"/detectors/multivariate\.py$"),
    Rule(NUMERIC + "window tests", 55, r"/detectors/(kernels/)?(windows|distances)\.py$"),
    Rule(NUMERIC + "CUSUM bank", 54, r"/detectors/(kernels/)?cusum\.py$"),
    Rule(NUMERIC + "ADWIN", 54, r"/detectors/(kernels/)?adwin\.py$"),
    Rule(NUMERIC + "Page-Hinkley", 54, r"/detectors/page_hinkley\.py$"),
    Rule(NUMERIC + "moments (Welford)", 53, r"/detectors/(stats|kernels/moments)\.py$"),
    Rule(NUMERIC + "KLL sketch", 53, r"/detectors/sketches\.py$"),
    Rule("JSON decode + validate", 50, r"/streams/pipeline/codec\.py$"),
    Rule("JSON decode + validate", 50, r"/msgspec/"),
    # the compiled decoder (its native frames are under this one)
    Rule("JSON decode + validate", 50, r"/streams/pipeline/native_decode\.py$", r"decode$"),
    Rule("columnar grouping + admission", 45, r"/streams/pipeline/(batch|admission)\.py$"),
    Rule(
        "columnar grouping + admission",
        45,
        r"/streams/pipeline/processor\.py$",
        r"PredictionProcessor\.(_take_columns|_plan|_take_shape|_misfits|_column|_accept|_admit"
        r"|_advance_clock|_touch_models|_drop_ignored|_ignored|_room_for)",
    ),
    Rule("record → Record (intake)", 40, r"/streams/kafka/intake\.py$", r"(batches|events_in)$"),
    Rule("record → Record (intake)", 40, r"/streams/pipeline/outcome\.py$"),
    Rule("record → Record (intake)", 40, r"/streams/kafka/intake\.py$", r"Intake\._size_polls$"),
    Rule(NUMERIC + "bookkeeping (standardise, EWMA, lifecycle)", 30, r"/detectors/"),
    Rule("monitor dispatch (per-series loop, findings)", 20, r"/streams/pipeline/"),
    Rule("runtime (handle, publish)", 15, r"/streams/runtime\.py$"),
    Rule("intake loop (Intake._drain)", 15, r"/streams/kafka/intake\.py$"),
)
WAITING = "(waiting: GIL or I/O)"
STARTUP = "(start-up, imports)"
_WAIT_LEAF = re.compile(
    r"^(pthread_cond_(timed)?wait|take_gil|epoll_wait|__?poll|select|__select|sem_(timed|clock)?wait"
    r"|do_futex_wait|__futex_abstimed_wait|PyThread_acquire_lock)"
)
#: Python frames that only wait (a thread pool's idle workers, a queue's get).
_WAIT_PY = {
    ("_worker", "thread.py"),
    ("Condition.wait", "threading.py"),
    ("Queue.get", "queue.py"),
    ("EpollSelector.select", "selectors.py"),  # an event loop waiting for I/O or a timer
}
_PY_FRAME = re.compile(r"^(?P<name>.*) \((?P<path>.*?)(?::(?P<line>\d+))?\)$")
FREEING = "JSON decode + validate: freeing the decoded events"


def _freeing(stack: Sequence[str]) -> bool:
    """Whether the innermost Python frame is ``process`` on the line that called
    ``_take_columns``, which has just returned: its decoded events (msgspec structs) are being
    freed (``Struct_dealloc`` in a native profile)."""
    line = _take_columns_line()
    last = next((text for text in reversed(stack) if ".py:" in text), "")
    return line is not None and last.endswith(f"processor.py:{line})")


def _take_columns_line() -> int | None:
    global _TAKE_COLUMNS_LINE
    if _TAKE_COLUMNS_LINE == 0:
        import inspect

        from streamdrift.streams.pipeline.processor import PredictionProcessor

        source, first = inspect.getsourcelines(PredictionProcessor.process)
        found = [i for i, text in enumerate(source) if "self._take_columns(" in text]
        _TAKE_COLUMNS_LINE = first + found[0] if found else None
    return _TAKE_COLUMNS_LINE


_TAKE_COLUMNS_LINE: int | None = 0
MODULE = "bench.profile_stages"  # run as `python -m` by `intake`
_COMPILED = [(rule, re.compile(rule.path), re.compile(rule.name)) for rule in RULES]


def _frame(text: str) -> tuple[str, str]:
    found = _PY_FRAME.match(text)
    return (found["name"], found["path"]) if found else (text, "")


def _fallback(frames: Sequence[tuple[str, str]]) -> str:
    """The stage of a sample no rule claims: by the library of its innermost Python frame."""
    paths = [path for _, path in frames if path.endswith(".py")]
    for part, stage in (
        ("/redis/", "Redis client (I/O callbacks)"),
        ("/aiohttp/", "web server (aiohttp)"),
        ("/faust/", "Faust / mode services, timers"),
        ("/mode/", "Faust / mode services, timers"),
    ):
        if any(part in path for path in paths[-6:]):
            return stage
    if any("/asyncio/" in path or path.endswith("selectors.py") for path in paths[-3:]):
        return "asyncio event loop"
    for name, path in reversed(frames):
        if path.endswith(".py"):
            return f"other: {Path(path).name}:{name}"
    return "other (native only)"


def stage_of(stack: Sequence[str]) -> str:
    """The stage of one sampled stack (root first, py-spy's ``func (path:line)`` frames; native
    frames ``symbol (library)``).

    >>> stage_of(["_run (/x/asyncio/events.py:80)",
    ...           "Runtime.handle (/r/streams/runtime.py:224)",
    ...           "PredictionProcessor.process (/r/streams/pipeline/processor.py:190)",
    ...           "PredictionProcessor._apply (/r/streams/pipeline/processor.py:600)",
    ...           "_StreamMonitor.update (/r/detectors/monitor.py:620)",
    ...           "QuantileSketch.update_many (/r/detectors/sketches.py:90)"])
    'numeric monitor: KLL sketch'
    >>> stage_of(["Runtime._checkpoint (/r/streams/runtime.py:380)",
    ...           "Monitor.to_bytes (/r/detectors/monitor.py:303)",
    ...           "execute (/v/redis/asyncio/client.py:10)"])
    'checkpoint: Redis round trip'
    >>> stage_of(["take (/r/x.py:1)", "pthread_cond_timedwait (libc.so.6)"])
    '(waiting: GIL or I/O)'
    """
    frames = [_frame(text) for text in stack]
    natives = [name for name, path in frames[-4:] if not path.endswith(".py")]
    if any(_WAIT_LEAF.match(name) for name in natives):
        return WAITING
    leaf = next(((n, Path(p).name) for n, p in reversed(frames) if p.endswith(".py")), None)
    if leaf in _WAIT_PY:
        return WAITING
    if any(name == "_find_and_load" for name, _ in frames):
        return STARTUP
    best: tuple[int, Rule] | None = None
    for name, path in frames:
        for rule, path_re, name_re in _COMPILED:
            better = best is None or rule.level > best[0]
            if better and path_re.search(path) and name_re.match(name):
                best = (rule.level, rule)
    if best is None:
        return _fallback(frames)
    stage = best[1].stage
    if leaf is not None and leaf[0] == "PredictionProcessor.process" and _freeing(stack):
        return FREEING
    if stage == "checkpoint":
        redis = any("/redis/" in path for _, path in frames)
        return "checkpoint: Redis round trip" if redis else "checkpoint: serialise + bookkeeping"
    return stage


def read_raw(path: Path) -> tuple[dict[str, Counter[str]], dict[str, str]]:
    """Samples per stage per thread id of a py-spy ``--format raw --threads`` file, and the
    threads' names."""
    by_thread: dict[str, Counter[str]] = defaultdict(Counter)
    names: dict[str, str] = {}
    for line in path.read_text().splitlines():
        stack_text, _, count = line.rpartition(" ")
        if not stack_text:
            continue
        stack = stack_text.split(";")
        thread = stack[0]
        found = re.match(r"thread \((?:0x)?([0-9a-fA-F]+)\)(?::\s*(.*))?", thread)
        tid = found[1] if found else thread
        if found and found[2]:
            names[tid] = found[2]
        by_thread[tid][stage_of(stack[1:])] += int(count)
    return by_thread, names


# --- attaching to a worker ----------------------------------------------------------------------


def _workers(topic_part: str) -> list[int]:
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            command = (entry / "cmdline").read_bytes().split(b"\0")
            env = (entry / "environ").read_bytes().split(b"\0")
        except OSError:
            continue
        if b"streamdrift.streams" in command and b"worker" in command:
            topic = next((e for e in env if e.startswith(b"STREAMDRIFT_INPUT_TOPIC=")), b"")
            if topic_part.encode() in topic:
                found.append(int(entry.name))
    return found


def _environ(pid: int) -> dict[str, str]:
    pairs = Path(f"/proc/{pid}/environ").read_bytes().split(b"\0")
    return dict(p.decode().split("=", 1) for p in pairs if b"=" in p)


def thread_cpu(pid: int) -> dict[str, tuple[str, float]]:
    """Each thread's name and CPU seconds (utime + stime), by thread id."""
    tick = os.sysconf("SC_CLK_TCK")
    threads = {}
    for task in Path(f"/proc/{pid}/task").iterdir():
        try:
            stat = (task / "stat").read_text()
            name = (task / "comm").read_text().strip()
        except OSError:
            continue
        fields = stat.rsplit(")", 1)[1].split()
        threads[task.name] = (name, (int(fields[11]) + int(fields[12])) / tick)
    return threads


def events_applied(port: int, topic: str) -> float:
    """``streamdrift_events_total`` of the input topic, from the worker's /metrics (that metric
    alone: a full page would cost the sampled worker 15-45 ms of CPU each time)."""
    url = f"http://127.0.0.1:{port}/metrics?name[]=streamdrift_events_total"
    with urllib.request.urlopen(url, timeout=30) as response:
        text = response.read().decode()
    pattern = re.compile(r'^streamdrift_events_total\{[^}]*topic="' + re.escape(topic) + r'"')
    return sum(float(line.rsplit(" ", 1)[1]) for line in text.splitlines() if pattern.match(line))


def attach(args: argparse.Namespace) -> None:
    deadline = time.monotonic() + args.wait
    while not (pids := _workers(args.topic_contains)):
        if time.monotonic() > deadline:
            raise SystemExit(f"no worker on a topic containing {args.topic_contains!r}")
        time.sleep(0.2)
    pid = pids[0]
    env = _environ(pid)
    port, topic = int(env["STREAMDRIFT_METRICS_PORT"]), env["STREAMDRIFT_INPUT_TOPIC"]
    while True:
        try:
            if events_applied(port, topic) >= args.skip:
                break
        except OSError:
            pass
        if time.monotonic() > deadline:
            raise SystemExit(f"worker {pid} did not reach {args.skip} events")
        time.sleep(0.2)
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    raw = out.with_suffix(".raw")
    command = [
        args.py_spy, "record", "--pid", str(pid), "--rate", str(args.rate), "--format", "raw",
        "--threads", "--full-filenames", "--output", str(raw),
    ]  # fmt: skip
    if args.native:
        command.append("--native")
    events0, cpu0, began = events_applied(port, topic), thread_cpu(pid), time.monotonic()
    spy = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    last_events, last_change = events0, began
    while time.monotonic() - began < args.seconds:
        time.sleep(0.5)
        events = events_applied(port, topic)
        if events >= args.stop_at:
            break  # the topic is nearly consumed: stop before the worker idles
        if events != last_events:
            last_events, last_change = events, time.monotonic()
        elif time.monotonic() - last_change > args.idle_s:
            break
    events, cpu, ended = events_applied(port, topic), thread_cpu(pid), time.monotonic()
    spy.send_signal(signal.SIGINT)
    _, err = spy.communicate(timeout=60)
    used = {tid: seconds - cpu0.get(tid, (name, 0.0))[1] for tid, (name, seconds) in cpu.items()}
    threads = {tid: {"name": cpu[tid][0], "cpu_s": used[tid]} for tid in cpu}
    summary = {
        "pid": pid,
        "topic": topic,
        "seconds": ended - began,
        "events": events - events0,
        "cpu_s": sum(used.values()),
        "threads": threads,
        "rate_hz": args.rate,
        "py_spy": err.decode(errors="replace").strip().splitlines()[-2:],
    }
    out.with_suffix(".json").write_text(json.dumps(summary, indent=2))
    print(json.dumps({k: v for k, v in summary.items() if k != "threads"}, indent=2))


# --- the table ----------------------------------------------------------------------------------


def stage_costs(base: Path) -> tuple[dict[str, float], dict[str, Any]]:
    """µs of CPU per event per stage for one ``attach`` result (``base``.raw / .json)."""
    summary = json.loads(base.with_suffix(".json").read_text())
    samples, names = read_raw(base.with_suffix(".raw"))
    for tid, info in summary["threads"].items():
        info["name"] = names.get(tid, info["name"])
    events = summary["events"]
    costs: dict[str, float] = defaultdict(float)
    for tid, info in summary["threads"].items():
        us = 1e6 * info["cpu_s"] / events
        counted = Counter({s: n for s, n in samples.get(tid, Counter()).items() if s != WAITING})
        total = sum(counted.values())
        if not total:
            if us >= 0.05:
                costs[f"thread {info['name']!r} (not sampled: native)"] += us
            continue
        label = "" if tid == str(summary["pid"]) else _thread_label(counted)
        for stage, n in counted.items():
            costs[label + stage] += us * n / total
    return dict(costs), summary


def _thread_label(counted: Counter[str]) -> str:
    stage, _ = counted.most_common(1)[0]
    if stage.startswith("Kafka fetch"):
        return "[consumer thread] "
    if stage.startswith("metrics"):
        return "[scrape thread] "
    return "[other thread] "


def _consumer_thread(stage: str) -> str:
    """Every sample of Faust's consumer thread is the Kafka fetch (its own event loop included),
    but its garbage collection; every sample of a /metrics scrape thread is the scrape."""
    if stage.startswith("[consumer thread] ") and not stage.endswith("GC"):
        return "Kafka fetch: aiokafka in Faust's consumer thread"
    if stage.startswith("[scrape thread] "):
        return SCRAPES
    return stage


SCRAPES = "metrics: /metrics scrapes (thread pool; the probes ask for a few metrics by name)"


#: Stages summed into what one change could remove (``table --groups``), first match wins.
GROUPS: tuple[tuple[str, str], ...] = (
    ("Kafka fetch", "intake: Kafka fetch + hand-off + Record"),
    ("record → Record", "intake: Kafka fetch + hand-off + Record"),
    ("intake loop", "intake: Kafka fetch + hand-off + Record"),
    ("JSON decode", "decode + validate"),
    ("columnar grouping", "columnar grouping + admission"),
    ("numeric monitor", "numeric monitors (all families)"),
    ("categorical", "categorical, PCA, per-series dispatch"),
    ("multivariate", "categorical, PCA, per-series dispatch"),
    ("monitor dispatch", "categorical, PCA, per-series dispatch"),
    ("Redis join store", "Redis: joins + client callbacks"),
    ("Redis client", "Redis: joins + client callbacks"),
    ("checkpoint", "checkpoints (serialise + Redis)"),
    ("metrics: counters", "metrics counters"),
    ("GC", "garbage collection"),
    (SCRAPES, "not per event: /metrics scrapes (bench probes 1/s)"),
    (CALIBRATION, "not steady state: first contact (calibration, per-event path)"),
    (PER_EVENT, "not steady state: first contact (calibration, per-event path)"),
)
OTHER_GROUP = "Faust, asyncio, aiohttp, native threads, other"


def group_of(stage: str) -> str:
    """The group of a stage (:data:`GROUPS`)."""
    return next((group for start, group in GROUPS if stage.startswith(start)), OTHER_GROUP)


def table(args: argparse.Namespace) -> None:
    runs = [stage_costs(Path(base)) for base in args.bases]
    merged = [
        {_consumer_thread(stage): 0.0 for stage in costs} | _merge(costs) for costs, _ in runs
    ]
    if args.groups:
        grouped: list[dict[str, float]] = []
        for m in merged:
            sums: dict[str, float] = defaultdict(float)
            for stage, us in m.items():
                sums[group_of(stage)] += us
            grouped.append(dict(sums))
        merged = grouped
    stages = sorted({s for m in merged for s in m}, key=lambda s: -max(m.get(s, 0) for m in merged))
    head = " | ".join(f"{'/'.join(Path(b).parts[-2:])} µs/event | share" for b in args.bases)
    print(f"| {'group' if args.groups else 'stage'} | {head} |")
    print("|---|" + "---:|---:|" * len(runs))
    for stage in stages:
        cells = []
        for m in merged:
            total = sum(m.values())
            value = m.get(stage, 0.0)
            cells.append(f"{value:.2f} | {100 * value / total:.1f}%")
        print(f"| {stage} | {' | '.join(cells)} |")
    totals = " | ".join(f"**{sum(m.values()):.2f}** | 100%" for m in merged)
    print(f"| **total (measured CPU / events)** | {totals} |")
    for (_, summary), base in zip(runs, args.bases, strict=True):
        rate = summary["events"] / summary["seconds"]
        print(
            f"\n{base}: {summary['events']:,.0f} events in {summary['seconds']:.1f} s "
            f"({rate:,.0f}/s under py-spy), {summary['cpu_s']:.2f} CPU s; threads: "
            + ", ".join(
                f"{t['name']} {t['cpu_s']:.2f} s"
                for t in summary["threads"].values()
                if t["cpu_s"] > 0.005
            )
        )


def _merge(costs: dict[str, float]) -> dict[str, float]:
    merged: dict[str, float] = defaultdict(float)
    for stage, us in costs.items():
        merged[_consumer_thread(stage)] += us
    return dict(merged)


# --- in-process cross-check: cProfile of PredictionProcessor.process ---------------------------


def _prepared_batches(
    models: int, partitions: int, owned: int, events: int, size: int, batch: int
) -> tuple[list[tuple[int, Any]], int]:
    """(partition, records) batches of the first ``owned`` partitions' share of the bench's load
    (model ``k`` on partition ``k % partitions``, as ``bench.load`` produces), in turns, as a
    worker's intake hands them over; and how many models they hold."""
    from bench.load import bench_models, messages
    from streamdrift.streams.pipeline.outcome import Record

    specs = bench_models(models)
    partition_of = {spec.name.encode(): k % partitions for k, spec in enumerate(specs)}
    records: dict[int, list[Any]] = {p: [] for p in range(owned)}
    for message in messages(specs, events, size, seed=size):
        partition = partition_of[message.key or b""]
        if partition < owned:
            mine = records[partition]
            mine.append(Record(len(mine), time.time(), message.value))
    step = max(1, batch // max(1, size))
    chunks = {p: [rs[i : i + step] for i in range(0, len(rs), step)] for p, rs in records.items()}
    turns = [
        (p, chunks[p][i])
        for i in range(max(map(len, chunks.values())))
        for p in range(owned)
        if i < len(chunks[p])
    ]
    return turns, sum(1 for p in partition_of.values() if p < owned)


def _entry_times(profile: pstats.Stats) -> dict[str, float]:
    """Seconds per stage: cumulative times of each stage's entry functions, taken from the
    callers that make them that stage (a sketch updated by a window test is the window test's)."""
    from streamdrift.detectors import CategoricalMonitor, NumericMonitor, PCAReconstructionMonitor
    from streamdrift.streams.pipeline import codec, native_decode
    from streamdrift.streams.pipeline.processor import PredictionProcessor

    raw: dict[tuple[str, int, str], Any] = profile.stats  # type: ignore[attr-defined]

    def key(function: Any) -> tuple[str, int, str]:
        code = function.__code__
        return (code.co_filename, code.co_firstlineno, code.co_name)

    def cum(function: Any) -> float:
        entry = raw.get(key(function))
        return float(entry[3]) if entry else 0.0

    def called(file_re: str, name: str, caller: tuple[str, int, str] | str) -> float:
        """Cumulative time of ``name`` (in a file matching ``file_re``) when ``caller`` (a key,
        or a function name) called it."""
        total = 0.0
        for (file, _, func), (_, _, _, _, callers) in raw.items():
            if func == name and re.search(file_re, file):
                for who, (_, _, _, ct) in callers.items():
                    # a list comprehension is a function of its own (Python 3.11)
                    by_name = caller in (who[2], f"{who[2]}:{Path(who[0]).name}")
                    if who == caller or by_name:
                        total += ct
        return total

    numeric = key(NumericMonitor.update)
    watch = "<listcomp>:monitor.py"  # the detectors run in _watch's list comprehension
    process = cum(PredictionProcessor.process)
    decode = (
        cum(native_decode.decode)
        + cum(codec.typed_messages)
        + cum(codec.typed_events)
        + cum(codec.decode_events)
        + cum(codec.validate_events)
    )
    apply = cum(PredictionProcessor._apply)
    numeric_s = cum(NumericMonitor.update)
    parts = {
        "numeric monitor: window tests": called(r"detectors/windows\.py$", "update", "_watch"),
        "numeric monitor: CUSUM bank": called(r"detectors/cusum\.py$", "update_many", watch),
        "numeric monitor: ADWIN": called(r"detectors/adwin\.py$", "update_many", watch),
        # The compiled backend's one call for both (and the standardising and clipping).
        "numeric monitor: ADWIN + CUSUM bank, fused": called(
            r"detectors/kernels/fused\.py$", "detect", "_detect"
        ),
        "numeric monitor: moments (Welford)": called(
            r"detectors/stats\.py$", "update_many", numeric
        )
        + called(r"detectors/stats\.py$", "update_summarised", numeric)
        + called(r"detectors/kernels/fused\.py$", "split_moments", numeric),
        "numeric monitor: KLL sketch": called(r"detectors/sketches\.py$", "update_many", numeric),
    }
    categorical = cum(CategoricalMonitor.update)
    pca = cum(PCAReconstructionMonitor.update)
    return {
        "JSON decode + validate": decode,
        "columnar grouping + admission": process - decode - apply,
        **parts,
        "numeric monitor: bookkeeping (standardise, EWMA, lifecycle)": numeric_s
        - sum(parts.values()),
        "categorical monitors": categorical,
        "multivariate PCA": pca,
        "monitor dispatch (per-series loop, findings)": apply - numeric_s - categorical - pca,
        "process (total)": process,
    }


def inprocess(args: argparse.Namespace) -> None:
    from streamdrift.detectors import kernels
    from streamdrift.streams.runtime import prediction_processor, with_setting_defaults
    from streamdrift.streams.settings import Settings
    from streamdrift.streams.state.partition import PartitionState

    settings = Settings.load()  # the worker's settings (defaults unless STREAMDRIFT_* are set)
    kernels.use(settings.kernels)  # as Runtime does: STREAMDRIFT_KERNELS=reference for the oracle
    kernels.warm_up()
    batches, models = _prepared_batches(
        args.models, args.partitions, args.owned, args.events, args.size, args.batch_events
    )
    events_per_batch = sum(max(1, (r.value or b"").count(b'"model"')) for r in batches[1][1])
    warm = max(1, round(args.warm_events * args.owned / max(1, events_per_batch)))
    processor = prediction_processor(settings, with_setting_defaults({}, settings))
    states = {p: PartitionState("bench", p, epoch=1, next_offset=None) for p in range(args.owned)}
    print(
        f"{len(batches)} batches of ~{events_per_batch} events, {args.owned} partition(s), "
        f"{models} models ({args.size}-event messages); {warm} warm-up batches"
    )
    gc.freeze()  # as the worker does before consuming
    for partition, records in batches[:warm]:
        processor.process(states[partition], records)
    measured = batches[warm:]
    events = 0
    gc_s = [0.0]
    gc_started = [0.0]

    def on_gc(phase: str, info: dict[str, int]) -> None:
        if phase == "start":
            gc_started[0] = time.perf_counter()
        else:
            gc_s[0] += time.perf_counter() - gc_started[0]

    half = len(measured) // 2
    gc.callbacks.append(on_gc)
    cpu0 = time.process_time()
    for partition, records in measured[:half]:
        events += processor.process(states[partition], records).events
    bare_s = time.process_time() - cpu0
    gc.callbacks.remove(on_gc)
    print(
        f"bare: {events:,} events, {1e6 * bare_s / events:.2f} µs/event of CPU, of which GC "
        f"{1e6 * gc_s[0] / events:.2f}"
    )
    profiler = cProfile.Profile()
    profiled = 0
    profiler.enable()
    for partition, records in measured[half:]:
        profiled += processor.process(states[partition], records).events
    profiler.disable()
    stats = pstats.Stats(profiler)
    times = _entry_times(stats)
    total = times["process (total)"]
    print(f"cProfile: {profiled:,} events, process {1e6 * total / profiled:.2f} µs/event")
    print("| stage (cProfile, cumulative) | µs/event profiled | share of process |")
    print("|---|---|---|")
    for stage, seconds in times.items():
        print(f"| {stage} | {1e6 * seconds / profiled:.2f} | {100 * seconds / total:.1f}% |")
    if args.top:
        stats.sort_stats("tottime").print_stats(args.top)


# --- intake: aiokafka getmany against confluent-kafka -------------------------------------------


def aiokafka_peer(args: argparse.Namespace) -> None:
    """A bare aiokafka consumer: ``getmany`` until ``--events`` events, msgspec decode unless
    ``--no-decode``; writes the same result file as ``bench.peers``."""
    import msgspec
    from aiokafka import AIOKafkaConsumer

    from bench.peers import GROUP_TIMING, Meter

    decode = msgspec.json.decode

    async def consume() -> None:
        meter = Meter(args)
        consumer = AIOKafkaConsumer(
            args.topic,
            bootstrap_servers=args.bootstrap,
            group_id=args.group,
            enable_auto_commit=False,
            auto_offset_reset="earliest",
            max_partition_fetch_bytes=1024**2,  # Faust's consumer_max_fetch_size
            fetch_max_wait_ms=100,  # STREAMDRIFT_FETCH_MAX_WAIT_MS
            session_timeout_ms=GROUP_TIMING["session.timeout.ms"],
            heartbeat_interval_ms=GROUP_TIMING["heartbeat.interval.ms"],
        )
        await consumer.start()
        try:
            while not meter.done:
                batches = await consumer.getmany(timeout_ms=100, max_records=args.max_records)
                if batches:
                    meter.first()
                    polls.append([len(records) for records in batches.values()])
                for records in batches.values():
                    meter.updates += len(records)  # records, in the updates field
                    for record in records:
                        if args.no_decode:
                            meter.events += _events_in(record.value)
                        else:
                            value = decode(record.value)
                            meter.events += len(value) if isinstance(value, list) else 1
            meter.write()
        finally:
            await consumer.stop()
        _add_poll_sizes(Path(args.result), polls)

    polls: list[list[int]] = []
    asyncio.run(consume())


def _add_poll_sizes(result: Path, polls: list[list[int]]) -> None:
    """Records per ``getmany`` and per partition in one, added to a peer's result file: the
    runtime gets one partition's records of a poll per ``process`` call."""
    data = json.loads(result.read_text())
    per_poll = sorted(sum(p) for p in polls)
    per_partition = sorted(n for p in polls for n in p)

    def median(values: list[int]) -> float:
        return float(values[len(values) // 2]) if values else 0.0

    data["polls"] = {
        "count": len(polls),
        "records_per_poll_median": median(per_poll),
        "partitions_per_poll_mean": sum(map(len, polls)) / max(1, len(polls)),
        "records_per_partition_median": median(per_partition),
        "records_per_partition_mean": sum(per_partition) / max(1, len(per_partition)),
    }
    result.write_text(json.dumps(data))


def confluent_peer(args: argparse.Namespace) -> None:
    """``bench.peers limit`` without its decode, for the fetch alone."""
    from bench.peers import Meter, _consumer

    meter = Meter(args)
    consumer = _consumer(args, **{"enable.auto.commit": False})
    try:
        while not meter.done:
            records = consumer.consume(10_000, timeout=0.1)
            if records:
                meter.first()
            meter.updates += len(records)
            for record in records:
                if record.error():
                    raise RuntimeError(f"consuming {args.topic}: {record.error()}")
                meter.events += _events_in(record.value())
        meter.write()
    finally:
        consumer.close()


def _events_in(value: bytes | None) -> int:
    return max(1, value.count(b'"model"')) if value else 1


def _run_peer(command: list[str], result: Path) -> dict[str, Any]:
    done = subprocess.run(command, capture_output=True, text=True, timeout=600, check=False)
    if done.returncode != 0 or not result.exists():
        raise RuntimeError(f"{command[3]} failed:\n{done.stderr[-2000:]}")
    data: dict[str, Any] = json.loads(result.read_text())
    return data


def intake(args: argparse.Namespace) -> None:
    from bench.load import bench_models, messages, produce
    from bench.throughput import start_broker
    from streamdrift.streams.kafka.admin import create_topics
    from streamdrift.streams.kafka.intake import poll_records

    workdir = Path(tempfile.mkdtemp(prefix="streamdrift-intake-"))
    models = bench_models(args.models)
    rows = []
    with start_broker("tansu", workdir / "broker") as (broker, info):
        for size in args.batch:
            topic = f"intake-b{size}-{uuid.uuid4().hex[:6]}"
            create_topics(broker.bootstrap, {topic: args.partitions})
            stream = messages(models, args.events, size, seed=size)
            produce(broker.bootstrap, topic, models, args.partitions, stream)
            polled = str(poll_records(args.max_events, size))  # what the worker's intake asks
            kinds = [
                ("confluent-kafka consume(10000) + msgspec (bench.peers limit)", "bench.peers",
                 ["limit"]),
                ("confluent-kafka consume(10000), fetch only", MODULE, ["confluent-peer"]),
                ("aiokafka getmany(10000) + msgspec", MODULE, ["aiokafka-peer"]),
                (f"aiokafka getmany({polled}) + msgspec", MODULE,
                 ["aiokafka-peer", "--max-records", polled]),
                (f"aiokafka getmany({polled}), fetch only", MODULE,
                 ["aiokafka-peer", "--max-records", polled, "--no-decode"]),
            ]  # fmt: skip
            for repeat in range(args.repeats):
                for title, module, kind in kinds:
                    group = f"intake-{uuid.uuid4().hex[:8]}"
                    result = workdir / f"{group}.json"
                    command = [
                        sys.executable, "-m", module, *kind, "--bootstrap", broker.bootstrap,
                        "--topic", topic, "--group", group, "--events", str(args.events),
                        "--result", str(result),
                    ]  # fmt: skip
                    data = _run_peer(command, result)
                    records = data["updates"] or data["events"] // size
                    rows.append((size, title, repeat, data, records))
                    print(
                        f"{size:>3}-event messages · {title}: {data['events']:,} events, "
                        f"{records:,} records in {data['seconds']:.2f} s, "
                        f"{1e6 * data['cpu_s'] / records:.2f} µs CPU/record, "
                        f"{1e6 * data['cpu_s'] / data['events']:.2f} µs CPU/event, "
                        f"{data['events'] / data['seconds']:,.0f} events/s"
                        + (f"; polls: {data['polls']}" if "polls" in data else ""),
                        flush=True,
                    )
        print(f"broker: {info}")


# --- command line -------------------------------------------------------------------------------


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        prog="python -m bench.profile_stages", description=(__doc__ or "").splitlines()[0]
    )
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("attach", help="sample a running worker with py-spy")
    p.add_argument("--py-spy", required=True, help="the py-spy executable")
    p.add_argument("--topic-contains", required=True, help="part of the worker's input topic")
    p.add_argument("--out", required=True, help="OUT.raw and OUT.json are written")
    p.add_argument("--skip", type=float, default=40_000, help="events applied before sampling")
    p.add_argument("--stop-at", type=float, default=290_000, help="stop sampling at these events")
    p.add_argument("--seconds", type=float, default=60.0, help="sample at most this long")
    p.add_argument("--idle-s", type=float, default=3.0, help="stop once no event came this long")
    p.add_argument("--rate", type=int, default=100, help="samples per second")
    p.add_argument(
        "--native",
        action="store_true",
        help="native frames too (shows garbage collection; slows the worker much more)",
    )
    p.add_argument("--wait", type=float, default=900.0, help="wait this long for the worker")
    p.set_defaults(run=attach)

    p = sub.add_parser("table", help="µs of CPU per event per stage of attach results")
    p.add_argument("bases", nargs="+", help="OUT of attach runs")
    p.add_argument("--groups", action="store_true", help="sum the stages by what could remove them")
    p.set_defaults(run=table)

    p = sub.add_parser("inprocess", help="cProfile of PredictionProcessor.process")
    p.add_argument("--models", type=int, default=46)
    p.add_argument("--partitions", type=int, default=8)
    p.add_argument("--owned", type=int, default=1, help="partitions processed (8: a bench worker)")
    p.add_argument("--events", type=int, default=400_000, help="events of all partitions")
    p.add_argument("--size", type=int, default=1, help="events per message")
    p.add_argument("--batch-events", type=int, default=2_000, help="events per process call")
    p.add_argument(
        "--warm-events", type=int, default=16_000, help="events per partition before measuring"
    )
    p.add_argument("--top", type=int, default=0, help="also print the N top functions")
    p.set_defaults(run=inprocess)

    p = sub.add_parser("intake", help="aiokafka getmany vs confluent-kafka per record")
    p.add_argument("--models", type=int, default=46)
    p.add_argument("--partitions", type=int, default=8)
    p.add_argument("--events", type=int, default=300_000)
    p.add_argument("--batch", type=int, nargs="+", default=[1, 100])
    p.add_argument("--repeats", type=int, default=2)
    p.add_argument(
        "--max-events", type=int, default=2_000, help="STREAMDRIFT_BATCH_MAX_EVENTS (poll sizes)"
    )
    p.set_defaults(run=intake)

    for name, run in (("aiokafka-peer", aiokafka_peer), ("confluent-peer", confluent_peer)):
        p = sub.add_parser(name, help="one consumer process of `intake`")
        for option in ("--bootstrap", "--topic", "--group", "--result"):
            p.add_argument(option, required=True)
        p.add_argument("--events", type=int, required=True)
        p.add_argument("--max-seconds", type=float, default=300.0)
        p.add_argument("--max-records", type=int, default=10_000)
        p.add_argument("--no-decode", action="store_true")
        p.set_defaults(run=run)

    args = parser.parse_args(argv)
    args.run(args)


if __name__ == "__main__":
    main()
