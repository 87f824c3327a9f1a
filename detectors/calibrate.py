"""Measure the false alarms and detection delays behind the defaults in ``detectors.config``.

Run ``python -m streamdrift.detectors.calibrate`` (about 2 minutes on 2 cores; ``--streams 10``
for a quick look). Everything goes through :class:`NumericMonitor` in batches of 1000, so the
detectors see what they see in production: values standardised by a reference estimated from the
warm-up.

False alarms
    Stationary streams (normal, uniform, exponential, lognormal), each with its own warm-up.
    Reported per 10^6 updates for each detector (every firing, before episode suppression) and
    as the share of streams with at least one alert.
Delay
    N(0, 1) streams: warm-up, 10,000 stationary values, then a mean shift of ``s`` sigma.
    The delay is the number of values after the shift up to the first alert (median and
    maximum over the seeds; ``-`` if none within 20,000 values). With a candidate that raises
    false alarms, that first alert may be one of them.
"""

from __future__ import annotations

import argparse
import os
from collections.abc import Callable
from concurrent.futures import Future, ProcessPoolExecutor

import numpy as np
from numpy.typing import NDArray

from streamdrift.detectors.config import AdwinParams, MonitorParams, PageHinkleyParams
from streamdrift.detectors.monitor import NumericMonitor

BATCH = 1000
PRE_SHIFT = 10_000
POST_SHIFT = 20_000
SHIFTS = (0.25, 0.5, 1.0, 2.0)

CANDIDATES = {
    "defaults": MonitorParams(),
    "defaults, no clipping": MonitorParams(clip_sigma=float("inf")),
    "river defaults": MonitorParams(
        clip_sigma=float("inf"),
        adwin=AdwinParams(delta=0.002),
        page_hinkley=PageHinkleyParams(threshold=50.0, delta=0.005, alpha=1 - 0.0001),
    ),
}

DISTRIBUTIONS: dict[str, Callable[[np.random.Generator, int], NDArray[np.float64]]] = {
    "normal": lambda rng, n: rng.standard_normal(n),
    "uniform": lambda rng, n: rng.uniform(size=n),
    "exponential": lambda rng, n: rng.exponential(size=n),
    "lognormal": lambda rng, n: rng.lognormal(size=n),
}


def run(monitor: NumericMonitor, values: NDArray[np.float64]) -> list[int]:
    """Feed ``values`` in batches; return the indices of the alerts (episodes opened: a
    ``resolved`` lifecycle change is not an alarm)."""
    positions = np.arange(len(values))
    alerts = []
    for start in range(0, len(values), BATCH):
        batch = slice(start, start + BATCH)
        detections = monitor.update(values[batch], positions[batch])
        alerts += [d.position for d in detections if d.event == "detected"]
    return alerts


def false_alarms(candidate: str, distribution: str, seed: int, events: int) -> dict[str, int]:
    params = CANDIDATES[candidate]
    rng = np.random.default_rng([seed, list(DISTRIBUTIONS).index(distribution)])
    monitor = NumericMonitor(params)
    alerts = run(monitor, DISTRIBUTIONS[distribution](rng, params.warmup_events + events))
    counts = {name: d.n_detections for name, d in monitor.detectors.items()}
    return {**counts, "alerts": len(alerts)}


def delay(candidate: str, shift: float, seed: int) -> float:
    params = CANDIDATES[candidate]
    rng = np.random.default_rng([seed, 1_000])
    values = rng.standard_normal(params.warmup_events + PRE_SHIFT + POST_SHIFT)
    change = params.warmup_events + PRE_SHIFT
    values[change:] += shift
    after = [i - change for i in run(NumericMonitor(params), values) if i >= change]
    return after[0] if after else np.inf


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--streams", type=int, default=100, help="stationary streams each")
    parser.add_argument("--events", type=int, default=100_000, help="values per stationary stream")
    parser.add_argument("--seeds", type=int, default=20, help="streams per shift size")
    args = parser.parse_args()

    with ProcessPoolExecutor(os.cpu_count()) as pool:
        alarms = {
            (candidate, distribution): [
                pool.submit(false_alarms, candidate, distribution, seed, args.events)
                for seed in range(args.streams)
            ]
            for candidate in CANDIDATES
            for distribution in DISTRIBUTIONS
        }
        delays = {
            (candidate, shift): [
                pool.submit(delay, candidate, shift, seed) for seed in range(args.seeds)
            ]
            for candidate in CANDIDATES
            for shift in SHIFTS
        }
        print(f"False alarms per 10^6 stationary updates ({args.streams} x {args.events:,} each)")
        print_false_alarms(alarms, updates=args.streams * args.events)
        print(f"\nDelay (values after a mean shift of N(0, 1), {args.seeds} seeds): median / max")
        print_delays(delays)


def print_false_alarms(
    alarms: dict[tuple[str, str], list[Future[dict[str, int]]]], updates: int
) -> None:
    columns = ("adwin", "page_hinkley", "cusum", "alerts")
    print(
        f"{'candidate':24}{'distribution':14}"
        + "".join(f"{c:>14}" for c in columns)
        + "  streams with alert"
    )
    for (candidate, distribution), futures in alarms.items():
        results = [future.result() for future in futures]
        rates = [sum(r.get(c, 0) for r in results) * 1e6 / updates for c in columns]
        with_alert = sum(r["alerts"] > 0 for r in results) / len(results)
        print(
            f"{candidate:24}{distribution:14}"
            + "".join(f"{r:>14.2f}" for r in rates)
            + f"  {with_alert:>18.1%}"
        )


def print_delays(delays: dict[tuple[str, float], list[Future[float]]]) -> None:
    print(f"{'candidate':24}" + "".join(f"{f'{shift:g} sigma':>16}" for shift in SHIFTS))
    for candidate in CANDIDATES:
        cells = []
        for shift in SHIFTS:
            found = np.array([future.result() for future in delays[candidate, shift]])
            stats = (np.median(found), found.max())
            cells.append(" / ".join("-" if np.isinf(v) else f"{v:.0f}" for v in stats))
        print(f"{candidate:24}" + "".join(f"{cell:>16}" for cell in cells))


if __name__ == "__main__":
    main()
