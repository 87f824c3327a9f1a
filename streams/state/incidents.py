"""Where a consumer group decides which incident each drift alert opens or joins: one Redis hash
per model (``sd:{G}:incidents:<model>``), changed by one Lua script per model and batch.

The features of one model may be monitored on several input partitions, owned by several
workers; the hash is the one place they meet. The script is **idempotent by alert id**: it
stores its answer for every alert (field ``a:<alert id>``) and gives the stored answer again when
the alert comes back — a worker killed before its checkpoint replays the same alerts (the same
ids: :func:`streams.pipeline.alerts.alert_id`), so an incident is opened once and a member counted
once, whoever replays. The answers are part of what the partition's checkpoint (the outbox)
then publishes, so the incident events of a replay are the same bytes.

Rules (``window`` = ``STREAMDRIFT_INCIDENT_WINDOW_S``, times are the alerts' record times):

* a detection joins the model's open incident if its time lies within ``window`` before the
  incident's opening and ``window`` after its latest detection (chained: a cascade of features
  moving one after the other stays one incident); otherwise it opens a new incident;
* a member is one series of one input partition; a resolution closes the member that its series
  last joined; an incident resolves when every member it holds has resolved;
* per call, at most one event per incident: ``opened`` (listing every member that joined in the
  same call) or ``updated`` (new members joined), and ``resolved``.

Fields of the hash: ``open`` (the incident new detections may join), ``order`` (incident ids,
oldest first: the oldest beyond ``max_incidents`` are dropped with their answers), ``i:<id>``
(the incident: times, members with their facts, alert ids), ``m:<member>`` (the incident holding
the member's latest detection), ``a:<alert id>`` (the answer given). The hash expires ``ttl``
seconds after its last change. Times and facts travel as strings (Lua's JSON encoder keeps 14
digits of a number).
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Any

import redis.asyncio as aioredis

from streamdrift.streams.pipeline.incidents import Answer, Decision
from streamdrift.streams.state.keys import KeyLayout

# KEYS[1] the model's hash; ARGV: window (s), ttl (s), max members, max incidents, items (JSON).
_DECIDE = """
local key = KEYS[1]
local window, ttl = tonumber(ARGV[1]), tonumber(ARGV[2])
local max_members, max_incidents = tonumber(ARGV[3]), tonumber(ARGV[4])
local items = cjson.decode(ARGV[5])
local records, changed, answers, fresh = {}, {}, {}, {}

local function load(id)
  if not id then return nil end
  local r = records[id]
  if r == nil then
    local raw = redis.call('HGET', key, 'i:' .. id)
    if not raw then return nil end
    r = cjson.decode(raw)
    records[id] = r
  end
  return r
end

local function forget(id)
  local r = load(id)
  if r then
    for _, alert in ipairs(r.alerts) do redis.call('HDEL', key, 'a:' .. alert) end
    for _, m in ipairs(r.members) do
      local pointer = 'm:' .. m.key
      if redis.call('HGET', key, pointer) == id then redis.call('HDEL', key, pointer) end
    end
  end
  if redis.call('HGET', key, 'open') == id then redis.call('HDEL', key, 'open') end
  redis.call('HDEL', key, 'i:' .. id)
  records[id], changed[id] = nil, nil
end

local function open_new(item)
  local id = item.candidate
  local r = {opened = item.time, latest = item.time, resolved = false, alerts = {},
             members = {{key = item.member, facts = item.facts, open = true}},
             active = {}, labelled = false}
  records[id], changed[id] = r, true
  redis.call('HSET', key, 'open', id)
  local raw = redis.call('HGET', key, 'order')
  local order = raw and cjson.decode(raw) or {}
  table.insert(order, id)
  while #order > max_incidents do
    forget(table.remove(order, 1))
  end
  redis.call('HSET', key, 'order', cjson.encode(order))
  return id, r
end

-- what the partitions tell about the model while the incident lasts: its versions in traffic,
-- whether labels flow
local function observe(r, item)
  for _, version in ipairs(item.versions) do r.active[version] = true end
  r.labelled = r.labelled or item.labelled
end

local function member_of(r, member)
  for _, m in ipairs(r.members) do
    if m.key == member then return m end
  end
  return nil
end

