"""Where predictions wait for their labels: Redis hashes bucketed by arrival time.

Predictions of one model that arrive in the same time bucket go into one hash
(``sd:{G}:join:<model>:<bucket>``) written by one script call per batch, and the hash expires
a TTL after its bucket ends. A lookup asks every bucket still alive, newest first. Redis work
therefore grows with batches and models, not with events.

The script takes a batch's fields as one length-prefixed blob and sets them with ``HSET``: the
same hash as an ``HSET`` with the fields as arguments, but the client packs one argument instead
of two per event (redis-py encodes and frames every argument in Python: ~3 µs per event of the
worker's CPU, half of it saved; docs/performance.md).
"""

from __future__ import annotations

import math
import struct
from collections import defaultdict

import redis.asyncio as aioredis

from streamdrift.streams.state.keys import KeyLayout

BUCKETS_PER_TTL = 24

# KEYS[1] the hash, ARGV[1] its TTL in seconds, ARGV[2] the fields: per field a 4-byte big-endian
# length and the event id, then a 4-byte length and the packed prediction. HSET in chunks:
# Lua's unpack() takes at most ~8,000 values.
_PUT = """
local blob, at, size = ARGV[2], 1, #ARGV[2]
local fields, count = {}, 0
while at <= size do
  local event_id, value
  event_id, value, at = struct.unpack('>I4c0I4c0', blob, at)
  fields[count + 1] = event_id
  fields[count + 2] = value
  count = count + 2
  if count >= 4000 then
    redis.call('HSET', KEYS[1], unpack(fields, 1, count))
    fields, count = {}, 0
  end
end
if count > 0 then
  redis.call('HSET', KEYS[1], unpack(fields, 1, count))
end
redis.call('EXPIRE', KEYS[1], ARGV[1])
"""
_LENGTH = struct.Struct(">I").pack


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
        by_model: dict[str, list[bytes]] = defaultdict(list)
        for model, event_id, packed in items:
            key = event_id.encode()
            # A repeated id in one batch: HSET keeps the last, as a mapping would.
            by_model[model].append(_LENGTH(len(key)) + key + _LENGTH(len(packed)) + packed)
        bucket = int(now // self.width)
        expire = math.ceil(self.ttl_s + self.width)
        pipe = self.redis.pipeline(transaction=False)
        for model, fields in by_model.items():
            # EVAL, not EVALSHA: a cluster pipeline does not load a missing script on a node
            # (Redis keeps the compiled script by its hash either way).
            pipe.eval(_PUT, 1, self._key(model, bucket), expire, b"".join(fields))
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
