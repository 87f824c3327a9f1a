"""Message contracts: the JSON Schemas, the simulator's output against them, and its drift.

No broker needed: the simulator's pure generator is checked directly.
"""

from __future__ import annotations

import copy
import json
import re
from datetime import datetime
from pathlib import Path

import jsonschema
import msgspec
import numpy as np
import pytest
from jsonschema import Draft202012Validator, FormatChecker

from streamdrift.streams.dev.simulate import Drift, Scenario, generate

SCHEMAS = Path(__file__).resolve().parent.parent / "streams" / "schemas"

README_EVENT = {
    "model": "fraud",
    "model_version": "3",
    "event_id": "e-123",
    "timestamp": 1763719200.25,
    "features": {"amount": 12.5, "country": "DE", "age": None},
    "prediction": 0.91,
}
README_LABEL = {"model": "fraud", "event_id": "e-123", "label": 1}

_RFC3339 = re.compile(r"^\d{4}-\d{2}-\d{2}[Tt ]\d{2}:\d{2}:\d{2}(\.\d+)?([Zz]|[+-]\d{2}:\d{2})$")
FORMATS = FormatChecker(formats=())


@FORMATS.checks("date-time")
def _is_rfc3339(value: object) -> bool:
    """RFC 3339 date-time with a UTC offset (jsonschema only checks it with optional extras)."""
    if not isinstance(value, str):
        return True
    return bool(_RFC3339.match(value)) and _parses(value)


def _parses(value: str) -> bool:
    try:
        datetime.fromisoformat(value.replace("z", "Z"))
    except ValueError:
        return False
    return True


def _validator(name: str) -> Draft202012Validator:
    schema = json.loads((SCHEMAS / name).read_text())
    Draft202012Validator.check_schema(schema)
    return Draft202012Validator(schema, format_checker=FORMATS)


EVENT = _validator("prediction-event.schema.json")
LABEL = _validator("label-event.schema.json")
ALERT = _validator("drift-alert.schema.json")
INCIDENT = _validator("incident.schema.json")


def _errors(validator: Draft202012Validator, instance: object) -> list[str]:
    return [error.message for error in validator.iter_errors(instance)]


def _decode_all(scenario: Scenario, max_events: int) -> tuple[list[dict], dict[str, dict]]:
    """Every event (in order) and every label (by event_id) the scenario yields."""
    events: list[dict] = []
    labels: dict[str, dict] = {}
    for message in generate(scenario, max_events):
        value = msgspec.json.decode(message.value)
        events.extend(value if isinstance(value, list) else [value])
        for raw in message.labels:
            label = msgspec.json.decode(raw)
            labels[label["event_id"]] = label
    return events, labels


def _index(event: dict) -> int:
    return int(event["event_id"].rsplit("-", 1)[1])


# --- the schemas themselves ----------------------------------------------------------------


@pytest.mark.parametrize("name", ["prediction-event", "label-event", "drift-alert", "incident"])
def test_schema_is_documented_draft_2020_12(name: str) -> None:
    schema = json.loads((SCHEMAS / f"{name}.schema.json").read_text())
    assert schema["$schema"] == "https://json-schema.org/draft/2020-12/schema"
    assert schema["$id"] and schema["title"] and schema["description"]
    validator = _validator(f"{name}.schema.json")
    assert schema["examples"]
    for example in schema["examples"]:
        assert not _errors(validator, example), example


def test_prediction_schema_documents_array_messages() -> None:
    description = json.loads((SCHEMAS / "prediction-event.schema.json").read_text())["description"]
    assert "array" in description


def test_readme_examples_validate() -> None:
    assert not _errors(EVENT, README_EVENT)
    assert not _errors(LABEL, README_LABEL)
    # a message may be a JSON array of events: each element is one event
    message = json.loads(json.dumps([README_EVENT, {"model": "churn", "features": {}}]))
    assert all(not _errors(EVENT, element) for element in message)


