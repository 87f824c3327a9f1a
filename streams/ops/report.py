"""``streamdrift report``: one self-contained HTML page about a model, for people who would
rather look than read.

The page is static — inline CSS and inline SVG drawn here in Python, no script, no server, no
network — so it can be mailed, attached to a ticket or archived and still open anywhere. Per
feature (every version, labelled): the reference vs the current distribution (numeric: CDFs of
the reference, of the latest window and of all values seen, from the monitors' sketches;
categorical: shares of the top categories), the drift score over time
(:mod:`streams.state.history`) with the alerts and open episodes marked, and the alerts. Every name
taken from the data (model, versions, features, categories, alert fields) is HTML-escaped.
"""

from __future__ import annotations

import math
from collections import Counter, defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from html import escape
from itertools import pairwise
from typing import Any

import numpy as np
import redis

from streamdrift.detectors import (
    CategoricalMonitor,
    ErrorMonitor,
    NumericMonitor,
    PCAReconstructionMonitor,
    QuantileSketch,
    RunningStats,
    StateError,
)
from streamdrift.streams.ops.report_incidents import incidents_section
from streamdrift.streams.pipeline.incidents import INCIDENT_TYPE_PREFIX
from streamdrift.streams.state.history import Point
from streamdrift.streams.state.partition import restore_monitor
from streamdrift.streams.state.reader import StateReader

REFERENCE, WINDOW, ALL = "reference", "latest window", "all values"
COLORS = {REFERENCE: "#1f77b4", WINDOW: "#d62728", ALL: "#7f7f7f"}
VERSION_COLORS = ("#1f77b4", "#ff7f0e", "#2ca02c", "#9467bd", "#8c564b", "#e377c2")
CDF_RANKS = np.linspace(0.01, 0.99, 99)  # p01..p99: the tails would squash the middle
TOP_CATEGORIES = 8
SCORE_UNITS = {
    NumericMonitor.kind: "σ: |EWMA mean − reference mean| / reference std",
    ErrorMonitor.kind: "σ: |EWMA error − reference error| / reference std",
    CategoricalMonitor.kind: "PSI of the last window vs the reference",
    PCAReconstructionMonitor.kind: "relative rise of the reconstruction error",
}


@dataclass
class Series:
    """One (feature, version, kind) of the model, merged over the partitions that hold it."""

    feature: str
    version: str | None
    kind: str
    count: int = 0
    missing: int = 0
    drift_score: float = 0.0
    episodes: int = 0
    episode_open: bool = False
    reference_sources: set[str | None] = field(default_factory=set)
    numeric: dict[str, tuple[RunningStats, QuantileSketch]] = field(default_factory=dict)
    categories: dict[str, Counter[str]] = field(default_factory=dict)

    def add(self, monitor: Any) -> None:
        """Fold in one partition's monitor (counts summed, sketches merged, score: the max)."""
        self.count += monitor.count
        self.missing += monitor.missing
        self.drift_score = max(self.drift_score, monitor.drift_score())
        self.episodes += monitor.lifecycle.episodes
        self.episode_open |= monitor.lifecycle.is_open
        self.reference_sources.add(monitor.reference_source)
        if isinstance(monitor, (NumericMonitor, ErrorMonitor)):
            for role, (stats, sketch) in _numeric_periods(monitor).items():
                merged = self.numeric.setdefault(role, (RunningStats(), QuantileSketch(sketch.k)))
                merged[0].merge(stats)
                merged[1].merge(sketch)
        elif isinstance(monitor, CategoricalMonitor):
            for role, counts in _category_periods(monitor).items():
                self.categories.setdefault(role, Counter()).update(counts)


def _numeric_periods(
    monitor: NumericMonitor | ErrorMonitor,
) -> dict[str, tuple[RunningStats, QuantileSketch]]:
    """The reference the window tests compare with (else the detectors'), the open window, and
    every value seen; only the non-empty ones."""
    windows = monitor.windows
    periods = {}
    if windows is not None and windows.ready:
        periods[REFERENCE] = (windows.reference.stats, windows.reference.sketch)
        periods[WINDOW] = (windows.current.stats, windows.current.sketch)
    elif monitor.warmed_up:
        periods[REFERENCE] = (monitor.reference, monitor.reference_sketch)
    periods[ALL] = (monitor.stats, monitor.sketch)
    return {role: period for role, period in periods.items() if period[0].count}


