"""Segment triage in the pipeline: a model with ``segments`` gets, on each detection of a
numeric input or of the prediction, which values of its segment features carry the shift —
the same whatever the batches, through a checkpoint, in the alert's ``details.segments`` and
the incident's member facts; profiles go with their versions and models; a model without
segments is untouched; hostile segment values stay bounded."""

from __future__ import annotations

import asyncio
import dataclasses
import json
from pathlib import Path
from typing import Any

import numpy as np
from jsonschema import Draft202012Validator, FormatChecker
from prometheus_client import CollectorRegistry
from rich.console import Console

from streamdrift.streams.ops.incidents import incident_detail
from streamdrift.streams.ops.report_incidents import incidents_section
from streamdrift.streams.pipeline.alerts import build_alert, encode_alert
from streamdrift.streams.pipeline.codec import Limits
from streamdrift.streams.pipeline.incidents import (
    Answer,
    incident_event,
    member_facts,
    segment_triage,
)
from streamdrift.streams.pipeline.outcome import Finding, Record
from streamdrift.streams.pipeline.processor import AdmissionLimits, PredictionProcessor
from streamdrift.streams.runtime import Publisher, Runtime
from streamdrift.streams.settings import Settings
from streamdrift.streams.state.partition import Claim, PartitionState

ALERT_SCHEMA = Draft202012Validator(
    json.loads((Path(__file__).parents[1] / "streams/schemas/drift-alert.schema.json").read_text()),
    format_checker=FormatChecker(),
)
INCIDENT_SCHEMA = Draft202012Validator(
    json.loads((Path(__file__).parents[1] / "streams/schemas/incident.schema.json").read_text()),
    format_checker=FormatChecker(),
)
CONFIG = {"models": {"m": {"segments": ["country", "channel"]}}}
COUNTRIES = ["DE", "FR", "US", "IT"]


def bodies(
    rng: np.random.Generator, n: int, shifted: str | None = None, version: str | None = None
) -> list[dict[str, Any]]:
    """Events of model m; from the start, ``shifted`` (a country) moves amount and prediction
    by 3 sigma."""
    out = []
    for _ in range(n):
        country = str(rng.choice(COUNTRIES))
        shift = 3.0 if country == shifted else 0.0
        out.append(
            {
                "model": "m",
                **({"model_version": version} if version else {}),
                "features": {
                    "country": country,
                    "channel": str(rng.choice(["web", "app"])),
                    "amount": float(rng.normal() + shift),
                    "age": float(rng.normal(40.0, 5.0)),
                },
                "prediction": float(rng.normal() + shift),
            }
        )
    return out


def records(events: list[dict[str, Any]], first: int = 0) -> list[Record]:
    return [
        Record(first + i, 1000.0 + first + i, json.dumps(b).encode()) for i, b in enumerate(events)
    ]


def processor(config: dict[str, Any] | None = None) -> PredictionProcessor:
    return PredictionProcessor(
        config=CONFIG if config is None else config, limits=Limits(), admission=AdmissionLimits()
    )


def run(
    recs: list[Record], size: int, state: PartitionState | None = None
) -> tuple[PartitionState, list[Finding]]:
    state = state or PartitionState("in", 0, 1, None)
    worker = processor()
    findings: list[Finding] = []
    for start in range(0, len(recs), size):
        findings += worker.process(state, recs[start : start + size]).findings
    return state, findings


def rounded(findings: list[Finding]) -> list[dict[str, Any]]:
    """The findings with their numbers to 12 significant digits (the moments of the monitors
    and of the profiles add up in another order in other batches)."""

    def round_all(value: Any) -> Any:
        if isinstance(value, float):
            return float(f"{value:.12g}")
        if isinstance(value, list):
            return [round_all(v) for v in value]
        if isinstance(value, dict):
            return {k: round_all(v) for k, v in value.items()}
        return value

    return [round_all(dataclasses.asdict(f)) for f in findings]


def shifted_stream(seed: int = 3) -> list[Record]:
    rng = np.random.default_rng(seed)
    return records(bodies(rng, 3_000) + bodies(rng, 1_500, shifted="DE"))


