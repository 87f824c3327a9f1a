"""Where predictions wait for their labels: Redis hashes bucketed by arrival time.

Predictions of one model that arrive in the same time bucket go into one hash
(``sd:{G}:join:<model>:<bucket>``) written with one ``HSET`` per batch, and the hash expires
a TTL after its bucket ends. A lookup asks every bucket still alive, newest first. Redis work
therefore grows with batches and models, not with events.
"""

from __future__ import annotations

import math
from collections import defaultdict

import redis.asyncio as aioredis

from streamdrift.streams.state.keys import KeyLayout

BUCKETS_PER_TTL = 24


class JoinStore:
    def __init__(self, redis: aioredis.Redis, group_id: str, ttl_s: float) -> None:
        self.redis = redis
        self.group_id = group_id
        self.layout = KeyLayout(group_id)
        self.ttl_s = ttl_s
        self.width = ttl_s / BUCKETS_PER_TTL

    def _key(self, model: str, bucket: int) -> str:
        return self.layout.join_key(model, bucket)

    async def put(self, items: list[tuple[str, str, bytes]], now: float) -> None:
        """Store (model, event_id, packed prediction) triples, one pipeline round trip."""
        if not items:
            return
        by_model: dict[str, dict[str, bytes]] = defaultdict(dict)
        for model, event_id, packed in items:
            by_model[model][event_id] = packed
        bucket = int(now // self.width)
        expire = math.ceil(self.ttl_s + self.width)
        pipe = self.redis.pipeline(transaction=False)
        for model, mapping in by_model.items():
            key = self._key(model, bucket)
            pipe.hset(key, mapping=mapping)  # type: ignore[arg-type]  # its key type is invariant
            pipe.expire(key, expire)
        await pipe.execute()

    async def get(self, keys: list[tuple[str, str]], now: float) -> dict[tuple[str, str], bytes]:
        """Find the predictions of (model, event_id) pairs; missing pairs are absent."""
        if not keys:
            return {}
        by_model: dict[str, dict[str, None]] = defaultdict(dict)  # each id asked once
        for model, event_id in keys:
            by_model[model][event_id] = None
        newest = int(now // self.width)
        buckets = range(newest, newest - BUCKETS_PER_TTL - 2, -1)
        pipe = self.redis.pipeline(transaction=False)
        plan = []
        for model, unique in by_model.items():
            ids = list(unique)
            for bucket in buckets:
                pipe.hmget(self._key(model, bucket), ids)
                plan.append((model, ids))
        found: dict[tuple[str, str], bytes] = {}
        for (model, ids), values in zip(plan, await pipe.execute(), strict=True):
            for event_id, value in zip(ids, values, strict=True):
                if value is not None:
                    found.setdefault((model, event_id), value)
        return found
