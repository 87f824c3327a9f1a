"""Stored reference baselines in Redis, shared by every worker and the CLI.

===================================== ====== ==================================================
key                                   type   contents
===================================== ====== ==================================================
``sd:{baselines}:index``              hash   ``model SEP version`` -> revision (decimal)
``sd:{baselines}:meta``               hash   ``model SEP version`` -> JSON summary for listing
``sd:{baselines}:blob:MODEL SEP VER`` string the :class:`~detectors.baseline.Baseline` (msgpack)
``sd:{baselines}:revision``           string counter: bumped by every change, so workers
                                             reload only when something changed
===================================== ====== ==================================================

Every key shares the ``{baselines}`` hash tag (one Redis Cluster slot), so a put or a delete is
one atomic Lua script. Revisions come from the global counter: a re-uploaded baseline gets a
higher revision, and workers seed their series again with it.
"""

from __future__ import annotations

import json
import logging
import time
from typing import Any, cast

import msgspec
import redis
import redis.asyncio as aioredis
from redis.asyncio.cluster import RedisCluster

from streamdrift.detectors import (
    Baseline,
    CategoricalMonitor,
    CategoryCounts,
    NumericMonitor,
    QuantileSketch,
    RunningStats,
    monitor_from_bytes,
)
from streamdrift.detectors.baseline import profile_of
from streamdrift.streams.state.keys import (
    BASELINES_TAG,
    baseline_blob_key,
    baseline_field,
    parse_baseline_field,
)
from streamdrift.streams.state.reader import StateReader

log = logging.getLogger("streamdrift")

INDEX, META, REVISION = (f"{BASELINES_TAG}:{name}" for name in ("index", "meta", "revision"))

# KEYS: revision, index, meta, blob; ARGV: field, blob (empty: delete), meta JSON
_PUT = """
local revision = redis.call('INCR', KEYS[1])
if ARGV[2] == '' then
  local existed = redis.call('HDEL', KEYS[2], ARGV[1])
  redis.call('HDEL', KEYS[3], ARGV[1])
  redis.call('DEL', KEYS[4])
  return existed
end
redis.call('SET', KEYS[4], ARGV[2])
redis.call('HSET', KEYS[2], ARGV[1], revision)
redis.call('HSET', KEYS[3], ARGV[1], ARGV[3])
return revision
"""


def _meta(baseline: Baseline) -> str:
    kinds = [profile.kind for profile in baseline.features.values()]
    return json.dumps(
        {
            "model": baseline.model,
            "version": baseline.version,
            "rows": baseline.rows,
            "numeric": kinds.count("numeric"),
            "categorical": kinds.count("categorical"),
            "source": baseline.source,
            "created_at": baseline.created_at,
        },
        separators=(",", ":"),
    )


class BaselineStore:
    """Put, get, list and delete baselines (synchronous: for the CLI and tests)."""

    def __init__(self, client: redis.Redis | redis.RedisCluster) -> None:
        self.client = client
        self._put = client.register_script(_PUT)

    def put(self, baseline: Baseline) -> int:
        """Store ``baseline`` (replacing that of the same model and version); its revision."""
        keys = [REVISION, INDEX, META, baseline_blob_key(baseline.model, baseline.version)]
        data = msgspec.structs.replace(baseline, revision=0).to_bytes()
        return int(
            self._put(
                keys=keys,
                args=[baseline_field(baseline.model, baseline.version), data, _meta(baseline)],
            )
        )

    def delete(self, model: str, version: str | None) -> bool:
        keys = [REVISION, INDEX, META, baseline_blob_key(model, version)]
        return bool(self._put(keys=keys, args=[baseline_field(model, version), b"", b""]))

    def get(self, model: str, version: str | None) -> Baseline | None:
        revision = self.client.hget(INDEX, baseline_field(model, version))
        data = cast("bytes | None", self.client.get(baseline_blob_key(model, version)))
        if revision is None or data is None:
            return None
        return msgspec.structs.replace(Baseline.from_bytes(data), revision=int(revision))

    def list(self, model: str | None = None) -> list[dict[str, Any]]:
        """Summaries (model, version, revision, rows, feature counts, source), sorted."""
        revisions = self.client.hgetall(INDEX)
        rows = [
            {**json.loads(raw), "revision": int(revisions[field])}
            for field, raw in self.client.hgetall(META).items()
            if field in revisions
        ]
        return sorted(
            (r for r in rows if model is None or r["model"] == model),
            key=lambda r: (r["model"], r["version"] or ""),
        )


