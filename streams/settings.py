"""One typed settings object for the whole worker, read from ``STREAMDRIFT_*`` variables.

Every field maps to an environment variable named ``STREAMDRIFT_<FIELD>`` (upper case); the
docs/configuration.md's settings table is the user-facing copy of this module.
"""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Literal

from pydantic import Field, SecretStr, field_validator, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from streamdrift.detectors.kernels import Choice
from streamdrift.streams.pipeline.admission import AdmissionLimits, parse_allowlist
from streamdrift.streams.pipeline.codec import Limits

# The pure pipeline's bounds hold the defaults; the settings of the same names repeat none of them
# (but the timestamp skews, unbounded in the pure decoder, which has no clock to trust).
_CODEC = Limits()
_ADMISSION = AdmissionLimits()


class Settings(BaseSettings):
    # hide_input_in_errors: a validation error must never echo a password or token it was given.
    model_config = SettingsConfigDict(
        env_prefix="STREAMDRIFT_", extra="ignore", hide_input_in_errors=True
    )

    # --- connections -----------------------------------------------------------------------
    kafka_bootstrap: str = Field(
        "localhost:9092", description="Kafka bootstrap servers, host:port[,host:port]"
    )
    redis_url: SecretStr = Field(
        SecretStr("redis://localhost:6379/0"),
        description=(
            "Redis URL of the state store (redis:// or rediss:// for TLS; may hold user:password)"
        ),
    )

    redis_cluster: bool = Field(
        False,
        description="Talk to a Redis Cluster (one checkpoint's keys share a hash tag: one slot)",
    )
    schema_registry_url: SecretStr | None = Field(
        None,
        description=(
            "Schema Registry URL for inputs in its wire format (avro, protobuf, jsonschema); "
            "Confluent's API (may hold user:password)"
        ),
    )

    # --- Kafka security (every client: Faust/aiokafka and confluent-kafka) ------------------
    kafka_security_protocol: Literal["PLAINTEXT", "SSL", "SASL_PLAINTEXT", "SASL_SSL"] = Field(
        "PLAINTEXT", description="PLAINTEXT, SSL (TLS / mTLS), SASL_PLAINTEXT or SASL_SSL"
    )
    kafka_sasl_mechanism: Literal["PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512"] = Field(
        "PLAIN", description="SASL mechanism for SASL_* protocols"
    )
    kafka_sasl_username: str | None = Field(None, description="SASL user name")
    kafka_sasl_password: SecretStr | None = Field(None, description="SASL password (never logged)")
    kafka_ssl_cafile: Path | None = Field(
        None, description="CA bundle that signs the brokers' certificates"
    )
    kafka_ssl_certfile: Path | None = Field(None, description="Client certificate for mTLS")
    kafka_ssl_keyfile: Path | None = Field(None, description="Client private key for mTLS")
    kafka_ssl_key_password: SecretStr | None = Field(
        None, description="Password of the client key (never logged)"
    )

    # --- topics ----------------------------------------------------------------------------
    input_topic: str = Field("predictions", description="Prediction events in")
    labels_topic: str = Field("labels", description="Ground-truth labels in (joined by event_id)")
    alert_topic: str = Field("drift-alerts", description="CloudEvents drift alerts out")
    dlq_topic: str = Field(
        "predictions.dlq", description="Dead letters out (original bytes + reason headers)"
    )
    group_id: str = Field(
        "streamdrift", description="Consumer group / Faust app id; also namespaces Redis keys"
    )

    # --- metrics and health ----------------------------------------------------------------
    metrics_port: int = Field(9464, description="Port of /metrics, /healthz and /readyz")
    metrics_host: str = Field("0.0.0.0", description="Bind address of the metrics server")
    http_token: SecretStr | None = Field(
        None,
        description="Bearer token required by /status (metrics and health stay open for probes)",
    )

    # --- detector configuration ------------------------------------------------------------
    config: Path | None = Field(
        None, description="Optional YAML with per-model / per-feature detector settings"
    )

    # --- checkpointing ---------------------------------------------------------------------
    checkpoint_every_events: int = Field(
        50_000, ge=1, description="Checkpoint after this many events"
    )
    checkpoint_interval_s: float = Field(2.0, gt=0, description="...or after this many seconds")
    history_interval_s: float = Field(
        10.0,
        ge=0,
        description=(
            "Least seconds between two drift-score history samples of a partition (streamdrift "
            "report); 0: every checkpoint"
        ),
    )
    kernels: Choice = Field(
        "auto",
        description=(
            "The detectors' per-value loops: compiled (the Rust extension streamdrift_kernels, "
            "built by make where Rust is installed; the worker refuses to start without it), "
            "reference (river's detectors and numpy, the kernels' oracle: the same detections "
            "and state, slower) or auto (compiled where installed, else reference)"
        ),
    )
    batch_max_events: int = Field(
        2_000, ge=1, description="Events handled as one batch (a message is never split)"
    )
    batch_within_s: float = Field(
        0.05, gt=0, description="Longest wait for records in one poll of the consumer"
    )
    fetch_max_wait_ms: int = Field(
        100,
        ge=0,
        le=5000,
        description=(
            "Longest wait of a Kafka fetch for data (bounds event-to-alert latency on quiet "
            "partitions)"
        ),
    )

    # --- consumer group timing (production-safe defaults; tests use seconds) ----------------
    session_timeout_s: float = Field(30.0, gt=0, description="Consumer group session timeout")
    heartbeat_interval_s: float = Field(3.0, gt=0, description="Consumer group heartbeat interval")
    rebalance_timeout_s: float = Field(30.0, gt=0, description="Consumer group rebalance timeout")

    # --- multivariate drift -----------------------------------------------------------------
    multivariate: bool = Field(
        True,
        description=(
            "Run the PCA reconstruction-error monitor over each model version's numeric features"
        ),
    )
    multivariate_max_features: int = Field(
        50, ge=2, description="Most numeric features in one PCA monitor (the first ones by name)"
    )

    # --- incidents -------------------------------------------------------------------------
    incidents: bool = Field(
        True,
        description=(
            "Group the drift alerts of a model that begin close together into one incident "
            "(io.streamdrift.incident.* events on the alert topic; alerts carry its id)"
        ),
    )
    incident_window_s: float = Field(
        300.0,
        gt=0,
        description=(
            "A detection joins its model's open incident if it comes within this many seconds "
            "(record time) of the incident's detections; later ones open a new incident"
        ),
    )
    incident_max_members: int = Field(
        100,
        ge=1,
        le=1_000,
        description="Members (series of a partition) an incident lists; later ones join unlisted",
    )
    incident_ttl_s: float = Field(
        7 * 86_400.0,
        gt=0,
        description="How long Redis keeps a model's incidents after their last change",
    )

    # --- reference baselines ----------------------------------------------------------------
    baseline_refresh_s: float = Field(
        10.0, gt=0, description="How often workers look for new or replaced baselines in Redis"
    )

    # --- labels join -----------------------------------------------------------------------
    label_ttl_s: float = Field(
        86_400.0,
        gt=0,
        description="How long predictions wait for their label (and labels for their prediction)",
    )
    label_join_models: str = Field(
        "*",
        description="Models whose predictions wait in Redis for their labels: * (all) or a "
        "comma-separated list (each costs ~100 B of Redis for the label TTL)",
    )
    max_pending_labels: int = Field(
        100_000, ge=0, description="Labels waiting for their prediction, per labels partition"
    )

    # --- input limits (excess goes to the dead-letter topic with a reason) -----------------
    max_message_bytes: int = Field(
        _CODEC.max_message_bytes, ge=1, description="Largest accepted Kafka message value"
    )
    max_events_per_message: int = Field(
        _CODEC.max_events_per_message, ge=1, description="Largest accepted JSON array of events"
    )
    max_features_per_event: int = Field(
        _CODEC.max_features_per_event, ge=1, description="Most features in one event"
    )
    max_features_per_model: int = Field(
        _ADMISSION.max_features_per_model,
        ge=1,
        description="Most distinct features per model (per partition)",
    )
    max_models: int = Field(
        _ADMISSION.max_models, ge=1, description="Most distinct models (per partition)"
    )
    max_versions_per_model: int = Field(
        _ADMISSION.max_versions_per_model,
        ge=1,
        description=(
            "Versions of one model monitored side by side (per partition); the least recently "
            "seen beyond it is retired"
        ),
    )
    max_categories_per_feature: int = Field(
        200, ge=1, description="Most distinct categories per categorical feature"
    )
    max_name_length: int = Field(
        _CODEC.max_name_length, ge=1, description="Longest model / feature name"
    )
    max_category_length: int = Field(
        _CODEC.max_category_length, ge=1, description="Longest categorical value"
    )
    max_json_depth: int = Field(
        _CODEC.max_json_depth,
        ge=2,
        description=(
            "Deepest JSON nesting accepted in a message the typed decoder refuses (deeper than "
            "~900 levels is refused anywhere)"
        ),
    )
    max_event_id_length: int = Field(
        _CODEC.max_event_id_length,
        ge=1,
        description="Longest event_id (predictions and labels); an empty one is refused",
    )
    max_abs_value: float = Field(
        _CODEC.max_abs_value,
        gt=0,
        description=(
            "Largest magnitude of a numeric feature, prediction or label; beyond it the event is "
            "dead-lettered (value_out_of_range)"
        ),
    )
    max_future_skew_s: float = Field(
        3600.0,
        ge=0,
        description=(
            "How far an event's timestamp may be ahead of its Kafka timestamp (timestamp_skew "
            "beyond)"
        ),
    )
    max_past_skew_s: float = Field(
        315_360_000.0,
        ge=0,
        description=(
            "How far an event's timestamp may be behind its Kafka timestamp (default 10 years: "
            "backfills pass)"
        ),
    )

    # --- admission (a flood of made-up names must not exhaust a worker) --------------------
    allowed_models: str = Field(
        "*",
        description=(
            "Models to monitor: * (any) or a comma-separated allowlist; others are dead-lettered "
            "(model_not_allowed)"
        ),
    )
    max_new_series_per_message: int = Field(
        _ADMISSION.max_new_series_per_message,
        ge=1,
        description="Most series one message may create; beyond it the events are dead-lettered "
        "(too_many_new_series)",
    )
    max_new_series_per_s: float = Field(
        _ADMISSION.max_new_series_per_s,
        gt=0,
        description=(
            "New series per second per partition (a token bucket on Kafka time, burst of one "
            "second's worth)"
        ),
    )
    probation_events: int = Field(
        _ADMISSION.probation_events,
        ge=1,
        description=(
            "Events after which a new model is established; until then it is on probation and may "
            "be evicted by newer ones"
        ),
    )
    max_probation_models: int = Field(
        _ADMISSION.max_probation_models,
        ge=1,
        description=(
            "Models on probation per partition; a new model beyond it evicts the least recently "
            "seen one on probation"
        ),
    )
    idle_evict_s: float = Field(
        _ADMISSION.idle_evict_s,
        gt=0,
        description=(
            "A model, version or series not seen for this long (Kafka time) is evicted with its "
            "state and metrics"
        ),
    )
    dlq_max_bytes: int = Field(
        900_000,
        ge=1024,
        description=(
            "Largest dead-letter value sent; a larger payload is sent truncated with its length "
            "and SHA-256 in headers"
        ),
    )
    max_pending_labels_per_model: int = Field(
        10_000,
        ge=0,
        description="Labels of one model waiting for their prediction, per labels partition",
    )

    log_level: Literal["debug", "info", "warning", "error"] = Field(
        "info", description="Log level: debug, info, warning, error"
    )

    @field_validator("kafka_bootstrap")
    @classmethod
    def _strip_scheme(cls, value: str) -> str:
        value = value.removeprefix("kafka://").strip()
        for server in value.split(","):
            host, colon, port = server.strip().rpartition(":")
            if not server.strip() or (colon and not host) or (colon and not _is_port(port)):
                raise ValueError("expected host:port[,host:port] with ports 1-65535")
        return value

    @field_validator("redis_url")
    @classmethod
    def _redis_url_parses(cls, value: SecretStr) -> SecretStr:
        # redis-py only parses the URL when the first client is built: a typo would surface as a
        # traceback deep in a command (or a worker) instead of here, before any connection.
        from redis.connection import parse_url

        try:
            parse_url(value.get_secret_value())
        except (
            ValueError
        ) as exc:  # its messages name the scheme / port / option, never the password
            raise ValueError(
                f"must look like redis://[:password@]host:port/db or rediss://… (TLS) ({exc})"
            ) from None
        return value

    @field_validator("metrics_port")
    @classmethod
    def _port_in_range(cls, value: int) -> int:
        if not _is_port(str(value)):
            raise ValueError("expected a TCP port, 1-65535")
        return value

    @field_validator("log_level", mode="before")
    @classmethod
    def _any_case(cls, value: object) -> object:
        # INFO works as well as info
        return value.strip().lower() if isinstance(value, str) else value

    def own_topics(self) -> tuple[str, ...]:
        """The topics the worker already uses: none of them can be a mapped input."""
        return (self.input_topic, self.labels_topic, self.alert_topic, self.dlq_topic)

    @field_validator("input_topic", "labels_topic", "alert_topic", "dlq_topic")
    @classmethod
    def _topic_name(cls, value: str) -> str:
        if not _TOPIC.fullmatch(value) or value in (".", ".."):
            raise ValueError("expected a Kafka topic name: 1-249 of a-z A-Z 0-9 . _ -")
        return value

    @field_validator("group_id")
    @classmethod
    def _group_id(cls, value: str) -> str:
        if not value or not value.isprintable():
            raise ValueError("expected a non-empty name of printable characters")
        return value

    @model_validator(mode="after")
    def _complete_security(self) -> Settings:
        if self.kafka_security_protocol.startswith("SASL") and not (
            self.kafka_sasl_username and self.kafka_sasl_password
        ):
            raise ValueError(
                f"STREAMDRIFT_KAFKA_SECURITY_PROTOCOL={self.kafka_security_protocol} needs "
                "STREAMDRIFT_KAFKA_SASL_USERNAME and STREAMDRIFT_KAFKA_SASL_PASSWORD"
            )
        if bool(self.kafka_ssl_certfile) != bool(self.kafka_ssl_keyfile):
            raise ValueError(
                "mTLS needs both STREAMDRIFT_KAFKA_SSL_CERTFILE and STREAMDRIFT_KAFKA_SSL_KEYFILE"
            )
        if self.kafka_security_protocol.endswith(
            "SSL"
        ):  # else the files are not read: no reason to refuse
            for name in ("kafka_ssl_cafile", "kafka_ssl_certfile", "kafka_ssl_keyfile"):
                path = getattr(self, name)
                if path is not None and not path.is_file():
                    raise ValueError(f"STREAMDRIFT_{name.upper()}={path}: no such file")
        return self

    @classmethod
    def load(cls, **overrides: object) -> Settings:
        """Settings from the environment, plus one file per secret in ``STREAMDRIFT_SECRETS_DIR``
        (e.g. a Kubernetes Secret volume with a file ``streamdrift_kafka_sasl_password``)."""
        # _secrets_dir is a BaseSettings init argument, not a field; the overrides are fields.
        return cls(_secrets_dir=os.environ.get("STREAMDRIFT_SECRETS_DIR"), **overrides)  # type: ignore[call-arg, arg-type]

    def redis_client(self, asynchronous: bool = True, **options: object):
        """A client for the state store: standalone Redis or Redis Cluster, per the settings."""
        import redis
        import redis.asyncio as aioredis

        url = self.redis_url.get_secret_value()
        module = aioredis if asynchronous else redis
        factory = module.RedisCluster if self.redis_cluster else module.Redis
        return factory.from_url(url, **options)

    def codec_limits(self) -> Limits:
        """The decoder's bounds: the settings of the same names."""
        return Limits(**{name: getattr(self, name) for name in Limits.__dataclass_fields__})

    def admission_limits(self) -> AdmissionLimits:
        """The admission limits: the settings of the same names (the allowlist parsed)."""
        values = {name: getattr(self, name) for name in AdmissionLimits.__dataclass_fields__}
        return AdmissionLimits(**{**values, "allowed_models": parse_allowlist(self.allowed_models)})

    @property
    def redis_url_redacted(self) -> str:
        """The Redis URL without its password, safe to log."""
        return redact_url(self.redis_url.get_secret_value())

    @property
    def schema_registry_url_redacted(self) -> str:
        """The Schema Registry URL without its password, safe to log."""
        url = self.schema_registry_url
        return "(not set)" if url is None else redact_url(url.get_secret_value())