@pytest.mark.parametrize(
    "change",
    [
        {"timestamp": "2025-11-21T10:00:00Z"},
        {"timestamp": "2025-11-21T10:00:00.250+01:00"},
        {"timestamp": 0},
        {"prediction": "fraud"},
        {"features": {"flag": True, "n": -3, "s": "", "m": None}},
        {"extra": {"anything": [1, 2]}},
    ],
)
def test_valid_event_variants(change: dict) -> None:
    assert not _errors(EVENT, {**README_EVENT, **change})


def _without(key: str) -> dict:
    event = copy.deepcopy(README_EVENT)
    del event[key]
    return event


@pytest.mark.parametrize(
    "event",
    [
        pytest.param({**README_EVENT, "model": 7}, id="model-not-a-string"),
        pytest.param({**README_EVENT, "model": ""}, id="model-empty"),
        pytest.param({**README_EVENT, "model": "m" * 129}, id="model-too-long"),
        pytest.param(
            {**README_EVENT, "features": {"amount": {"value": 1}}}, id="feature-value-object"
        ),
        pytest.param({**README_EVENT, "features": {"amount": [1]}}, id="feature-value-array"),
        pytest.param({**README_EVENT, "features": {"f" * 129: 1}}, id="feature-name-too-long"),
        pytest.param({**README_EVENT, "features": [1, 2]}, id="features-not-an-object"),
        pytest.param(_without("features"), id="missing-features"),
        pytest.param(_without("model"), id="missing-model"),
        pytest.param({**README_EVENT, "model_version": 3}, id="model-version-number"),
        pytest.param({**README_EVENT, "event_id": 123}, id="event-id-number"),
        pytest.param({**README_EVENT, "timestamp": -1}, id="timestamp-negative"),
        pytest.param({**README_EVENT, "timestamp": "yesterday"}, id="timestamp-not-rfc3339"),
        pytest.param(
            {**README_EVENT, "timestamp": "2025-11-21T10:00:00"}, id="timestamp-without-offset"
        ),
        pytest.param({**README_EVENT, "prediction": True}, id="prediction-boolean"),
        pytest.param({**README_EVENT, "prediction": None}, id="prediction-null"),
        pytest.param([README_EVENT], id="array-is-not-one-event"),
    ],
)
def test_invalid_events_fail(event: object) -> None:
    assert _errors(EVENT, event)
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validate(event, EVENT.schema, cls=Draft202012Validator, format_checker=FORMATS)


@pytest.mark.parametrize(
    "label",
    [
        pytest.param({"model": "fraud", "label": 1}, id="missing-event-id"),
        pytest.param({"model": "fraud", "event_id": "e-1"}, id="missing-label"),
        pytest.param({"model": "fraud", "event_id": "", "label": 1}, id="empty-event-id"),
        pytest.param({"model": "fraud", "event_id": "e-1", "label": None}, id="label-null"),
        pytest.param({"model": "fraud", "event_id": "e-1", "label": [1]}, id="label-array"),
        pytest.param({"model": 1, "event_id": "e-1", "label": 1}, id="model-number"),
    ],
)
def test_invalid_labels_fail(label: dict) -> None:
    assert _errors(LABEL, label)


def test_alert_schema_rejects_contract_violations() -> None:
    example = json.loads((SCHEMAS / "drift-alert.schema.json").read_text())["examples"][0]
    assert not _errors(ALERT, example)
    assert not _errors(ALERT, {**example, "data": {**example["data"], "model_version": None}})
    broken = [
        {**example, "specversion": "0.3"},
        {**example, "type": "io.streamdrift.other"},
        {**example, "id": "NOT-HEX"},
        {**example, "time": "21/11/2025"},
        {**example, "subject": "fraud"},
        {**example, "datacontenttype": "text/plain"},
        {**example, "Bad_Attribute": 1},
        {**example, "data": {**example["data"], "kind": "concept"}},
        {**example, "data": {**example["data"], "detector": "ks"}},
        {**example, "data": {**example["data"], "severity": "critical"}},
        {**example, "data": {**example["data"], "events_seen": 1.5}},
        {
            **example,
            "data": {**example["data"], "evidence": {"topic": "predictions", "partition": 0}},
        },
        {**example, "data": {k: v for k, v in example["data"].items() if k != "effect_size"}},
    ]
    for alert in broken:
        assert _errors(ALERT, alert), alert


# --- the simulator's output against the schemas ----------------------------------------------


