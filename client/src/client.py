"""The producer side: a small client that inference services use to emit prediction events.

``DriftClient.emit`` never blocks the inference path and never raises into it: the event is
sampled, encoded (msgspec, on the caller's thread, so later changes to the caller's dicts do
not matter) and appended to a bounded in-memory queue; a background thread batches the
events into envelopes (JSON arrays, the worker's input contract) and produces them with
confluent-kafka. Whatever cannot be sent is counted, never raised: see :class:`ClientStats`.

    client = DriftClient("kafka:9092")          # or DriftClient.from_env(): STREAMDRIFT_* env
    client.emit("fraud", {"amount": 12.5, "country": "DE"}, prediction=0.91, model_version="3",
                event_id="e-123")
    ...
    client.close(timeout=5.0)                    # the application owns the lifecycle (no atexit)

Design:

* **Keys:** each message is keyed by the model name (``model/<shard>`` with ``shards > 1``), so
  one model's events share a partition and the worker, which keeps its state per input
  partition, sees the model's whole stream (docs/contracts.md and docs/operations.md). An envelope
  only ever holds events of one key. The partitioner is ``murmur2_random``: the same partition for a
  key as the Java and aiokafka producers' default.
* **Sampling:** ``sample_rate`` < 1 keeps an event with an ``event_id`` iff a hash of the id
  falls below the rate (:func:`sampled`: the same decision in every process, so a labels
  producer can keep exactly the labels of the kept predictions); events without an id are
  kept at random.
* **Drops:** the queue holds at most ``max_queue`` events that are accepted and not yet
  acknowledged by the broker (queued, in open envelopes, or inside librdkafka); an ``emit``
  beyond that is dropped and counted. When librdkafka's own queue is full the background
  thread keeps the envelope and retries after serving deliveries (no event is lost there; the
  bounded queue in front absorbs the pressure). ``close(timeout)`` drains what it can within
  its budget; the rest is counted as ``dropped_closed`` (never produced) or
  ``delivery_failed`` (purged from librdkafka).
* **Values:** numpy scalars are converted, ``Decimal`` is written as a number, non-finite
  floats become ``null`` (a missing value for the worker). An event that cannot be encoded
  (an unsupported object, a model that is not a non-empty string, features that are not a
  dict, bigger than ``max_envelope_bytes``) is counted as ``encoding_failed``: a monitoring
  client must not crash the inference path. Only the constructor raises (bad arguments).
* **Time:** an event without ``timestamp`` is stamped with ``time.time()`` at ``emit``, so the
  envelope's linger does not shift its event time.

Counters invariant (see :meth:`DriftClient.stats`): ``emitted == sent + delivery_failed +
dropped_sampled + dropped_queue_full + encoding_failed + dropped_closed + pending``.

Imports only the standard library, msgspec and confluent-kafka, never the worker: ``from_env``
reads the workers' variables itself (:mod:`streamdrift.client.config`).
"""

from __future__ import annotations

import asyncio
import logging
import random
import threading
import time
from collections import deque
from collections.abc import Mapping
from dataclasses import asdict, dataclass
from datetime import datetime
from typing import Any

import msgspec
from confluent_kafka import KafkaError, KafkaException, Message, Producer

from streamdrift.client.config import (
    DEFAULT_TOPIC,
    MAX_EVENTS_PER_MESSAGE,
    MAX_MESSAGE_BYTES,
    masked_config,
    settings_from_env,
)
from streamdrift.client.producer import DeliveryCallback, produce_with_retry
from streamdrift.client.sampling import _hash64, sampled

__all__ = ["ClientStats", "DriftClient"]

_log = logging.getLogger("streamdrift.client")

_PRODUCER_DEFAULTS: dict[str, Any] = {
    "client.id": "streamdrift-client",
    "linger.ms": 5,  # envelopes are batched here already; this only groups them per request
    "compression.type": "lz4",  # the worker decodes every Kafka codec
    "message.timeout.ms": 30_000,
    "partitioner": "murmur2_random",  # Java / aiokafka default: same partition per key
    "allow.auto.create.topics": False,
}


