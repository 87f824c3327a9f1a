"""The report's incident section: per incident of the model (newest first), its summary and
triage, and a timeline of the features that moved, ranked by effect — when each was detected
between the incident's opening and its end.

Everything comes from the alert topic, where anyone with write access can put anything: every
field is escaped, and an incident whose fields are not of the expected types is named as
unreadable rather than ending the report.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from datetime import UTC, datetime
from html import escape
from typing import Any

from streamdrift.streams.ops.incidents import segment_lines

#: Incidents shown in full (the newest); the rest are counted.
MAX_SHOWN = 20
_BAR_WIDTH = 360


def incidents_section(
    incidents: Sequence[dict[str, Any]], anchors: Mapping[str, str] | None = None
) -> str:
    """``<h2>Incidents</h2>`` and one block per incident (``incidents``: the latest event of
    each, newest first, as :func:`streams.ops.incidents.latest_incidents` gives them);
    ``anchors`` links a feature's name to its section of the report."""
    if not incidents:
        return ""
    parts = ["<h2>Incidents</h2>"]
    for message in incidents[:MAX_SHOWN]:
        try:
            parts.append(_incident(message["data"], anchors or {}))
        except (KeyError, TypeError, ValueError, AttributeError, OverflowError):
            ident = message.get("data", {}).get("incident") if isinstance(message, dict) else None
            parts.append(f'<p class="note">An unreadable incident: {escape(str(ident))}.</p>')
    if len(incidents) > MAX_SHOWN:
        parts.append(f'<p class="note">{len(incidents) - MAX_SHOWN} older incidents not shown.</p>')
    return "".join(parts)


def _incident(data: dict[str, Any], anchors: Mapping[str, str]) -> str:
    opened = _epoch(data["opened_at"])
    end = _epoch(data["resolved_at"] or data["latest_evidence_at"])
    status = str(data["status"])
    tag = '<span class="open-tag">open</span>' if status == "open" else escape(status)
    triage = data.get("triage") or {}
    head = (
        f"<h3>Incident {escape(str(data['incident'])[:12])}… · {tag} · "
        f"{escape(_utc(opened))} – {escape(_utc(end))}</h3>"
        f'<p class="meta">{escape(str(data["summary"]))}<br/>{_triage(triage)}</p>'
    )
    rows = [_feature_row(feature, opened, end, anchors) for feature in data["features"] or []]
    table = (
        "<table><tr><th>feature</th><th>version</th><th>detector</th><th>effect</th>"
        f"<th>detected</th><th>timeline ({escape(_span(end - opened))})</th></tr>"
        + "".join(rows)
        + "</table>"
    )
    return head + table


def _triage(triage: dict[str, Any]) -> str:
    versions, outcome = triage.get("versions") or {}, triage.get("outcome") or {}
    verdict = {
        "all_versions": "in every version in traffic: an upstream data change is likely",
        "some_versions": "only in some versions",
        "single_version": "one version in traffic",
    }.get(str(versions.get("verdict")), "–")
    if versions.get("rollback_candidate"):
        newest = str(versions.get("newest"))
        verdict = f"only in the newest version ({newest}): rollback candidate"
    rate = outcome.get("error_rate")
    if isinstance(rate, dict):
        error = f"error rate {_num(rate.get('reference'))} → {_num(rate.get('current'))}"
    elif outcome.get("labels"):
        error = "error rate unchanged"
    else:
        error = "no labels"
    segments = "".join(
        f" · <b>segment</b> {escape(line)}" for line in segment_lines(triage.get("segments"))
    )
    return f"<b>versions</b> {escape(verdict)} · <b>outcome</b> {escape(error)}{segments}"


def _feature_row(
    feature: dict[str, Any], opened: float, end: float, anchors: Mapping[str, str]
) -> str:
    name = str(feature["feature"])
    anchor = anchors.get(name)
    label = f'<a href="#{escape(anchor)}">{escape(name)}</a>' if anchor else escape(name)
    detected = _epoch(feature["detected_at"])
    share = 0.0 if end <= opened else min(max((detected - opened) / (end - opened), 0.0), 1.0)
    x = round(share * (_BAR_WIDTH - 8)) + 4
    svg = (
        f'<svg width="{_BAR_WIDTH}" height="14" role="img" aria-label="detected '
        f'{escape(_span(detected - opened))} after the opening">'
        f'<rect x="0" y="5" width="{_BAR_WIDTH}" height="4" fill="#eee"/>'
        f'<circle cx="{x}" cy="7" r="4" fill="#d62728"/></svg>'
    )
    version = feature.get("model_version")
    cells = (
        label,
        escape("–" if version is None else str(version)),
        escape(str(feature.get("detector"))),
        escape(_num(feature.get("effect_size"))),
        escape(f"+{_span(detected - opened)}"),
        svg,
    )
    return "<tr>" + "".join(f"<td>{cell}</td>" for cell in cells) + "</tr>"


def _epoch(rfc3339: Any) -> float:
    return datetime.fromisoformat(str(rfc3339)).timestamp()


def _utc(at: float) -> str:
    return datetime.fromtimestamp(at, UTC).strftime("%Y-%m-%d %H:%M:%S UTC")


def _span(seconds: float) -> str:
    seconds = max(seconds, 0.0)
    if seconds < 120:
        return f"{seconds:.0f} s"
    if seconds < 7200:
        return f"{seconds / 60:.0f} min"
    return f"{seconds / 3600:.1f} h"


def _num(value: Any) -> str:
    return f"{value:.3g}" if isinstance(value, int | float) and not isinstance(value, bool) else "–"
