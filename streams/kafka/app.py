"""The Faust app: topics, agents, rebalance hooks, timers and the metrics/health pages; and
:func:`run_worker`, which runs it in a Faust worker.

Faust owns the consumer group, the agents' lifecycle and the web server; the drift logic
lives in ``streams.runtime`` (state, checkpoints) and ``streams.pipeline.processor`` (pure batch
logic). The input topics are consumed by ``streams.kafka.intake.Intake`` in Faust's Fetcher's
place: whole ``getmany`` results go to the runtime in batches, with no Faust event, stream or
ack per record, so per-batch work — decoding, vectorised sketch updates, one Redis round
trip — is amortised over many events.
"""

from __future__ import annotations

import asyncio
import atexit
import gc
import logging
import shutil
import tempfile
from pathlib import Path
from typing import Any, cast

import faust
import yaml
from confluent_kafka import ConsumerGroupTopicPartitions, TopicPartition
from confluent_kafka.admin import AdminClient, OffsetSpec
from faust.types import TP
from faust.web import Request, Response, View
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from streamdrift.detectors import validate_config
from streamdrift.streams.kafka.credentials import faust_credentials
from streamdrift.streams.kafka.intake import Intake
from streamdrift.streams.pipeline.inputs import input_specs
from streamdrift.streams.runtime import Publisher, Runtime
from streamdrift.streams.security import bearer_ok, confluent_config
from streamdrift.streams.settings import Settings

log = logging.getLogger("streamdrift")


def load_config(path: Path | None) -> dict[str, Any]:
    """Read and validate the optional YAML detector configuration.

    Raises ``SystemExit`` with one line naming the file and what is wrong with it.
    """
    if path is None:
        return {}
    try:
        config = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
    except OSError as exc:
        raise SystemExit(f"cannot read STREAMDRIFT_CONFIG={path}: {exc.strerror or exc}") from None
    except UnicodeDecodeError as exc:
        raise SystemExit(
            f"cannot read STREAMDRIFT_CONFIG={path}: not UTF-8 text ({exc.reason})"
        ) from None
    except yaml.YAMLError as exc:
        raise SystemExit(
            f"invalid YAML in STREAMDRIFT_CONFIG={path}: {_yaml_problem(exc)}"
        ) from None
    try:
        validate_config(config)
        input_specs(config)
    except ValueError as exc:
        raise SystemExit(f"invalid STREAMDRIFT_CONFIG={path}: {exc}") from None
    return config


def _yaml_problem(exc: yaml.YAMLError) -> str:
    """PyYAML's explanation on one line (its own message spans several, with a source excerpt)."""
    problem = getattr(exc, "problem", None) or str(exc).splitlines()[0]
    mark = getattr(exc, "problem_mark", None)
    return f"{problem} at line {mark.line + 1}, column {mark.column + 1}" if mark else problem


class FaustPublisher(Publisher):
    def __init__(self, app: faust.App, settings: Settings) -> None:
        self.app = app
        self.settings = settings
        self._topics: dict[str, faust.TopicT] = {}

    def _topic(self, name: str) -> faust.TopicT:
        if name not in self._topics:
            self._topics[name] = self.app.topic(name, key_serializer="raw", value_serializer="raw")
        return self._topics[name]

    async def send(
        self, topic: str, key: bytes | None, value: bytes, headers: list[tuple[str, bytes]]
    ) -> None:
        await self._topic(topic).send(key=key, value=value, headers=headers)

    async def flush(self) -> None:
        await self.app.producer.flush()

    async def commit(self, offsets: dict[tuple[str, int], int]) -> None:
        # Faust seeks to the committed offsets right after on_rebalance_complete returns.
        # Faust's internal _commit: see streams.kafka.compat
        consumer = cast(Any, self.app.consumer)
        committed = await consumer._commit({TP(t, p): o for (t, p), o in offsets.items()})
        if not committed:
            raise RuntimeError(f"could not commit checkpointed offsets {offsets}")

    async def committed(self, partitions: list[tuple[str, int]]) -> dict[tuple[str, int], int]:
        return await asyncio.to_thread(committed_offsets, self.settings, partitions)

    async def earliest(self, partitions: list[tuple[str, int]]) -> dict[tuple[str, int], int]:
        return await asyncio.to_thread(earliest_offsets, self.settings, partitions)

    async def seek(self, topic: str, partition: int, offset: int) -> None:
        await self.app.consumer.seek(TP(topic, partition), offset)