def _category_periods(monitor: CategoricalMonitor) -> dict[str, dict[str, int]]:
    """Like :func:`_numeric_periods`, the category counts."""
    windows = monitor.windows
    periods = {}
    if windows is not None and windows.ready:
        periods[REFERENCE] = windows.reference.counts
        periods[WINDOW] = windows.current.counts
    periods[ALL] = monitor.counts
    return {role: counts.counts for role, counts in periods.items() if counts.total}


def load_series(client: redis.Redis, group_id: str, model: str) -> tuple[list[Series], list[str]]:
    """The model's series from every partition's checkpointed state, and the names of those
    whose state could not be read."""
    merged: dict[tuple[str, str | None, str], Series] = {}
    unreadable = []
    for stored in StateReader(client, group_id).series(model):
        _, version, feature = stored.key
        try:
            monitor = restore_monitor(stored.key.field, stored.blob)
        except StateError:
            unreadable.append(feature)
            continue
        key = (feature, version, monitor.kind)
        merged.setdefault(key, Series(feature, version, monitor.kind)).add(monitor)
    return sorted(merged.values(), key=lambda s: (s.feature, s.version or "", s.kind)), unreadable


# -- plots ------------------------------------------------------------------------------------


def nice_ticks(low: float, high: float, count: int = 5) -> list[float]:
    """Round tick values covering [low, high] (steps of 1, 2 or 5 times a power of ten).

    >>> nice_ticks(0.0, 1.0), nice_ticks(-2.6, 3.1)
    ([0.0, 0.2, 0.4, 0.6, 0.8, 1.0], [-2.0, 0.0, 2.0])
    """
    if not high > low:
        return [low]
    raw = (high - low) / count
    power = 10 ** math.floor(math.log10(raw))
    step = next(m * power for m in (1, 2, 5, 10) if m * power >= raw)
    first = math.ceil(low / step - 1e-9)
    return [float(round(i * step, 12)) for i in range(first, math.floor(high / step + 1e-9) + 1)]


TIME_STEPS_S = (
    1,
    2,
    5,
    10,
    15,
    30,
    60,
    120,
    300,
    600,
    900,
    1800,
    3600,
    7200,
    10800,
    21600,
    43200,
    86400,
)


def time_ticks(low: float, high: float, count: int = 5) -> list[float]:
    """Tick times on round clock steps (10 s, 1 min, 15 min, 1 h, … a day or more).

    >>> time_ticks(100.0, 400.0)
    [120.0, 180.0, 240.0, 300.0, 360.0]
    """
    raw = (high - low) / count
    step = next((s for s in TIME_STEPS_S if s >= raw), 86400 * math.ceil(raw / 86400))
    return [float(t) for t in range(math.ceil(low / step) * step, math.floor(high) + 1, step)]


def _fmt(value: float | None) -> str:
    return "–" if value is None or not math.isfinite(value) else f"{value:.4g}"


