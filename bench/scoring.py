"""From alarm indices to the benchmark's numbers, and the targets' verdicts.

Per trial and column (:func:`score`):

false alarm
    An alarm on a series the change does not affect, or on an affected series before the change.
    ``fa_events`` counts the values on which such an alarm was possible (every value of an
    unaffected series, the pre-change values of an affected one, warm-ups included), so the rate
    is per 10^6 values of one feature.
detection, delay
    The trial's change is detected if an affected series alarms at or after ``change`` (up to the
    end of the series: the horizon). The delay is ``alarm index - change + 1``: the changed values
    seen when the alarm fired.
duplicates
    Alarms of the episode (every alarm of the affected series from the change on) after its first.
incidents
    For the streamdrift column: the trial's lifecycle changes (detections and resolutions of all
    its series) go through the worker's incident rules (:class:`IncidentLedger`, a window of
    ``INCIDENT_WINDOW`` values standing for the worker's seconds); the incidents of the episode
    are those that an affected series' detection at or after the change opened or joined.

Over trials (:func:`summarise`): detection rate, median and p90 delay with missed changes counted
as infinitely late (so a p90 is "-" once more than 10% are missed), false alarms per 10^6 values,
mean duplicates per detected episode and the largest number of alerts in one episode.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass

import numpy as np

from bench.scenarios import Row, Trial
from streamdrift.streams.pipeline.incidents import Decision, IncidentLedger

__all__ = ["Outcome", "Summary", "incidents_of", "quantile", "score", "summarise", "verdict"]

FA_TARGET = 1.0  # false alarms per 10^6 values of one feature
#: The incident window in values: the worker's STREAMDRIFT_INCIDENT_WINDOW_S (300 s) at ~17
#: events per second; every value of a trial counts as one event.
INCIDENT_WINDOW = 5_000


@dataclass(frozen=True)
class Outcome:
    """One column on one trial."""

    fa: int
    fa_events: int
    episode: bool  # the trial has a change
    delay: int | None  # None: no change, or missed
    alerts: int  # alarms in the episode
    incidents: int | None = None  # incidents of the episode (None: the column has none)
    series_alerts: int = 0  # the most alarms in the episode of one affected series


def incidents_of(trial: Trial, lifecycles: Mapping[str, Sequence[tuple[int, str]]]) -> int:
    """How many incidents the episode's detections (affected series, at or after the change)
    opened or joined, with every series' lifecycle changes through the incident rules in stream
    order (position = time); 0 without a change."""
    if trial.change is None:
        return 0
    changes = sorted(
        (position, order, series, event)
        for order, series in enumerate(trial.series)
        for position, event in lifecycles[series.name]
    )
    ledger = IncidentLedger(window=INCIDENT_WINDOW)
    episode: set[str] = set()
    for n, (position, _, series, event) in enumerate(changes):
        alert = f"{series.name}:{event}:{position}:{n}"
        (answer,) = ledger.decide(
            [Decision(alert, event, float(position), series.name, "{}", alert)]
        )
        if event == "detected" and series.name in trial.affected and position >= trial.change:
            episode.add(answer.incident)
    return len(episode)


def score(
    trial: Trial,
    alarms: Mapping[str, np.ndarray],
    lifecycles: Mapping[str, Sequence[tuple[int, str]]] | None = None,
) -> Outcome:
    fa = fa_events = alerts = series_alerts = 0
    first: int | None = None
    for series in trial.series:
        found = np.asarray(alarms[series.name], dtype=np.int64)
        if series.name not in trial.affected:
            fa += len(found)
            fa_events += len(series.values)
            continue
        assert trial.change is not None
        after = found[found >= trial.change]
        fa += len(found) - len(after)
        fa_events += trial.change
        alerts += len(after)
        series_alerts = max(series_alerts, len(after))
        if len(after):
            first = int(after.min()) if first is None else min(first, int(after.min()))
    delay = None if first is None or trial.change is None else first - trial.change + 1
    incidents = None if lifecycles is None else incidents_of(trial, lifecycles)
    return Outcome(fa, fa_events, trial.change is not None, delay, alerts, incidents, series_alerts)


def quantile(delays: Sequence[float], q: float) -> float:
    """Linear-interpolated quantile where ``inf`` stands for a miss (and wins any interpolation).

    >>> quantile([1, 2, 3, math.inf], 0.5), quantile([1, 2, 3, math.inf], 0.9)
    (2.5, inf)
    """
    ordered = np.sort(np.asarray(delays, dtype=np.float64))
    position = q * (len(ordered) - 1)
    low, high = ordered[math.floor(position)], ordered[math.ceil(position)]
    if math.isinf(high):
        return math.inf
    return float(low + (high - low) * (position - math.floor(position)))


@dataclass(frozen=True)
class Summary:
    """One column on one row (all seeds)."""

    applicable: bool
    episodes: int
    detected: int
    median_delay: float | None  # inf: more than half missed; None: no episodes
    p90_delay: float | None
    fa: int
    fa_events: int
    dup_mean: float | None  # None: nothing detected
    max_alerts: int
    incidents_mean: float | None = None  # per detected episode; None: none, or no incidents
    max_incidents: int = 0
    max_series_alerts: int = 0  # the most alerts of one feature in one episode

    @property
    def rate(self) -> float | None:
        return self.detected / self.episodes if self.episodes else None

    @property
    def fa_per_million(self) -> float | None:
        return self.fa * 1e6 / self.fa_events if self.fa_events else None

    def to_json(self) -> dict:
        data = asdict(self)
        for key in ("median_delay", "p90_delay"):
            if data[key] is not None and math.isinf(data[key]):
                data[key] = None  # JSON has no infinity; "missed" tells why
        data["missed"] = self.episodes - self.detected
        data["rate"] = self.rate
        data["fa_per_million"] = self.fa_per_million
        return data


def summarise(outcomes: Sequence[Outcome | None]) -> Summary:
    """Outcomes of one column on one row's trials; ``None`` where the column does not apply."""
    if not outcomes or any(o is None for o in outcomes):
        return Summary(False, 0, 0, None, None, 0, 0, None, 0)
    done = [o for o in outcomes if o is not None]
    episodes = [o for o in done if o.episode]
    delays = [math.inf if o.delay is None else float(o.delay) for o in episodes]
    detected = [o for o in episodes if o.delay is not None]
    incidents = [o.incidents for o in detected if o.incidents is not None]
    return Summary(
        applicable=True,
        episodes=len(episodes),
        detected=len(detected),
        median_delay=quantile(delays, 0.5) if delays else None,
        p90_delay=quantile(delays, 0.9) if delays else None,
        fa=sum(o.fa for o in done),
        fa_events=sum(o.fa_events for o in done),
        dup_mean=float(np.mean([o.alerts - 1 for o in detected])) if detected else None,
        max_alerts=max((o.alerts for o in episodes), default=0),
        incidents_mean=float(np.mean(incidents)) if incidents else None,
        max_incidents=max(incidents, default=0),
        max_series_alerts=max((o.series_alerts for o in episodes), default=0),
    )