def committed_offsets(
    settings: Settings, partitions: list[tuple[str, int]]
) -> dict[tuple[str, int], int]:
    """The group's committed offsets (confluent-kafka admin API; Faust exposes none)."""
    admin = AdminClient(confluent_config(settings))
    request = ConsumerGroupTopicPartitions(
        settings.group_id, [TopicPartition(t, p) for t, p in partitions]
    )
    (future,) = admin.list_consumer_group_offsets([request]).values()
    result = future.result(timeout=30)
    return {(tp.topic, tp.partition): tp.offset for tp in result.topic_partitions if tp.offset >= 0}


def earliest_offsets(
    settings: Settings, partitions: list[tuple[str, int]]
) -> dict[tuple[str, int], int]:
    """The first retained offset of each partition (confluent-kafka admin API)."""
    admin = AdminClient(confluent_config(settings))
    futures = admin.list_offsets(
        {TopicPartition(t, p): OffsetSpec.earliest() for t, p in partitions}
    )
    return {
        (tp.topic, tp.partition): future.result(timeout=30).offset for tp, future in futures.items()
    }


def _clamp_commits(app: faust.App, runtime: Runtime, ours: set[str]) -> None:
    """Never let Kafka's committed offset of our partitions pass the Redis checkpoint.

    Every commit goes through here: the intake's commits of checkpointed offsets, the runtime's
    on assignment, and any Faust makes itself (it acks nothing of our topics, so it has none of
    theirs to commit). Clamped to the checkpoint, a restarted or new owner always starts reading
    at or before the state's next offset and skips what the state already holds: no rewind (and
    no race with fetches already in flight) is ever needed to resume exactly.
    """
    consumer = cast(Any, app.consumer)  # Faust's internal _commit: see streams.kafka.compat
    commit = consumer._commit

    async def clamped(offsets):
        safe = {}
        for tp, offset in offsets.items():
            limit = runtime.committable(tp.topic, tp.partition) if tp.topic in ours else offset
            if limit is not None:
                safe[tp] = min(offset, limit)
        return await commit(safe) if safe else True

    consumer._commit = clamped


def _fetch_wait(app: faust.App, wait_ms: int) -> None:
    """faust-streaming hard-codes aiokafka's ``fetch_max_wait_ms=1500``: a fetch on a quiet
    partition is held up to 1.5 s, which then is the floor of event-to-alert latency (measured:
    p99 1.5 s at half load; 200 ms with 50 ms). The consumer is created when its thread starts,
    so setting the wait on the thread's factory here takes effect."""
    thread = cast(Any, app.consumer)._thread  # Faust's internal: see streams.kafka.compat
    create = thread._create_worker_consumer

    def with_wait(transport: Any) -> Any:
        consumer = create(transport)
        consumer._fetch_max_wait_ms = wait_ms  # read by aiokafka's Fetcher when it starts
        return consumer

    thread._create_worker_consumer = with_wait


def _scratch_dir() -> str:
    path = tempfile.mkdtemp(prefix="streamdrift-faust-")
    atexit.register(shutil.rmtree, path, ignore_errors=True)
    return path


