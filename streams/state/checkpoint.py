"""Redis checkpoint store: per-partition state and offsets written in one atomic, fenced step.

The keys (checkpoint hash, state hash, outbox) are named by :class:`streams.state.keys.KeyLayout`.

A worker *claims* a partition when it is assigned (``HINCRBY epoch``) and every checkpoint
script first checks that the stored epoch is still its own: a worker that lost the partition
(a paused or slow zombie) gets ``FENCED`` and can never overwrite the new owner's state.
"""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass, field
from typing import cast

import redis.asyncio as aioredis
from redis.asyncio.cluster import RedisCluster
from redis.exceptions import ResponseError

from streamdrift.streams.state.keys import KeyLayout
from streamdrift.streams.state.partition import Claim

_CLAIM = """
local epoch = redis.call('HINCRBY', KEYS[1], 'epoch', 1)
redis.call('HSET', KEYS[1], 'worker', ARGV[1], 'claimed_at', ARGV[2])
return {epoch, redis.call('HGET', KEYS[1], 'offset') or false}
"""

_FENCE = """
local current = redis.call('HGET', KEYS[1], 'epoch')
if not current then
  return redis.error_reply('LOST no checkpoint for this partition: Redis lost its data')
end
if current ~= ARGV[1] then
  return redis.error_reply(
    'FENCED epoch ' .. ARGV[1] .. ' is stale (current ' .. tostring(current) .. ')')
end
"""

# KEYS: ckpt, state, outbox
# ARGV: epoch, next_offset, now_ms, worker, events_delta, n_alerts, alert..., field, value, ...
# (an empty value deletes the field)
_CHECKPOINT = (
    _FENCE
    + """
local stored = tonumber(redis.call('HGET', KEYS[1], 'offset') or '-1')
if tonumber(ARGV[2]) < stored then
  return redis.error_reply('REGRESSION offset ' .. ARGV[2] .. ' < stored ' .. stored)
end
local n_alerts = tonumber(ARGV[6])
for i = 7, 6 + n_alerts do
  redis.call('RPUSH', KEYS[3], ARGV[i])
end
for i = 7 + n_alerts, #ARGV, 2 do
  if ARGV[i + 1] == '' then
    redis.call('HDEL', KEYS[2], ARGV[i])  -- a retired series
  else
    redis.call('HSET', KEYS[2], ARGV[i], ARGV[i + 1])
  end
end
redis.call('HSET', KEYS[1], 'offset', ARGV[2], 'updated_at', ARGV[3], 'worker', ARGV[4])
redis.call('HINCRBY', KEYS[1], 'events', ARGV[5])
return 1
"""
)

# KEYS: ckpt, outbox; ARGV: epoch, number of published entries to drop from the head
_TRIM_OUTBOX = (
    _FENCE
    + """
redis.call('LTRIM', KEYS[2], tonumber(ARGV[2]), -1)
return 1
"""
)


class Fenced(Exception):
    """Another worker claimed the partition since we did: our state is stale, drop it."""


class StateLost(Exception):
    """Redis no longer has the partition's checkpoint at all (restarted without its data)."""


class CheckpointStore(KeyLayout):
    def __init__(self, redis: aioredis.Redis | RedisCluster, group_id: str, worker_id: str) -> None:
        super().__init__(group_id)
        self.redis = redis
        self.worker_id = worker_id
        self._claim = redis.register_script(_CLAIM)
        self._checkpoint = redis.register_script(_CHECKPOINT)
        self._trim_outbox = redis.register_script(_TRIM_OUTBOX)

    async def claim(self, topic: str, partition: int) -> Claim:
        """Take ownership (a new epoch) and load the partition's checkpointed state."""
        ckpt, state = self.keys(topic, partition)
        # Every key a script touches shares the partition's hash tag (one Redis Cluster slot);
        # the group-wide registry lives in another slot, so it is a separate command.
        epoch, offset = await self._claim(keys=[ckpt], args=[self.worker_id, _now_ms()])
        await self.redis.sadd(self.partitions_key, f"{topic}:{partition}")
        fields = cast("dict[bytes, bytes]", await self.redis.hgetall(state))
        outbox = cast(
            "list[bytes]", await self.redis.lrange(self.outbox_key(topic, partition), 0, -1)
        )
        return Claim(int(epoch), int(offset) if offset else None, fields, outbox)

    async def load_fields(self, topic: str, partition: int, names: list[str]) -> dict[str, bytes]:
        """The checkpointed bytes of some state fields (absent ones left out)."""
        _, state = self.keys(topic, partition)
        values = cast("list[bytes | None]", await self.redis.hmget(state, names))
        return {name: value for name, value in zip(names, values, strict=True) if value}

    async def save(self, saves: list[Save]) -> list[Exception | None]:
        """Write several partitions' checkpoints in one round trip; each one is atomic.

        Returns, per save, None on success or the exception (``Fenced`` for a stale epoch).
        On Redis Cluster each partition's script goes to its own slot's node, concurrently
        (cluster pipelines cannot load scripts).
        """
        now = _now_ms()
        calls = [self._checkpoint_call(s, now) for s in saves]
        if isinstance(self.redis, RedisCluster):
            results = await asyncio.gather(
                *(self._checkpoint(keys=keys, args=args) for keys, args in calls),
                return_exceptions=True,
            )
        else:
            pipe = self.redis.pipeline(transaction=False)
            for keys, args in calls:
                await self._checkpoint(keys=keys, args=args, client=pipe)
            results = await pipe.execute(raise_on_error=False)
        return [_as_error(r) for r in results]

    def _checkpoint_call(self, s: Save, now: int) -> tuple[list[str], list[bytes | str | int]]:
        args: list[bytes | str | int] = [
            s.epoch,
            s.next_offset,
            now,
            self.worker_id,
            s.events,
            len(s.alerts),
        ]
        args += s.alerts
        for name, blob in s.fields.items():
            args += [name, blob]
        return [*self.keys(s.topic, s.partition), self.outbox_key(s.topic, s.partition)], args

    async def trim_outbox(
        self, topic: str, partition: int, epoch: int, published: int
    ) -> Exception | None:
        """Drop the first ``published`` outbox entries (fenced: only the owner may)."""
        keys = [self.keys(topic, partition)[0], self.outbox_key(topic, partition)]
        try:
            await self._trim_outbox(keys=keys, args=[epoch, published])
        except ResponseError as exc:
            return _as_error(exc)
        return None


@dataclass
class Save:
    topic: str
    partition: int
    epoch: int
    next_offset: int
    events: int  # events applied since the previous checkpoint
    fields: dict[str, bytes]
    # outbox entries produced since the previous checkpoint
    alerts: list[bytes] = field(default_factory=list)


def _as_error(result: object) -> Exception | None:
    if isinstance(result, ResponseError):
        if str(result).startswith("LOST"):
            return StateLost(str(result))
        return Fenced(str(result)) if "FENCED" in str(result) else result
    return result if isinstance(result, Exception) else None


def _now_ms() -> int:
    return int(time.time() * 1000)
