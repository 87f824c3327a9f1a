"""``streamdrift incidents``: the incidents the alert topic tells, each as it stands now.

An incident's events (opened, updated, resolved) carry its whole state so far, so the latest one
of each incident is what to show; delivery is at-least-once, and anything else on the topic
(drift alerts, foreign messages) is left out.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from rich.table import Table

from streamdrift.streams.ops.tail import number_text
from streamdrift.streams.pipeline.incidents import INCIDENT_TYPE_PREFIX
from streamdrift.streams.security import printable

_ORDER = {"opened": 0, "updated": 1, "resolved": 2}


def latest_incidents(
    messages: Iterable[dict[str, Any]], model: str | None = None
) -> list[dict[str, Any]]:
    """The latest event of each incident (of ``model`` if given), newest incident first.

    >>> e = lambda i, t, n: {"type": f"io.streamdrift.incident.{t}", "time": "T",
    ...     "data": {"incident": i, "model": "m", "opened_at": f"2026-01-0{i}", "feature_count": n}}
    >>> [(d["data"]["incident"], d["data"]["feature_count"]) for d in latest_incidents(
    ...     [e("1", "opened", 1), e("2", "opened", 2), e("1", "updated", 3), {"x": 1}])]
    [('2', 2), ('1', 3)]
    """
    latest: dict[str, dict[str, Any]] = {}
    for message in messages:
        if not _is_incident(message):
            continue
        data = message["data"]
        if model is not None and data.get("model") != model:
            continue
        known = latest.get(data["incident"])
        if known is None or _rank(message) >= _rank(known):
            latest[data["incident"]] = message
    return sorted(latest.values(), key=lambda m: str(m["data"].get("opened_at")), reverse=True)


def _is_incident(message: dict[str, Any]) -> bool:
    data = message.get("data")
    return (
        str(message.get("type", "")).startswith(INCIDENT_TYPE_PREFIX)
        and isinstance(data, dict)
        and isinstance(data.get("incident"), str)
    )


def _rank(message: dict[str, Any]) -> tuple[int, int]:
    """Later events of an incident rank higher: resolved last, then more features listed."""
    action = str(message["type"]).removeprefix(INCIDENT_TYPE_PREFIX)
    count = message["data"].get("feature_count")
    return _ORDER.get(action, -1), count if isinstance(count, int) else 0


def incidents_table(incidents: list[dict[str, Any]]) -> Table:
    """One row per incident: id, model, status, when, how many features, the summary."""
    table = Table(title="incidents (newest first)")
    for column in ("incident", "model", "status", "opened", "features", "summary"):
        table.add_column(column, overflow="fold")
    for message in incidents:
        d = message["data"]
        table.add_row(
            printable(d["incident"]),
            printable(d.get("model")),
            printable(d.get("status")),
            printable(d.get("opened_at")),
            printable(d.get("feature_count")),
            printable(d.get("summary")),
        )
    return table


def incident_detail(message: dict[str, Any]) -> list[Any]:
    """An incident in full: its summary and triage, and every listed feature, ranked."""
    d = message["data"]
    p = printable
    triage = d.get("triage") or {}
    versions, outcome = triage.get("versions") or {}, triage.get("outcome") or {}
    head = (
        f"[bold]incident {p(d['incident'])}[/bold] {p(d.get('model'))} · {p(d.get('status'))}\n"
        f"{p(d.get('summary'))}\n"
        f"opened {p(d.get('opened_at'))} · latest evidence {p(d.get('latest_evidence_at'))}"
        f" · resolved {p(d.get('resolved_at') or '-')}\n"
        f"versions: {p(versions.get('verdict', '-'))} (moved: {_names(versions.get('affected'))};"
        f" in traffic: {_names(versions.get('active'))}; rollback candidate:"
        f" {p(versions.get('rollback_candidate', '-'))})\n"
        f"outcome: labels {p(outcome.get('labels', '-'))}, error rate"
        f" {_error_rate(outcome.get('error_rate'))}, prediction shifted"
        f" {p(outcome.get('prediction_shifted', '-'))}"
        + "".join(f"\nsegments: {line}" for line in segment_lines(triage.get("segments")))
    )
    table = Table(title=f"features that moved ({p(d.get('feature_count'))}, largest first)")
    for column in ("feature", "version", "detector", "severity", "effect", "evidence", "alert"):
        table.add_column(column, overflow="fold")
    for feature in d.get("features") or []:
        table.add_row(
            p(feature.get("feature")),
            p(feature.get("model_version") or "-"),
            p(feature.get("detector")),
            p(feature.get("severity")),
            number_text(feature.get("effect_size")),
            ", ".join(_evidence(e) for e in feature.get("evidence") or []),
            p(feature.get("alert")),
        )
    return [head, table]


def segment_lines(segments: Any) -> list[str]:
    """One line per segment feature of an incident's triage: its verdict and the values that
    carry the shift, with the features they carry and their largest effect (made printable: an
    incident on the topic may be forged)."""
    if not isinstance(segments, list):
        return []
    lines = []
    for segment in segments[:_MAX_SEGMENT_LINES]:
        if not isinstance(segment, dict):
            continue
        carriers = [c for c in segment.get("carriers") or [] if isinstance(c, dict)]
        told = "; ".join(
            f"{printable(c.get('value'))} carries {_names(c.get('features'))}"
            f" (largest {number_text(c.get('largest_effect'))} sigma)"
            for c in carriers
        )
        lines.append(
            f"{printable(segment.get('segment'))} {printable(segment.get('verdict'))}"
            + (f": {told}" if told else "")
        )
    return lines


_MAX_SEGMENT_LINES = 4


def _names(values: Any) -> str:
    return ", ".join(map(printable, values)) if isinstance(values, list) and values else "-"


def _error_rate(rate: Any) -> str:
    if not isinstance(rate, dict):
        return "unchanged or unknown"
    return f"{number_text(rate.get('reference'))} → {number_text(rate.get('current'))}"


def _evidence(evidence: Any) -> str:
    if not isinstance(evidence, dict):
        return "-"
    return (
        f"{printable(evidence.get('topic'))}\\[{printable(evidence.get('partition'))}] "
        f"{printable(evidence.get('from_offset'))}..{printable(evidence.get('to_offset'))}"
    )
