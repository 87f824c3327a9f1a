"""Drift alerts as CloudEvents 1.0 (structured JSON mode) with deterministic ids.

The id hashes what identifies a drift episode — group, model, feature, detector and the
Kafka position of the value that opened it — so a replay after a crash or a retried send
yields the same id, and consumers de-duplicate by id.
"""

from __future__ import annotations

import hashlib
from datetime import UTC, datetime
from typing import Any

import msgspec
import numpy as np

from streamdrift.streams.pipeline.outcome import Finding

DRIFT_DETECTED = "io.streamdrift.drift.detected"
DRIFT_RESOLVED = "io.streamdrift.drift.resolved"
TYPES = {"detected": DRIFT_DETECTED, "resolved": DRIFT_RESOLVED}
SPEC_VERSION = "1.0"


def alert_id(group_id: str, topic: str, partition: int, finding: Finding) -> str:
    d = finding.detection
    model = (
        finding.model
        if finding.model_version is None
        else f"{finding.model}\x1f{finding.model_version}"
    )
    identity = "\x1f".join(
        (
            group_id,
            model,
            finding.feature,
            d.detector,
            topic,
            str(partition),
            str(d.position),
            d.event,
        )
    )
    return hashlib.sha256(identity.encode()).hexdigest()[:32]


def build_alert(group_id: str, topic: str, partition: int, finding: Finding) -> dict[str, Any]:
    """The CloudEvent of a finding; built only from the finding, so a replay yields the same
    bytes."""
    d = finding.detection
    return {
        "specversion": SPEC_VERSION,
        "id": alert_id(group_id, topic, partition, finding),
        "source": f"streamdrift://{group_id}",
        "type": TYPES[d.event],
        "subject": f"{finding.model}/{finding.feature}",
        "time": datetime.fromtimestamp(finding.time, UTC).isoformat().replace("+00:00", "Z"),
        "datacontenttype": "application/json",
        "data": {
            "model": finding.model,
            "model_version": finding.model_version,
            "feature": finding.feature,
            "kind": finding.kind,
            "detector": d.detector,
            "statistic": d.statistic,
            "threshold": d.threshold,
            "severity": d.severity,
            "effect_size": d.effect_size,
            "events_seen": d.events_seen,
            "reference": d.reference,
            "reference_source": finding.reference_source,
            "current": d.current,
            "evidence": {
                "topic": topic,
                "partition": partition,
                "from_offset": d.evidence_from,
                "to_offset": d.position,
            },
            "event": d.event,
            "test": d.test,
            "p_value": d.p_value,
            "details": {**d.details, "segments": finding.segments}
            if finding.segments
            else d.details,
        },
    }


def _numpy_scalars(value: object) -> object:
    if isinstance(value, np.generic):
        return value.item()
    raise TypeError(f"cannot encode {type(value).__name__} in an alert")


_ENCODER = msgspec.json.Encoder(enc_hook=_numpy_scalars)


def encode_alert(alert: dict[str, Any]) -> bytes:
    return _ENCODER.encode(alert)
