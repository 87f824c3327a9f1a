"""Segment triage in the pipeline: feed each (model, version, segment feature)'s profile
(:class:`detectors.segments.SegmentProfile`) with a batch's events, and attach to each
detection which values of the segment feature carry it.

A profile is updated up to each detection's record, then asked, then updated on: what a
detection says depends on the records up to it, never on where a batch ended, so a replay
after a crash (in other batches) says the same.
"""

from __future__ import annotations

import dataclasses
import logging
from collections import defaultdict
from collections.abc import Callable
from typing import Any, cast

import numpy as np

from streamdrift.detectors import CategoricalMonitor, NumericMonitor
from streamdrift.detectors.segments import SegmentProfile
from streamdrift.streams.pipeline.batch import Batch
from streamdrift.streams.pipeline.codec import PREDICTION
from streamdrift.streams.pipeline.outcome import Finding
from streamdrift.streams.state.keys import parse_series
from streamdrift.streams.state.partition import PartitionState, SegmentKey

log = logging.getLogger("streamdrift")

#: The kinds of detection segment triage speaks to: a numeric input or the prediction.
TRIAGED_KINDS = ("feature", "prediction")


def apply_segments(
    state: PartitionState,
    batch: Batch,
    findings: list[Finding],
    segments_of: Callable[[str], tuple[str, ...]],
    kind_of: Callable[[str], type | None],
) -> list[Finding]:
    """Update the segment profiles of the batch's models that have segment features
    (``segments_of``); return ``findings`` with their triage attached. ``kind_of``: a series'
    kind (numeric, categorical, or None if unknown yet).

    A profile that fails to update is dropped (it starts afresh), like a monitor's bulkhead.
    """
    asked = _detections(findings, segments_of)
    triaged: dict[int, list[dict[str, Any]]] = defaultdict(list)
    for model in list(batch.model_events):
        segments = segments_of(model)
        if not segments:
            continue
        for version, features in _by_version(batch, model).items():
            numeric = {
                feature: series
                for feature, series in features.items()
                if feature not in segments and kind_of(series) is NumericMonitor
            }
            for segment in segments:
                series = features.get(segment)
                if series is None or kind_of(series) is not CategoricalMonitor:
                    continue
                key = (model, version, segment)
                try:
                    _update(state, key, batch, series, numeric, asked.get(key[:2], []), triaged)
                except Exception:  # a bug must not stop the partition: the profile restarts
                    log.exception("segment profile %s failed: started afresh", key)
                    state.drop_segments({key}.__contains__)
    for i, facts in triaged.items():
        findings[i] = dataclasses.replace(findings[i], segments=facts)
    return findings


def segment_shifts(profile: SegmentProfile) -> tuple[dict[str, float], dict[str, float]]:
    """The profile's bias indicators per value: the largest |shift| (in reference sigma) among
    its input features, and the prediction's |shift|."""
    inputs: dict[str, float] = {}
    prediction: dict[str, float] = {}
    for value, shifts in profile.shifts().items():
        of_inputs = [abs(shift) for feature, shift in shifts.items() if feature != PREDICTION]
        if of_inputs:
            inputs[value] = max(of_inputs)
        if PREDICTION in shifts:
            prediction[value] = abs(shifts[PREDICTION])
    return inputs, prediction


def _detections(
    findings: list[Finding], segments_of: Callable[[str], tuple[str, ...]]
) -> dict[tuple[str, str | None], list[tuple[int, int, str]]]:
    """Per (model, version): the detections to triage, as (position, index in ``findings``,
    feature), in order of position."""
    asked: dict[tuple[str, str | None], list[tuple[int, int, str]]] = defaultdict(list)
    for i, finding in enumerate(findings):
        if (
            finding.detection.event == "detected"
            and finding.kind in TRIAGED_KINDS
            and segments_of(finding.model)
        ):
            asked[(finding.model, finding.model_version)].append(
                (finding.detection.position, i, finding.feature)
            )
    for entries in asked.values():
        entries.sort()
    return asked


def _by_version(batch: Batch, model: str) -> dict[str | None, dict[str, str]]:
    """The model's series in the batch: per version, feature -> series."""
    out: dict[str | None, dict[str, str]] = defaultdict(dict)
    for series in batch.series_of(model):
        key = parse_series(series)
        out[key.version][key.feature] = series
    return out


def _update(
    state: PartitionState,
    key: SegmentKey,
    batch: Batch,
    series: str,
    numeric: dict[str, str],
    asked: list[tuple[int, int, str]],
    triaged: dict[int, list[dict[str, Any]]],
) -> None:
    seqs, offsets, keyed = batch.series[series].keyed(numeric=False)
    values = cast("list[str | None]", keyed)  # a categorical series' values
    columns = {feature: _aligned(seqs, *_numbers(batch, name)) for feature, name in numeric.items()}
    profile = state.segments.get(key)
    if profile is None:
        profile = state.segments[key] = SegmentProfile(key[2])
    state.segments_dirty.add(key)
    done = 0
    for position, index, feature in asked:
        # every event of the detection's record, and those before it
        upto = int(np.searchsorted(offsets, position, side="right"))
        if upto > done:
            profile.update(values[done:upto], {f: c[done:upto] for f, c in columns.items()})
            done = upto
        facts = profile.triage(feature)
        if facts is not None:
            triaged[index].append(facts)
    if done < len(values):
        profile.update(values[done:], {f: c[done:] for f, c in columns.items()})


def _numbers(batch: Batch, series: str) -> tuple[np.ndarray, np.ndarray]:
    seqs, _, column = batch.series[series].keyed(numeric=True)
    return seqs, np.asarray(column, dtype=np.float64)


def _aligned(segment_seqs: np.ndarray, seqs: np.ndarray, column: np.ndarray) -> np.ndarray:
    """``column`` (values at ``seqs``) at the segment's events: NaN where an event has none."""
    out = np.full(len(segment_seqs), np.nan)
    if not len(segment_seqs) or not len(seqs):
        return out
    where = np.minimum(np.searchsorted(segment_seqs, seqs), len(segment_seqs) - 1)
    hit = segment_seqs[where] == seqs
    out[where[hit]] = column[hit]
    return out