def test_a_shift_in_one_country_names_it_on_each_detection_whatever_the_batches() -> None:
    recs = shifted_stream()
    _, findings = run(recs, 500)
    detected = [f for f in findings if f.detection.event == "detected"]
    moved = {f.feature for f in detected}
    assert {"amount", "prediction"} <= moved
    for finding in detected:
        if finding.feature not in ("amount", "prediction"):
            continue
        assert finding.segments is not None
        by_segment = {t["segment"]: t for t in finding.segments}
        assert set(by_segment) == {"country", "channel"}
        assert by_segment["country"]["carriers"] == ["DE"]
        assert by_segment["country"]["scope"] == "one_value"
        # DE's traffic is in both channels: neither channel alone carries it
        assert by_segment["channel"]["carriers"] in ([], ["app", "web"], ["web", "app"])
    # the same records in other batches: the same detections and facts (the moments merged
    # in another order: equal to 12 significant digits)
    for size in (137, 1_000):
        assert rounded(run(recs, size)[1]) == rounded(findings)


def test_the_triage_goes_into_the_alert_and_the_incident_facts() -> None:
    _, findings = run(shifted_stream(), 500)
    finding = next(f for f in findings if f.feature == "amount" and f.segments)
    alert = build_alert("g", "in", 0, finding)
    assert alert["data"]["details"]["segments"] == finding.segments
    ALERT_SCHEMA.validate(json.loads(encode_alert(alert)))
    facts = member_facts(alert)
    country = next(s for s in facts["segments"] if s["segment"] == "country")
    assert [c["value"] for c in country["carriers"]] == ["DE"]
    triage = segment_triage([facts])
    assert [t["segment"] for t in triage] == ["channel", "country"]
    assert triage[0]["verdict"] in ("none", "all_values")
    assert triage[1]["verdict"] == "one_value"
    assert triage[1]["carriers"] == [
        {"value": "DE", "features": ["amount"], "largest_effect": country["carriers"][0]["effect"]}
    ]


def test_a_model_without_segments_keeps_its_alerts_and_state_as_they_were() -> None:
    rng = np.random.default_rng(3)
    recs = records(bodies(rng, 3_000) + bodies(rng, 1_500, shifted="DE"))
    state = PartitionState("in", 0, 1, None)
    worker = processor({})
    findings = [
        f
        for s in range(0, len(recs), 500)
        for f in worker.process(state, recs[s : s + 500]).findings
    ]
    assert findings and all(f.segments is None for f in findings)
    assert all("segments" not in build_alert("g", "in", 0, f)["data"]["details"] for f in findings)
    assert not state.segments
    assert not [name for name in state.checkpoint_fields() if name.startswith("\x00segments")]


def test_profiles_survive_a_checkpoint_and_go_with_their_version() -> None:
    recs = shifted_stream()
    whole, expected = run(recs, 500)
    # checkpoint half-way, restore into a new state, go on
    first, findings = run(recs[:2_000], 500)
    fields = {name.encode(): blob for name, blob in first.checkpoint_fields().items() if blob}
    restored = PartitionState.from_claim("in", 0, Claim(2, 2_000, fields))
    assert set(restored.segments) == {("m", None, "country"), ("m", None, "channel")}
    assert not restored.corrupt
    _, later = run(recs[2_000:], 500, restored)
    assert rounded(findings + later) == rounded(expected)
    assert {k: p.to_bytes() for k, p in restored.segments.items()} == {
        k: p.to_bytes() for k, p in whole.segments.items()
    }
    # a third version retires the first (max_versions_per_model=2): its profiles go
    rng = np.random.default_rng(1)
    worker = PredictionProcessor(
        config=CONFIG, limits=Limits(), admission=AdmissionLimits(max_versions_per_model=2)
    )
    state = PartitionState("in", 0, 1, None)
    for i, version in enumerate(("1", "2", "3")):
        worker.process(state, records(bodies(rng, 50, version=version), first=100 * i))
    assert {key[1] for key in state.segments} == {"2", "3"}
    fields = state.checkpoint_fields()
    assert fields['\x00segments:["m","1","country"]'] == b""  # deleted from the store


