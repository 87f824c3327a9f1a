"""Admission that a flood of made-up names cannot exhaust: allowlist, new-series budget,
probation for new models, eviction of idle models, versions and series.

Pure bookkeeping per partition (no I/O); ``streams.pipeline.processor`` asks it before an event
takes room and applies its evictions. Its clock is the partition's Kafka time (the newest record
timestamp, never ahead of the worker's clock by more than the future skew), so a replay after a
crash admits and evicts exactly what the first run did.

- **Allowlist** (``allowed_models``): other models are refused at once.
- **New-series budget**: a token bucket per partition refilled at ``max_new_series_per_s`` of
  Kafka time (holding at most one second's worth, and at least one message's worth), and at most
  ``max_new_series_per_message`` new series per message.
- **Probation**: a new model is on probation until it has ``probation_events`` events; at most
  ``max_probation_models`` are, and a newcomer beyond that (or beyond ``max_models``) evicts the
  least recently seen model on probation. Established models are never evicted by newcomers, so
  a flood of made-up names churns through probation and cannot lock out or wipe real models.
- **Idle eviction**: a model, version or series not seen for ``idle_evict_s`` is evicted
  (checked once per minute of Kafka time).
"""

from __future__ import annotations

from dataclasses import dataclass

import msgspec

MINUTE = 60.0


@dataclass(frozen=True, slots=True)
class AdmissionLimits:
    """Limits that protect a worker from a flood of new names (per partition state).

    The bound on categories per feature is each monitor's own ``max_categories`` parameter.
    """

    max_models: int = 1_000
    max_features_per_model: int = 2_000
    # Versions of a model monitored side by side (a canary next to the stable one); beyond it
    # the least recently seen version's series are retired (dropped from state and Redis).
    max_versions_per_model: int = 3
    allowed_models: frozenset[str] | None = None  # None: any model
    max_new_series_per_message: int = 1_000
    max_new_series_per_s: float = 1_000.0
    probation_events: int = 100
    max_probation_models: int = 100
    idle_evict_s: float = 7 * 86_400.0

    @property
    def bucket_size(self) -> float:
        """New series the bucket holds when full: one second's worth, and never less than one
        message may create (a wide model can always start)."""
        return max(self.max_new_series_per_s, float(self.max_new_series_per_message))


def parse_allowlist(value: str) -> frozenset[str] | None:
    """``*`` (any model) or a comma-separated list of names.

    >>> parse_allowlist("*") is None, sorted(parse_allowlist(" fraud, churn ,"))
    (True, ['churn', 'fraud'])
    """
    value = value.strip()
    return (
        None
        if value == "*"
        else frozenset(name.strip() for name in value.split(",") if name.strip())
    )


class Ledger(msgspec.Struct):
    """A partition's admission bookkeeping, checkpointed with its state (msgpack).

    Times are in whole minutes of Kafka time: an entry changes (and the ledger is written) at
    most once a minute per model or series.
    """

    clock: float = 0.0  # newest Kafka time seen (epoch seconds)
    tokens: float = -1.0  # new series the bucket holds now (-1: full, not started)
    swept: int = 0  # minute of the last idle sweep
    seen: dict[str, int] = {}  # model -> minute last seen
    series_seen: dict[str, int] = {}  # series -> minute last seen
    probation: dict[
        str, int
    ] = {}  # model on probation -> events so far (least recently seen first)

    def advance(
        self, kafka_time: float, now: float | None, limits: AdmissionLimits, future_skew_s: float
    ) -> bool:
        """Move the clock to a batch's newest Kafka time (never beyond ``now`` plus the skew: one
        record stamped in 2100 must not make every model look idle) and refill the bucket;
        whether an idle sweep is due."""
        if now is not None:
            kafka_time = min(kafka_time, now + future_skew_s)
        if self.tokens < 0:
            self.tokens = limits.bucket_size
        elif kafka_time > self.clock:
            self.tokens = min(
                limits.bucket_size,
                self.tokens + (kafka_time - self.clock) * limits.max_new_series_per_s,
            )
        self.clock = max(self.clock, kafka_time)
        return self.minute > self.swept

    @property
    def minute(self) -> int:
        return int(self.clock // MINUTE)

    def touch_model(self, model: str, events: int, limits: AdmissionLimits) -> bool:
        """Note ``events`` of ``model`` now; whether the ledger changed."""
        changed = self.seen.get(model) != self.minute
        if changed:
            self.seen[model] = self.minute
        count = self.probation.pop(model, None)
        if count is not None:
            count += events
            if count < limits.probation_events:
                self.probation[model] = count  # re-inserted: now the most recently seen
            changed = True
        return changed

    def touch_series(self, series: str) -> bool:
        if self.series_seen.get(series) == self.minute:
            return False
        self.series_seen[series] = self.minute
        return True

    def admit_model(self, model: str) -> None:
        self.probation[model] = 0
        self.seen[model] = self.minute

    def evictable(self) -> str | None:
        """The least recently seen model on probation."""
        return next(iter(self.probation), None)

    def forget_model(self, model: str, series: list[str]) -> None:
        self.seen.pop(model, None)
        self.probation.pop(model, None)
        for name in series:
            self.series_seen.pop(name, None)

    def idle(self, limits: AdmissionLimits) -> tuple[list[str], list[str]]:
        """Models and series not seen for ``idle_evict_s``; marks the sweep done."""
        self.swept = self.minute
        cutoff = self.minute - int(limits.idle_evict_s // MINUTE)
        models = [model for model, minute in self.seen.items() if minute < cutoff]
        series = [name for name, minute in self.series_seen.items() if minute < cutoff]
        return models, series

    def take_tokens(self, count: int) -> bool:
        if count > self.tokens:
            return False
        self.tokens -= count
        return True