@pytest.mark.parametrize("batch_size", [1, 7])
def test_generated_messages_validate(batch_size: int) -> None:
    scenario = Scenario(batch_size=batch_size, drift_at=1_000)
    count = 0
    for message in generate(scenario, 2_000):
        value = msgspec.json.decode(message.value)
        if batch_size == 1:
            assert isinstance(value, dict)
            events = [value]
        else:
            assert isinstance(value, list) and 1 <= len(value) <= batch_size
            events = value
        assert len(events) == message.events
        assert {event["model"] for event in events} == {message.key.decode()}
        for event in events:
            assert not _errors(EVENT, event), event
        for raw in message.labels:
            label = msgspec.json.decode(raw)
            assert not _errors(LABEL, label), label
            assert label["model"] == message.key.decode()
        count += message.events
    assert count == 2_000


def test_generated_messages_are_accepted_by_the_codec() -> None:
    """The worker's decoder takes every simulated event and label without a rejection."""
    from streamdrift.streams.pipeline.codec import Limits, decode_events, decode_labels

    for message in generate(Scenario(batch_size=3), 600):
        events, rejected = decode_events(message.value, 0.0, Limits())
        assert len(events) == message.events and not rejected
        for raw in message.labels:
            labels, rejected = decode_labels(raw, 0.0, Limits())
            assert len(labels) == 1 and not rejected


def test_events_carry_every_model_and_feature_type() -> None:
    scenario = Scenario()
    events, labels = _decode_all(scenario, 3_000)
    assert {e["model"] for e in events} == {m.name for m in scenario.models}
    fraud = scenario.model("fraud")
    assert len(fraud.numeric) == 8 and len(fraud.categorical) == 2
    values = [v for e in events for v in e["features"].values()]
    assert {type(v) for v in values} == {float, str, bool, type(None)}
    assert len({e["event_id"] for e in events}) == len(events)
    # labels exactly for the classification models' events
    classification = {m.name for m in scenario.models if m.task == "classification"}
    assert set(labels) == {e["event_id"] for e in events if e["model"] in classification}
    for event in events:
        if event["model"] in classification:
            assert 0.0 <= event["prediction"] <= 1.0
            assert labels[event["event_id"]]["timestamp"] == pytest.approx(
                event["timestamp"] + scenario.label_delay_s
            )


def test_timestamps_follow_the_rate() -> None:
    scenario = Scenario(rate=250.0)
    events, _ = _decode_all(scenario, 500)
    offsets = np.array([e["timestamp"] - scenario.start_time for e in events])
    expected = np.array([_index(e) / 250.0 for e in events])
    np.testing.assert_allclose(offsets, expected, atol=1e-3)


# --- determinism ----------------------------------------------------------------------------


def test_generation_is_deterministic_per_seed() -> None:
    first = list(generate(Scenario(seed=7, batch_size=3), 1_500))
    again = list(generate(Scenario(seed=7, batch_size=3), 1_500))
    other = list(generate(Scenario(seed=8, batch_size=3), 1_500))
    assert first == again
    assert [m.value for m in first] != [m.value for m in other]
    # a shorter run is a prefix of a longer one
    prefix = list(generate(Scenario(seed=7, batch_size=3), 301))
    assert [m.value for m in prefix[:-1]] == [m.value for m in first[: len(prefix) - 1]]
    assert prefix[-1].events == 1
    assert msgspec.json.decode(prefix[-1].value)[0] == msgspec.json.decode(first[100].value)[0]


# --- drift ----------------------------------------------------------------------------------

DRIFT_AT = 12_000
TOTAL = 24_000


@pytest.fixture(scope="module")
def drifted() -> tuple[Scenario, list[dict], dict[str, dict]]:
    scenario = Scenario(drift_at=DRIFT_AT, seed=11)
    events, labels = _decode_all(scenario, TOTAL)
    return scenario, events, labels


def _split(events: list[dict], model: str, at: int) -> tuple[list[dict], list[dict]]:
    mine = [e for e in events if e["model"] == model]
    return [e for e in mine if _index(e) < at], [e for e in mine if _index(e) >= at]


