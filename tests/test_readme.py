"""The README and the pages of docs/ are part of the contract: their examples, tables and links
must be true."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
import yaml

from streamdrift.detectors import resolve, validate_config
from streamdrift.detectors.config import DEFAULT_DETECTORS
from streamdrift.streams.metrics import Metrics
from streamdrift.streams.pipeline.codec import Limits, Reason, decode_events
from streamdrift.streams.settings import Settings

ROOT = Path(__file__).resolve().parents[1]
DOCS = ROOT / "docs"
README = (ROOT / "README.md").read_text()
CONFIGURATION = (DOCS / "configuration.md").read_text()
CONTRACTS = (DOCS / "contracts.md").read_text()
OPERATIONS = (DOCS / "operations.md").read_text()


def blocks(language: str, text: str = README) -> list[str]:
    return re.findall(rf"```{language}\n(.*?)```", text, flags=re.S)


def section(text: str, heading: str) -> str:
    """The text under ``heading`` (a whole heading line) up to the next heading of its level."""
    level = heading.split(" ", 1)[0]
    return text.split(f"\n{heading}\n", 1)[1].split(f"\n{level} ", 1)[0]


def test_the_detector_config_example_is_valid_and_shows_the_real_defaults():
    (example,) = blocks("yaml", CONFIGURATION)
    config = yaml.safe_load(example)
    validate_config(config)
    assert resolve(config, "fraud", "amount").page_hinkley.threshold == 80.0
    shown = resolve({"defaults": config["defaults"]}, "any", "feature")
    assert shown == resolve({}, "any", "feature"), (
        "docs/configuration.md's 'calibrated defaults' differ from the code"
    )


def test_the_readme_names_the_default_detectors_and_not_page_hinkley_as_one():
    intro = README.split("## Quick start", 1)[0]
    # if this changes, so must the README's intro
    assert DEFAULT_DETECTORS == (
        "adwin",
        "cusum",
        "window",
    )
    assert "ADWIN" in intro and "CUSUM" in intro and "window" in intro
    assert "ADWIN, Page-Hinkley" not in intro and "ADWIN + Page-Hinkley" not in README


@pytest.mark.parametrize("page", ["README.md", "docs/contracts.md", "docs/architecture.md"])
def test_every_input_example_decodes_into_one_valid_event(page):
    text = (ROOT / page).read_text()
    examples = [
        b
        for b in blocks("json", text) + blocks("", text)
        # an input event: not a decoded one (numeric) nor an event of the alert topic
        if '"features"' in b
        and '"model"' in b
        and '"numeric"' not in b
        and '"io.streamdrift.' not in b
    ]
    assert examples, f"{page} shows no input event"
    for example in examples:
        events, rejections = decode_events(example.encode(), 0.0, Limits())
        assert rejections == [] and len(events) == 1 and events[0].model == "fraud", example


@pytest.mark.parametrize("page", ["README.md", "docs/contracts.md"])
def test_the_alert_example_is_a_cloudevent_with_the_documented_fields(page):
    alert = json.loads(
        next(b for b in blocks("json", (ROOT / page).read_text()) if '"specversion"' in b)
    )
    assert alert["type"] == "io.streamdrift.drift.detected"
    assert {
        "model",
        "feature",
        "detector",
        "statistic",
        "threshold",
        "severity",
        "events_seen",
        "evidence",
    } <= set(alert["data"])


def test_every_setting_is_in_the_configuration_table_and_nothing_else():
    documented = set(re.findall(r"^\| `(STREAMDRIFT_[A-Z_0-9]+)` \|", CONFIGURATION, flags=re.M))
    actual = {f"STREAMDRIFT_{name.upper()}" for name in Settings.model_fields}
    assert documented == actual


def test_the_configuration_table_shows_the_real_defaults():
    table = dict(
        re.findall(r"^\| `STREAMDRIFT_([A-Z_0-9]+)` \| `([^`]*)` \|", CONFIGURATION, flags=re.M)
    )
    assert len(table) > 40
    for name, shown in table.items():
        default = Settings.model_fields[name.lower()].default
        value = default.get_secret_value() if hasattr(default, "get_secret_value") else default
        if isinstance(value, bool):
            assert shown == str(value).lower(), name
        elif isinstance(value, float | int):
            assert float(shown) == float(value), name
        else:
            assert shown == str(value), name


def test_every_metric_is_in_the_metrics_table_and_nothing_else():
    from prometheus_client import CollectorRegistry

    from streamdrift.streams.state.history import HistoryRecorder

    metrics = Metrics()
    HistoryRecorder(None, "g", 10.0, metrics.registry)  # type: ignore[arg-type]  # registers its counter
    actual = {
        family.name + ("_total" if family.type == "counter" else "")
        for family in metrics.registry.collect()
    }
    assert isinstance(metrics.registry, CollectorRegistry) and "streamdrift_events_total" in actual
    table = section(OPERATIONS, "## Metrics")
    documented = set(re.findall(r"^\| `(streamdrift_[a-z_]+)` \|", table, flags=re.M))
    assert documented == actual, (
        f"undocumented: {sorted(actual - documented)}, not metrics: {sorted(documented - actual)}"
    )


def test_every_dead_letter_reason_is_listed_in_the_contract():
    dead_letters = section(CONTRACTS, "## Dead-letter topic (`predictions.dlq`)")
    listed = set(
        re.findall(r"`([a-z_]+)`", dead_letters.split("Reasons", 1)[1].split("An event with", 1)[0])
    )
    # the metric and its label, named in the same sentence
    listed -= {
        "reason",
        "streamdrift_dead_letters_total",
    }
    assert listed == {reason.value for reason in Reason}


def test_quick_start_has_the_two_commands_and_ci_runs_the_test_one():
    commands = re.findall(r"```\n(make [a-z]+)\n```", README)
    assert commands[:2] == ["make demo", "make test"]
    ci = [
        line.strip()
        for line in (ROOT / ".ci" / "run").read_text().splitlines()
        if line.strip() and not line.lstrip().startswith(("#", "set ", "cd "))
    ]
    assert ci == ["make test"], "CI must run exactly the README's test command"


def test_the_readme_stays_a_front_page():
    assert len(README.encode()) <= 15_500, "README.md is over ~15 KB: move the detail into docs/"
    for page in (
        "architecture",
        "contracts",
        "configuration",
        "operations",
        "state-and-exactly-once",
        "performance",
        "detection-quality",
        "own-kafka",
    ):
        assert f"(docs/{page}.md)" in README, f"the README does not link docs/{page}.md"


LINK = re.compile(r"(?<!!)\[[^\]]*\]\(([^)\s]+)\)|!\[[^\]]*\]\(([^)\s]+)\)")


def _anchors(text: str) -> set[str]:
    """GitHub's heading anchors: lower case, punctuation dropped, spaces to hyphens."""
    anchors = set()
    for heading in re.findall(r"^#{1,6} (.+)$", text, flags=re.M):
        anchors.add(re.sub(r"[^\w\- ]", "", heading.strip().lower()).replace(" ", "-"))
    return anchors