def verdict(row: Row, results: Mapping[str, Summary], ours: str = "streamdrift") -> list[str]:
    """Targets the ``ours`` column misses on this row (empty: all met).

    Detection: every change detected on rows with ``must_detect`` (drifts of 0.5 sigma or more).
    Delay: median no worse than the best median of the other applicable columns.
    False alarms: at most ``FA_TARGET`` per 10^6 values of one feature. Duplicates: at most one
    alert per episode of each feature, and one incident per episode (a change of several features
    alerts once per feature, in one incident).
    """
    mine = results[ours]
    if not mine.applicable:
        return [f"{ours} does not apply"]
    failures = []
    if mine.episodes:
        if row.must_detect and mine.detected < mine.episodes:
            failures.append(f"detected {mine.detected}/{mine.episodes} changes")
        peers = {
            name: s
            for name, s in results.items()
            if name != ours
            and s.applicable
            and s.median_delay is not None
            and math.isfinite(s.median_delay)
        }
        best = _fastest(peers)
        if best is not None and (mine.median_delay is None or mine.median_delay > best[1]):
            reason = (
                f"median delay {_delay(mine.median_delay)} > {best[0]}'s {best[1]:.0f} "
                f"(at {_fa_rate(peers[best[0]])} FA/10^6"
            )
            quiet = _fastest(
                {
                    name: s
                    for name, s in peers.items()
                    if s.fa_per_million is not None and s.fa_per_million <= FA_TARGET
                }
            )
            if quiet is None:
                reason += "; no peer meets the FA target here)"
            elif quiet[0] == best[0]:
                reason += ")"
            else:
                beaten = mine.median_delay is not None and mine.median_delay <= quiet[1]
                reason += (
                    f"; best peer within the FA target: {quiet[0]} {quiet[1]:.0f}"
                    f"{', matched' if beaten else ''})"
                )
            failures.append(reason)
        if mine.max_series_alerts > 1:
            failures.append(
                f"up to {mine.max_series_alerts} alerts of one feature per episode (mean "
                f"{mine.dup_mean:.2f} duplicates over all features)"
            )
        if mine.max_incidents > 1:
            failures.append(
                f"up to {mine.max_incidents} incidents per episode (mean {mine.incidents_mean:.2f})"
            )
    rate = mine.fa_per_million
    if rate is not None and rate > FA_TARGET:
        failures.append(
            f"{rate:.1f} false alarms per 10^6 values ({mine.fa} in {mine.fa_events:,})"
        )
    return failures


def _fastest(peers: Mapping[str, Summary]) -> tuple[str, float] | None:
    """The column with the smallest median delay, and that delay."""
    if not peers:
        return None
    name = min(peers, key=lambda n: peers[n].median_delay)  # type: ignore[arg-type,return-value]
    return name, float(peers[name].median_delay)  # type: ignore[arg-type]


def _fa_rate(summary: Summary) -> str:
    rate = summary.fa_per_million
    return "n/a" if rate is None else f"{rate:.1f}"


def _delay(value: float | None) -> str:
    if value is None or math.isinf(value):
        return "- (over half missed)"
    return f"{value:.0f}"
