"""Where the two halves of an inference meet: one Redis hash per (model, pair id), holding each
half's event under its identity and the claim that settles the pair
(:mod:`streams.pipeline.pairing` says what the answers mean).

One script call answers a batch's questions (up to ``CHUNK`` per call), each question atomically:
store the half (unless stored already; another identity there: ``duplicate``), then claim —
unless a claim exists — the pair if the half is a request and its response is there, or, when
asked to (its window is over), the pair if its partner is there and the half alone if not. So a
paired event is applied on the partition its request was read from, whichever half came first
(a response claims only past its window), and a model's monitors there do not depend on the
order the partitions were read in. Every write
renews the hash's TTL: the window plus ``REPLAY_MARGIN_S``, how long after its last write a
crashed worker can replay a claim it made (longer, and the claim it had not checkpointed is
forgotten: the pair is then counted as two unpaired halves, at most one checkpoint interval's
worth).
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import redis.asyncio as aioredis

from streamdrift.streams.pipeline.pairing import Answer, Ask
from streamdrift.streams.state.keys import KeyLayout

CHUNK = 500
REPLAY_MARGIN_S = 300.0

# KEYS: the pairs' hashes; ARGV[1] the TTL, then per key: kind, identity, event ('' if stored
# already), alone ('1' / '0'). Returns per key {'duplicate'} | {'wait'} |
# {'claimed', claim, partner or ''}, a claim being "<action>\n<identity>" and a stored half
# "<identity>\n<event>".
_OFFER = """
local ttl = ARGV[1]
local out = {}
for i, key in ipairs(KEYS) do
  local at = 2 + (i - 1) * 4
  local kind, identity, event, alone = ARGV[at], ARGV[at + 1], ARGV[at + 2], ARGV[at + 3]
  local other = 'request'
  if kind == 'request' then other = 'response' end
  local found = redis.call('HMGET', key, kind, 'claim', other)
  local mine, claim, partner = found[1], found[2], found[3]
  local writes = {}
  if event ~= '' then
    if not mine then
      writes = {kind, identity .. '\\n' .. event}
    elseif string.sub(mine, 1, #identity + 1) ~= identity .. '\\n' then
      out[i] = {'duplicate'}
    end
  end
  if not out[i] then
    -- a request claims the pair when its response is there; a response only when its window
    -- is over: the paired event is applied where the request was read, whatever the order
    if not claim and ((partner and kind == 'request') or alone == '1') then
      if partner then claim = 'pair\\n' .. identity else claim = 'alone\\n' .. identity end
      writes[#writes + 1] = 'claim'
      writes[#writes + 1] = claim
    end
    if #writes > 0 then
      redis.call('HSET', key, unpack(writes))
      redis.call('EXPIRE', key, ttl)
    end
    if claim then out[i] = {'claimed', claim, partner or ''} else out[i] = {'wait'} end
  end
end
return out
"""


class PairStore:
    def __init__(self, redis: aioredis.Redis, group_id: str) -> None:
        self.redis = redis
        self.layout = KeyLayout(group_id)

    async def offer(self, asks: Sequence[Ask], window_s: float) -> list[Answer]:
        """Answer each question (in order), one script call per ``CHUNK`` of them."""
        ttl = math.ceil(window_s + REPLAY_MARGIN_S)
        answers: list[Answer] = []
        for start in range(0, len(asks), CHUNK):
            chunk = asks[start : start + CHUNK]
            keys = [self.layout.pair_key(a.half.model, a.half.pair_id) for a in chunk]
            args: list[str | bytes | int] = [ttl]
            for ask in chunk:
                half = ask.half
                args += [half.kind, half.identity, half.event if ask.store else b"", int(ask.alone)]
            # EVAL, not EVALSHA: a cluster pipeline does not load a missing script on a node
            raw = await self.redis.eval(_OFFER, len(keys), *keys, *args)
            answers += [_answer(result) for result in raw]
        return answers


def _answer(result: list[bytes]) -> Answer:
    status = result[0].decode()
    if status != "claimed":
        return Answer(status)
    action, _, claimer = result[1].partition(b"\n")
    partner = result[2].partition(b"\n")[2] if result[2] else None
    return Answer("claimed", action.decode(), claimer.decode(), partner)
