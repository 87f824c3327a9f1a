"""Baseline store and the workers' catalog against the session's real redis-server."""

from __future__ import annotations

import asyncio
import uuid

import msgspec
import numpy as np
import pytest
import redis.asyncio as aioredis

from streamdrift.detectors import Baseline, BaselineBuilder
from streamdrift.streams.state.baselines import BaselineCatalog, BaselineStore


@pytest.fixture
def model() -> str:
    return f"model-{uuid.uuid4().hex[:10]}"  # the store is global: one model name per test


def build(model: str, version: str | None, values: list[float]) -> Baseline:
    builder = BaselineBuilder()
    builder.add_columns({"x": values, "c": ["a"] * len(values)})
    return builder.build(model, version, source="test")


def refresh(url: str, catalog: BaselineCatalog) -> list[str]:
    async def main() -> list[str]:
        client = aioredis.Redis.from_url(url)
        try:
            return await catalog.refresh(client)
        finally:
            await client.aclose()

    return asyncio.run(main())


def test_put_get_list_replace_and_delete(redis_client, model):
    store = BaselineStore(redis_client)
    first = store.put(build(model, "v1", [1.0, 2.0]))
    second = store.put(build(model, None, [3.0]))
    assert second > first
    stored = store.get(model, "v1")
    assert stored is not None and stored.revision == first and stored.features["x"].stats.count == 2
    assert store.get(model, "v9") is None
    listed = [
        (r["version"], r["revision"], r["rows"], r["numeric"], r["categorical"])
        for r in store.list(model)
    ]
    assert listed == [(None, second, 1, 1, 1), ("v1", first, 2, 1, 1)]  # no version sorts first
    replaced = store.put(build(model, "v1", [5.0, 6.0, 7.0]))
    assert replaced > second and store.get(model, "v1").rows == 3
    assert store.delete(model, "v1") and not store.delete(model, "v1")
    assert [r["version"] for r in store.list(model)] == [None]


def test_the_catalog_reloads_only_what_changed(redis_server, redis_client, model):
    store = BaselineStore(redis_client)
    catalog = BaselineCatalog()
    refresh(redis_server.url, catalog)  # whatever other tests stored
    assert refresh(redis_server.url, catalog) == []  # nothing changed: one GET
    revision = store.put(build(model, "v1", [1.0]))
    assert refresh(redis_server.url, catalog) == [f"{model}/v1 r{revision}"]
    assert catalog[(model, "v1")].revision == revision
    store.put(build(model, "v2", [2.0]))
    assert refresh(redis_server.url, catalog) == [catalog[(model, "v2")].label]
    store.delete(model, "v1")
    refresh(redis_server.url, catalog)
    assert (model, "v1") not in catalog and (model, "v2") in catalog


def test_an_unreadable_stored_baseline_is_skipped_not_fatal(redis_server, redis_client, model):
    store = BaselineStore(redis_client)
    store.put(build(model, "v1", [1.0]))
    redis_client.set(f"sd:{{baselines}}:blob:{model}\x1fv1", b"\x93garbage")
    store.put(build(model, "v2", [1.0]))  # bumps the revision
    catalog = BaselineCatalog()
    loaded = refresh(redis_server.url, catalog)
    assert (model, "v1") not in catalog and catalog[(model, "v2")].label in loaded


def test_a_baseline_round_trips_through_redis_unchanged(redis_client, model):
    store = BaselineStore(redis_client)
    rng = np.random.default_rng(0)
    baseline = build(model, "v3", rng.normal(size=1_000).tolist())
    revision = store.put(baseline)
    assert store.get(model, "v3") == msgspec.structs.replace(baseline, revision=revision)
