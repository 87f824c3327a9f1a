"""The worker's runtime: owned partitions' state, checkpoints, publishing, rebalance handling.

Lifecycle of a partition (see docs/state-and-exactly-once.md):

1. assigned — ``on_rebalance_complete`` claims it in Redis (new epoch), loads its state and
   commits the checkpointed offset to Kafka *before* Faust seeks to the committed offsets, so
   consumption resumes exactly where the state stopped;
2. processed in batches — records below the state's next offset are duplicates and skipped;
3. checkpointed every N events or T seconds, and at once after a batch that raised an alert —
   dead letters are flushed to Kafka first, then state + next offset + the new alerts (the
   outbox) are written in one fenced Redis script; alerts are published only from there, so an
   alert always matches checkpointed state and a replay can never publish a different one;
4. revoked — the intake has stopped handing records of the partition; it is checkpointed and
   dropped.
"""

from __future__ import annotations

import asyncio
import dataclasses
import hashlib
import logging
import math
import os
import socket
import time
from collections import Counter, defaultdict
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass
from functools import partial
from operator import attrgetter
from typing import Any, TypeVar

import msgspec
from redis.exceptions import RedisError

from streamdrift.detectors import MultivariateParams, kernels, model_routing
from streamdrift.detectors.monitor import LIBRARIES
from streamdrift.streams.kafka.registry import schema_cache
from streamdrift.streams.metrics import Metrics
from streamdrift.streams.pipeline.admission import parse_allowlist
from streamdrift.streams.pipeline.alerts import build_alert, encode_alert
from streamdrift.streams.pipeline.codec import Reason
from streamdrift.streams.pipeline.incidents import (
    INCIDENT_ATTRIBUTE,
    Answer,
    Decision,
    encode_event,
    incident_event,
    incident_id,
    member_facts,
    member_key,
    routed_models,
    routing_attributes,
)
from streamdrift.streams.pipeline.inputs import input_specs
from streamdrift.streams.pipeline.labels import LabelProcessor
from streamdrift.streams.pipeline.mapping import Mapper
from streamdrift.streams.pipeline.outcome import DeadLetter, Finding, Outcome, Record
from streamdrift.streams.pipeline.pairing import Half, Pairing
from streamdrift.streams.pipeline.processor import Baselines, PredictionProcessor
from streamdrift.streams.pipeline.segments import segment_shifts
from streamdrift.streams.settings import Settings
from streamdrift.streams.state.baselines import BaselineCatalog
from streamdrift.streams.state.checkpoint import CheckpointStore, Fenced, Save, StateLost
from streamdrift.streams.state.history import HistoryRecorder
from streamdrift.streams.state.incidents import IncidentStore
from streamdrift.streams.state.joins import JoinStore
from streamdrift.streams.state.keys import parse_series
from streamdrift.streams.state.pairs import PairStore
from streamdrift.streams.state.partition import ERROR_SERIES, PartitionState, restore_monitor

log = logging.getLogger("streamdrift")
T = TypeVar("T")

CLAIM_RETRY_S = 60.0
#: The detector field of an outbox entry holding an incident event (its event field: the action).
INCIDENT_ENTRY = "incident"


def with_setting_defaults(config: dict[str, Any], settings: Settings) -> dict[str, Any]:
    """The detector config with the worker-wide category limit as its default ``max_categories``."""
    defaults = {"max_categories": settings.max_categories_per_feature, **config.get("defaults", {})}
    return {**config, "defaults": defaults}


MAPPED_MESSAGE_GROWTH = 16


def prediction_processor(
    settings: Settings,
    config: dict[str, Any],
    baselines: Baselines | None = None,
    mapped: bool = False,
) -> PredictionProcessor:
    """The worker's processor of predictions, as ``settings`` configure it; ``mapped``: of the
    mapped input topics' messages, whose rows may make a native message larger than the
    source (``MAPPED_MESSAGE_GROWTH`` times the size limit at most)."""
    limits = settings.codec_limits()
    if mapped:
        limits = dataclasses.replace(
            limits, max_message_bytes=limits.max_message_bytes * MAPPED_MESSAGE_GROWTH
        )
    return PredictionProcessor(
        config,
        limits,
        settings.admission_limits(),
        baselines,
        MultivariateParams() if settings.multivariate else None,
        settings.multivariate_max_features,
    )


class Publisher:
    """Where alerts and dead letters go; the Faust app provides the real one."""

    async def send(
        self, topic: str, key: bytes | None, value: bytes, headers: list[tuple[str, bytes]]
    ) -> None:
        raise NotImplementedError

    async def flush(self) -> None:
        raise NotImplementedError

    async def commit(self, offsets: dict[tuple[str, int], int]) -> None:
        raise NotImplementedError

    async def committed(self, partitions: list[tuple[str, int]]) -> dict[tuple[str, int], int]:
        """The group's committed offsets in Kafka for these partitions (absent if none)."""
        raise NotImplementedError

    async def earliest(self, partitions: list[tuple[str, int]]) -> dict[tuple[str, int], int]:
        """The first retained offset of each partition."""
        raise NotImplementedError

    async def seek(self, topic: str, partition: int, offset: int) -> None:
        raise NotImplementedError