def _column(events: list[dict], feature: str) -> np.ndarray:
    return np.array(
        [e["features"][feature] for e in events if e["features"][feature] is not None], float
    )


def test_configured_features_shift_after_drift_at(drifted) -> None:
    scenario, events, _ = drifted
    drift = scenario.drift
    before, after = _split(events, drift.model, DRIFT_AT)
    assert len(before) > 3_000 and len(after) > 3_000
    for feature in scenario.model(drift.model).numeric:
        x0, x1 = _column(before, feature.name), _column(after, feature.name)
        shift = (x1.mean() - x0.mean()) / feature.std
        if feature.name in drift.shifted:
            assert shift == pytest.approx(drift.shift_sigmas, abs=0.15), feature.name
            assert x1.std() == pytest.approx(x0.std(), rel=0.1), feature.name
        else:
            assert abs(shift) < 0.15, feature.name
    # the other models do not drift
    for model in scenario.models:
        if model.name == drift.model:
            continue
        b, a = _split(events, model.name, DRIFT_AT)
        for feature in model.numeric:
            assert (
                abs(_column(a, feature.name).mean() - _column(b, feature.name).mean()) / feature.std
                < 0.15
            )


def test_categorical_frequencies_change_after_drift_at(drifted) -> None:
    scenario, events, _ = drifted
    drift = scenario.drift
    feature = next(
        f for f in scenario.model(drift.model).categorical if f.name == drift.categorical
    )
    before, after = _split(events, drift.model, DRIFT_AT)
    for window, weights in ((before, feature.weights), (after, drift.categorical_weights)):
        observed = [e["features"][feature.name] for e in window]
        frequencies = np.array([observed.count(c) for c in feature.categories]) / len(observed)
        np.testing.assert_allclose(frequencies, np.array(weights) / sum(weights), atol=0.03)


def test_labels_follow_the_configured_error_rates(drifted) -> None:
    scenario, events, labels = drifted
    drift = scenario.drift
    for model in scenario.models:
        if model.task != "classification":
            continue
        before, after = _split(events, model.name, DRIFT_AT)
        rates = []
        for window in (before, after):
            predicted = np.array([e["prediction"] >= 0.5 for e in window], dtype=int)
            truth = np.array([labels[e["event_id"]]["label"] for e in window])
            assert set(truth.tolist()) <= {0, 1}
            rates.append(float(np.mean(predicted != truth)))
        expected_after = drift.error_rate if model.name == drift.error_model else model.error_rate
        assert rates[0] == pytest.approx(model.error_rate, abs=0.025), model.name
        assert rates[1] == pytest.approx(expected_after, abs=0.025), model.name
    assert drift.error_rate > scenario.model(drift.error_model).error_rate


def test_drift_point_in_seconds() -> None:
    scenario = Scenario(rate=200.0, drift_at=10.0, drift_unit="seconds", seed=3)
    assert scenario.drift_index == 2_000
    events, _ = _decode_all(scenario, 4_000)
    before, after = _split(events, "fraud", scenario.drift_index)
    assert all(e["timestamp"] < scenario.start_time + 10.0 for e in before)
    assert all(e["timestamp"] >= scenario.start_time + 10.0 for e in after)
    shift = (_column(after, "amount").mean() - _column(before, "amount").mean()) / 30.0
    assert shift > 1.0


def test_no_drift_scenario_is_stationary() -> None:
    events, _ = _decode_all(Scenario(drift=None, seed=5), 8_000)
    before, after = _split(events, "fraud", 4_000)
    assert abs(_column(after, "amount").mean() - _column(before, "amount").mean()) / 30.0 < 0.15


@pytest.mark.parametrize(
    "kwargs",
    [
        {"batch_size": 0},
        {"rate": 0},
        {"drift": Drift(shifted=("no_such_feature",))},
        {"drift": Drift(model="no_such_model")},
        {"drift": Drift(categorical="amount")},
        {"drift": Drift(categorical_weights=(1.0, 2.0))},
        {"drift": Drift(error_model="pricing")},
    ],
)
def test_inconsistent_scenarios_are_refused(kwargs: dict) -> None:
    with pytest.raises(ValueError):
        Scenario(**kwargs)
