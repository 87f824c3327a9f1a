"""The README is part of the contract: its examples must be true."""

from __future__ import annotations

import json
import re
from pathlib import Path

import yaml

from detectors import resolve, validate_config
from streams.codec import Limits, decode_events
from streams.settings import Settings

ROOT = Path(__file__).resolve().parents[1]
README = (ROOT / "README.md").read_text()


def blocks(language: str) -> list[str]:
    return re.findall(rf"```{language}\n(.*?)```", README, flags=re.S)


def test_the_detector_config_example_is_valid_and_shows_the_real_defaults():
    (example,) = blocks("yaml")
    config = yaml.safe_load(example)
    validate_config(config)
    assert resolve(config, "fraud", "amount").page_hinkley.threshold == 80.0
    shown = resolve({"defaults": config["defaults"]}, "any", "feature")
    assert shown == resolve({}, "any", "feature"), "the README's 'calibrated defaults' differ from the code"


def test_the_input_example_decodes_into_one_valid_event():
    example = next(b for b in blocks("json") if '"features"' in b)
    events, rejections = decode_events(example.encode(), 0.0, Limits())
    assert rejections == [] and events[0].model == "fraud"


def test_the_alert_example_is_a_cloudevent_with_the_documented_fields():
    alert = json.loads(next(b for b in blocks("json") if '"specversion"' in b))
    assert alert["type"] == "io.streamdrift.drift.detected"
    assert {"model", "feature", "detector", "statistic", "threshold", "severity", "events_seen", "evidence"} <= set(alert["data"])


def test_every_setting_is_in_the_configuration_table_and_nothing_else():
    documented = set(re.findall(r"^\| `(STREAMDRIFT_[A-Z_0-9]+)` \|", README, flags=re.M))
    actual = {f"STREAMDRIFT_{name.upper()}" for name in Settings.model_fields}
    assert documented == actual


def test_quick_start_has_the_two_commands_and_ci_runs_the_test_one():
    commands = re.findall(r"```\n(make [a-z]+)\n```", README)
    assert commands[:2] == ["make demo", "make test"]
    assert "make test" in (ROOT / ".ci" / "run").read_text()


OWN_KAFKA = (ROOT / "docs" / "own-kafka.md").read_text()


def test_the_own_kafka_page_names_only_real_settings_with_valid_example_values():
    named = set(re.findall(r"STREAMDRIFT_[A-Z_0-9]+", OWN_KAFKA))
    actual = {f"STREAMDRIFT_{name.upper()}" for name in Settings.model_fields}
    read_by_load = {"STREAMDRIFT_SECRETS_DIR"}  # Settings.load's secrets folder, not a setting itself
    assert all(f'"{name}"' in (ROOT / "streams" / "settings.py").read_text() for name in read_by_load)
    assert named - read_by_load <= actual, f"not settings: {sorted(named - read_by_load - actual)}"
    assert {"STREAMDRIFT_KAFKA_BOOTSTRAP", "STREAMDRIFT_REDIS_URL", "STREAMDRIFT_GROUP_ID", "STREAMDRIFT_INPUT_TOPIC",
            "STREAMDRIFT_KAFKA_SECURITY_PROTOCOL", "STREAMDRIFT_KAFKA_SASL_USERNAME"} <= named
    # The exported example values are valid (the certificate files do not exist here).
    exports = dict(re.findall(r"^export STREAMDRIFT_([A-Z_0-9]+)=(\S+)", OWN_KAFKA, flags=re.M))
    values = {name.lower(): value.strip("'") for name, value in exports.items() if not name.endswith("FILE")}
    settings = Settings(**values)
    assert settings.kafka_bootstrap == "broker1:9092,broker2:9092"


def test_quick_start_links_the_own_kafka_page_and_alerts_explain_the_evidence_notation():
    quick_start = README.split("## Quick start", 1)[1].split("\n## ", 1)[0]
    assert "(docs/own-kafka.md)" in quick_start
    alert_topic = README.split("### Alert topic", 1)[1].split("\n### ", 1)[0]
    assert "topic[partition] first..last" in alert_topic