class _Canvas:
    """Data coordinates mapped onto an SVG of fixed size, with axes and tick labels."""

    def __init__(
        self,
        x: tuple[float, float],
        y: tuple[float, float],
        width: int = 560,
        height: int = 230,
        left: int = 56,
    ) -> None:
        self.x0, self.x1 = x if x[1] > x[0] else (x[0] - 0.5, x[0] + 0.5)
        self.y0, self.y1 = y if y[1] > y[0] else (y[0] - 0.5, y[0] + 0.5)
        self.width, self.height, self.left, self.top, self.bottom = width, height, left, 10, 34
        self.parts: list[str] = []

    def px(self, value: float) -> float:
        span = self.width - self.left - 12
        return round(self.left + (value - self.x0) / (self.x1 - self.x0) * span, 1)

    def py(self, value: float) -> float:
        span = self.height - self.top - self.bottom
        return round(self.height - self.bottom - (value - self.y0) / (self.y1 - self.y0) * span, 1)

    def axes(
        self,
        x_ticks: Sequence[tuple[float, str]],
        y_ticks: Sequence[tuple[float, str]],
        x_label: str,
    ) -> None:
        bottom, right = self.height - self.bottom, self.width - 12
        self.parts.append(
            f'<rect class="plot" x="{self.left}" y="{self.top}" width="{right - self.left}" '
            f'height="{bottom - self.top}"/>'
        )
        for value, label in y_ticks:
            y = self.py(value)
            self.parts.append(
                f'<line class="grid" x1="{self.left}" x2="{right}" y1="{y}" y2="{y}"/><text '
                f'class="tick" x="{self.left - 4}" y="{y + 3}" '
                f'text-anchor="end">{escape(label)}</text>'
            )
        for value, label in x_ticks:
            self.parts.append(
                f'<text class="tick" x="{self.px(value)}" y="{bottom + 13}" '
                f'text-anchor="middle">{escape(label)}</text>'
            )
        self.parts.append(
            f'<text class="axis" x="{(self.left + right) / 2}" y="{self.height - 4}" '
            f'text-anchor="middle">{escape(x_label)}</text>'
        )

    def line(
        self,
        points: Sequence[tuple[float, float]],
        color: str,
        dashed: bool = False,
        title: str = "",
    ) -> None:
        if len(points) == 1:
            ((x, y),) = points
            self.parts.append(
                f'<circle cx="{self.px(x)}" cy="{self.py(y)}" r="3" '
                f'fill="{color}"><title>{escape(title)}</title></circle>'
            )
            return
        path = " ".join(f"{self.px(x)},{self.py(y)}" for x, y in points)
        dash = ' stroke-dasharray="5 3"' if dashed else ""
        self.parts.append(
            f'<polyline fill="none" stroke="{color}" stroke-width="2"{dash} points="{path}">'
            f"<title>{escape(title)}</title></polyline>"
        )

    def svg(self, label: str) -> str:
        return (
            f'<svg xmlns="http://www.w3.org/2000/svg" width="{self.width}" height="{self.height}" '
            f'viewBox="0 0 {self.width} {self.height}" role="img" aria-label="{escape(label)}">'
            + "".join(self.parts)
            + "</svg>"
        )


def cdf_svg(series: Series) -> str:
    """CDFs of the numeric periods, drawn through the p01..p99 of each sketch."""
    curves = {
        role: sketch.quantiles(CDF_RANKS.tolist()) for role, (_, sketch) in series.numeric.items()
    }
    low = min(values[0] for values in curves.values())
    high = max(values[-1] for values in curves.values())
    canvas = _Canvas((low, high), (0.0, 1.0))
    canvas.axes(
        [(t, _fmt(t)) for t in nice_ticks(low, high)],
        [(t, f"{t:.0%}") for t in nice_ticks(0.0, 1.0)],
        "value",
    )
    for role, values in curves.items():
        canvas.line(
            list(zip(values, CDF_RANKS.tolist(), strict=True)),
            COLORS[role],
            dashed=role == ALL,
            title=role,
        )
    return canvas.svg(f"distribution of {series.feature}")