def _enc_hook(obj: Any) -> Any:
    """numpy scalars (np.float32, np.int64, np.bool_, ...) as their Python value."""
    if type(obj).__module__ == "numpy" and hasattr(obj, "item") and getattr(obj, "ndim", 1) == 0:
        return obj.item()
    raise NotImplementedError(f"cannot encode objects of type {type(obj).__name__}")


_encode = msgspec.json.Encoder(enc_hook=_enc_hook, decimal_format="number").encode


@dataclass(frozen=True, slots=True)
class ClientStats:
    """Counts of events (never raised, always counted) since the client was created."""

    emitted: int = 0
    """``emit`` calls."""
    sent: int = 0
    """Events the broker acknowledged."""
    delivery_failed: int = 0
    """Events of messages that failed (broker unreachable past ``message.timeout.ms``, refused,
    or purged from librdkafka when ``close``'s budget ran out)."""
    dropped_sampled: int = 0
    """Events left out by ``sample_rate``."""
    dropped_queue_full: int = 0
    """Events dropped because ``max_queue`` events were pending."""
    encoding_failed: int = 0
    """Events that could not be encoded as a valid message (see the module doc)."""
    dropped_closed: int = 0
    """Events emitted after ``close``, or still unproduced when its budget ran out."""
    pending: int = 0
    """Events accepted and not yet acknowledged or failed."""
    messages_sent: int = 0
    """Envelopes (Kafka messages) acknowledged."""
    producer_queue_full: int = 0
    """Times librdkafka's queue was full (the envelope was retried; no event lost)."""
    kafka_errors: int = 0
    """Client-level errors librdkafka reported (e.g. all brokers down); informational."""
    last_error: str | None = None
    """The last delivery or client error, or the last encoding failure."""

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


