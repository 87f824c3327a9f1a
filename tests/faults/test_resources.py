"""A flood of new names: memory stays bounded, valid events keep flowing, the excess is counted."""

from __future__ import annotations

import json
import time
from pathlib import Path

import pytest
from conftest import metric, produce, wait_for

pytestmark = [pytest.mark.e2e, pytest.mark.faults]

FLOOD = 100_000
LIMIT = 2_000  # STREAMDRIFT_MAX_FEATURES_PER_MODEL


def rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    raise AssertionError("no VmRSS")


def test_100k_distinct_feature_names_keep_memory_bounded_and_valid_events_flowing(
    broker, topics, start_worker
):
    # The new-series rate limit off: this test is about the per-model bound (the hostile-producer
    # suite covers the rate limit), and admission here must not depend on how fast produce() was.
    worker = start_worker(max_features_per_model=LIMIT, max_new_series_per_s=1e9).wait_ready()
    valid = [
        json.dumps({"model": "m", "features": {"x": float(i % 10)}}).encode() for i in range(1_000)
    ]
    produce(broker.bootstrap, topics.input, valid, key="m")
    wait_for(
        lambda: metric(worker, f'streamdrift_events_total{{topic="{topics.input}"}}') == 1_000,
        60,
        "valid events",
    )
    before = rss_mb(worker.pid)

    flood = [{"model": "m", "features": {f"name_{i}": 1.0}} for i in range(FLOOD)]
    produce(
        broker.bootstrap,
        topics.input,
        [json.dumps(flood[i : i + 500]).encode() for i in range(0, FLOOD, 500)],
        key="m",
    )
    produce(broker.bootstrap, topics.input, valid * 5, key="m")
    admitted = LIMIT - 1  # "x" holds one of the model's slots
    expected_events = 1_000 + admitted + 5_000
    wait_for(
        lambda: (
            metric(worker, f'streamdrift_events_total{{topic="{topics.input}"}}') == expected_events
        ),
        180,
        f"{expected_events} events",
    )
    time.sleep(1)

    rejected = metric(
        worker, 'streamdrift_dead_letters_total{reason="too_many_features_for_model"}'
    )
    assert rejected == FLOOD - admitted, (
        "every refused event is dead-lettered and counted, none dropped"
    )
    growth = rss_mb(worker.pid) - before
    assert growth < 250, f"worker RSS grew by {growth:.0f} MB for {admitted} admitted series"
    assert worker.running
