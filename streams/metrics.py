"""Prometheus metrics of a worker (one registry per worker, served on ``/metrics``).

Labels stay low-cardinality: topics, partitions, reasons and detectors are small fixed sets;
model and feature names are bounded by the admission limits (``max_models``,
``max_features_per_model``).
"""

from __future__ import annotations

import contextlib
import time
from collections import defaultdict
from collections.abc import Callable, Iterable
from typing import TYPE_CHECKING, Any

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily

if TYPE_CHECKING:
    from streamdrift.detectors import ModelRouting


class FalseAlarmCollector:
    """Achieved vs configured false-alarm rates, summed over the worker's monitors per detector.

    ``firings / evaluations`` counts every firing, true alarms included, so on a stream that
    drifts it is an upper bound of the false-alarm rate; on stationary streams it should stay
    below ``streamdrift_false_alarm_target_rate``.
    """

    def __init__(self, monitors: Callable[[], Iterable[Any]]) -> None:
        self.monitors = monitors

    def collect(self):
        evaluations: dict[str, float] = defaultdict(float)
        firings: dict[str, float] = defaultdict(float)
        targets: dict[str, list[float]] = defaultdict(list)
        for monitor in self.monitors():
            try:  # read from the metrics thread while the worker may be updating the monitor
                detectors = monitor.false_alarms()["detectors"]
            except Exception:
                continue
            for name, d in detectors.items():
                evaluations[name] += d["evaluations"]
                firings[name] += d["firings"]
                if d["rate"] is not None:
                    targets[name].append(d["rate"])
        evaluated = CounterMetricFamily(
            "streamdrift_detector_evaluations",
            "Values or windows the owned detectors judged",
            labels=["detector"],
        )
        fired = CounterMetricFamily(
            "streamdrift_detector_firings",
            "Detections of the owned detectors (suppressed ones included)",
            labels=["detector"],
        )
        target = GaugeMetricFamily(
            "streamdrift_false_alarm_target_rate",
            "Mean configured false alarms per evaluation",
            labels=["detector"],
        )
        for name in sorted(evaluations):
            evaluated.add_metric([name], evaluations[name])
            fired.add_metric([name], firings[name])
            if targets[name]:
                target.add_metric([name], sum(targets[name]) / len(targets[name]))
        return [evaluated, fired, target]


class LargestOfOwners:
    """A gauge whose every label set shows the largest value among the owners that set it —
    one per owned partition and model version — so that partitions and versions never
    overwrite each other; a label set no longer owned anywhere has no sample.

    Owners are ``(topic, partition, version)``.
    """

    def __init__(self, gauge: Gauge) -> None:
        self.gauge = gauge
        self.scores: dict[tuple[str, ...], dict[tuple[str, int, str | None], float]] = defaultdict(
            dict
        )

    def put(
        self, owner: tuple[str, int, str | None], labels: tuple[str, ...], value: float
    ) -> None:
        self.scores[labels][owner] = value
        self._expose(labels)

    def remove(self, owner: tuple[str, int, str | None], labels: tuple[str, ...]) -> None:
        """The owner no longer has a value for ``labels``."""
        if self.scores.get(labels, {}).pop(owner, None) is not None:
            self._expose(labels)

    def owned_by(self, owner: tuple[str, int, str | None]) -> list[tuple[str, ...]]:
        return [labels for labels, owners in self.scores.items() if owner in owners]

    def drop_partition(self, topic: str, partition: int) -> None:
        """Forget every value of a partition this worker no longer owns."""
        for labels, owners in list(self.scores.items()):
            gone = [owner for owner in owners if owner[:2] == (topic, partition)]
            for owner in gone:
                del owners[owner]
            if gone:
                self._expose(labels)

    def _expose(self, labels: tuple[str, ...]) -> None:
        owners = self.scores.get(labels)
        if owners:
            self.gauge.labels(*labels).set(max(owners.values()))
            return
        self.scores.pop(labels, None)
        with contextlib.suppress(KeyError):  # never exposed
            self.gauge.remove(*labels)


class DriftScores(LargestOfOwners):
    """``streamdrift_drift_score{model, feature}``: the largest score among the series this worker
    owns for that pair (see :class:`LargestOfOwners`)."""

    def set(
        self, owner: tuple[str, int, str | None], model: str, feature: str, score: float
    ) -> None:
        self.put(owner, (model, feature), score)

    def discard(self, owner: tuple[str, int, str | None], model: str, feature: str) -> None:
        """The series is gone (its version retired, or it restarts afresh)."""
        self.remove(owner, (model, feature))


