"""In-process microbenchmark of ``PredictionProcessor.process`` on the throughput bench's load.

The bench's messages (``bench.load``: 46 models × 20 numeric + 2 categorical features and a
prediction, model ``k`` on partition ``k % 8``) are cut into batches of a partition's records
as the intake hands them over (``bench.profile_stages._prepared_batches``), the processor is
built with the worker's settings and warmed up past the monitors' warm-up, then each round
times, in CPU seconds per event:

* ``front`` — decode, columnar grouping, admission and the per-series merge
  (``Values.merged``, ``Rows.merged``): ``process`` with the monitor updates left out, so the
  state stays as it was and every round sees the same work;
* ``process`` — the whole call, monitors included (``--full``).

The best of ``--rounds`` rounds is printed, with the garbage collector's share of it
(``gc.callbacks``; ``gc.freeze()`` first, as the worker does). The machine is shared: compare
A and B in one sitting, alternating, and read ratios. Not imported by the worker.

    python -m bench.pipeline_micro --size 1
    python -m bench.pipeline_micro --size 100 --full
"""

from __future__ import annotations

import argparse
import gc
import json
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import msgspec


def _batches(args: argparse.Namespace) -> list[tuple[int, list[tuple[int, float, bytes]]]]:
    cache = Path(args.cache) if args.cache else None
    if cache is not None and cache.exists():
        loaded: list[tuple[int, list[tuple[int, float, bytes]]]] = msgspec.msgpack.decode(
            cache.read_bytes(),
            type=list[tuple[int, list[tuple[int, float, bytes]]]],
        )
        return loaded
    from bench.profile_stages import _prepared_batches

    turns, _ = _prepared_batches(
        args.models, args.partitions, args.owned, args.events, args.size, args.batch_events
    )
    prepared = [(p, [(r.offset, r.timestamp, r.value) for r in records]) for p, records in turns]
    if cache is not None:
        cache.write_bytes(msgspec.msgpack.encode(prepared))
    return prepared


def _merge_only(processor: Any) -> Any:
    """``_apply`` without the monitors: each series' and each model's values merged as
    ``_apply_values`` and ``_apply_rows`` merge them, then dropped."""
    from streamdrift.detectors import NumericMonitor, PCAReconstructionMonitor
    from streamdrift.streams.state.keys import series_name
    from streamdrift.streams.state.partition import MULTIVARIATE_SERIES

    def apply(state: Any, batch: Any, times: Any, out: Any) -> list[Any]:
        for series, values in batch.series.items():
            monitor = state.monitors.get(series)
            kind = type(monitor) if monitor is not None else batch.kinds.get(series)
            if kind is not None:
                values.merged(numeric=kind is NumericMonitor)
        for (model, version), rows in batch.rows.items():
            monitor = state.monitors.get(series_name(model, version, MULTIVARIATE_SERIES))
            if isinstance(monitor, PCAReconstructionMonitor):
                rows.merged(monitor.features)
        return []

    return apply


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--models", type=int, default=46)
    parser.add_argument("--partitions", type=int, default=8)
    parser.add_argument("--owned", type=int, default=1, help="partitions processed in turns")
    parser.add_argument("--events", type=int, default=160_000, help="events of all partitions")
    parser.add_argument("--size", type=int, default=1, help="events per message")
    parser.add_argument("--batch-events", type=int, default=2_000)
    parser.add_argument("--warm-batches", type=int, default=6, help="per partition")
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--full", action="store_true", help="also time the whole process call")
    parser.add_argument("--cache", help="file holding the prepared batches (made if absent)")
    parser.add_argument("--json", help="append the result as a JSON line to this file")
    args = parser.parse_args(argv)

    from streamdrift.streams.pipeline.outcome import Record
    from streamdrift.streams.runtime import prediction_processor, with_setting_defaults
    from streamdrift.streams.settings import Settings
    from streamdrift.streams.state.partition import PartitionState

    prepared = _batches(args)
    settings = Settings.load()
    processor = prediction_processor(settings, with_setting_defaults({}, settings))
    owned = sorted({p for p, _ in prepared})
    states = {p: PartitionState("bench", p, epoch=1, next_offset=None) for p in owned}
    span = 1 + max(offset for _, records in prepared for offset, _, _ in records)
    rounds = [0]

    def records_of(batch: list[tuple[int, float, bytes]]) -> list[Record]:
        shift = rounds[0] * span  # fresh offsets each round: nothing is a duplicate
        rounds[0] += 1
        return [Record(offset + shift, ts, value) for offset, ts, value in batch]

    warm = args.warm_batches * len(owned)
    gc.freeze()
    for partition, batch in prepared[:warm]:
        processor.process(states[partition], records_of(batch))
    measured = prepared[warm:]
    full_apply = processor._apply
    front_apply = _merge_only(processor)
    best: dict[str, tuple[float, float]] = {}  # per mode: µs per event, of which GC
    modes = ["front", "process"] if args.full else ["front"]
    gc_s = [0.0, 0.0]  # seconds collecting, start of the current collection

    def on_gc(phase: str, info: dict[str, int]) -> None:
        if phase == "start":
            gc_s[1] = time.perf_counter()
        else:
            gc_s[0] += time.perf_counter() - gc_s[1]

    gc.callbacks.append(on_gc)
    for _ in range(args.rounds):
        for mode in modes:
            processor._apply = front_apply if mode == "front" else full_apply  # type: ignore[method-assign]
            inputs = [(states[p], records_of(batch)) for p, batch in measured]
            events = 0
            gc_s[0] = 0.0
            cpu0 = time.process_time()
            for state, records in inputs:
                events += processor.process(state, records).events
            seconds = time.process_time() - cpu0
            us, gc_us = (1e6 * s / max(1, events) for s in (seconds, gc_s[0]))
            best[mode] = min(best.get(mode, (us, gc_us)), (us, gc_us))
    gc.callbacks.remove(on_gc)
    print(
        f"size {args.size}, {len(measured)} batches, {events:,} events per round: "
        + ", ".join(
            f"{mode} {us:.2f} µs/event (GC {gc_us:.2f})" for mode, (us, gc_us) in best.items()
        )
    )
    if args.json:
        with open(args.json, "a") as file:
            file.write(json.dumps({"size": args.size, **best}) + "\n")


if __name__ == "__main__":
    main()