@dataclass
class _Rebuild:
    stale_from: int  # records at or past this offset come from before the rewind
    start: int  # the first retained offset, where the rebuild starts
    sought_at: float = float("-inf")  # monotonic time of the last seek


RESEEK_S = 2.0  # a fetch in flight can undo a seek: repeat it until rebuilt records arrive
DLQ_ATTEMPTS = 3
MAX_DETAIL_BYTES = 1024


def dead_letter_message(
    topic: str, partition: int, letter: DeadLetter, max_bytes: int
) -> tuple[bytes, list[tuple[str, bytes]]]:
    """The value and headers of a dead letter: the payload (a prefix of ``max_bytes`` if it is
    larger, with ``streamdrift-truncated``, ``-original-length`` and ``-original-sha256``), the
    reason, a bounded detail and the source coordinates.

    >>> letter = DeadLetter(b"x" * 10, Reason.OVERSIZE_MESSAGE, "big", 7)
    >>> value, headers = dead_letter_message("in", 3, letter, 4)
    >>> headers = dict(headers)
    >>> value, headers["streamdrift-original-length"], headers["streamdrift-source-offset"]
    (b'xxxx', b'10', b'7')
    """
    headers = [
        ("streamdrift-reason", letter.reason.value.encode()),
        (
            "streamdrift-detail",
            letter.detail.encode("utf-8", "backslashreplace")[:MAX_DETAIL_BYTES],
        ),
        ("streamdrift-source-topic", topic.encode()),
        ("streamdrift-source-partition", str(partition).encode()),
        ("streamdrift-source-offset", str(letter.offset).encode()),
    ]
    if letter.index is not None:
        headers.append(("streamdrift-batch-index", str(letter.index).encode()))
    payload = letter.payload
    if len(payload) > max_bytes:
        headers += [
            ("streamdrift-truncated", b"true"),
            ("streamdrift-original-length", str(len(payload)).encode()),
            ("streamdrift-original-sha256", hashlib.sha256(payload).hexdigest().encode()),
        ]
        payload = payload[:max_bytes]
    return payload, headers


def _short(exc: BaseException) -> str:
    return f"{type(exc).__name__}: {exc}"[:300]


