"""Read-only views of the state in Redis for ``streamdrift status``."""

from __future__ import annotations

from collections import defaultdict
from typing import Any

import msgspec
import redis

from streamdrift.detectors import StateError, merge_summaries
from streamdrift.streams.state.keys import META_PREFIX, parse_series
from streamdrift.streams.state.partition import UNKNOWN_MISSING, restore_monitor
from streamdrift.streams.state.reader import StateReader


def read_status(client: redis.Redis, group_id: str) -> dict[str, Any]:
    """Partitions (owner, epoch, offset, checkpoint age) and per-(model, feature) summaries.

    Monitors of the same series in several partitions, and of the model's versions (each
    monitored apart; ``versions`` lists them, "" for events without one), are merged (counts
    summed, means and quantiles combined exactly / via sketch merge).
    """
    reader = StateReader(client, group_id)
    partitions = []
    series: dict[tuple[str, str], list] = defaultdict(list)
    only_missing: dict[tuple[str, str], int] = defaultdict(int)
    unreadable: dict[tuple[str, str], str] = {}
    versions: dict[tuple[str, str], set[str]] = defaultdict(set)
    for topic, partition in reader.partitions():
        partitions.append(
            {"topic": topic, "partition": partition, **_typed(reader.checkpoint(topic, partition))}
        )
        for text, blob in reader.fields(topic, partition).items():
            if text == UNKNOWN_MISSING:
                for key, count in msgspec.msgpack.decode(blob).items():
                    model, _, feature = parse_series(key)
                    only_missing[(model, feature)] += count
            elif not text.startswith(META_PREFIX):
                model, version, feature = parse_series(text)
                versions[(model, feature)].add(version or "")
                try:
                    monitor = restore_monitor(text, blob)
                except StateError as exc:  # shown, not fatal: the worker restarts such a series too
                    unreadable[(model, feature)] = str(exc)
                    continue
                series[(model, feature)].append(monitor)  # never an empty list: summaries need one
    models: dict[str, dict[str, Any]] = defaultdict(dict)
    for (model, feature), monitors in sorted(series.items()):
        kinds = {m.kind for m in monitors}
        if len(kinds) == 1:  # the PCA monitor (one per partition) merges by its own rule too
            models[model][feature] = {
                **merge_summaries(monitors),
                "versions": sorted(versions[(model, feature)]),
            }
        else:  # the same name was numeric in one partition and categorical in another
            for kind in sorted(kinds):
                models[model][f"{feature} ({kind})"] = merge_summaries(
                    [m for m in monitors if m.kind == kind]
                )
    for (model, feature), error in sorted(unreadable.items()):
        models[model].setdefault(
            f"{feature} (unreadable)",
            {"kind": "unreadable", "count": 0, "missing": 0, "error": error},
        )
    for (model, feature), count in sorted(only_missing.items()):
        if feature in models[model]:
            models[model][feature]["missing"] += count
        else:
            models[model][feature] = {"kind": "unknown", "count": 0, "missing": count}
    return {"group_id": group_id, "partitions": partitions, "models": dict(models)}


def _typed(ckpt: dict[str, str]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, value in ckpt.items():
        out[key] = int(value) if value.lstrip("-").isdigit() and key != "worker" else value
    return out
