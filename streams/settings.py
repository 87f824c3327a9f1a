"""One typed settings object for the whole worker, read from ``STREAMDRIFT_*`` variables.

Every field maps to an environment variable named ``STREAMDRIFT_<FIELD>`` (upper case); the
README's configuration table is the user-facing copy of this module.
"""

from __future__ import annotations

from pathlib import Path

from pydantic import Field, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="STREAMDRIFT_", extra="ignore")

    # --- connections -----------------------------------------------------------------------
    kafka_bootstrap: str = Field("localhost:9092", description="Kafka bootstrap servers, host:port[,host:port]")
    redis_url: str = Field("redis://localhost:6379/0", description="Redis URL of the state store")

    # --- topics ----------------------------------------------------------------------------
    input_topic: str = Field("predictions", description="Prediction events in")
    labels_topic: str = Field("labels", description="Ground-truth labels in (joined by event_id)")
    alert_topic: str = Field("drift-alerts", description="CloudEvents drift alerts out")
    dlq_topic: str = Field("predictions.dlq", description="Dead letters out (original bytes + reason headers)")
    group_id: str = Field("streamdrift", description="Consumer group / Faust app id; also namespaces Redis keys")

    # --- metrics and health ----------------------------------------------------------------
    metrics_port: int = Field(9464, description="Port of /metrics, /healthz and /readyz")
    metrics_host: str = Field("0.0.0.0", description="Bind address of the metrics server")

    # --- detector configuration ------------------------------------------------------------
    config: Path | None = Field(None, description="Optional YAML with per-model / per-feature detector settings")

    # --- checkpointing ---------------------------------------------------------------------
    checkpoint_every_events: int = Field(20_000, ge=1, description="Checkpoint after this many events")
    checkpoint_interval_s: float = Field(2.0, gt=0, description="...or after this many seconds")
    batch_max_events: int = Field(2_000, ge=1, description="Max Kafka messages handled as one batch")
    batch_within_s: float = Field(0.05, gt=0, description="Max wait to fill a batch")

    # --- consumer group timing (production-safe defaults; tests use seconds) ----------------
    session_timeout_s: float = Field(30.0, gt=0, description="Consumer group session timeout")
    heartbeat_interval_s: float = Field(3.0, gt=0, description="Consumer group heartbeat interval")
    rebalance_timeout_s: float = Field(30.0, gt=0, description="Consumer group rebalance timeout")

    # --- labels join -----------------------------------------------------------------------
    label_ttl_s: float = Field(86_400.0, gt=0, description="How long predictions wait for their label (and labels for their prediction)")
    max_pending_labels: int = Field(100_000, ge=0, description="Labels waiting for their prediction, per labels partition")

    # --- input limits (excess goes to the dead-letter topic with a reason) -----------------
    max_message_bytes: int = Field(1_048_576, ge=1, description="Largest accepted Kafka message value")
    max_events_per_message: int = Field(10_000, ge=1, description="Largest accepted JSON array of events")
    max_features_per_event: int = Field(500, ge=1, description="Most features in one event")
    max_features_per_model: int = Field(2_000, ge=1, description="Most distinct features per model (per partition)")
    max_models: int = Field(1_000, ge=1, description="Most distinct models (per partition)")
    max_categories_per_feature: int = Field(200, ge=1, description="Most distinct categories per categorical feature")
    max_name_length: int = Field(128, ge=1, description="Longest model / feature name")
    max_category_length: int = Field(256, ge=1, description="Longest categorical value")

    log_level: str = Field("info", description="Log level: debug, info, warning, error")

    @field_validator("kafka_bootstrap")
    @classmethod
    def _strip_scheme(cls, value: str) -> str:
        return value.removeprefix("kafka://").strip()

    @property
    def redis_url_redacted(self) -> str:
        """The Redis URL without its password, safe to log."""
        return redact_url(self.redis_url)


def redact_url(url: str) -> str:
    """Replace the password of ``scheme://user:password@host`` with ``***``.

    >>> redact_url("redis://:s3cret@localhost:6379/0")
    'redis://:***@localhost:6379/0'
    >>> redact_url("redis://localhost:6379/0")
    'redis://localhost:6379/0'
    """
    scheme, sep, rest = url.partition("://")
    if not sep or "@" not in rest:
        return url
    creds, _, host = rest.rpartition("@")
    user, colon, _ = creds.partition(":")
    return f"{scheme}://{user}{':***' if colon else ''}@{host}"
