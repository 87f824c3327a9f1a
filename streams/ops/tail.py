"""Alerts from the alert topic, as ``streamdrift alerts``, ``streamdrift report`` and the demo
show them: decoded, skipped when they are not JSON objects, formatted for a terminal. The topic
itself is read by :mod:`streams.kafka.reader` (only ``streams.kafka`` imports a Kafka client)."""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from typing import Any

import msgspec

from streamdrift.streams.kafka.reader import TopicFollower, read_to_end
from streamdrift.streams.pipeline.incidents import INCIDENT_TYPE_PREFIX
from streamdrift.streams.security import printable


def tail_alerts(
    client_config: dict[str, Any],
    topic: str,
    from_beginning: bool = True,
    follow: bool = True,
    max_alerts: int | None = None,
    idle_timeout: float = 5.0,
    until: Callable[[], bool] | None = None,
    on_unreadable: Callable[[str], None] | None = None,
) -> Iterator[dict[str, Any]]:
    """Yield alerts as dicts; without ``follow``, stop after ``idle_timeout`` seconds of silence.

    ``until`` is polled twice a second; the tail ends when it returns True. A message that is not
    a JSON object is skipped (anyone may write to the topic), told to ``on_unreadable``.

    ``client_config`` holds ``bootstrap.servers`` and any security properties. The topic is read
    without joining a consumer group (:class:`streams.kafka.reader.TopicFollower`: a join can take
    longer than the idle timeout); silence counts only once the topic's partitions are assigned
    (a topic that does not exist yet has none). Commits nothing, so tailing never disturbs anyone.
    """
    seen, idle = 0, 0.0
    with TopicFollower(client_config, topic, from_beginning) as follower:
        while (max_alerts is None or seen < max_alerts) and not (until and until()):
            fetched = follower.poll(0.5)
            if fetched is None:
                idle += 0.5 if follower.assigned else 0.0
                if not follow and idle >= idle_timeout:
                    return
                continue
            idle = 0.0
            alert = _decode(fetched.value)
            if alert is None:
                if on_unreadable:
                    on_unreadable(f"{topic}[{fetched.partition}]@{fetched.offset}")
                continue
            seen += 1
            yield alert


def read_alerts(
    client_config: dict[str, Any], topic: str, timeout: float = 60.0
) -> list[dict[str, Any]]:
    """Every alert the topic holds now (``streamdrift report``), each partition in order.

    The topic is read up to its end without joining a consumer group
    (:func:`streams.kafka.reader.read_to_end`): the read stops when the topic is exhausted
    instead of after a guessed silence. ``TimeoutError`` if that takes longer than ``timeout``
    seconds; an absent topic has no alerts; a message that is not an alert is left out (nothing
    to report about it).
    """
    alerts = (_decode(value) for value in read_to_end(client_config, topic, timeout))
    return [alert for alert in alerts if alert is not None]


def _decode(value: bytes | None) -> dict[str, Any] | None:
    """The message as a JSON object, or None if it is not one."""
    try:
        alert = msgspec.json.decode(value or b"")
    except msgspec.DecodeError:
        return None
    return alert if isinstance(alert, dict) else None


#: Printed once above the alert lines: how to read their ``evidence predictions[2] 500..15059``.
EVIDENCE_LEGEND = (
    "[dim]evidence: topic\\[partition] first..last offset of the input records the detection "
    "summarises (the last one completed it)[/dim]"
)


def format_alert(alert: Any) -> str:
    """One alert as one line of Rich markup; every field from the message printed literally.

    Anything on the alert topic can be read here, so a message without an alert's shape is shown
    as unreadable rather than ending the tail.
    """
    try:
        return _alert_line(alert)
    except (KeyError, TypeError, AttributeError, ValueError, IndexError):
        text = printable(json.dumps(alert, default=str)[:300])
        return f"[yellow]not an alert:[/yellow] {text}"


def _alert_line(alert: dict[str, Any]) -> str:
    if str(alert.get("type", "")).startswith(INCIDENT_TYPE_PREFIX):
        return _incident_line(alert)
    p = printable
    d = alert["data"]
    what = "error rate" if d["kind"] == "performance" else "mean"
    key = "error_rate" if d["kind"] == "performance" else "mean"
    if d["reference"].get(key) is not None:
        change = (
            f"reference {what} {number_text(d['reference'].get(key))} → current "
            f"{number_text(d['current'].get(key))}"
        )
    else:  # categorical or multivariate: the window test's own numbers say it
        change = f"{p(d['test'])} test p={number_text(d['p_value'])}"
    e = d["evidence"]
    return (
        f"[bold red]DRIFT[/bold red] {p(alert['time'])} [bold]{p(alert['subject'])}[/bold] "
        f"({p(d['kind'])}, {p(d['detector'])}, severity {p(d['severity'])}) effect "
        f"{float(d['effect_size']):.2f}, {change}; evidence "
        f"{p(e['topic'])}\\[{p(e['partition'])}] {p(e['from_offset'])}..{p(e['to_offset'])}  "
        f"[dim]id {p(alert['id'])}{_incident_tag(alert)}[/dim]"
    )


def _incident_tag(alert: dict[str, Any]) -> str:
    incident = alert.get("incident")
    return f", incident {printable(incident)}" if incident is not None else ""


def _incident_line(event: dict[str, Any]) -> str:
    """An incident event: what happened to it and its one-line summary."""
    p = printable
    action = str(event["type"]).removeprefix(INCIDENT_TYPE_PREFIX)
    return (  # the summary begins with the model's name
        f"[bold magenta]INCIDENT {p(action)}[/bold magenta] {p(event['time'])} "
        f"{p(event['data']['summary'])}  [dim]incident {p(event['data']['incident'])}[/dim]"
    )


def number_text(value: Any) -> str:
    """A number in 4 significant digits; "-" for anything else."""
    return f"{value:.4g}" if isinstance(value, (int, float)) else "-"