def _pages() -> list[Path]:
    return [ROOT / "README.md", ROOT / "CONTRIBUTING.md", *sorted(DOCS.glob("*.md"))]


@pytest.mark.parametrize("page", _pages(), ids=lambda p: str(p.relative_to(ROOT)))
def test_every_relative_link_points_at_an_existing_file_and_heading(page):
    text = re.sub(r"```.*?```", "", page.read_text(), flags=re.S)
    broken = []
    for match in LINK.finditer(text):
        target = match.group(1) or match.group(2)
        if re.match(r"[a-z]+:", target):
            continue  # http(s), mailto
        path, _, anchor = target.partition("#")
        resolved = (page.parent / path).resolve() if path else page
        if not resolved.exists() or (
            anchor and resolved.suffix == ".md" and anchor not in _anchors(resolved.read_text())
        ):
            broken.append(target)
    assert broken == [], f"{page.name}: broken links {broken}"


OWN_KAFKA = (DOCS / "own-kafka.md").read_text()


def test_the_own_kafka_page_names_only_real_settings_with_valid_example_values():
    named = set(re.findall(r"STREAMDRIFT_[A-Z_0-9]+", OWN_KAFKA))
    actual = {f"STREAMDRIFT_{name.upper()}" for name in Settings.model_fields}
    # Settings.load's secrets folder, not a setting itself
    read_by_load = {"STREAMDRIFT_SECRETS_DIR"}
    assert all(
        f'"{name}"' in (ROOT / "streams" / "settings.py").read_text() for name in read_by_load
    )
    assert named - read_by_load <= actual, f"not settings: {sorted(named - read_by_load - actual)}"
    assert {
        "STREAMDRIFT_KAFKA_BOOTSTRAP",
        "STREAMDRIFT_REDIS_URL",
        "STREAMDRIFT_GROUP_ID",
        "STREAMDRIFT_INPUT_TOPIC",
        "STREAMDRIFT_KAFKA_SECURITY_PROTOCOL",
        "STREAMDRIFT_KAFKA_SASL_USERNAME",
    } <= named
    # The exported example values are valid (the certificate files do not exist here).
    exports = dict(re.findall(r"^export STREAMDRIFT_([A-Z_0-9]+)=(\S+)", OWN_KAFKA, flags=re.M))
    values = {
        name.lower(): value.strip("'")
        for name, value in exports.items()
        if not name.endswith("FILE")
    }
    settings = Settings(**values)
    assert settings.kafka_bootstrap == "broker1:9092,broker2:9092"


