"""How the Faust app is wired (without a broker: nothing here connects)."""

from __future__ import annotations

import asyncio

import pytest

from streams.app import create_app
from streams.runtime import Publisher, Runtime
from streams.settings import Settings


def test_the_kafka_fetch_wait_is_ours_not_faust_streamings_1500_ms():
    """faust-streaming hard-codes fetch_max_wait_ms=1500, the floor of alert latency on quiet
    partitions; the worker's consumer must get STREAMDRIFT_FETCH_MAX_WAIT_MS instead."""

    async def fetch_wait() -> int:
        app, _ = create_app(Settings(kafka_bootstrap="127.0.0.1:9", fetch_max_wait_ms=77))
        consumer = app.consumer._thread._create_worker_consumer(app.transport)
        try:
            return consumer._fetch_max_wait_ms
        finally:
            await consumer.stop()

    assert asyncio.run(fetch_wait()) == 77


@pytest.mark.parametrize(("setting", "joined"), [("*", {"a", "b"}), ("b, c", {"b"}), ("", set())])
def test_only_the_listed_models_predictions_wait_for_labels(setting, joined):
    runtime = Runtime(Settings(redis_url="redis://127.0.0.1:9/0", label_join_models=setting), {}, Publisher())
    assert {model for model in ("a", "b") if runtime._joinable(model)} == joined