class DriftClient:
    """Emit prediction events to streamdrift's input topic without blocking the caller.

    Thread-safe: ``emit`` may be called from any thread or event loop. ``flush`` and ``close``
    block up to their timeout (in async code: ``await client.aclose()``). Use as a context
    manager or call ``close``; without either, unsent events are lost at exit (the background
    thread is a daemon and no ``atexit`` hook is installed).
    """

    def __init__(
        self,
        bootstrap_servers: str | None = None,
        topic: str = DEFAULT_TOPIC,
        *,
        config: Mapping[str, Any] | None = None,
        envelope_size: int = 500,
        linger: float = 1.0,
        max_queue: int = 100_000,
        sample_rate: float = 1.0,
        shards: int = 1,
        max_envelope_bytes: int = 512 * 1024,
        log_interval: float = 60.0,
    ) -> None:
        """
        :param bootstrap_servers: ``host:port[,host:port]``; may instead be in ``config``.
        :param topic: the worker's input topic.
        :param config: confluent-kafka (librdkafka) properties, applied over this client's
            defaults: security (``security.protocol``, ``sasl.*``, ``ssl.*``), timeouts, ...
        :param envelope_size: most events per Kafka message (1..10,000, the worker's limit).
        :param linger: most seconds an event waits in an envelope that is not full.
        :param max_queue: most events accepted and not yet acknowledged; beyond, ``emit`` drops.
        :param sample_rate: share of events kept, 0..1 (by ``event_id`` when given).
        :param shards: keys per model (``model/<shard>`` by a hash of ``event_id``) to spread
            one high-volume model over partitions; 1 keys by model.
        :param max_envelope_bytes: largest message value (at most 1 MiB, the worker's limit).
        :param log_interval: least seconds between two warnings about drops or errors.
        """
        if not 1 <= envelope_size <= MAX_EVENTS_PER_MESSAGE:
            raise ValueError(
                f"envelope_size must be 1..{MAX_EVENTS_PER_MESSAGE}, got {envelope_size}"
            )
        if not 0.0 <= sample_rate <= 1.0:
            raise ValueError(f"sample_rate must be in [0, 1], got {sample_rate}")
        if linger < 0:
            raise ValueError(f"linger must be >= 0 seconds, got {linger}")
        if max_queue < 1:
            raise ValueError(f"max_queue must be >= 1, got {max_queue}")
        if shards < 1:
            raise ValueError(f"shards must be >= 1, got {shards}")
        if not 64 <= max_envelope_bytes <= MAX_MESSAGE_BYTES:
            raise ValueError(
                f"max_envelope_bytes must be 64..{MAX_MESSAGE_BYTES}, got {max_envelope_bytes}"
            )
        if not topic:
            raise ValueError("topic must not be empty")
        settings: dict[str, Any] = {
            **_PRODUCER_DEFAULTS,
            "error_cb": self._on_error,
            "logger": _kafka_log,
        }
        if bootstrap_servers:
            settings["bootstrap.servers"] = bootstrap_servers.removeprefix("kafka://").strip()
        settings.update(config or {})
        if not settings.get("bootstrap.servers"):
            raise ValueError("bootstrap_servers (or config['bootstrap.servers']) is required")

        self.topic = topic
        self.envelope_size = envelope_size
        self.linger = float(linger)
        self.max_queue = max_queue
        self.sample_rate = float(sample_rate)
        self.shards = shards
        self.max_envelope_bytes = max_envelope_bytes
        self._bootstrap = str(settings["bootstrap.servers"])
        self._log_interval = log_interval
        shown = {
            k: v for k, v in settings.items() if k not in ("error_cb", "logger", "on_delivery")
        }
        _log.debug("streamdrift client for topic %r: %s", topic, masked_config(shown))
        self._producer = Producer(settings)

        # Shared between emit (any thread) and the background thread; guarded by _lock.
        self._lock = threading.Lock()
        self._queue: deque[tuple[str, bytes]] = deque()
        self._counts = dict.fromkeys(
            (
                "emitted",
                "sent",
                "delivery_failed",
                "dropped_sampled",
                "dropped_queue_full",
                "encoding_failed",
                "dropped_closed",
                "pending",
                "messages_sent",
                "producer_queue_full",
                "kafka_errors",
            ),
            0,
        )
        self._last_error: str | None = None
        self._closed = False
        self._close_deadline: float | None = None
        self._flush_waiters: list[threading.Event] = []
        self._wake = threading.Event()

        # Owned by the background thread only.
        self._envelopes: dict[str, _Envelope] = {}
        # (key, value, events) librdkafka refused
        self._blocked: deque[tuple[str, bytes, int]] = deque()
        self._in_flight = 0  # events inside librdkafka

        self._tick = min(0.05, max(self.linger / 2, 0.005))
        self._thread = threading.Thread(target=self._run, name="streamdrift-client", daemon=True)
        self._thread.start()

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None, **options: Any) -> DriftClient:
        """A client configured like the workers, from the same ``STREAMDRIFT_*`` variables:
        bootstrap, Kafka security (TLS, mTLS, SASL) and input topic (``environ``, default
        ``os.environ``; ``STREAMDRIFT_SECRETS_DIR`` works too: see
        :func:`~streamdrift.client.config.settings_from_env`, which raises ``ValueError`` naming
        an invalid variable). ``options`` go to the constructor; a ``config`` among them is
        applied over the variables' properties, a ``topic`` over ``STREAMDRIFT_INPUT_TOPIC``."""
        settings = settings_from_env(environ)
        config = {**settings.config, **dict(options.pop("config", None) or {})}
        options.setdefault("topic", settings.topic)
        return cls(config=config, **options)

    # --- the inference path ---------------------------------------------------------------

    def emit(
        self,
        model: str,
        features: Mapping[str, Any],
        prediction: Any = None,
        model_version: str | None = None,
        event_id: str | None = None,
        timestamp: float | str | datetime | None = None,
        **extra: Any,
    ) -> bool:
        """Queue one prediction event; True if it was accepted, False if it was sampled out or
        dropped (counted in :meth:`stats`). Never blocks on the network, never raises on a full
        queue, a broker outage or a value it cannot encode. ``extra`` fields are carried in the
        event (the worker ignores them). ``timestamp`` defaults to now."""
        if self.sample_rate < 1.0:
            keep = (
                random.random() < self.sample_rate
                if event_id is None
                else sampled(str(event_id), self.sample_rate)
            )
            if not keep:
                return self._count_drop("dropped_sampled")
        try:
            key, payload = self._encode(
                model, features, prediction, model_version, event_id, timestamp, extra
            )
        except Exception as exc:  # the inference path must not crash because of monitoring
            return self._count_drop(
                "encoding_failed", f"encoding failed: {type(exc).__name__}: {exc}"[:300]
            )
        with self._lock:
            counts = self._counts
            counts["emitted"] += 1
            if self._closed:
                counts["dropped_closed"] += 1
                return False
            if counts["pending"] >= self.max_queue:
                counts["dropped_queue_full"] += 1
                return False
            counts["pending"] += 1
            queue = self._queue
            queue.append((key, payload))
            if len(queue) % self.envelope_size == 0:
                self._wake.set()
        return True

    def _count_drop(self, counter: str, error: str | None = None) -> bool:
        with self._lock:
            self._counts["emitted"] += 1
            self._counts[counter] += 1
            if error is not None:
                self._last_error = error
        return False

    def _encode(
        self,
        model: Any,
        features: Any,
        prediction: Any,
        model_version: Any,
        event_id: Any,
        timestamp: Any,
        extra: dict[str, Any],
    ) -> tuple[str, bytes]:
        if type(model) is not str or not model:
            raise TypeError(f"model must be a non-empty string, got {type(model).__name__}")
        if not isinstance(features, dict):
            if not isinstance(features, Mapping):
                raise TypeError(f"features must be a dict, got {type(features).__name__}")
            features = dict(features)
        if timestamp is None:
            timestamp = time.time()
        elif isinstance(timestamp, datetime):
            if timestamp.tzinfo is None:
                raise ValueError("a datetime timestamp needs a timezone")
            timestamp = timestamp.timestamp()
        event: dict[str, Any] = {"model": model, "features": features, "timestamp": timestamp}
        if prediction is not None:
            event["prediction"] = prediction
        if model_version is not None:
            event["model_version"] = str(model_version)
        if event_id is not None:
            event["event_id"] = str(event_id)
        if extra:
            event.update(extra)
        payload = _encode(event)
        if len(payload) + 2 > self.max_envelope_bytes:
            raise ValueError(
                f"event of {len(payload)} bytes exceeds "
                f"max_envelope_bytes={self.max_envelope_bytes}"
            )
        if self.shards == 1:
            return model, payload
        shard = (
            random.randrange(self.shards)
            if event_id is None
            else _hash64(str(event_id), b"sd-shard") % self.shards
        )
        return f"{model}/{shard}", payload

    # --- lifecycle ------------------------------------------------------------------------

    def stats(self) -> ClientStats:
        """A consistent snapshot of the counters."""
        with self._lock:
            return ClientStats(**self._counts, last_error=self._last_error)

    def flush(self, timeout: float = 10.0) -> int:
        """Send every pending event now (ignoring ``linger``) and wait up to ``timeout`` seconds
        for the broker's acknowledgements; the number of events still pending (0: all done)."""
        waiter = threading.Event()
        with self._lock:
            if self._counts["pending"] == 0:
                return 0
            if not self._thread.is_alive():
                return self._counts["pending"]
            self._flush_waiters.append(waiter)
        self._wake.set()
        waiter.wait(max(timeout, 0.0))
        with self._lock:
            if waiter in self._flush_waiters:
                self._flush_waiters.remove(waiter)
            return self._counts["pending"]

    def close(self, timeout: float = 10.0) -> ClientStats:
        """Stop accepting events, send what is pending and wait for acknowledgements, returning
        within ``timeout`` seconds; what is left then is counted (``dropped_closed``,
        ``delivery_failed``). Safe to call more than once; returns the final counts."""
        deadline = time.monotonic() + max(timeout, 0.0)
        with self._lock:
            if not self._closed:
                self._closed = True
                # Keep a little of the budget for purging what is left and serving its reports.
                self._close_deadline = deadline - min(0.2, max(timeout, 0.0) * 0.2)
        self._wake.set()
        if threading.current_thread() is not self._thread:
            self._thread.join(max(deadline - time.monotonic(), 0.0))
        return self.stats()

    async def aclose(self, timeout: float = 10.0) -> ClientStats:
        """``close`` for async code (e.g. a FastAPI lifespan): runs it in a worker thread."""
        return await asyncio.to_thread(self.close, timeout)

    @property
    def closed(self) -> bool:
        return self._closed

    def __enter__(self) -> DriftClient:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def __repr__(self) -> str:  # never the config: it may hold secrets
        return (
            f"DriftClient(bootstrap={self._bootstrap!r}, topic={self.topic!r}, "
            f"closed={getattr(self, '_closed', False)})"
        )

    # --- the background thread ----------------------------------------------------------

    def _run(self) -> None:
        next_log = time.monotonic() + self._log_interval
        logged = self._drop_summary()
        while True:
            try:
                if self._step():
                    break
                now = time.monotonic()
                if now >= next_log:
                    next_log = now + self._log_interval
                    logged = self._warn_about_drops(logged)
            except Exception:  # never die: a dead thread would turn every event into a drop
                _log.exception("streamdrift client: unexpected error in the sending thread")
                time.sleep(self._tick)
        self._finish()
        self._warn_about_drops(logged)

    def _step(self) -> bool:
        """One round: take the queue, send full / lingered envelopes, serve deliveries.
        True when the client is closed and either everything is acknowledged or its budget is
        over."""
        self._wake.wait(self._tick)
        self._wake.clear()
        with self._lock:
            items, self._queue = self._queue, deque()
            draining = self._closed or bool(self._flush_waiters)
            deadline = self._close_deadline
        now = time.monotonic()
        self._retry_blocked()
        for key, payload in items:
            self._add(key, payload, now)
        for key in [
            k for k, e in self._envelopes.items() if draining or now - e.opened >= self.linger
        ]:
            self._send(key)
        self._producer.poll(0)
        with self._lock:
            done = self._counts["pending"] == 0
            if done and self._flush_waiters:
                for waiter in self._flush_waiters:
                    waiter.set()
                self._flush_waiters.clear()
        if deadline is None:
            return False
        if done:
            return True
        if time.monotonic() >= deadline:
            return True
        if not self._queue and not self._envelopes and not self._blocked:
            # Everything is inside librdkafka: wait for its acknowledgements without spinning.
            self._producer.flush(min(self._tick, max(deadline - time.monotonic(), 0.0)))
        return False

    def _add(self, key: str, payload: bytes, now: float) -> None:
        envelope = self._envelopes.get(key)
        if envelope is not None and envelope.size + len(payload) + 1 > self.max_envelope_bytes:
            self._send(key)
            envelope = None
        if envelope is None:
            envelope = self._envelopes[key] = _Envelope(now)
        envelope.parts.append(payload)
        envelope.size += len(payload) + 1
        if len(envelope.parts) >= self.envelope_size:
            self._send(key)

    def _send(self, key: str) -> None:
        envelope = self._envelopes.pop(key)
        value = b"[" + b",".join(envelope.parts) + b"]"
        if self._blocked:  # keep the order of a key's envelopes behind those librdkafka refused
            self._blocked.append((key, value, len(envelope.parts)))
        else:
            self._produce(key, value, len(envelope.parts))

    def _retry_blocked(self) -> None:
        while self._blocked:
            key, value, events = self._blocked[0]
            if not self._produce(key, value, events, retry=True):
                return
            self._blocked.popleft()

    def _produce(self, key: str, value: bytes, events: int, retry: bool = False) -> bool:
        try:
            # One try: when librdkafka's queue is full, serve deliveries (they free the queue)
            # for one tick and keep the envelope for the next round.
            taken = produce_with_retry(
                self._producer,
                self.topic,
                value,
                key.encode(),
                on_delivery=self._delivered(events),
                poll_timeout=self._tick,
                attempts=1,
                on_queue_full=self._count_queue_full,
            )
        except KafkaException as exc:  # refused locally (e.g. too large for message.max.bytes)
            self._settle(events, False, f"produce failed: {exc.args[0].str() if exc.args else exc}")
            return True
        if not taken:
            if not retry:
                self._blocked.append((key, value, events))
            return False
        self._in_flight += events
        return True

    def _count_queue_full(self) -> None:
        with self._lock:
            self._counts["producer_queue_full"] += 1

    def _delivered(self, events: int) -> DeliveryCallback:
        def callback(error: KafkaError | None, _message: Message) -> None:
            self._in_flight -= events
            self._settle(
                events, error is None, None if error is None else f"delivery failed: {error.str()}"
            )

        return callback

    def _settle(self, events: int, ok: bool, error: str | None) -> None:
        with self._lock:
            counts = self._counts
            counts["pending"] -= events
            if ok:
                counts["sent"] += events
                counts["messages_sent"] += 1
            else:
                counts["delivery_failed"] += events
                self._last_error = error

    def _on_error(self, error: KafkaError) -> None:
        with self._lock:
            self._counts["kafka_errors"] += 1
            self._last_error = f"kafka: {error.str()}"

    def _finish(self) -> None:
        """After close's budget: count what was never produced, purge what librdkafka holds."""
        unsent = sum(len(e.parts) for e in self._envelopes.values()) + sum(
            n for _, _, n in self._blocked
        )
        self._envelopes.clear()
        self._blocked.clear()
        with self._lock:
            unsent += len(self._queue)
            self._queue.clear()
            self._counts["dropped_closed"] += unsent
            self._counts["pending"] -= unsent
        if self._in_flight:
            self._producer.purge(in_queue=True, in_flight=True, blocking=True)
            for _ in range(10):  # the purged messages' reports: counted as delivery_failed
                self._producer.poll(0.01)
                if not self._in_flight:
                    break
        with self._lock:
            for waiter in self._flush_waiters:
                waiter.set()
            self._flush_waiters.clear()

    def _drop_summary(self) -> tuple[int, ...]:
        with self._lock:
            c = self._counts
            return (
                c["dropped_queue_full"],
                c["encoding_failed"],
                c["delivery_failed"],
                c["dropped_closed"],
            )

    def _warn_about_drops(self, before: tuple[int, ...]) -> tuple[int, ...]:
        """Log (from this thread, never the caller's) when events were lost since ``before``."""
        now = self._drop_summary()
        if now != before:
            full, encoding, delivery, closed = (a - b for a, b in zip(now, before, strict=True))
            _log.warning(
                "streamdrift client lost events on topic %r: %d queue full, %d encoding failed, "
                "%d delivery failed, %d at close (last error: %s)",
                self.topic,
                full,
                encoding,
                delivery,
                closed,
                self._last_error,
            )
        return now


class _Envelope:
    __slots__ = ("opened", "parts", "size")

    def __init__(self, opened: float) -> None:
        self.opened = opened
        self.parts: list[bytes] = []
        self.size = 1  # "[" and "]" with the separators counted per part


_kafka_log = logging.getLogger("streamdrift.client.kafka")