@pytest.mark.parametrize("page", sorted(p.name for p in DOCS.glob("*.md")))
def test_the_docs_name_only_real_settings(page):
    # not STREAMDRIFT_KAFKA_*
    named = set(
        re.findall(r"STREAMDRIFT_[A-Z_0-9]*[A-Z0-9](?![A-Z_0-9]*\*)", (DOCS / page).read_text())
    )
    actual = {f"STREAMDRIFT_{name.upper()}" for name in Settings.model_fields} | {
        "STREAMDRIFT_SECRETS_DIR"
    }
    assert named <= actual, f"not settings: {sorted(named - actual)}"


def test_quick_start_links_the_own_kafka_page_and_alerts_explain_the_evidence_notation():
    quick_start = section(README, "## Quick start")
    assert "(docs/own-kafka.md)" in quick_start
    alert_topic = section(CONTRACTS, "## Alert topic (`drift-alerts`)")
    assert "topic[partition] first..last" in alert_topic


def test_the_architecture_page_names_code_that_exists():
    """docs/architecture.md follows an event through the code by name: every class, method,
    private function and constant it names in backticks is defined in streams/ or detectors/."""
    source = "\n".join(
        p.read_text()
        for folder in ("streams", "detectors", "client/src")
        for p in sorted((ROOT / folder).rglob("*.py"))
    )
    text = re.sub(r"```.*?```", "", (DOCS / "architecture.md").read_text(), flags=re.S)

    def defined(name: str) -> bool:
        if name.isupper():  # a constant, or a reply of the Lua scripts (FENCED, LOST)
            return re.search(rf"\b{name}\b", source) is not None
        return (
            re.search(
                rf"^\s*(?:async def|def|class) {name}\b|^\s*{name}\s*[:=]|self\.{name}\b",
                source,
                flags=re.M,
            )
            is not None
        )

    names = set(
        re.findall(r"`((?:[A-Z][A-Za-z]+|_[A-Za-z_]+|[A-Z][A-Z_]+)(?:\.[A-Za-z_]+)?)`", text)
    )
    # settings: checked above
    names = {name for name in names if not name.startswith("STREAMDRIFT_")}
    assert len(names) > 40
    missing = [name for name in sorted(names) if not all(defined(part) for part in name.split("."))]
    assert missing == [], f"docs/architecture.md names code that does not exist: {missing}"
