"""Measure the target-based mode: achieved false alarms against the target, and delays.

Run ``python -m streamdrift.detectors.calibrate_targets`` (about 6 minutes on 2 cores;
``--streams 4`` for a quick look). Monitors run with every detector (ADWIN, Page-Hinkley, window
tests) in batches of 1000, configured only by ``target_false_alarm_interval``.

False alarms
    Stationary streams (normal, uniform, exponential, lognormal; 5% missing values; a
    categorical feature), each with its own warm-up and reference, at ``--target`` (default
    10^5 events per false alarm, so that they can be counted). Per detector: its firings
    (before episode suppression) against its share of the budget (Bonferroni; an upper bound
    for the window tests), and the ``detected`` alerts per 10^6 events against the target.
Delay
    At ``--delay-target`` (default 10^6): values after a change up to the first ``detected``
    (median / max over the seeds, ``-`` if none within 20,000): mean shifts of N(0, 1), a 1.5x
    wider spread, a categorical frequency shift, a missing rate from 1% to 8%. The change
    falls anywhere within a window.
"""

from __future__ import annotations

import argparse
import os
from collections.abc import Callable
from concurrent.futures import ProcessPoolExecutor
from typing import Any

import numpy as np

from streamdrift.detectors.calibrate import BATCH, DISTRIBUTIONS
from streamdrift.detectors.config import MonitorParams
from streamdrift.detectors.monitor import CategoricalMonitor, NumericMonitor

PRE_CHANGE = 10_000
POST_CHANGE = 20_000
CATEGORIES = list("abcdefgh")
SHARES = np.array([0.3, 0.2, 0.15, 0.1, 0.1, 0.1, 0.04, 0.01])

Stream = Callable[[np.random.Generator, int], Any]
STATIONARY: dict[str, Stream] = {
    **DISTRIBUTIONS,
    "normal, 5% missing": lambda rng, n: np.where(rng.random(n) < 0.05, np.nan, rng.normal(size=n)),
    "categorical": lambda rng, n: rng.choice(CATEGORIES, n, p=SHARES).tolist(),
}


def _changed(before: Stream, after: Stream) -> Callable[[np.random.Generator, int], Any]:
    def stream(rng: np.random.Generator, change: int) -> Any:
        first, second = before(rng, change), after(rng, POST_CHANGE)
        return np.concatenate([first, second]) if isinstance(first, np.ndarray) else first + second

    return stream


def _missing(rate: float) -> Stream:
    return lambda rng, n: np.where(rng.random(n) < rate, np.nan, rng.normal(size=n))


CHANGES: dict[str, Callable[[np.random.Generator, int], Any]] = {
    "mean +0.5 sigma": _changed(DISTRIBUTIONS["normal"], lambda rng, n: rng.normal(0.5, 1, n)),
    "mean +1 sigma": _changed(DISTRIBUTIONS["normal"], lambda rng, n: rng.normal(1.0, 1, n)),
    "spread x1.5": _changed(DISTRIBUTIONS["normal"], lambda rng, n: rng.normal(0.0, 1.5, n)),
    "categorical shift": _changed(
        STATIONARY["categorical"],
        lambda rng, n: rng.choice(CATEGORIES, n, p=np.roll(SHARES, 1)).tolist(),
    ),
    "missing 1% -> 8%": _changed(_missing(0.01), _missing(0.08)),
}


def monitor_for(values: Any, params: MonitorParams) -> NumericMonitor | CategoricalMonitor:
    return NumericMonitor(params) if isinstance(values, np.ndarray) else CategoricalMonitor(params)


def run(monitor: NumericMonitor | CategoricalMonitor, values: Any) -> list[tuple[int, str]]:
    """Feed ``values`` in batches; return (position, event) of the lifecycle changes."""
    found = []
    for start in range(0, len(values), BATCH):
        part = values[start : start + BATCH]
        positions = np.arange(start, start + len(part))
        found += monitor.update(part, positions)
    return [(d.position, d.event) for d in found]


def false_alarms(stream: str, seed: int, events: int, target: float) -> dict[str, Any]:
    params = MonitorParams(target_false_alarm_interval=target)
    rng = np.random.default_rng([seed, list(STATIONARY).index(stream)])
    values = STATIONARY[stream](rng, params.warmup_events + events)
    monitor = monitor_for(values, params)
    found = run(monitor, values)
    return {
        "alerts": sum(event == "detected" for _, event in found),
        "detectors": monitor.false_alarms()["detectors"],
    }


def delay(change: str, seed: int, target: float) -> float:
    params = MonitorParams(target_false_alarm_interval=target)
    rng = np.random.default_rng([seed, 2_000 + list(CHANGES).index(change)])
    # anywhere within a window, so that the window tests' delays are not flattered
    at = params.warmup_events + params.window.reference_events + PRE_CHANGE
    at += int(rng.integers(params.window.events))
    values = CHANGES[change](rng, at)
    found = [p - at for p, event in run(monitor_for(values, params), values) if event == "detected"]
    after = [p for p in found if p >= 0]
    return after[0] if after else np.inf


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--streams", type=int, default=20, help="stationary streams each")
    parser.add_argument("--events", type=int, default=500_000, help="values per stream")
    parser.add_argument("--target", type=float, default=1e5, help="events per false alarm")
    parser.add_argument("--seeds", type=int, default=20, help="streams per change")
    parser.add_argument("--delay-target", type=float, default=1e6)
    args = parser.parse_args()
    with ProcessPoolExecutor(os.cpu_count()) as pool:
        alarms = {
            stream: [
                pool.submit(false_alarms, stream, seed, args.events, args.target)
                for seed in range(args.streams)
            ]
            for stream in STATIONARY
        }
        delays = {
            change: [
                pool.submit(delay, change, seed, args.delay_target) for seed in range(args.seeds)
            ]
            for change in CHANGES
        }
        print(
            f"False alarms at a target of one per {args.target:g} events "
            f"({args.streams} x {args.events:,} events each): firings / expected"
        )
        for stream, futures in alarms.items():
            print_false_alarms(
                stream, [f.result() for f in futures], args.streams * args.events, args.target
            )
        print(
            f"\nDelay at a target of one per {args.delay_target:g} events "
            f"({args.seeds} seeds): median / max"
        )
        for change, pending in delays.items():
            found = np.array([f.result() for f in pending])
            cells = ["-" if np.isinf(v) else f"{v:.0f}" for v in (np.median(found), found.max())]
            print(f"{change:24}{' / '.join(cells):>16}")


def print_false_alarms(
    stream: str, results: list[dict[str, Any]], events: int, target: float
) -> None:
    cells = []
    for name in results[0]["detectors"]:
        counts = [r["detectors"][name] for r in results]
        firings = sum(c["firings"] for c in counts)
        expected = sum(c["evaluations"] * c["rate"] for c in counts)
        cells.append(f"{name} {firings}/{expected:.1f}")
    alerts = sum(r["alerts"] for r in results)
    print(
        f"{stream:22}"
        + "".join(f"{cell:>24}" for cell in cells)
        + f"   alerts {alerts}/{events / target:.1f}"
    )


if __name__ == "__main__":
    main()