def test_a_corrupt_profile_field_is_reported_and_started_afresh() -> None:
    fields = {b'\x00segments:["m",null,"country"]': b"\x93garbage", b"\x00segments:nonsense": b""}
    state = PartitionState.from_claim("in", 0, Claim(2, 0, fields))
    assert len(state.corrupt) == 2 and not state.segments
    assert state.checkpoint_fields()['\x00segments:["m",null,"country"]'] == b""


def test_hostile_segment_values_stay_bounded_and_a_numeric_segment_is_not_triaged() -> None:
    rng = np.random.default_rng(9)
    events = bodies(rng, 3_000)
    for i, event in enumerate(events):
        event["features"]["country"] = f"forged-{i}"  # a new value per event
        event["features"]["channel"] = 7  # numeric: not a segment feature's kind
    config = {"models": {"m": {"segments": ["country", "channel"]}}}
    worker = PredictionProcessor(config=config, limits=Limits(), admission=AdmissionLimits())
    state = PartitionState("in", 0, 1, None)
    for start in range(0, 3_000, 500):
        worker.process(state, records(events[start : start + 500], first=start))
    assert set(state.segments) == {("m", None, "country")}
    profile = state.segments[("m", None, "country")]
    assert len(profile.values) == profile.params.max_values + 1


def test_the_runtime_exposes_bias_indicators_and_drops_them_with_the_partition() -> None:
    async def scenario() -> None:
        runtime = Runtime(
            Settings(redis_url="redis://127.0.0.1:1/0", multivariate=False, incidents=False),
            CONFIG,
            Publisher(),
        )
        state = PartitionState("in", 0, 1, None)
        runtime.states = {("in", 0): state}
        recs = shifted_stream()
        for start in range(0, len(recs), 500):
            outcome = runtime.predictions.process(state, recs[start : start + 500])
            await runtime._publish(state, outcome, 2_000.0)
        registry: CollectorRegistry = runtime.metrics.registry

        def shift(name: str, value: str, segment: str = "country") -> float | None:
            labels = {"model": "m", "segment": segment, "value": value}
            return registry.get_sample_value(name, labels)

        de = shift("streamdrift_segment_shift", "DE")
        fr = shift("streamdrift_segment_shift", "FR")
        assert de is not None and fr is not None and de > 2.0 > 0.5 > fr
        de_prediction = shift("streamdrift_segment_prediction_shift", "DE")
        assert de_prediction is not None and de_prediction > 2.0
        runtime._drop(("in", 0))
        assert shift("streamdrift_segment_shift", "DE") is None
        await runtime.redis.aclose()

    asyncio.run(scenario())


def test_people_read_the_segment_triage_in_the_incident_the_cli_and_the_report() -> None:
    _, findings = run(shifted_stream(), 500)
    members = [
        member_facts(build_alert("g", "in", 0, f))
        for f in findings
        if f.segments and f.detection.event == "detected"
    ]
    answer = Answer("abc123", "opened", members, 4_000.0, 4_100.0, None)
    event = incident_event("g", "m", answer)
    INCIDENT_SCHEMA.validate(event)
    data = event["data"]
    country = next(s for s in data["triage"]["segments"] if s["segment"] == "country")
    assert country["verdict"] == "one_value" and country["carriers"][0]["value"] == "DE"
    assert "only in country=DE" in data["summary"]
    console = Console(record=True, width=200)
    for part in incident_detail(event):
        console.print(part)
    assert "country one_value: DE carries" in console.export_text()
    html = incidents_section([event])
    assert "<b>segment</b> country one_value: DE carries" in html
    # forged: a segment triage of the wrong shape is shown as far as it reads, never raises
    forged = json.loads(json.dumps(event))
    forged["data"]["triage"]["segments"] = [{"segment": "<script>", "carriers": [7, {"value": []}]}]
    assert "&lt;script&gt;" in incidents_section([forged])
    for part in incident_detail(forged):
        console.print(part)