def shares_svg(series: Series) -> str:
    """Horizontal bars: each top category's share in each period."""
    shares = {
        role: {value: n / counts.total() for value, n in counts.items()}
        for role, counts in series.categories.items()
    }
    first = shares.get(REFERENCE) or shares[ALL]
    top = sorted({v for s in shares.values() for v in s}, key=lambda v: (-first.get(v, 0.0), v))[
        :TOP_CATEGORIES
    ]
    bar, roles = 9, list(shares)
    row = bar * len(roles) + 8
    canvas = _Canvas(
        (0.0, max(max(s.get(v, 0.0) for v in top) for s in shares.values())),
        (0.0, 1.0),
        height=row * len(top) + 44,
        left=150,
    )
    canvas.axes(
        [(t, f"{t:.0%}") for t in nice_ticks(canvas.x0, canvas.x1, 4)], [], "share of values"
    )
    for index, value in enumerate(top):
        y = canvas.top + 4 + index * row
        label = value if len(value) <= 22 else value[:21] + "…"
        canvas.parts.append(
            f'<text class="tick" x="{canvas.left - 4}" y="{y + row / 2}" text-anchor="end">'
            f"{escape(label)}<title>{escape(value)}</title></text>"
        )
        for j, role in enumerate(roles):
            share = shares[role].get(value, 0.0)
            width = round(canvas.px(share) - canvas.left, 1)
            canvas.parts.append(
                f'<rect x="{canvas.left}" y="{y + j * bar}" width="{width}" height="{bar - 1}" '
                f'fill="{COLORS[role]}">'
                f"<title>{escape(value)} · {escape(role)}: {share:.1%}</title></rect>"
            )
    return canvas.svg(f"category shares of {series.feature}")


@dataclass(frozen=True)
class _Marker:
    at: float
    detected: bool
    text: str


def _score_lines(
    points: Sequence[Point],
) -> tuple[dict[str | None, list[tuple[float, float]]], dict[str | None, list[tuple[float, bool]]]]:
    """Per version: the score over time (the largest of its partitions' latest samples, as
    ``streamdrift status`` merges them) and whether an episode was open."""
    latest: dict[str | None, dict[str, tuple[float, bool]]] = defaultdict(dict)
    scores: dict[str | None, list[tuple[float, float]]] = defaultdict(list)
    opened: dict[str | None, list[tuple[float, bool]]] = defaultdict(list)
    for point in sorted(points, key=lambda p: p.at):
        sample = point.sample
        latest[sample.version][point.partition] = (sample.drift_score, sample.episode_open)
        current = latest[sample.version].values()
        scores[sample.version].append((point.at, max(score for score, _ in current)))
        opened[sample.version].append((point.at, any(is_open for _, is_open in current)))
    return scores, opened


def history_svg(
    feature: str,
    points: Sequence[Point],
    markers: Sequence[_Marker],
    versions: Sequence[str | None],
) -> str:
    """The drift score over time, one line per version; open episodes shaded, alerts marked."""
    scores, opened = _score_lines(points)
    times = [t for line in scores.values() for t, _ in line] + [m.at for m in markers]
    top = max([s for line in scores.values() for _, s in line] + [0.0])
    canvas = _Canvas((min(times), max(times)), (0.0, top * 1.1 or 1.0))
    x_ticks = [(t, _clock(t, canvas.x1 - canvas.x0)) for t in time_ticks(canvas.x0, canvas.x1)]
    canvas.axes(x_ticks, [(t, _fmt(t)) for t in nice_ticks(canvas.y0, canvas.y1, 4)], "time (UTC)")
    spans = [
        (s, e) for line in opened.values() for (s, was_open), (e, _) in pairwise(line) if was_open
    ]
    for start, end in spans:
        canvas.parts.append(
            f'<rect class="open" x="{canvas.px(start)}" y="{canvas.top}" '
            f'width="{round(canvas.px(end) - canvas.px(start), 1)}" '
            f'height="{canvas.height - canvas.top - canvas.bottom}"/>'
        )
    for marker in markers:
        x, color = canvas.px(marker.at), "#d62728" if marker.detected else "#2ca02c"
        canvas.parts.append(
            f'<line x1="{x}" x2="{x}" y1="{canvas.top}" y2="{canvas.height - canvas.bottom}" '
            f'stroke="{color}" stroke-width="2" stroke-dasharray="4 '
            f'2"><title>{escape(marker.text)}</title></line>'
        )
    for version, line in scores.items():
        canvas.line(line, _version_color(versions, version), title=f"version {_version(version)}")
    return canvas.svg(f"drift score of {feature} over time")


def _clock(at: float, span: float) -> str:
    moment = datetime.fromtimestamp(at, UTC)
    return moment.strftime(
        "%H:%M:%S" if span < 600 else "%H:%M" if span < 86_400 else "%m-%d %H:%M"
    )


