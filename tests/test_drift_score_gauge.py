"""``streamdrift_drift_score{model, feature}`` is the largest score among the worker's owned
partitions and model versions — never the last one written — and disappears with ownership."""

from __future__ import annotations

import asyncio
import json

import numpy as np
from prometheus_client import CollectorRegistry, Gauge

from streamdrift.streams.metrics import DriftScores
from streamdrift.streams.pipeline.outcome import Record
from streamdrift.streams.runtime import Publisher, Runtime
from streamdrift.streams.settings import Settings
from streamdrift.streams.state.partition import PartitionState

TOPIC = "predictions"


def sample(registry: CollectorRegistry, model: str = "m", feature: str = "x") -> float | None:
    return registry.get_sample_value(
        "streamdrift_drift_score", {"model": model, "feature": feature}
    )


def test_the_largest_owner_wins_and_a_pair_owned_nowhere_has_no_sample():
    registry = CollectorRegistry()
    scores = DriftScores(
        Gauge("streamdrift_drift_score", "", ["model", "feature"], registry=registry)
    )
    scores.set((TOPIC, 0, None), "m", "x", 2.5)
    scores.set((TOPIC, 1, None), "m", "x", 0.5)  # written last, but smaller
    scores.set((TOPIC, 1, "2"), "m", "x", 1.0)
    assert sample(registry) == 2.5
    scores.set((TOPIC, 0, None), "m", "x", 0.2)  # the same owner's new score replaces its old one
    assert sample(registry) == 1.0
    scores.discard((TOPIC, 1, "2"), "m", "x")
    assert sample(registry) == 0.5
    scores.drop_partition(TOPIC, 1)
    assert sample(registry) == 0.2
    scores.drop_partition(TOPIC, 0)
    assert sample(registry) is None and not scores.scores
    scores.discard((TOPIC, 0, None), "m", "x")  # unknown: nothing happens
    scores.drop_partition(TOPIC, 7)


def events(
    rng: np.random.Generator,
    n: int,
    shift: float,
    version: str | None = None,
    first_offset: int = 0,
) -> list[Record]:
    bodies = [
        {
            "model": "m",
            "features": {"x": float(v)},
            **({"model_version": version} if version else {}),
        }
        for v in rng.normal(size=n) + np.r_[np.zeros(n // 2), np.full(n - n // 2, shift)]
    ]
    return [
        Record(first_offset + i, 1000.0 + i, json.dumps(b).encode()) for i, b in enumerate(bodies)
    ]


async def publish(runtime: Runtime, state: PartitionState, records: list[Record]) -> None:
    await runtime._publish(state, runtime.predictions.process(state, records), 2000.0)


def test_the_runtime_exposes_the_max_over_partitions_and_versions_and_forgets_what_it_drops():
    async def scenario() -> None:
        # max_versions_per_model=2: a third version retires the least recently seen one; no
        # Redis here, so no incidents (deciding them waits for Redis, as a checkpoint does)
        runtime = Runtime(
            Settings(
                redis_url="redis://127.0.0.1:1/0",
                max_versions_per_model=2,
                multivariate=False,
                incidents=False,
            ),
            {},
            Publisher(),
        )
        rng = np.random.default_rng(3)
        registry = runtime.metrics.registry
        drifting, calm = PartitionState(TOPIC, 0, 1, None), PartitionState(TOPIC, 1, 1, None)
        runtime.states = {(TOPIC, 0): drifting, (TOPIC, 1): calm}
        await publish(runtime, drifting, events(rng, 2_000, shift=3.0, version="1"))
        high = sample(registry)
        assert high is not None and high > 1.0
        # written last, smaller
        await publish(runtime, calm, events(rng, 2_000, shift=0.0, version="1"))
        assert sample(registry) == high

        await publish(
            runtime, drifting, events(rng, 2_000, shift=0.0, version="2", first_offset=2_000)
        )
        assert sample(registry) == high  # version 1 still owned beside version 2
        await publish(
            runtime, drifting, events(rng, 2_000, shift=0.0, version="3", first_offset=4_000)
        )
        assert "m\x1f1\x1fx" in drifting.retired
        calm_score = max(
            m.drift_score() for m in (*drifting.monitors.values(), *calm.monitors.values())
        )
        # version 1 retired on partition 0: its score is gone
        assert sample(registry) == calm_score < high

        runtime._drop((TOPIC, 0))
        assert sample(registry) == calm.monitors["m\x1f1\x1fx"].drift_score()
        runtime._drop((TOPIC, 1))
        assert sample(registry) is None
        await runtime.redis.aclose()

    asyncio.run(scenario())
