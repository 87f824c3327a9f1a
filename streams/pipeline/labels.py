"""Labels joined to their predictions: each model's error stream, fed to its ErrorMonitor.

Pure, like the rest of the pipeline: the runtime fetches the stored predictions (Redis) and
hands them in; pending and recently joined labels live in the partition's state.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Container, Iterable
from operator import is_not
from typing import Any, cast

import msgspec
import numpy as np

from streamdrift.detectors import ErrorMonitor, model_task
from streamdrift.streams.pipeline.codec import Label, Limits, Reason, decode_labels
from streamdrift.streams.pipeline.outcome import DeadLetter, Outcome, Record
from streamdrift.streams.pipeline.processor import ResolvedParams, bulkhead, findings_of
from streamdrift.streams.state.keys import parse_series, series_name
from streamdrift.streams.state.partition import (
    ERROR_SERIES,
    JOINED_CHUNK,
    PartitionState,
    PendingLabel,
)

log = logging.getLogger("streamdrift")


class LabelProcessor:
    """Joins labels to predictions and feeds each model's error stream to its ErrorMonitor.

    Hostile or broken label messages cannot stop the worker or exhaust it:

    * every record is decoded, and every label applied, under a guard: an exception (a bug, a
      message nested too deep for the decoder, a malformed stored prediction) dead-letters that
      record or that label (``internal_error``) and the rest goes on. Every label is counted
      once or dead-lettered once;
    * a label is refused at once, not after the TTL, if its model is not allowed
      (``allowed_models``: ``model_not_allowed``) or its predictions are not stored for joining
      (``join_models``: ``label_unmatched``);
    * a second label for a (model, event_id) already pending or joined recently is a
      ``duplicate_label``: an event is joined and counted once. "Recently": each partition
      remembers the last ``max_pending`` joined keys at most, for at most the TTL (``RecentJoins``,
      in the checkpoint, so a replay after a crash judges the same);
    * pending labels are bounded in total (``max_pending``), per model
      (``max_pending_per_model``) and in distinct models (``max_models``); beyond them a label is
      ``label_buffer_full``, the older ones keep their place.

    Look-ups (``lookups``): a label's prediction is looked up in the batch the label arrives in;
    after each look-up that finds nothing the label waits before the next one, 1 s, then 2 s,
    4 s ... doubling up to 60 s (``first_retry_s``, ``max_retry_s``; on the worker clock ``now``),
    until its prediction is found or the TTL (from its arrival) expires it as ``label_unmatched``.
    A label not due is still applied if the caller found its prediction anyway. The backoff alone
    does not make the pending list "changed": the checkpoint keeps the schedule of the last write,
    so after a restart a label may be looked up sooner, never later than it would have been.
    """

    first_retry_s = 1.0
    max_retry_s = 60.0

    def __init__(
        self,
        config: dict[str, Any],
        limits: Limits,
        ttl_s: float,
        max_pending: int,
        max_versions: int = 3,
        *,
        max_pending_per_model: int | None = None,
        max_models: int | None = None,
        allowed_models: Container[str] | None = None,
        join_models: Container[str] | None = None,
    ) -> None:
        self.config = config
        self.params = ResolvedParams(config)
        self.limits = limits
        self.ttl_s = ttl_s
        self.max_pending = max_pending
        self.max_versions = max_versions
        self.max_pending_per_model = (
            max_pending if max_pending_per_model is None else max_pending_per_model
        )
        self.max_models = max_models  # None: no bound besides max_pending
        self.allowed_models = allowed_models  # None: any
        self.join_models = join_models  # None: every model's predictions wait for labels
        self.joined_chunk = max(1, min(JOINED_CHUNK, max_pending // 10))

    def decode(
        self, state: PartitionState, records: Iterable[Record], now: float
    ) -> tuple[list[PendingLabel], Outcome]:
        """Decode new label messages; the caller looks up their predictions, then calls
        ``apply``."""
        out = Outcome()
        labels: list[PendingLabel] = []
        for record in records:
            if state._skip(record.offset):
                out.duplicates += 1
                continue
            try:
                decoded, letters = self._decode(record, now)
            except Exception as exc:  # a bug or a hostile message must not turn into a crash loop
                log.exception(
                    "unexpected error on %s[%d]@%d", state.topic, state.partition, record.offset
                )
                out.dead_letters.append(
                    DeadLetter(record.value or b"", Reason.INTERNAL_ERROR, repr(exc), record.offset)
                )
                continue
            labels += decoded
            out.dead_letters += letters
        return labels, out

    def _decode(self, record: Record, now: float) -> tuple[list[PendingLabel], list[DeadLetter]]:
        decoded, rejections = decode_labels(record.value, record.timestamp, self.limits)
        letters = [
            DeadLetter(r.payload, r.reason, r.detail, record.offset, r.index) for r in rejections
        ]
        labels = []
        for label in decoded:
            pending = _pending(label, record.offset, now)
            refused = self._refused(label.model)
            if refused is None:
                labels.append(pending)
            else:
                letters.append(_label_letter(pending, *refused, index=label.index))
        return labels, letters

    def _refused(self, model: str) -> tuple[Reason, str] | None:
        if self.allowed_models is not None and model not in self.allowed_models:
            return Reason.MODEL_NOT_ALLOWED, "model not in STREAMDRIFT_ALLOWED_MODELS"
        if self.join_models is not None and model not in self.join_models:
            return (
                Reason.LABEL_UNMATCHED,
                "the model's predictions are not stored for joining "
                "(STREAMDRIFT_LABEL_JOIN_MODELS)",
            )
        return None

    def lookups(
        self, state: PartitionState, labels: Iterable[PendingLabel], now: float
    ) -> list[tuple[str, str]]:
        """The (model, event_id) keys to look up now: those of the labels due, once each, none
        joined already."""
        keys: dict[tuple[str, str], None] = {}
        for label in labels:
            if label.due <= now:
                key = (label.model, label.event_id)
                if key not in state.joined:
                    keys[key] = None
        return list(keys)

    def due(self, state: PartitionState, now: float) -> bool:
        """Whether a pending label of ``state`` is due for a look-up or past the TTL."""
        return bool(state.pending) and now >= state.labels_due

    def apply(
        self,
        state: PartitionState,
        labels: list[PendingLabel],
        predictions: dict[tuple[str, str], bytes],
        now: float,
        out: Outcome,
    ) -> Outcome:
        """Apply labels whose prediction was found; keep the rest pending until the TTL.

        ``labels``: the state's pending labels, then the new ones (duplicates and bounds are
        judged in this order: the older keep their place). Never raises.
        """
        errors: dict[str, tuple[list[float], list[int]]] = {}  # per error series
        waiting: list[PendingLabel] = []
        seen: set[tuple[str, str]] = set()
        for label in labels:
            try:
                self._join(state, label, predictions, now, seen, errors, waiting, out)
            except Exception as exc:  # one label must not stop the others
                log.exception(
                    "unexpected error on a label of %s[%d]@%d",
                    state.topic,
                    state.partition,
                    label.offset,
                )
                out.dead_letters.append(_label_letter(label, Reason.INTERNAL_ERROR, repr(exc)))
        kept = self._keep(waiting, now, out)
        if len(kept) != len(state.pending) or any(map(is_not, kept, state.pending)):
            state.pending_dirty = True
        state.pending = kept
        state.labels_due = min(
            (min(label.due, label.arrived + self.ttl_s) for label in kept), default=math.inf
        )
        state.joined.forget(now, self.ttl_s, self.max_pending)
        state.events_since_checkpoint += out.events
        times = {label.offset: label.timestamp for label in labels}
        for series, (values, offsets) in errors.items():
            with bulkhead(state, series, out):
                monitor = cast("ErrorMonitor | None", state.monitors.get(series))
                if monitor is None:
                    monitor = state.monitors[series] = ErrorMonitor(
                        self.params(parse_series(series)[0], ERROR_SERIES)
                    )
                state.dirty.add(series)
                detections = monitor.update(
                    np.asarray(values, dtype=np.float64), np.asarray(offsets, dtype=np.int64)
                )
                out.findings += findings_of(series, monitor, detections, times)
        state.retire_versions(self.max_versions)
        return out

    def _join(
        self,
        state: PartitionState,
        label: PendingLabel,
        predictions: dict[tuple[str, str], bytes],
        now: float,
        seen: set[tuple[str, str]],
        errors: dict[str, tuple[list[float], list[int]]],
        waiting: list[PendingLabel],
        out: Outcome,
    ) -> None:
        """One label: a duplicate, joined, or waiting (backed off if it was looked up in vain).
        Everything that can fail comes before what it changes."""
        key = (label.model, label.event_id)
        if key in seen or key in state.joined:
            where = "joined already" if key in state.joined else "already pending"
            out.dead_letters.append(
                _label_letter(
                    label, Reason.DUPLICATE_LABEL, f"a label for this event_id is {where}"
                )
            )
            return
        seen.add(key)
        packed = predictions.get(key)
        if packed is None:
            if label.due <= now:  # looked up in vain: back off
                label.retry_s = (
                    min(2 * label.retry_s, self.max_retry_s)
                    if label.retry_s > 0
                    else self.first_retry_s
                )
                label.due = now + label.retry_s
            waiting.append(label)
            return
        prediction, version, predicted_at = _PACKED.decode(packed)
        lag = label.timestamp - predicted_at
        error = label_error(prediction, label.label, model_task(self.config, label.model))
        out.join_lags.append((label.model, lag))
        if error is None:
            out.dead_letters.append(
                _label_letter(
                    label, Reason.INVALID_LABEL, "label and prediction types do not match"
                )
            )
            return
        values, offsets = errors.setdefault(
            series_name(label.model, version, ERROR_SERIES), ([], [])
        )
        values.append(error)
        offsets.append(label.offset)
        state.saw_version(label.model, version)
        state.joined.add(key, now, self.joined_chunk)
        out.events += 1

    def _keep(self, waiting: list[PendingLabel], now: float, out: Outcome) -> list[PendingLabel]:
        """The labels still pending: none past the TTL, within the bounds (the older first)."""
        kept: list[PendingLabel] = []
        per_model: dict[str, int] = {}
        for label in waiting:
            count = per_model.get(label.model, 0)
            if now - label.arrived > self.ttl_s:
                reason, detail = Reason.LABEL_UNMATCHED, f"no prediction within {self.ttl_s:g}s"
            elif len(kept) >= self.max_pending:
                reason, detail = (
                    Reason.LABEL_BUFFER_FULL,
                    f"more than {self.max_pending} pending labels",
                )
            elif count >= self.max_pending_per_model:
                reason, detail = (
                    Reason.LABEL_BUFFER_FULL,
                    f"more than {self.max_pending_per_model} pending labels of the model",
                )
            elif count == 0 and self.max_models is not None and len(per_model) >= self.max_models:
                reason, detail = (
                    Reason.LABEL_BUFFER_FULL,
                    f"pending labels of more than {self.max_models} models",
                )
            else:
                kept.append(label)
                per_model[label.model] = count + 1
                continue
            out.dead_letters.append(_label_letter(label, reason, detail))
        return kept


# a stored prediction
_PACKED = msgspec.msgpack.Decoder(tuple[float | str | bool, str | None, float])


def label_error(prediction: float | str, label: float | str, task: str = "auto") -> float | None:
    """The model's error on one labelled event: 0/1 for classification, |error| for regression.

    ``auto`` treats a 0/1 label with a prediction in [0, 1] as binary classification
    (threshold 0.5), other numbers as regression, strings as classes.

    >>> (label_error(0.91, 1.0), label_error(0.2, 1.0),
    ...  label_error(3.5, 2.0), label_error("cat", "dog"))
    (0.0, 1.0, 1.5, 1.0)
    >>> label_error(0.7, 1.0, task="regression")
    0.30000000000000004
    """
    prediction, label = _as_number(prediction), _as_number(label)
    if isinstance(prediction, str) or isinstance(label, str):
        return float(_as_class(prediction) != _as_class(label))
    binary = label in (0.0, 1.0) and 0.0 <= prediction <= 1.0
    if task == "classification" or (task == "auto" and binary):
        predicted = float(prediction >= 0.5) if binary else prediction
        return float(predicted != label)
    error = abs(prediction - label)
    return error if math.isfinite(error) else None


def _as_number(value: float | str) -> float | str:
    """Boolean predictions arrive as the categories "true"/"false"; compare them as 1/0."""
    return {"true": 1.0, "false": 0.0}.get(value, value) if isinstance(value, str) else value


def _as_class(value: float | str) -> str:
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    return str(value)


def _pending(label: Label, offset: int, now: float) -> PendingLabel:
    return PendingLabel(label.model, label.event_id, label.label, label.timestamp, offset, now)


def _label_letter(
    label: PendingLabel, reason: Reason, detail: str, index: int | None = None
) -> DeadLetter:
    body = {
        "model": label.model,
        "event_id": label.event_id,
        "label": label.label,
        "timestamp": label.timestamp,
    }
    return DeadLetter(msgspec.json.encode(body), reason, detail, label.offset, index)