def _version(version: str | None) -> str:
    return "(none)" if version is None else version


def _version_color(versions: Sequence[str | None], version: str | None) -> str:
    index = versions.index(version) if version in versions else len(versions)
    return VERSION_COLORS[index % len(VERSION_COLORS)]


# -- the page ---------------------------------------------------------------------------------

_CSS = """
body{font:14px/1.45 system-ui,-apple-system,"Segoe UI",sans-serif;color:#222;margin:24px;
max-width:1180px}
h1{font-size:22px;margin:0 0 6px}
h2{font-size:18px;margin:28px 0 6px;border-top:1px solid #ddd;padding-top:14px}
h3{font-size:14px;margin:10px 0 4px;color:#444} .meta{color:#555} .meta b{color:#222}
table{border-collapse:collapse;margin:6px 0 10px;font-size:13px}
th,td{border-bottom:1px solid #e4e4e4;padding:3px 8px;text-align:left}
th{background:#f6f6f6} td.num{text-align:right;font-variant-numeric:tabular-nums}
.plots{display:flex;flex-wrap:wrap;gap:18px;align-items:flex-start} .plot-box{flex:0 0 auto}
.open-tag{color:#b00;font-weight:600} .note{color:#777;font-style:italic}
.swatch{display:inline-block;width:12px;height:12px;margin:0 4px 0 10px;vertical-align:-1px}
svg .plot{fill:#fcfcfc;stroke:#bbb} svg .grid{stroke:#eee} svg .tick{font-size:11px;fill:#555}
svg .axis{font-size:11px;fill:#333} svg .open{fill:#d62728;fill-opacity:0.08}
"""


def render_report(
    model: str,
    group_id: str,
    series: Sequence[Series],
    points: Sequence[Point],
    alerts: Sequence[dict[str, Any]] | None,
    generated_at: float,
    unreadable: Sequence[str] = (),
    incidents: Sequence[dict[str, Any]] = (),
) -> str:
    """The HTML page (``alerts`` None: the alert topic was not read); ``incidents``: the
    model's, the latest event of each (:func:`streams.ops.incidents.latest_incidents`)."""
    features = sorted(
        {s.feature for s in series}
        | {p.sample.feature for p in points}
        | {a["data"]["feature"] for a in alerts or ()}
    )
    versions = sorted(
        {s.version for s in series} | {p.sample.version for p in points}, key=lambda v: v or ""
    )
    by_feature: dict[str, list[Series]] = defaultdict(list)
    for s in series:
        by_feature[s.feature].append(s)
    history: dict[str, list[Point]] = defaultdict(list)
    for p in points:
        history[p.sample.feature].append(p)
    feature_alerts: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for alert in sorted(alerts or (), key=lambda a: a["time"]):
        feature_alerts[alert["data"]["feature"]].append(alert)

    def urgency(feature: str) -> tuple[bool, int, float, str]:
        mine = by_feature[feature]
        return (
            not any(s.episode_open for s in mine),
            -len(feature_alerts[feature]),
            -max((s.drift_score for s in mine), default=0.0),
            feature,
        )

    ordered = sorted(features, key=urgency)
    anchors = {feature: f"feature-{i}" for i, feature in enumerate(ordered)}
    times = [p.at for p in points] + [_epoch(a["time"]) for a in alerts or ()]
    span = f"{_utc(min(times))} – {_utc(max(times))}" if times else "no history yet"
    parts = [
        '<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8"/>',
        f"<title>streamdrift report: {escape(model)}</title><style>{_CSS}</style></head><body>",
        f"<h1>Drift report: {escape(model)}</h1>",
        '<p class="meta">',
        f"<b>versions</b> {escape(', '.join(_version(v) for v in versions)) or '–'} · ",
        f"<b>time range</b> {escape(span)} · <b>generated</b> {escape(_utc(generated_at))} · ",
        f"<b>consumer group</b> {escape(group_id)}<br/>",
        f"<b>reference</b> {_reference_text(series)}</p>",
        _legend(),
    ]
    if alerts is None:
        parts.append(
            '<p class="note">Alerts not read (--no-alerts): only open episodes are shaded.</p>'
        )
    if unreadable:
        parts.append(
            '<p class="note">State that could not be read: '
            f"{escape(', '.join(sorted(set(unreadable))))}.</p>"
        )
    parts.append(incidents_section(incidents, anchors))
    parts.append(_overview(ordered, anchors, by_feature, feature_alerts))
    for feature in ordered:
        parts.append(
            _feature_section(
                feature,
                anchors[feature],
                by_feature[feature],
                history[feature],
                feature_alerts[feature],
                versions,
                alerts is not None,
            )
        )
    parts.append("</body></html>\n")
    return "".join(parts)