class Metrics:
    def __init__(self, monitors: Callable[[], Iterable[Any]] = tuple) -> None:
        self.registry = CollectorRegistry()
        r = self.registry
        r.register(FalseAlarmCollector(monitors))
        self.events = Counter(
            "streamdrift_events", "Valid events applied to state", ["topic"], registry=r
        )
        self.duplicates = Counter(
            "streamdrift_duplicate_records",
            "Kafka records skipped because their offset was already checkpointed",
            ["topic"],
            registry=r,
        )
        self.dead_letters = Counter(
            "streamdrift_dead_letters",
            "Events or messages sent to the dead-letter topic",
            ["reason"],
            registry=r,
        )
        self.alerts = Counter(
            "streamdrift_alerts",
            "Drift alerts published",
            ["model", "feature", "detector"],
            registry=r,
        )
        self.resolved = Counter(
            "streamdrift_alerts_resolved",
            "drift.resolved events published",
            ["model", "feature"],
            registry=r,
        )
        self.model_info = Gauge(
            "streamdrift_model_info",
            "Always 1: the owner and runbook of each model configured with one (join on model)",
            ["model", "owner", "runbook_url"],
            registry=r,
        )
        self.incidents = Counter(
            "streamdrift_incidents",
            "Incident events published (action: opened, updated, resolved)",
            ["model", "action"],
            registry=r,
        )
        self.drift_score = Gauge(
            "streamdrift_drift_score",
            "Drift of the current data vs the reference: |EWMA mean - reference mean| in "
            "reference sigma (numeric, error rate); PSI of the last window (categorical); the "
            "largest of this worker's owned partitions and model versions",
            ["model", "feature"],
            registry=r,
        )
        self.drift_scores = DriftScores(self.drift_score)
        self.segment_shift = Gauge(
            "streamdrift_segment_shift",
            "Segment triage (models.<model>.segments): per value of a segment feature, the "
            "largest |current mean - reference mean| of its events' input features, in the "
            "feature's reference sigma; the largest of this worker's partitions and versions",
            ["model", "segment", "value"],
            registry=r,
        )
        self.segment_shifts = LargestOfOwners(self.segment_shift)
        self.segment_prediction_shift = Gauge(
            "streamdrift_segment_prediction_shift",
            "Segment triage: per value of a segment feature, |current mean - reference "
            "mean| of the prediction on its events, in the prediction's reference sigma "
            "(a bias indicator); the largest of this worker's partitions and versions",
            ["model", "segment", "value"],
            registry=r,
        )
        self.segment_prediction_shifts = LargestOfOwners(self.segment_prediction_shift)
        self.lag = Gauge(
            "streamdrift_consumer_lag_messages",
            "High watermark minus next offset to process",
            ["topic", "partition"],
            registry=r,
        )
        self.event_lag = Gauge(
            "streamdrift_event_lag_seconds",
            "Wall clock minus the newest event timestamp of the last batch",
            ["topic"],
            registry=r,
        )
        self.checkpoint_age = Gauge(
            "streamdrift_checkpoint_age_seconds",
            "Seconds since the last successful checkpoint",
            registry=r,
        )
        self.checkpoint_cpu = Counter(
            "streamdrift_checkpoint_cpu_seconds",
            "CPU time of the worker's event-loop thread spent in checkpoints (serialising state "
            "included)",
            registry=r,
        )
        self.checkpoint_duration = Histogram(
            "streamdrift_checkpoint_duration_seconds",
            "Duration of one checkpoint round trip",
            registry=r,
            buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 1.0),
        )
        self.checkpoints = Counter(
            "streamdrift_checkpoints",
            "Partition checkpoints by result (ok, fenced, error)",
            ["result"],
            registry=r,
        )
        self.partitions = Gauge(
            "streamdrift_partitions_owned", "Partitions owned by this worker", ["topic"], registry=r
        )
        self.joinable = Counter(
            "streamdrift_predictions_joinable",
            "Predictions with an event_id, waiting for a label",
            ["model"],
            registry=r,
        )
        self.joined = Counter(
            "streamdrift_labels_joined", "Labels joined to their prediction", ["model"], registry=r
        )
        self.join_lag = Histogram(
            "streamdrift_label_join_lag_seconds",
            "Label timestamp minus its prediction's timestamp",
            registry=r,
            buckets=(1, 10, 60, 300, 900, 3600, 4 * 3600, 24 * 3600, 7 * 24 * 3600),
        )
        self.pairs = Counter(
            "streamdrift_pairs",
            "Halves of inferences settled, by input topic and result: paired (one per pair), "
            "unpaired_request, unpaired_response, duplicate, unreadable_partner",
            ["topic", "result"],
            registry=r,
        )
        self.pairs_pending = Gauge(
            "streamdrift_pairs_pending",
            "Halves of inferences waiting for their partner, by input topic",
            ["topic"],
            registry=r,
        )
        self.schema_registry_up = Gauge(
            "streamdrift_schema_registry_up",
            "1 if the last Schema Registry look-up was answered (wire-format inputs only)",
            registry=r,
        )
        self.labels_pending = Gauge(
            "streamdrift_labels_pending", "Labels waiting for their prediction", registry=r
        )
        self.state_errors = Counter(
            "streamdrift_state_errors",
            "Series restarted afresh: stored state unreadable, or the monitor failed on a batch",
            registry=r,
        )
        self.detectors_rewarmed = Counter(
            "streamdrift_detectors_rewarmed",
            "Change detectors restarted afresh on load: their state was written by another river "
            "release and could not be restored (the rest of the monitor kept)",
            registry=r,
        )
        self.redis_up = Gauge(
            "streamdrift_redis_up", "1 if the last Redis operation succeeded", registry=r
        )
        self.dead_letters_failed = Counter(
            "streamdrift_dead_letters_failed",
            "Dead letters that could not be sent after retries (counted in dead_letters too)",
            ["reason"],
            registry=r,
        )
        self.dead_letters_retried = Counter(
            "streamdrift_dead_letter_retries",
            "Dead-letter sends tried again after the producer or broker refused them",
            ["reason"],
            registry=r,
        )
        self.dead_letters_truncated = Counter(
            "streamdrift_dead_letters_truncated",
            "Dead letters sent as a prefix of their payload (over STREAMDRIFT_DLQ_MAX_BYTES)",
            registry=r,
        )
        self.models_evicted = Counter(
            "streamdrift_models_evicted",
            "Models dropped with their state: idle, or on probation and evicted by a newcomer",
            registry=r,
        )
        self._last_checkpoint = time.monotonic()
        self.checkpoint_age.set_function(lambda: time.monotonic() - self._last_checkpoint)

    def preset(self, topics: Iterable[str], reasons: Iterable[str]) -> None:
        """Create the fixed label sets at 0, so that rate() and increase() see the first event."""
        for topic in topics:
            self.events.labels(topic)
            self.duplicates.labels(topic)
        for reason in reasons:
            self.dead_letters.labels(reason)
        for result in ("ok", "fenced", "lost", "error"):
            self.checkpoints.labels(result)

    def describe_models(self, routing: Iterable[tuple[str, ModelRouting]]) -> None:
        """``streamdrift_model_info`` of the models with an owner or runbook configured (joined
        onto the drift alerts by the alert rules; bounded by the configuration)."""
        for model, route in routing:
            self.model_info.labels(model, route.owner or "", route.runbook_url or "").set(1)

    def forget_models(self, models: Iterable[str]) -> None:
        """Drop the per-model label sets of evicted models (Prometheus label sets stay bounded
        by admission). A model still held by another partition starts its counters again,
        which rate() reads as a counter reset."""
        models = set(models)
        self.models_evicted.inc(len(models))
        per_model = (
            (self.joinable, ("model",)),
            (self.joined, ("model",)),
            (self.alerts, ("model", "feature", "detector")),
            (self.resolved, ("model", "feature")),
            (self.incidents, ("model", "action")),
        )
        for metric, names in per_model:
            for labels in [key for key in _label_sets(metric, names) if key[0] in models]:
                with contextlib.suppress(KeyError):
                    metric.remove(*labels)

    def checkpointed(self) -> None:
        self._last_checkpoint = time.monotonic()


def _label_sets(metric: Counter, names: tuple[str, ...]) -> list[tuple[str, ...]]:
    """The label values a metric has children for, read from its samples (the client library
    has no public listing of children)."""
    return list(
        {
            tuple(sample.labels[name] for name in names)
            for family in metric.collect()
            for sample in family.samples
        }
    )