def create_app(settings: Settings) -> tuple[faust.App, Runtime]:
    s = settings
    app = faust.App(
        s.group_id,
        # Faust keeps only table files there, and our state is in Redis (store memory://): a
        # directory of its own per process, removed at exit, instead of `<group>-data` in the
        # working directory of whoever starts a worker.
        datadir=_scratch_dir(),
        broker=f"kafka://{s.kafka_bootstrap}",
        broker_credentials=faust_credentials(s),
        store="memory://",
        key_serializer="raw",
        value_serializer="raw",
        topic_disable_leader=True,
        topic_allow_declare=False,
        consumer_auto_offset_reset="earliest",
        broker_session_timeout=s.session_timeout_s,
        broker_heartbeat_interval=s.heartbeat_interval_s,
        broker_rebalance_timeout=s.rebalance_timeout_s,
        broker_max_poll_records=s.batch_max_events,
        # Room for the largest dead letter (its payload is cut to dlq_max_bytes) and its headers.
        producer_max_request_size=max(1_000_000, s.dlq_max_bytes + 65_536),
        web_enabled=True,
        web_bind=s.metrics_host,
        web_port=s.metrics_port,
        web_in_thread=False,
    )
    config = load_config(s.config)
    try:
        input_specs(config, reserved=s.own_topics())
    except ValueError as exc:
        raise SystemExit(f"invalid STREAMDRIFT_CONFIG={s.config}: {exc}") from None
    runtime = Runtime(s, config, FaustPublisher(app, s))
    ours = {s.input_topic, s.labels_topic, *runtime.mappers}
    _clamp_commits(app, runtime, ours)
    _fetch_wait(app, s.fetch_max_wait_ms)

    intake = Intake(app, runtime, s.batch_max_events, s.batch_within_s, set(runtime.mappers))
    # Faust starts and stops its Fetcher; this one (a Service too) replaces it
    app._fetcher = intake  # type: ignore[assignment]
    for topic in (s.input_topic, s.labels_topic, *runtime.mappers):
        # Subscribed without an agent; acks off: Faust tracks no offsets of these topics (the
        # intake commits checkpoints) and so does not report their partitions as stuck.
        app.topics.add(app.topic(topic, key_serializer="raw", value_serializer="raw", acks=False))

    # Faust awaits coroutine receivers; BaseSignal.connect's type names only plain functions.
    @app.on_partitions_revoked.connect  # type: ignore[arg-type]
    async def on_revoked(_app: faust.App, revoked: set[TP], **_: Any) -> None:
        await runtime.on_revoked((tp.topic, tp.partition) for tp in revoked if tp.topic in ours)

    @app.on_rebalance_complete.connect  # type: ignore[arg-type]
    async def on_rebalance_complete(_app: faust.App, **_: Any) -> None:
        assigned = [
            (tp.topic, tp.partition) for tp in app.consumer.assignment() if tp.topic in ours
        ]
        await runtime.on_assigned(assigned)

    @app.timer(interval=min(1.0, s.checkpoint_interval_s / 2))
    async def tick() -> None:
        await runtime.tick()
        await intake.commit()
        runtime.update_lag(lambda topic, partition: app.consumer.highwater(TP(topic, partition)))

    @app.page("/metrics")
    class Metrics(View):
        async def get(self, request: Request) -> Response:
            # ?name[]=a&name[]=b: only those metrics (as prometheus_client's own exporters do);
            # a probe that wants one counter need not pay for every series' samples.
            # Faust's aiohttp driver hands over aiohttp's request, whose query is a multidict
            # (Faust's Request type declares a plain Mapping).
            names = cast(Any, request.query).getall("name[]", [])[:100]
            registry = runtime.metrics.registry
            chosen = registry.restricted_registry(names) if names else registry
            # Rendered off the event loop: a large registry must never stall consumption.
            body = await asyncio.to_thread(generate_latest, chosen)
            return self.bytes(body, headers={"Content-Type": CONTENT_TYPE_LATEST})

    @app.page("/healthz")
    class Health(View):
        async def get(self, request: Request) -> Response:
            return self.json({"status": "ok"})

    @app.page("/readyz")
    class Ready(View):
        async def get(self, request: Request) -> Response:
            ready = runtime.ready and app.rebalancing is False
            return self.json(
                {"ready": ready, "partitions": sorted(map(list, runtime.states))},
                status=200 if ready else 503,
            )

    @app.page("/status")
    class Status(View):
        """This worker's partitions; behind ``STREAMDRIFT_HTTP_TOKEN`` when one is set."""

        async def get(self, request: Request) -> Response:
            token = s.http_token.get_secret_value() if s.http_token else None
            if token and not bearer_ok(request.headers.get("Authorization"), token):
                return self.json({"error": "missing or wrong bearer token"}, status=401)
            return self.json({"worker": runtime.worker_id, "partitions": runtime.ownership()})

    @app.service
    class Closer(faust.Service):
        async def on_stop(self) -> None:
            await intake.stop()  # no batch after the final checkpoint
            await runtime.close()

    return app, runtime


def run_worker(settings: Settings) -> None:
    """Run a worker with the app until it is stopped (``streamdrift worker``, after its checks):
    Faust's ``Worker`` owns the event loop, the signals and the logging."""
    from faust.worker import Worker  # ~0.4 s more: only when a worker really starts

    app, _ = create_app(settings)
    # The libraries and the app live as long as the process: out of the collector's sight, the
    # full collections that the monitors' allocations trigger scan only the monitors.
    gc.freeze()
    Worker(app, loglevel=settings.log_level, quiet=True).execute_from_commandline()