def _legend() -> str:
    swatches = "".join(
        f'<span class="swatch" style="background:{color}"></span>{escape(role)}'
        for role, color in COLORS.items()
    )
    return (
        f'<p class="meta">Distributions:{swatches} (dashed). Drift score: one line per version; '
        "red dashed lines mark alerts, green ones resolutions (at their event time), shading an "
        "open episode.</p>"
    )


def _reference_text(series: Sequence[Series]) -> str:
    by_version: dict[str | None, set[str]] = defaultdict(set)
    for s in series:
        by_version[s.version] |= {
            source or "warm-up (the stream's first values)" for source in s.reference_sources
        }
    if not by_version:
        return "–"
    return " · ".join(
        f"version {escape(_version(v))}: {escape(', '.join(sorted(sources)))}"
        for v, sources in sorted(by_version.items(), key=lambda item: item[0] or "")
    )


def _overview(
    ordered: Sequence[str],
    anchors: dict[str, str],
    by_feature: dict[str, list[Series]],
    feature_alerts: dict[str, list[dict[str, Any]]],
) -> str:
    rows = []
    for feature in ordered:
        mine = by_feature[feature]
        kinds = ", ".join(sorted({s.kind for s in mine})) or "–"
        is_open = '<span class="open-tag">open</span>' if any(s.episode_open for s in mine) else ""
        score = max((s.drift_score for s in mine), default=None)
        rows.append(
            "<tr><td><a "
            f'href="#{anchors[feature]}">{escape(feature)}</a></td><td>{escape(kinds)}</td><td '
            f'class="num">{sum(s.count for s in mine)}</td><td '
            f'class="num">{sum(s.missing for s in mine)}</td><td '
            f'class="num">{_fmt(score)}</td><td '
            f'class="num">{sum(s.episodes for s in mine)}</td><td>{is_open}</td><td '
            f'class="num">{len(feature_alerts[feature])}</td></tr>'
        )
    head = "".join(
        f"<th>{h}</th>"
        for h in (
            "feature",
            "kind",
            "values",
            "missing",
            "drift score",
            "episodes",
            "episode",
            "alerts",
        )
    )
    return f"<h2>Features</h2><table><tr>{head}</tr>{''.join(rows)}</table>"


def _feature_section(
    feature: str,
    anchor: str,
    mine: Sequence[Series],
    points: Sequence[Point],
    alerts: Sequence[dict[str, Any]],
    versions: Sequence[str | None],
    alerts_read: bool,
) -> str:
    parts = [f'<h2 id="{anchor}">{escape(feature)}</h2>']
    for s in mine:
        state = ' · <span class="open-tag">episode open</span>' if s.episode_open else ""
        sources = ", ".join(sorted(source or "warm-up" for source in s.reference_sources))
        parts.append(
            f"<h3>version {escape(_version(s.version))} · {escape(s.kind)} · {s.count} values, "
            f"{s.missing} missing · drift score {_fmt(s.drift_score)} · reference "
            f"{escape(sources)}{state}</h3>"
        )
        parts.append(_distribution(s))
    markers = [
        _Marker(
            _epoch(a["time"]),
            a["data"].get("event", "detected") != "resolved",
            f"{a['data'].get('event', 'detected')} · {a['data']['detector']} · version "
            f"{_version(a['data'].get('model_version'))} · {a['time']}",
        )
        for a in alerts
    ]
    if points or markers:
        units = SCORE_UNITS.get(mine[0].kind, "drift score") if mine else "drift score"
        parts.append(
            f'<h3>drift score over time ({escape(units)})</h3><div class="plot-box">'
            f"{history_svg(feature, points, markers, versions)}</div>"
        )
    else:
        parts.append(
            '<p class="note">No drift-score history yet (sampled every '
            "STREAMDRIFT_HISTORY_INTERVAL_S).</p>"
        )
    if alerts:
        parts.append(_alerts_table(alerts))
    elif alerts_read:
        parts.append('<p class="note">No alerts.</p>')
    return "".join(parts)