class Runtime:
    def __init__(self, settings: Settings, config: dict[str, Any], publisher: Publisher) -> None:
        self.settings = settings
        # Before any monitor exists: a detector keeps the backend it was made with.
        backend = kernels.use(settings.kernels)
        log.info("detector kernels: %s, loaded in %.2f s", backend, kernels.warm_up())
        if settings.kernels == "auto" and backend == "reference":
            log.warning(
                "detector kernels: %s; running the reference kernels (the same detections, "
                "slower): %s",
                kernels.unavailable(),
                kernels.BUILD_HINT,
            )
        self.publisher = publisher
        self.metrics = Metrics(self._monitors)
        self.metrics.preset(
            (settings.input_topic, settings.labels_topic), (reason.value for reason in Reason)
        )  # (the mapped input topics' series appear with their first events)
        self.worker_id = f"{socket.gethostname()}-{os.getpid()}"
        self.redis = settings.redis_client(socket_timeout=10, socket_connect_timeout=5)
        self.store = CheckpointStore(self.redis, settings.group_id, self.worker_id)
        self.join = JoinStore(self.redis, settings.group_id, settings.label_ttl_s)
        self.pair_store = PairStore(self.redis, settings.group_id)
        self.incidents = IncidentStore(
            self.redis,
            settings.group_id,
            settings.incident_window_s,
            settings.incident_ttl_s,
            settings.incident_max_members,
        )
        self.history = HistoryRecorder(
            self.redis, settings.group_id, settings.history_interval_s, self.metrics.registry
        )
        config = with_setting_defaults(config, settings)
        self.config = config
        self.metrics.describe_models(routed_models(config))
        self.baselines = BaselineCatalog()
        joined = settings.label_join_models.strip()
        self._join_models = (
            None if joined == "*" else {m.strip() for m in joined.split(",") if m.strip()}
        )
        self._baselines_checked = -math.inf
        self.predictions = prediction_processor(settings, config, self.baselines)
        # the configuration's input topics in the users' own shapes, mapped to native events
        specs = input_specs(config, reserved=settings.own_topics())
        self.schemas = schema_cache(settings, specs, self.metrics.schema_registry_up.set)
        lookup = self.schemas.get if self.schemas is not None else (lambda schema_id: None)
        self.mappers = {spec.topic: Mapper(spec, settings.codec_limits(), lookup) for spec in specs}
        self.mapped_predictions = (
            prediction_processor(settings, config, self.baselines, mapped=True)
            if self.mappers
            else self.predictions
        )
        # halves of a model not allowed never wait in Redis: straight to admission, which refuses
        self._allowed_models = parse_allowlist(settings.allowed_models)
        self.labels = LabelProcessor(
            config,
            settings.codec_limits(),
            settings.label_ttl_s,
            settings.max_pending_labels,
            settings.max_versions_per_model,
            max_pending_per_model=settings.max_pending_labels_per_model,
            max_models=settings.max_models,
            allowed_models=self._allowed_models,
            join_models=self._join_models,
        )
        self.states: dict[tuple[str, int], PartitionState] = {}
        self.saved_offsets: dict[tuple[str, int], int | None] = {}
        # alerts not yet checkpointed
        self.outbox: dict[tuple[str, int], list[bytes]] = defaultdict(list)
        # checkpointed, not yet sent
        self.unpublished: dict[tuple[str, int], list[bytes]] = defaultdict(list)
        self._lost: set[tuple[str, int]] = set()  # partitions whose checkpoint Redis lost
        self.rebuilding: dict[tuple[str, int], _Rebuild] = {}
        self.lock = asyncio.Lock()
        self.ready = False
        self._last_checkpoint = time.monotonic()
        self._events_since_checkpoint = 0

    # -- processing ---------------------------------------------------------------------------

    async def handle(self, topic: str, records_by_partition: dict[int, list[Record]]) -> None:
        """Process one batch of records (already grouped by partition, in offset order)."""
        async with self.lock:
            now = time.time()
            for partition, records in records_by_partition.items():
                state = self.states.get((topic, partition))
                if (topic, partition) in self.rebuilding:
                    records = await self._rebuilt_records((topic, partition), records)
                if state is None:
                    # Buffered records of a partition revoked meanwhile: its new owner re-reads
                    # them.
                    log.warning(
                        "dropping %d records of unowned partition %s[%d]",
                        len(records),
                        topic,
                        partition,
                    )
                    continue
                mapper = self.mappers.get(topic)
                if mapper is not None and self.schemas is not None:  # before reading: may wait
                    await self.schemas.ensure(mapper.schema_ids(state, records), mapper.spec.format)
                if topic == self.settings.input_topic or mapper is not None:
                    if mapper is None:
                        outcome = self.predictions.process(state, records, now=now)
                    elif mapper.pairing is None:
                        outcome = mapper.process(self.mapped_predictions, state, records, now)
                    else:
                        taken = mapper.take(state, records)
                        outcome = await self._settle_pairs(
                            state, mapper, now, taken.halves, taken.unkeyed, taken.records
                        )
                        outcome.duplicates += taken.duplicates
                        outcome.dead_letters[:0] = taken.dead_letters
                    joins = [j for j in outcome.joins if self._joinable(j[0])]
                    await self._redis(partial(self.join.put, joins, now))
                else:
                    labels, outcome = self.labels.decode(state, records, now)
                    await self._apply_labels(state, labels, outcome, now)
                if outcome.failed_series:
                    await self._restore_failed(state, outcome.failed_series)
                await self._publish(state, outcome, now)
                self.metrics.state_errors.inc(len(outcome.failed_series))
                self._events_since_checkpoint += outcome.events
            if any(self.outbox.values()):
                await self.checkpoint()  # alerts wait for no timer: checkpoint and publish now
            else:
                await self._checkpoint_if_due()

    async def _settle_pairs(
        self,
        state: PartitionState,
        mapper: Mapper,
        now: float,
        halves: list[Half] | None = None,
        unkeyed: list[Half] | None = None,
        records: list[Record] | None = None,
    ) -> Outcome:
        """Offer the new halves and ask for the pending ones due (streams.pipeline.pairing), then
        apply what that settled, with the input's other native ``records``, in offset order."""
        assert mapper.pairing is not None
        records = list(records or [])
        if self._allowed_models is not None and halves:
            records += [
                Record(h.offset, h.timestamp, h.event)
                for h in halves
                if h.model not in self._allowed_models
            ]
            halves = [h for h in halves if h.model in self._allowed_models]
        asks = mapper.pairing.asks(state.pairs, halves or [], now)
        window = mapper.pairing.spec.window_s
        answers = await self._redis(partial(self.pair_store.offer, asks, window)) if asks else []
        state.pairs, settled = mapper.pairing.settle(state.pairs, asks, answers, now, unkeyed or [])
        state.pairs_dirty |= settled.changed
        state.pairs_due = Pairing.next_due(state.pairs)
        applied = sorted([*records, *settled.records], key=_OFFSET)
        outcome = self.mapped_predictions.process(state, applied, now=now, fresh=True)
        outcome.dead_letters += settled.dead_letters
        for result, count in settled.counts.items():
            self.metrics.pairs.labels(state.topic, result).inc(count)
        self.metrics.pairs_pending.labels(state.topic).set(
            sum(len(s.pairs) for s in self.states.values() if s.topic == state.topic)
        )
        return outcome

    async def _apply_labels(
        self, state: PartitionState, labels: list, outcome: Outcome, now: float
    ) -> None:
        waiting = state.pending + labels
        keys = self.labels.lookups(state, waiting, now)  # the labels due: new ones, backed-off ones
        found = await self._redis(lambda: self.join.get(keys, now))
        self.labels.apply(state, waiting, found, now, outcome)
        self.metrics.labels_pending.set(sum(len(s.pending) for s in self.states.values()))

    async def _publish(self, state: PartitionState, outcome: Outcome, now: float) -> None:
        m = self.metrics
        m.events.labels(state.topic).inc(outcome.events)
        if outcome.duplicates:
            m.duplicates.labels(state.topic).inc(outcome.duplicates)
        for model, count in Counter(model for model, _, _ in outcome.joins).items():
            m.joinable.labels(model).inc(count)
        for model, count in Counter(model for model, _ in outcome.join_lags).items():
            m.joined.labels(model).inc(count)
        for _, lag in outcome.join_lags:
            m.join_lag.observe(lag)
        if outcome.max_event_time is not None:
            m.event_lag.labels(state.topic).set(max(0.0, now - outcome.max_event_time))
        for letter in outcome.dead_letters:
            await self._send_dead_letter(state, letter)
        if outcome.evicted_models:
            m.forget_models(outcome.evicted_models)
        if outcome.findings:
            await self._queue_alerts(state, outcome.findings)
        if state.segments_dirty or state.segments_retired:
            self._expose_segments(state)
        for name in state.dirty | state.retired:
            model, version, feature = parse_series(name)
            monitor, owner = state.monitors.get(name), (state.topic, state.partition, version)
            if monitor is not None:
                m.drift_scores.set(owner, model, feature, monitor.drift_score())
            else:
                m.drift_scores.discard(owner, model, feature)

    def _expose_segments(self, state: PartitionState) -> None:
        """The bias indicators of the partition's segment profiles changed since the last
        checkpoint (gone ones removed)."""
        m = self.metrics
        for key in state.segments_dirty | state.segments_retired:
            model, version, segment = key
            owner = (state.topic, state.partition, version)
            profile = state.segments.get(key)
            inputs, prediction = segment_shifts(profile) if profile else ({}, {})
            for gauge, shifts in (
                (m.segment_shifts, inputs),
                (m.segment_prediction_shifts, prediction),
            ):
                for labels in gauge.owned_by(owner):
                    if labels[:2] == (model, segment) and labels[2] not in shifts:
                        gauge.remove(owner, labels)
                for value, shift in shifts.items():
                    gauge.put(owner, (model, segment, value), shift)

    async def _queue_alerts(self, state: PartitionState, findings: list[Finding]) -> None:
        """Put the findings' alerts in the partition's outbox, each with its incident's id and
        the model's routing, and after them the incident events they publish (opened, updated,
        resolved)."""
        s = self.settings
        alerts = [build_alert(s.group_id, state.topic, state.partition, f) for f in findings]
        answers = await self._incident_answers(state, findings, alerts)
        outbox = self.outbox[(state.topic, state.partition)]
        told: list[bytes] = []  # the incident events, after the alerts they tell about
        for finding, alert, answer in zip(findings, alerts, answers, strict=True):
            d = finding.detection
            routing = model_routing(self.config, finding.model)
            alert.update(routing_attributes(routing, d.severity))
            if answer is not None and answer.incident:
                alert[INCIDENT_ATTRIBUTE] = answer.incident
            entry = (finding.model, finding.feature, d.detector, d.event, encode_alert(alert))
            outbox.append(msgspec.msgpack.encode(entry))
            log.warning(
                "drift %s: %s (%s, id %s)", d.event, alert["subject"], d.detector, alert["id"]
            )
            if answer is not None and answer.publishes:
                event = incident_event(s.group_id, finding.model, answer, routing)
                entry = (finding.model, "", INCIDENT_ENTRY, answer.action, encode_event(event))
                told.append(msgspec.msgpack.encode(entry))
                log.warning(
                    "incident %s: %s (id %s)",
                    answer.action,
                    event["data"]["summary"],
                    answer.incident,
                )
        outbox += told

    async def _incident_answers(
        self, state: PartitionState, findings: list[Finding], alerts: list[dict[str, Any]]
    ) -> list[Answer | None]:
        """The group's incident decision for each alert (one script call per model); None for
        all with incidents off, or if deciding failed for a reason other than Redis being down
        (logged: the alerts go out without an incident rather than stop the partition)."""
        answers: list[Answer | None] = [None] * len(findings)
        if not self.settings.incidents:
            return answers
        by_model: dict[str, list[int]] = defaultdict(list)
        for i, finding in enumerate(findings):
            by_model[finding.model].append(i)
        group = self.settings.group_id
        for model, indexes in by_model.items():
            versions = [v for v in state.versions.get(model, []) if v is not None]
            labelled = self._labelled(model)
            items = [
                Decision(
                    alert=alerts[i]["id"],
                    event=findings[i].detection.event,
                    time=findings[i].time,
                    member=member_key(state.topic, state.partition, findings[i]),
                    facts=encode_alert(member_facts(alerts[i])).decode(),
                    candidate=incident_id(group, model, alerts[i]["id"]),
                    versions=versions,
                    labelled=labelled,
                )
                for i in indexes
            ]
            try:
                decided = await self._redis(partial(self.incidents.decide, model, items))
            except Exception:
                log.exception("could not decide the incidents of model %r", model)
                continue
            for i, answer in zip(indexes, decided, strict=True):
                answers[i] = answer
        return answers

    def _labelled(self, model: str) -> bool:
        """Whether this worker joins labels of ``model`` (an error-rate series of it on one of
        its labels partitions)."""
        return any(
            key.model == model and key.feature == ERROR_SERIES
            for state in self.states.values()
            for key in map(parse_series, state.monitors)
        )

    async def _send_dead_letter(self, state: PartitionState, letter: DeadLetter) -> None:
        """Send one dead letter; never raises (a dead letter must not stop the worker).

        A payload over ``dlq_max_bytes`` is sent truncated to that prefix, with its original
        length and SHA-256 in headers (the original stays on the source topic at the offset the
        headers name). A failed send is retried, then counted in
        ``streamdrift_dead_letters_failed_total`` and given up.
        """
        m = self.metrics
        payload, headers = dead_letter_message(
            state.topic, state.partition, letter, self.settings.dlq_max_bytes
        )
        if len(payload) < len(letter.payload):
            m.dead_letters_truncated.inc()
        for attempt in range(DLQ_ATTEMPTS):
            if attempt == DLQ_ATTEMPTS - 1 and payload:
                # Last try without the payload: the headers still say why, where the original is,
                # its length and SHA-256 (e.g. a broker with a smaller message.max.bytes).
                payload, headers = dead_letter_message(state.topic, state.partition, letter, 0)
            try:
                await self.publisher.send(self.settings.dlq_topic, None, payload, headers)
                break
            except Exception as exc:  # e.g. the producer refusing the size, or the broker down
                if attempt + 1 == DLQ_ATTEMPTS:
                    m.dead_letters_failed.labels(letter.reason.value).inc()
                    log.error(
                        "could not send a dead letter of %s[%d]@%d (%s): %s — counted and given up",
                        state.topic,
                        state.partition,
                        letter.offset,
                        letter.reason.value,
                        _short(exc),
                    )
                    break
                m.dead_letters_retried.labels(letter.reason.value).inc()
                await asyncio.sleep(0.05 * 4**attempt)
        m.dead_letters.labels(letter.reason.value).inc()

    async def _restore_failed(self, state: PartitionState, series: list[str]) -> None:
        """Series whose monitor raised: back to their last checkpointed state (the values since
        then are lost for them, and counted in ``streamdrift_state_errors_total``), so one bad
        batch never wipes a monitor's history."""
        try:
            stored = await self.store.load_fields(state.topic, state.partition, series)
        except RedisError as exc:
            self._redis_down(exc)
            return
        for name, blob in stored.items():
            try:
                state.monitors[name] = restore_monitor(name, blob)
            except Exception:
                log.exception("could not restore %r from its checkpoint: it starts afresh", name)
                continue
            state.retired.discard(name)
            log.warning(
                "restored %r on %s[%d] from its last checkpoint", name, state.topic, state.partition
            )

    # -- checkpoints --------------------------------------------------------------------------

    async def _checkpoint_if_due(self) -> None:
        s = self.settings
        if time.monotonic() - self._last_checkpoint >= s.checkpoint_interval_s:
            await self.checkpoint(heartbeat=True)
        elif self._events_since_checkpoint >= s.checkpoint_every_events:
            await self.checkpoint()

    async def checkpoint(
        self, only: Iterable[tuple[str, int]] | None = None, heartbeat: bool = False
    ) -> None:
        """Flush dead letters, then write partitions atomically (caller holds the lock).

        Only changed partitions are written, unless ``heartbeat``: then every owned partition is,
        so an idle one still proves its epoch (fencing and a Redis data loss show up at once)
        and keeps its checkpoint age current. Its CPU time (serialising the changed monitors
        included) is counted in ``streamdrift_checkpoint_cpu_seconds_total``.
        """
        started = time.thread_time()
        try:
            await self._checkpoint(only, heartbeat)
        finally:
            self.metrics.checkpoint_cpu.inc(time.thread_time() - started)

    async def _checkpoint(self, only: Iterable[tuple[str, int]] | None, heartbeat: bool) -> None:
        keys = list(self.states if only is None else only)
        changed = [
            k for k in keys if k in self.states and (heartbeat or self._changed(self.states[k]))
        ]
        changed = [k for k in changed if self.states[k].next_offset is not None]
        self._last_checkpoint = time.monotonic()
        if not changed:
            self.metrics.checkpointed()
            return
        await self.publisher.flush()  # nothing is checkpointed before what it emitted is in Kafka
        saves = []
        for key in changed:
            state = self.states[key]
            fields = state.checkpoint_fields()
            saves.append(
                Save(
                    state.topic,
                    state.partition,
                    state.epoch,
                    state.next_offset,  # type: ignore[arg-type]  # not None: filtered above
                    state.events_since_checkpoint,
                    fields,
                    self.outbox[key],
                )
            )
        started = time.perf_counter()
        try:
            results = await self.store.save(saves)
        except RedisError as exc:
            self._redis_down(exc)
            return
        self.metrics.checkpoint_duration.observe(time.perf_counter() - started)
        self.metrics.redis_up.set(1)
        # before _settle clears dirty
        await self.history.record(
            self.states[k] for k, error in zip(changed, results, strict=True) if error is None
        )
        all_ok = True
        for key, error in zip(changed, results, strict=True):
            all_ok &= self._settle(key, error)
        if all_ok:
            self._events_since_checkpoint = 0
            self.metrics.checkpointed()
        await self._reclaim_lost()
        await self._publish_outbox()

    async def _reclaim_lost(self) -> None:
        """Our memory still holds the complete state of a partition whose checkpoint Redis lost:
        claim it again and mark everything dirty, so the next checkpoint rewrites all of it."""
        for key in [k for k in self._lost if k in self.states]:
            claim = await self._redis(partial(self.store.claim, *key))
            state = self.states[key]
            state.epoch = claim.epoch
            state.dirty |= set(state.monitors)
            state.ledger_dirty = True
            state.unsave_pending()
            self.saved_offsets[key] = None
        self._lost.clear()

    def _changed(self, state: PartitionState) -> bool:
        key = (state.topic, state.partition)
        saved = self.saved_offsets.get(key)
        return state.next_offset is not None and bool(
            state.dirty or state.pairs_dirty or state.next_offset != saved or self.outbox.get(key)
        )

    async def _publish_outbox(self) -> None:
        """Send checkpointed alerts, wait until Kafka has them, then drop them from the Redis
        outbox.

        A crash in between re-sends them from the outbox on the next claim: the same bytes with
        the same id, which consumers de-duplicate.
        """
        pending = {
            key: entries
            for key, entries in self.unpublished.items()
            if entries and key in self.states
        }
        if not pending:
            return
        for entries in pending.values():
            for entry in entries:
                model, *_, value = msgspec.msgpack.decode(entry)
                await self.publisher.send(self.settings.alert_topic, model.encode(), value, [])
        await self.publisher.flush()
        for key, entries in pending.items():
            state = self.states[key]

            # Bound to this partition; the epoch is read at each try, as the owner's may change.
            async def trim(state: PartitionState = state, published: int = len(entries)) -> Any:
                return await self.store.trim_outbox(
                    state.topic, state.partition, state.epoch, published
                )

            error = await self._redis(trim)
            for entry in entries:
                model, feature, detector, event = msgspec.msgpack.decode(entry)[:4]
                if detector == INCIDENT_ENTRY:
                    self.metrics.incidents.labels(model, event).inc()
                elif event == "resolved":
                    self.metrics.resolved.labels(model, feature).inc()
                else:
                    self.metrics.alerts.labels(model, feature, detector).inc()
            self.unpublished[key] = self.unpublished[key][len(entries) :]
            if isinstance(error, Fenced):
                log.error("outbox of %s[%d] now belongs to another worker: %s", *key, error)

    def _settle(self, key: tuple[str, int], error: Exception | None) -> bool:
        state = self.states[key]
        if error is None:
            state.mark_checkpointed()
            self.saved_offsets[key] = state.next_offset
            self.unpublished[key] += self.outbox.pop(key, [])
            self.metrics.checkpoints.labels("ok").inc()
            return True
        if isinstance(error, Fenced):
            log.error(
                "partition %s[%d] was claimed by another worker (%s): dropping its state",
                *key,
                error,
            )
            self.metrics.checkpoints.labels("fenced").inc()
            self._drop(key)
        elif isinstance(error, StateLost):
            log.error(
                "Redis lost the checkpoint of %s[%d]: re-claiming it and rewriting the full state",
                *key,
            )
            self.metrics.checkpoints.labels("lost").inc()
            self._lost.add(key)
        else:
            log.error("checkpoint of %s[%d] failed: %s (will retry)", *key, error)
            self.metrics.checkpoints.labels("error").inc()
        return False

    async def tick(self) -> None:
        """Periodic work: due checkpoints, label retries and expiry. Never raises: a timer
        exception would stop the whole Faust app."""
        try:
            await self._tick()
        except Exception:
            log.exception("periodic work failed (will retry on the next tick)")

    def _joinable(self, model: str) -> bool:
        """Whether the model's predictions wait in Redis for their labels
        (STREAMDRIFT_LABEL_JOIN_MODELS)."""
        return self._join_models is None or model in self._join_models

    async def refresh_baselines(self, force: bool = False) -> None:
        """Reload new or replaced baselines (every ``baseline_refresh_s``, or now if ``force``);
        series pick them up with their next values. Redis trouble only delays this."""
        if (
            not force
            and time.monotonic() - self._baselines_checked < self.settings.baseline_refresh_s
        ):
            return
        self._baselines_checked = time.monotonic()
        try:
            loaded = await self.baselines.refresh(self.redis)
        except RedisError as exc:
            log.warning("could not look for baselines (will retry): %s", exc)
            return
        if loaded:
            log.info("baselines loaded: %s", ", ".join(loaded))

    async def _tick(self) -> None:
        async with self.lock:
            await self.refresh_baselines()
            await self._seek_rebuilds()
            now = time.time()
            for state in [s for s in self.states.values() if self.labels.due(s, now)]:
                outcome = Outcome()
                await self._apply_labels(state, [], outcome, now)
                await self._publish(state, outcome, now)
            for state in [s for s in self.states.values() if s.pairs and s.pairs_due <= now]:
                mapper = self.mappers.get(state.topic)
                if mapper is not None and mapper.pairing is not None:
                    outcome = await self._settle_pairs(state, mapper, now)
                    joins = [j for j in outcome.joins if self._joinable(j[0])]
                    await self._redis(partial(self.join.put, joins, now))
                    await self._publish(state, outcome, now)
            if any(self.outbox.values()):
                await self.checkpoint()
            else:
                await self._checkpoint_if_due()
            await self._publish_outbox()  # retries what a broker outage left unsent

    def update_lag(self, highwater: Callable[[str, int], int | None]) -> None:
        for (topic, partition), state in self.states.items():
            high = highwater(topic, partition)
            if high is not None and state.next_offset is not None:
                self.metrics.lag.labels(topic, str(partition)).set(max(0, high - state.next_offset))

    # -- rebalancing --------------------------------------------------------------------------

    async def on_revoked(self, revoked: Iterable[tuple[str, int]]) -> None:
        async with self.lock:
            owned = [key for key in revoked if key in self.states]
            try:
                await self.checkpoint(owned)
            finally:
                for key in owned:
                    self._drop(key)
            self._update_ownership_gauges()

    async def on_assigned(self, assigned: Iterable[tuple[str, int]]) -> None:
        """Claim newly assigned partitions, load their state and commit their checkpointed
        offsets."""
        assigned = [key for key in assigned if key not in self.states]
        processed_before = await self.publisher.committed(assigned) if assigned else {}
        async with self.lock:
            # before the first event
            await self.refresh_baselines(force=self.baselines.revision is None)
            commits: dict[tuple[str, int], int] = {}
            for key in assigned:
                claim = await self._redis(
                    partial(self.store.claim, *key), give_up_after=CLAIM_RETRY_S
                )
                if claim.offset is None and processed_before.get(key, 0) > 0:
                    claim.offset = await self._plan_rebuild(key, processed_before[key])
                state = self.states[key] = PartitionState.from_claim(key[0], key[1], claim)
                self.unpublished[key] = list(claim.outbox)  # alerts a crash left unconfirmed
                for series in state.corrupt:
                    log.error(
                        "unreadable state of %r in %s[%d]: starting that series afresh",
                        series,
                        *key,
                    )
                    self.metrics.state_errors.inc()
                for series, detectors, written_by in state.rewarmed:
                    log.warning(
                        "state of %r in %s[%d] was written with river %s (installed: %s): "
                        "restarted %s afresh, kept the rest of the monitor",
                        series,
                        *key,
                        written_by.get("river") or "unknown",
                        LIBRARIES.river,
                        ", ".join(detectors),
                    )
                    self.metrics.detectors_rewarmed.inc(len(detectors))
                self.saved_offsets[key] = claim.offset
                if claim.offset is not None:
                    commits[key] = claim.offset
                log.info(
                    "claimed %s[%d] epoch %d, resuming at offset %s",
                    *key,
                    claim.epoch,
                    claim.offset,
                )
            if commits:
                await self.publisher.commit(commits)
            await self._publish_outbox()
            self._update_ownership_gauges()
            self.ready = True

    def _monitors(self) -> list[Any]:
        """Every owned monitor, as a snapshot: /metrics reads it from another thread (the copy
        of each dict is one C call, so a batch running meanwhile cannot break the iteration)."""
        return [
            monitor
            for state in list(self.states.values())
            for monitor in list(state.monitors.values())
        ]

    def committable(self, topic: str, partition: int) -> int | None:
        """The highest offset Kafka may record as consumed for a partition: its checkpoint's."""
        return self.saved_offsets.get((topic, partition))

    def ownership(self) -> list[dict[str, Any]]:
        """Owned partitions with their epoch, next offset and unsaved work (for /status)."""
        return [
            {
                "topic": t,
                "partition": p,
                "epoch": s.epoch,
                "next_offset": s.next_offset,
                "series": len(s.monitors),
                "events_since_checkpoint": s.events_since_checkpoint,
            }
            for (t, p), s in sorted(self.states.items())
        ]

    async def _plan_rebuild(self, key: tuple[str, int], committed: int) -> int | None:
        """Kafka says this group consumed the partition up to ``committed`` but Redis has no state
        for it: the state was lost. Rebuild it from the earliest retained record, if any is left."""
        self.metrics.checkpoints.labels("lost").inc()
        earliest = (await self.publisher.earliest([key])).get(key, committed)
        if earliest >= committed:
            log.error(
                "state of %s[%d] was lost and the records before offset %d are no longer "
                "retained: continuing from there with empty state",
                *key,
                committed,
            )
            return None
        log.error(
            "state of %s[%d] was lost from Redis: rebuilding it from offset %d (the group had "
            "consumed up to %d)",
            *key,
            earliest,
            committed,
        )
        self.rebuilding[key] = _Rebuild(stale_from=committed, start=earliest)
        return earliest

    async def _rebuilt_records(self, key: tuple[str, int], records: list[Record]) -> list[Record]:
        """Drop records fetched from the old position before the rewind took effect.

        The consumer may already have fetched at the committed offset when the rebuild was
        decided; records at or past it are stale until the first record below it arrives.
        """
        rebuild = self.rebuilding[key]
        for index, record in enumerate(records):
            if record.offset < rebuild.stale_from:
                del self.rebuilding[key]
                log.info("rebuild of %s[%d] started at offset %d", *key, record.offset)
                return records[index:]
        await self._seek_rebuilds()
        return []

    async def _seek_rebuilds(self) -> None:
        now = time.monotonic()
        for key, rebuild in self.rebuilding.items():
            if now - rebuild.sought_at >= RESEEK_S:
                await self.publisher.seek(*key, rebuild.start)
                rebuild.sought_at = now

    def _drop(self, key: tuple[str, int]) -> None:
        for gauge in (
            self.metrics.drift_scores,
            self.metrics.segment_shifts,
            self.metrics.segment_prediction_shifts,
        ):
            gauge.drop_partition(*key)
        self.states.pop(key, None)
        self.saved_offsets.pop(key, None)
        self.outbox.pop(key, None)
        self.unpublished.pop(key, None)
        self.rebuilding.pop(key, None)

    def _update_ownership_gauges(self) -> None:
        counts: dict[str, int] = defaultdict(int)
        for topic, _ in self.states:
            counts[topic] += 1
        for topic in (self.settings.input_topic, self.settings.labels_topic, *self.mappers):
            self.metrics.partitions.labels(topic).set(counts[topic])

    # -- Redis availability -------------------------------------------------------------------

    async def _redis(
        self, call: Callable[[], Awaitable[T]], give_up_after: float | None = None
    ) -> T:
        """Run a Redis call, retrying with backoff while Redis is unreachable (processing
        pauses)."""
        started, delay = time.monotonic(), 0.1
        while True:
            try:
                result = await call()
                self.metrics.redis_up.set(1)
                return result
            except RedisError as exc:
                self._redis_down(exc)
                if give_up_after is not None and time.monotonic() - started > give_up_after:
                    raise
                await asyncio.sleep(delay)
                delay = min(delay * 2, 5.0)

    def _redis_down(self, exc: Exception) -> None:
        self.metrics.redis_up.set(0)
        log.error("Redis at %s unavailable: %s", self.settings.redis_url_redacted, exc)

    async def close(self) -> None:
        async with self.lock:
            await self.checkpoint()
        await self.redis.aclose()


_OFFSET = attrgetter("offset")