_TOPIC = re.compile(r"[A-Za-z0-9._-]{1,249}")

#: Query parameters of a URL whose values are secrets: passwords, tokens, keys (not key files).
_SECRET_PARAM = re.compile(r"pass|pwd|token|secret|credential|auth|key$", re.IGNORECASE)


def _is_port(text: str) -> bool:
    return text.isdigit() and 1 <= int(text) <= 65535


def redact_url(url: str) -> str:
    """The URL with its password and secret query parameters replaced by ``***``; never raises.

    >>> redact_url("redis://:s3cret@localhost:6379/0")
    'redis://:***@localhost:6379/0'
    >>> redact_url("redis://admin:s3cret@localhost:6379/0")
    'redis://admin:***@localhost:6379/0'
    >>> redact_url("redis://localhost:6379/0")
    'redis://localhost:6379/0'
    >>> redact_url("rediss://host:6380/0?ssl_keyfile=/x&password=s3cret")
    'rediss://host:6380/0?ssl_keyfile=/x&password=***'
    >>> redact_url("redis://h/0?api_key=k&ssl_password=p&token=t&x=1")
    'redis://h/0?api_key=***&ssl_password=***&token=***&x=1'
    >>> redact_url(":pw@h:6379")  # no scheme
    ':***@h:6379'
    >>> redact_url("redis://h/0?password=x@y")  # an @ after the host hides nothing either
    'redis://***@y'
    >>> redact_url(None), redact_url("")
    ('None', '')
    """
    try:
        return _redact(str(url))
    except Exception:  # a URL too odd to take apart is shown not at all rather than in full
        return "***"


def _redact(url: str) -> str:
    scheme, sep, rest = url.partition("://")
    if not sep:
        scheme, rest = "", url
    if "@" in rest:
        creds, _, rest = rest.rpartition("@")
        user, colon, _ = creds.partition(":")
        # what looks like a path or a query is not a user name: the @ came later, hide it all
        shown = "***" if any(c in user for c in "/?#&=;") else f"{user}{':***' if colon else ''}"
        rest = f"{shown}@{rest}"
    base, question, query = rest.partition("?")
    if question:
        params = []
        for param in re.split(r"([&;])", query):
            name, equals, _ = param.partition("=")
            params.append(f"{name}=***" if equals and _SECRET_PARAM.search(name) else param)
        rest = f"{base}?{''.join(params)}"
    return f"{scheme}{sep}{rest}"