def _distribution(s: Series) -> str:
    if s.numeric:
        rows = "".join(
            f"<tr><td>{escape(role)}</td><td class='num'>{stats.count}</td><td "
            f"class='num'>{_fmt(stats.mean)}</td><td class='num'>{_fmt(stats.std)}</td>"
            + "".join(
                f"<td class='num'>{_fmt(q)}</td>" for q in sketch.quantiles([0.05, 0.5, 0.95])
            )
            + "</tr>"
            for role, (stats, sketch) in s.numeric.items()
        )
        head = "".join(f"<th>{h}</th>" for h in ("", "values", "mean", "std", "p05", "p50", "p95"))
        return (
            '<div class="plots"><div '
            f'class="plot-box">{cdf_svg(s)}</div><table><tr>{head}</tr>{rows}</table></div>'
        )
    if s.categories:
        rows = "".join(
            f"<tr><td>{escape(role)}</td><td class='num'>{counts.total()}</td><td "
            f"class='num'>{len(counts)}</td></tr>"
            for role, counts in s.categories.items()
        )
        head = "".join(f"<th>{h}</th>" for h in ("", "values", "distinct"))
        return (
            '<div class="plots"><div '
            f'class="plot-box">{shares_svg(s)}</div><table><tr>{head}</tr>{rows}</table></div>'
        )
    return '<p class="note">No distribution to show (a multivariate monitor, or no values yet).</p>'


def _alerts_table(alerts: Sequence[dict[str, Any]]) -> str:
    columns = (
        "time",
        "event",
        "version",
        "detector",
        "test",
        "severity",
        "effect",
        "p-value",
        "evidence",
        "id",
    )
    head = "".join(f"<th>{h}</th>" for h in columns)
    rows = []
    for alert in alerts:
        d = alert["data"]
        evidence = d.get("evidence") or {}
        where = (
            f"{evidence.get('topic')}[{evidence.get('partition')}] "
            f"{evidence.get('from_offset')}..{evidence.get('to_offset')}"
        )
        cells = (
            _utc(_epoch(alert["time"])),
            d.get("event", "detected"),
            _version(d.get("model_version")),
            d.get("detector"),
            d.get("test") or "–",
            d.get("severity"),
            _fmt(d.get("effect_size")),
            _fmt(d.get("p_value")),
            where,
        )
        full_id = str(alert.get("id"))
        rows.append(
            "<tr>"
            + "".join(f"<td>{escape(str(cell))}</td>" for cell in cells)
            + f'<td title="{escape(full_id)}">{escape(full_id[:12])}…</td></tr>'
        )
    return f"<table><tr>{head}</tr>{''.join(rows)}</table>"


def _epoch(rfc3339: str) -> float:
    return datetime.fromisoformat(rfc3339).timestamp()


def _utc(at: float) -> str:
    return datetime.fromtimestamp(at, UTC).strftime("%Y-%m-%d %H:%M:%S UTC")


def select_alerts(alerts: Iterable[dict[str, Any]], model: str) -> list[dict[str, Any]]:
    """The model's drift alerts (not its incident events), each once: delivery is
    at-least-once, with deterministic ids."""
    seen: dict[str, dict[str, Any]] = {}
    for alert in alerts:
        data = alert.get("data")
        if str(alert.get("type", "")).startswith(INCIDENT_TYPE_PREFIX):
            continue
        if isinstance(data, dict) and data.get("model") == model and "time" in alert:
            seen.setdefault(str(alert.get("id")), alert)
    return list(seen.values())