class BaselineCatalog(dict[tuple[str, str | None], Baseline]):
    """The worker's copy of every stored baseline, by (model, version); :meth:`refresh` reloads
    what changed since the last call (one GET when nothing did)."""

    def __init__(self) -> None:
        super().__init__()
        self.revision: int | None = None

    async def refresh(self, client: aioredis.Redis | RedisCluster) -> list[str]:
        """Reload changed baselines; the labels of those added or replaced."""
        raw = await client.get(REVISION)
        revision = int(raw) if raw is not None else 0
        if revision == self.revision:
            return []
        index = {
            parse_baseline_field(f.decode()): int(r)
            for f, r in cast("dict[bytes, bytes]", await client.hgetall(INDEX)).items()
        }
        changed = [key for key, r in index.items() if key not in self or self[key].revision != r]
        for key in [k for k in self if k not in index]:
            del self[key]
        loaded = []
        for key in changed:
            data = cast("bytes | None", await client.get(baseline_blob_key(*key)))
            if data is None:  # deleted between the two reads: the next refresh sees it
                continue
            try:
                self[key] = msgspec.structs.replace(Baseline.from_bytes(data), revision=index[key])
            except ValueError as exc:  # not fatal: its series keep their current reference
                log.error("stored baseline of %s version %s is unreadable: %s", *key, exc)
                continue
            loaded.append(self[key].label)
        self.revision = revision
        return loaded


def freeze_baseline(
    client: redis.Redis, group_id: str, model: str, version: str | None, source: str
) -> Baseline:
    """A baseline of everything the group's workers have seen of ``model`` at ``version`` so
    far (every partition's series merged): "this version's traffic until now is the reference".

    ``LookupError`` if no partition has a series of that model and version.
    """
    numeric: dict[str, tuple[RunningStats, QuantileSketch, list[int]]] = {}
    categorical: dict[str, tuple[list[CategoryCounts], list[int]]] = {}
    for stored in StateReader(client, group_id).series(model):
        if stored.key.version != version:
            continue
        feature = stored.key.feature
        monitor = monitor_from_bytes(stored.blob)
        if isinstance(monitor, NumericMonitor):
            stats, sketch, missing = numeric.setdefault(
                feature, (RunningStats(), QuantileSketch(monitor.sketch.k), [0])
            )
            stats.merge(monitor.stats)
            sketch.merge(monitor.sketch)
            missing[0] += monitor.missing
        elif isinstance(monitor, CategoricalMonitor):
            parts, missing = categorical.setdefault(feature, ([], [0]))
            parts.append(monitor.counts)
            missing[0] += monitor.missing
    if not numeric and not categorical:
        raise LookupError(f"no state of model {model!r} version {version!r} in group {group_id!r}")
    features = {
        name: profile_of(stats, sketch, missing=missing[0])
        for name, (stats, sketch, missing) in numeric.items()
    }
    for name, (parts, missing) in categorical.items():
        merged = CategoryCounts(sum(part.max_categories for part in parts))
        for part in parts:
            merged.merge(part)
        features[name] = profile_of(counts=merged, missing=missing[0])
    rows = max(profile.events for profile in features.values())
    return Baseline(model, version, rows, dict(sorted(features.items())), source, time.time())