for n, item in ipairs(items) do
  local stored = redis.call('HGET', key, 'a:' .. item.alert)
  if stored then
    answers[n] = cjson.decode(stored)
  elseif item.event == 'detected' then
    local t = tonumber(item.time)
    local id = redis.call('HGET', key, 'open')
    local r = load(id)
    local action
    if r and not r.resolved and t >= tonumber(r.opened) - window
        and t <= tonumber(r.latest) + window then
      local m = member_of(r, item.member)
      if m then
        m.open = true
        action = 'joined'
      elseif #r.members < max_members then
        table.insert(r.members, {key = item.member, facts = item.facts, open = true})
        action = 'updated'
      else
        action = 'joined'
      end
      if t > tonumber(r.latest) then r.latest = item.time end
    else
      id, r = open_new(item)
      action = 'opened'
    end
    changed[id] = true
    table.insert(r.alerts, item.alert)
    observe(r, item)
    redis.call('HSET', key, 'm:' .. item.member, id)
    answers[n], fresh[n] = {incident = id, action = action}, true
  else
    local id = redis.call('HGET', key, 'm:' .. item.member)
    local r = load(id)
    local m = r and member_of(r, item.member)
    if not m or r.resolved then
      answers[n], fresh[n] = {incident = id or '', action = 'none'}, true
    else
      m.open = false
      local still = false
      for _, other in ipairs(r.members) do still = still or other.open end
      table.insert(r.alerts, item.alert)
      observe(r, item)
      changed[id] = true
      if still then
        answers[n], fresh[n] = {incident = id, action = 'joined'}, true
      else
        r.resolved = item.time
        if redis.call('HGET', key, 'open') == id then redis.call('HDEL', key, 'open') end
        answers[n], fresh[n] = {incident = id, action = 'resolved'}, true
      end
    end
  end
end

-- one opened or updated event per incident and call: the opening alert's, else the last update's
local opened, last_update = {}, {}
for n, answer in ipairs(answers) do
  if fresh[n] and answer.action == 'opened' then opened[answer.incident] = true end
end
for n, answer in ipairs(answers) do
  if fresh[n] and answer.action == 'updated' then
    if opened[answer.incident] then
      answer.action = 'joined'
    else
      local before = last_update[answer.incident]
      if before then answers[before].action = 'joined' end
      last_update[answer.incident] = n
    end
  end
end

-- the answers given now tell the incident as it stands after the whole call
local members = {}
for n, answer in ipairs(answers) do
  local r = load(answer.incident ~= '' and answer.incident or nil)
  if fresh[n] then
    if r then
      answer.k = #r.members
      answer.opened, answer.latest = r.opened, r.latest
      answer.resolved = answer.action == 'resolved' and r.resolved or false
      local active = {}
      for version, _ in pairs(r.active) do table.insert(active, version) end
      table.sort(active)
      answer.active, answer.labelled = active, r.labelled
    else
      answer.k = 0
    end
    redis.call('HSET', key, 'a:' .. items[n].alert, cjson.encode(answer))
  end
  if r and answer.k > 0 and (answer.action == 'opened' or answer.action == 'updated'
      or answer.action == 'resolved') then
    local facts = {}
    for i = 1, math.min(answer.k, #r.members) do facts[i] = r.members[i].facts end
    members[n] = facts
  end
end
for id, _ in pairs(changed) do
  if records[id] then redis.call('HSET', key, 'i:' .. id, cjson.encode(records[id])) end
end
redis.call('EXPIRE', key, ttl)
local out = {}
for n, answer in ipairs(answers) do
  out[n] = cjson.encode({answer = answer, members = members[n] or false})
end
return out
"""


def _as_json(item: Decision) -> dict[str, str | bool | list[str]]:
    """An alert for the script; its time as a string (Lua's JSON keeps 14 digits of numbers)."""
    return {
        "alert": item.alert,
        "event": item.event,
        "time": repr(item.time),
        "member": item.member,
        "facts": item.facts,
        "candidate": item.candidate,
        "versions": list(item.versions),
        "labelled": item.labelled,
    }


class IncidentStore:
    """The group's incidents, one hash per model (see the module docstring)."""

    def __init__(
        self,
        redis: aioredis.Redis,
        group_id: str,
        window_s: float,
        ttl_s: float,
        max_members: int,
        max_incidents: int = 10,
    ) -> None:
        self.redis = redis
        self.layout = KeyLayout(group_id)
        self.window_s = window_s
        self.ttl_s = ttl_s
        self.max_members = max_members
        self.max_incidents = max_incidents

    async def decide(self, model: str, items: Sequence[Decision]) -> list[Answer]:
        """The answer for each alert, in order (see the module docstring)."""
        if not items:
            return []
        replies = await self.redis.eval(
            _DECIDE,
            1,
            self.layout.incidents_key(model),
            repr(self.window_s),
            str(int(self.ttl_s)),
            str(self.max_members),
            str(self.max_incidents),
            json.dumps([_as_json(item) for item in items]),
        )
        return [_answer(json.loads(reply)) for reply in replies]


def _answer(reply: dict[str, Any]) -> Answer:
    answer = reply["answer"]
    members = reply["members"] or []  # Lua encodes an empty table as {}: never a list here
    active = answer.get("active") or []
    resolved = answer.get("resolved") or None
    return Answer(
        incident=answer["incident"],
        action=answer["action"],
        members=[json.loads(facts) for facts in members] if isinstance(members, list) else [],
        opened=float(answer.get("opened") or 0.0),
        latest=float(answer.get("latest") or 0.0),
        resolved=None if resolved is None else float(resolved),
        active_versions=tuple(active) if isinstance(active, list) else (),
        labelled=bool(answer.get("labelled")),
    )
