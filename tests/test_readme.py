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
