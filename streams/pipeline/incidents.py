"""Model-level incidents: the per-feature drift alerts of one model that begin close together,
told once, as one story (CloudEvents ``io.streamdrift.incident.opened`` / ``.updated`` /
``.resolved`` on the alert topic, keyed by model).

Which incident an alert opens or joins is decided in Redis for the whole consumer group
(:mod:`streams.state.incidents`: one script call per model and batch, idempotent by alert id),
so the features of one model may be spread over partitions and workers. This module is the pure
part: what a member of an incident records (:func:`member_facts`), how the store's answer
becomes a CloudEvent (:func:`incident_event`) and its one-line summary. Everything here is built
from the store's answer alone, so a replay after a crash rebuilds the same bytes.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import msgspec

from streamdrift.detectors import ModelRouting, model_routing
from streamdrift.streams.pipeline.alerts import SPEC_VERSION
from streamdrift.streams.pipeline.outcome import Finding

INCIDENT_TYPE_PREFIX = "io.streamdrift.incident."
INCIDENT_OPENED = "io.streamdrift.incident.opened"
INCIDENT_UPDATED = "io.streamdrift.incident.updated"
INCIDENT_RESOLVED = "io.streamdrift.incident.resolved"
INCIDENT_TYPES = {
    "opened": INCIDENT_OPENED,
    "updated": INCIDENT_UPDATED,
    "resolved": INCIDENT_RESOLVED,
}
#: The CloudEvents extension attribute that carries an alert's incident id.
INCIDENT_ATTRIBUTE = "incident"
#: Features listed in an incident event (the rest are counted in ``feature_count``).
MAX_LISTED_FEATURES = 50
#: Values of a segment feature listed as carrying the shift (per feature, and per incident).
MAX_LISTED_CARRIERS = 5
#: Features named in the one-line summary.
SUMMARY_FEATURES = 3

_SEVERITY_RANK = {"high": 3, "medium": 2, "low": 1}


def incident_id(group_id: str, model: str, opener_alert: str) -> str:
    """The incident's id: a hash of what opened it (group, model, the opening alert's id), so
    whichever worker or replay opens it names it the same."""
    identity = "\x1f".join((group_id, model, opener_alert))
    return hashlib.sha256(identity.encode()).hexdigest()[:32]


def member_key(topic: str, partition: int, finding: Finding) -> str:
    """A member of an incident: one series of one input partition (a model's feature may be
    monitored on several partitions; each is a member and resolves on its own)."""
    version = finding.model_version or ""
    return "\x1f".join((topic, str(partition), version, finding.feature))


def member_facts(alert: dict[str, Any]) -> dict[str, Any]:
    """What an incident keeps of the alert that brought a member in: what moved, by how much,
    and where the evidence is (the alert's reference and current summaries included), and for
    a model with segment features, which of their values carry the shift."""
    data = alert["data"]
    facts = {
        "alert": alert["id"],
        "detected_at": alert["time"],
        "model_version": data["model_version"],
        "feature": data["feature"],
        "kind": data["kind"],
        "detector": data["detector"],
        "test": data["test"],
        "statistic": data["statistic"],
        "threshold": data["threshold"],
        "severity": data["severity"],
        "effect_size": data["effect_size"],
        "reference": data["reference"],
        "current": data["current"],
        "evidence": data["evidence"],
    }
    segments = (data.get("details") or {}).get("segments")
    if segments:
        facts["segments"] = [_carried(triage) for triage in segments]
    return facts


def _carried(triage: dict[str, Any]) -> dict[str, Any]:
    """A segment triage as an incident keeps it: the scope and the carriers' numbers."""
    carriers = set(triage["carriers"])
    return {
        "segment": triage["segment"],
        "scope": triage["scope"],
        "carriers": [row for row in triage["values"] if row["value"] in carriers][
            :MAX_LISTED_CARRIERS
        ],
    }


def segment_triage(features: Sequence[dict[str, Any]]) -> list[dict[str, Any]]:
    """Per segment feature, which of its values carry the incident's shift, over the features
    that moved (each with its own triage, see :mod:`detectors.segments`).

    ``verdict``: ``one_value`` (every feature with carriers names the same single value),
    ``all_values`` (every feature judged moved in all values), ``some_values``, ``mix`` (no value
    moved, but the values' shares did: the shift comes from the mix of segments), ``none`` or
    ``unjudged``. ``carriers``: per value, the features it carries and its largest effect.

    >>> f = lambda name, scope, *values: {"feature": name, "segments": [{"segment": "country",
    ...     "scope": scope, "carriers": [{"value": v, "effect": 2.0} for v in values]}]}
    >>> triage = segment_triage([f("amount", "one_value", "DE"), f("age", "one_value", "DE")])
    >>> triage[0]["verdict"], triage[0]["carriers"]
    ('one_value', [{'value': 'DE', 'features': ['age', 'amount'], 'largest_effect': 2.0}])
    """
    by_segment: dict[str, list[tuple[str, dict[str, Any]]]] = {}
    for facts in features:
        for triage in facts.get("segments") or ():
            by_segment.setdefault(triage["segment"], []).append((facts["feature"], triage))
    return [_one_segment(segment, told) for segment, told in sorted(by_segment.items())]


def _one_segment(segment: str, told: list[tuple[str, dict[str, Any]]]) -> dict[str, Any]:
    scopes = [triage["scope"] for _, triage in told]
    carriers: dict[str, dict[str, Any]] = {}
    for feature, triage in told:
        for row in triage["carriers"]:
            entry = carriers.setdefault(
                row["value"], {"value": row["value"], "features": [], "largest_effect": None}
            )
            entry["features"] = sorted({*entry["features"], feature})
            effect = row.get("effect")
            if effect is not None and (
                entry["largest_effect"] is None or abs(effect) > abs(entry["largest_effect"])
            ):
                entry["largest_effect"] = effect
    judged = [scope for scope in scopes if scope != "unjudged"]
    if not judged:
        verdict = "unjudged"
    elif not carriers:
        verdict = "mix" if "mix" in judged else "none"
    elif all(scope == "all_values" for scope in judged):
        verdict = "all_values"
    elif len(carriers) == 1 and all(s in ("one_value", "none", "mix") for s in judged):
        verdict = "one_value"
    else:
        verdict = "some_values"
    ranked = sorted(carriers.values(), key=lambda c: (-len(c["features"]), c["value"]))
    return {
        "segment": segment,
        "verdict": verdict,
        "features_judged": len(judged),
        "carriers": ranked[:MAX_LISTED_CARRIERS],
    }


def routing_attributes(routing: ModelRouting, severity: str) -> dict[str, str]:
    """The CloudEvents extension attributes that route an alert or incident: ``owner``,
    ``runbookurl`` and ``priority`` (the model's policy for ``severity``), those configured.

    >>> routing_attributes(ModelRouting("payments-ml", None, (("high", "page"),)), "high")
    {'owner': 'payments-ml', 'priority': 'page'}
    """
    attributes = {"owner": routing.owner, "runbookurl": routing.runbook_url}
    attributes["priority"] = routing.priority_of(severity)
    return {name: value for name, value in attributes.items() if value is not None}


def routed_models(config: dict[str, Any]) -> list[tuple[str, ModelRouting]]:
    """The configured models with an owner or a runbook (their ``streamdrift_model_info``)."""
    models = config.get("models") or {}
    routes = [(model, model_routing(config, model)) for model in models]
    return [(model, route) for model, route in routes if route.owner or route.runbook_url]


@dataclass(frozen=True, slots=True)
class Answer:
    """The store's decision for one alert (see :mod:`streams.state.incidents`).

    ``action``: ``opened``, ``updated`` or ``resolved`` (the alert publishes that incident
    event), ``joined`` (it joined without an event of its own: a later alert of the same batch
    tells the update) or ``none`` (no incident: a resolution of a member none holds). ``members``
    are the first ``k`` members' facts (in the order they joined), ``opened`` / ``latest`` /
    ``resolved`` the incident's times (epoch seconds).
    """

    incident: str
    action: str
    members: Sequence[dict[str, Any]]
    opened: float
    latest: float
    resolved: float | None
    active_versions: tuple[str, ...] = ()  # the model's versions in traffic during the incident
    labelled: bool = False  # whether the model's labels were joined during the incident

    @property
    def publishes(self) -> bool:
        return self.action in INCIDENT_TYPES


def _iso(seconds: float) -> str:
    return datetime.fromtimestamp(seconds, UTC).isoformat().replace("+00:00", "Z")


def ranked_features(members: Sequence[dict[str, Any]]) -> list[dict[str, Any]]:
    """One entry per (model version, feature), largest effect first: the member with the largest
    effect speaks for the feature, with every partition's evidence.

    >>> m = lambda f, e, p: {"model_version": None, "feature": f, "severity": "high",
    ...     "effect_size": e, "evidence": {"partition": p}}
    >>> [(f["feature"], f["effect_size"], len(f["evidence"]))
    ...  for f in ranked_features([m("a", 1.0, 0), m("b", 2.0, 0), m("a", 1.5, 1)])]
    [('b', 2.0, 1), ('a', 1.5, 2)]
    """
    best: dict[tuple[str | None, str], dict[str, Any]] = {}
    evidence: dict[tuple[str | None, str], list[dict[str, Any]]] = {}
    for facts in members:
        key = (facts["model_version"], facts["feature"])
        evidence.setdefault(key, []).append(facts["evidence"])
        if key not in best or _strength(facts) > _strength(best[key]):
            best[key] = facts
    # by name first, then (stable) by strength: equals stay in alphabetical order
    ranked = sorted(sorted(best, key=_name), key=lambda key: _strength(best[key]), reverse=True)
    return [{**best[key], "evidence": evidence[key]} for key in ranked]


def _strength(facts: dict[str, Any]) -> tuple[int, float]:
    effect = facts["effect_size"]
    return _SEVERITY_RANK.get(facts["severity"], 0), effect if effect == effect else 0.0


def _name(key: tuple[str | None, str]) -> tuple[str, str]:
    return key[0] or "", key[1]


def version_key(version: str) -> list[tuple[int, int | str]]:
    """Natural order of version names: ``v9`` before ``v10``, ``2.1`` before ``2.10``.

    >>> sorted(["v10", "v9", "v9.1"], key=version_key)
    ['v9', 'v9.1', 'v10']
    """
    parts = re.findall(r"\d+|\D+", version)
    return [(0, int(p)) if p.isdigit() else (1, p) for p in parts]


def version_triage(affected: Sequence[str], active: Sequence[str]) -> dict[str, Any]:
    """Does the shift show in every model version in traffic (an upstream data change), or only
    in some — only in the newest (natural order of names) is a rollback candidate?

    >>> version_triage(["v4"], ["v3", "v4"])["verdict"], version_triage(["v4"], ["v3", "v4"])[
    ...     "rollback_candidate"]
    ('some_versions', True)
    >>> version_triage(["v3", "v4"], ["v3", "v4"])["verdict"]
    'all_versions'
    """
    seen = sorted({*affected, *active}, key=version_key)
    if len(seen) < 2:
        verdict = "single_version"
    elif set(affected) >= set(seen):
        verdict = "all_versions"
    else:
        verdict = "some_versions"
    newest = seen[-1] if seen else None
    return {
        "affected": sorted(set(affected), key=version_key),
        "active": seen,
        "verdict": verdict,
        "newest": newest,
        "rollback_candidate": verdict == "some_versions" and set(affected) == {newest},
    }


def outcome_triage(features: Sequence[dict[str, Any]], labelled: bool) -> dict[str, Any]:
    """What the model's own output did: the error rate before and during (when labels flow and
    the error rate moved), whether labels flow at all, and whether the prediction moved."""
    errors = [f for f in features if f["kind"] == "performance"]
    rate = None
    if errors:
        worst = errors[0]  # ranked: the largest move first
        rate = {
            "reference": worst["reference"].get("error_rate"),
            "current": worst["current"].get("error_rate"),
        }
    return {
        "labels": labelled or bool(errors),
        "error_rate": rate,
        "prediction_shifted": any(f["kind"] == "prediction" for f in features),
    }


def summary_line(
    model: str,
    status: str,
    features: Sequence[dict[str, Any]],
    opened: float,
    versions: dict[str, Any] | None = None,
    outcome: dict[str, Any] | None = None,
    segments: Sequence[dict[str, Any]] = (),
) -> str:
    """A plain-language line for chat and pager channels.

    >>> f = {"model_version": "v3", "feature": "amount", "effect_size": 3.14, "kind": "feature"}
    >>> summary_line("fraud", "open", [f], 1767225600.0)
    'fraud: 1 feature shifted since 2026-01-01T00:00:00Z (v3); largest: amount 3.1'
    >>> summary_line("fraud", "open", [f], 1767225600.0, version_triage(["v3"], ["v2", "v3"]),
    ...              {"labels": True, "error_rate": None, "prediction_shifted": False})
    ... # doctest: +NORMALIZE_WHITESPACE
    'fraud: 1 feature shifted since 2026-01-01T00:00:00Z (v3); largest: amount 3.1; only in v3,
    the newest of v2, v3: rollback candidate; error rate unchanged'
    """
    count = len(features)
    affected = sorted({f["model_version"] for f in features if f["model_version"] is not None})
    where = f" ({', '.join(affected)})" if affected else ""
    largest = ", ".join(
        f"{f['feature']} {f['effect_size']:.1f}" for f in features[:SUMMARY_FEATURES]
    )
    noun = "feature" if count == 1 else "features"
    verb = "shifted since" if status == "open" else "shifted and returned; began"
    began = datetime.fromtimestamp(opened, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
    line = f"{model}: {count} {noun} {verb} {began}{where}; largest: {largest}"
    clauses = _version_clause(versions) + "".join(map(_segment_clause, segments))
    return line + clauses + _outcome_clause(outcome)


def _version_clause(versions: dict[str, Any] | None) -> str:
    if versions is None or versions["verdict"] == "single_version":
        return ""
    if versions["verdict"] == "all_versions":
        return "; in all versions: upstream data change likely"
    only = ", ".join(versions["affected"])
    active = ", ".join(versions["active"])
    if versions["rollback_candidate"]:
        return f"; only in {only}, the newest of {active}: rollback candidate"
    return f"; only in {only} of {active}"


def _segment_clause(segment: dict[str, Any]) -> str:
    name, values = segment["segment"], [c["value"] for c in segment["carriers"]]
    verdict = segment["verdict"]
    if verdict == "one_value":
        return f"; only in {name}={values[0]}"
    if verdict == "some_values":
        return f"; in {name}={', '.join(values)}"
    if verdict == "all_values":
        return f"; in every {name}"
    if verdict == "mix":
        return f"; from the mix of {name}"
    return ""


def _outcome_clause(outcome: dict[str, Any] | None) -> str:
    if outcome is None:
        return ""
    rate = outcome["error_rate"]
    if rate is not None and rate["reference"] is not None and rate["current"] is not None:
        return f"; error rate {rate['reference']:.3g} → {rate['current']:.3g}"
    if outcome["labels"]:
        return "; error rate unchanged"
    return "; no labels, prediction shifted" if outcome["prediction_shifted"] else "; no labels"


def incident_event(
    group_id: str, model: str, answer: Answer, routing: ModelRouting | None = None
) -> dict[str, Any]:
    """The CloudEvent an answer publishes; built from the answer and the model's routing alone
    (a replay yields the same bytes), its id a hash of the incident, the action and the members
    it lists. Its priority is the model's policy for the most severe feature listed."""
    routing = routing or ModelRouting()
    features = ranked_features(answer.members)
    worst = features[0]["severity"] if features else "low"
    status = "resolved" if answer.action == "resolved" else "open"
    identity = "\x1f".join((answer.incident, answer.action, str(len(answer.members))))
    time = answer.resolved if answer.action == "resolved" and answer.resolved else answer.latest
    versions = sorted({f["model_version"] for f in features if f["model_version"] is not None})
    triage: dict[str, Any] = {
        "versions": version_triage(versions, answer.active_versions),
        "outcome": outcome_triage(features, answer.labelled),
    }
    segments = segment_triage(features)
    if segments:  # only for models with segment features
        triage["segments"] = segments
    return {
        "specversion": SPEC_VERSION,
        "id": hashlib.sha256(identity.encode()).hexdigest()[:32],
        "source": f"streamdrift://{group_id}",
        "type": INCIDENT_TYPES[answer.action],
        "subject": model,
        "time": _iso(time),
        "datacontenttype": "application/json",
        INCIDENT_ATTRIBUTE: answer.incident,
        **routing_attributes(routing, worst),
        "data": {
            "incident": answer.incident,
            "model": model,
            "status": status,
            "opened_at": _iso(answer.opened),
            "latest_evidence_at": _iso(answer.latest),
            "resolved_at": None if answer.resolved is None else _iso(answer.resolved),
            "model_versions": versions,
            "feature_count": len(features),
            "features": features[:MAX_LISTED_FEATURES],
            "triage": triage,
            "routing": {
                "owner": routing.owner,
                "runbook_url": routing.runbook_url,
                "priority": routing.priority_of(worst),
            },
            "summary": summary_line(model, status, features, answer.opened, **triage),
        },
    }


_ENCODER = msgspec.json.Encoder()


def encode_event(event: dict[str, Any]) -> bytes:
    return _ENCODER.encode(event)


@dataclass(slots=True)
class _Member:
    key: str
    facts: str
    open: bool = True


@dataclass(slots=True)
class _Incident:
    opened: float
    latest: float
    members: list[_Member]
    resolved: float | None = None
    alerts: list[str] = field(default_factory=list)
    active: set[str] = field(default_factory=set)
    labelled: bool = False


@dataclass(frozen=True, slots=True)
class Decision:
    """One alert for the incident rules: what it is, when (record time), which member, its
    facts (JSON, :func:`member_facts`) and the id a new incident would get (:func:`incident_id`),
    with what its partition tells about the model."""

    alert: str
    event: str  # "detected" | "resolved"
    time: float
    member: str
    facts: str
    candidate: str
    versions: Sequence[str] = ()  # the model's versions in the partition's recent traffic
    labelled: bool = False  # whether the model's labels are joined on the worker


class IncidentLedger:
    """The incident rules of :mod:`streams.state.incidents`' script, in Python and in memory:
    one model's incidents, the same answers for the same calls. The script is what workers run
    (the group's state must live in Redis); this is its executable specification — the tests
    compare the two on random histories — and what the quality benchmark counts incidents with.

    >>> ledger = IncidentLedger(window=10.0)
    >>> def d(alert, time, member): return Decision(alert, "detected", time, member, "{}", alert)
    >>> [a.action for a in ledger.decide([d("a1", 0.0, "x"), d("a2", 1.0, "y")])]
    ['opened', 'joined']
    >>> [a.action for a in ledger.decide([d("a3", 50.0, "z")])]  # beyond the window
    ['opened']
    """

    def __init__(self, window: float, max_members: int = 100, max_incidents: int = 10) -> None:
        self.window = window
        self.max_members = max_members
        self.max_incidents = max_incidents
        self.incidents: dict[str, _Incident] = {}
        self.order: list[str] = []
        self.open: str | None = None
        self.member_of: dict[str, str] = {}
        self.answers: dict[str, dict[str, Any]] = {}

    def decide(self, items: Sequence[Decision]) -> list[Answer]:
        """The answer for each alert, in order, as the script gives it."""
        answers: list[dict[str, Any]] = []
        fresh: list[bool] = []
        for item in items:
            stored = self.answers.get(item.alert)
            if stored is not None:
                answers.append(dict(stored))
                fresh.append(False)
            else:
                decide = self._detected if item.event == "detected" else self._resolved
                answers.append(decide(item))
                fresh.append(True)
        self._one_event_per_incident(answers, fresh)
        return [
            self._answer(item, answer, new)
            for item, answer, new in zip(items, answers, fresh, strict=True)
        ]

    def _detected(self, item: Decision) -> dict[str, Any]:
        incident = self.incidents.get(self.open) if self.open is not None else None
        if (
            incident is not None
            and incident.resolved is None
            and incident.opened - self.window <= item.time <= incident.latest + self.window
        ):
            assert self.open is not None
            ident = self.open
            member = next((m for m in incident.members if m.key == item.member), None)
            if member is not None:
                member.open, action = True, "joined"
            elif len(incident.members) < self.max_members:
                incident.members.append(_Member(item.member, item.facts))
                action = "updated"
            else:
                action = "joined"
            incident.latest = max(incident.latest, item.time)
        else:
            ident, incident = self._open_new(item)
            action = "opened"
        incident.alerts.append(item.alert)
        self._observe(incident, item)
        self.member_of[item.member] = ident
        return {"incident": ident, "action": action}

    def _resolved(self, item: Decision) -> dict[str, Any]:
        ident = self.member_of.get(item.member)
        incident = self.incidents.get(ident) if ident is not None else None
        member = None
        if incident is not None:
            member = next((m for m in incident.members if m.key == item.member), None)
        if incident is None or member is None or incident.resolved is not None:
            return {"incident": ident or "", "action": "none"}
        member.open = False
        incident.alerts.append(item.alert)
        self._observe(incident, item)
        if any(m.open for m in incident.members):
            return {"incident": ident, "action": "joined"}
        incident.resolved = item.time
        if self.open == ident:
            self.open = None
        return {"incident": ident, "action": "resolved"}

    def _open_new(self, item: Decision) -> tuple[str, _Incident]:
        incident = _Incident(item.time, item.time, [_Member(item.member, item.facts)])
        self.incidents[item.candidate] = incident
        self.open = item.candidate
        self.order.append(item.candidate)
        while len(self.order) > self.max_incidents:
            self._forget(self.order.pop(0))
        return item.candidate, incident

    def _forget(self, ident: str) -> None:
        incident = self.incidents.pop(ident, None)
        if incident is not None:
            for alert in incident.alerts:
                self.answers.pop(alert, None)
            for member in incident.members:
                if self.member_of.get(member.key) == ident:
                    del self.member_of[member.key]
        if self.open == ident:
            self.open = None

    @staticmethod
    def _observe(incident: _Incident, item: Decision) -> None:
        incident.active.update(item.versions)
        incident.labelled = incident.labelled or item.labelled

    @staticmethod
    def _one_event_per_incident(answers: list[dict[str, Any]], fresh: list[bool]) -> None:
        opened = {
            a["incident"]
            for a, new in zip(answers, fresh, strict=True)
            if new and a["action"] == "opened"
        }
        last_update: dict[str, int] = {}
        for n, (answer, new) in enumerate(zip(answers, fresh, strict=True)):
            if not new or answer["action"] != "updated":
                continue
            if answer["incident"] in opened:
                answer["action"] = "joined"
                continue
            before = last_update.get(answer["incident"])
            if before is not None:
                answers[before]["action"] = "joined"
            last_update[answer["incident"]] = n

    def _answer(self, item: Decision, answer: dict[str, Any], new: bool) -> Answer:
        incident = self.incidents.get(answer["incident"])
        if new:
            if incident is not None:
                answer["k"] = len(incident.members)
                answer["opened"], answer["latest"] = incident.opened, incident.latest
                resolved = incident.resolved if answer["action"] == "resolved" else None
                answer["resolved"] = resolved
                answer["active"] = sorted(incident.active)
                answer["labelled"] = incident.labelled
            else:
                answer["k"] = 0
            self.answers[item.alert] = dict(answer)
        members: list[dict[str, Any]] = []
        if incident is not None and answer["k"] > 0 and answer["action"] in INCIDENT_TYPES:
            limit = min(answer["k"], len(incident.members))
            members = [msgspec.json.decode(m.facts) for m in incident.members[:limit]]
        return Answer(
            incident=answer["incident"],
            action=answer["action"],
            members=members,
            opened=float(answer.get("opened") or 0.0),
            latest=float(answer.get("latest") or 0.0),
            resolved=answer.get("resolved"),
            active_versions=tuple(answer.get("active") or ()),
            labelled=bool(answer.get("labelled")),
        )
