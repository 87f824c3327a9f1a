"""The ``multivariate`` sections of the detector configuration: the PCA monitor's parameters,
per model over the top-level section."""

import copy
import dataclasses
import re
from pathlib import Path

import pytest
import yaml

from streamdrift.detectors import (
    MonitorParams,
    MultivariateParams,
    multivariate_params,
    resolve,
    validate_config,
)

MULTIVARIATE = {
    "multivariate": {"events": 1_000, "variance": 0.8, "clip_sigma": float("inf")},  # YAML: .inf
    "models": {"fraud": {"multivariate": {"events": 2_000, "cooldown_events": 0}}, "churn": None},
}


def test_multivariate_params_layer_per_model_over_the_top_level_section():
    config = copy.deepcopy(MULTIVARIATE)
    fraud = multivariate_params(config, "fraud")
    assert fraud == MultivariateParams(
        events=2_000, variance=0.8, clip_sigma=float("inf"), cooldown_events=0
    )
    assert multivariate_params(config, "churn") == MultivariateParams(
        events=1_000, variance=0.8, clip_sigma=float("inf")
    )
    assert multivariate_params({}, "fraud") == MultivariateParams()
    base = MultivariateParams(reference_events=100, events=20)
    assert multivariate_params({}, "fraud", base=base) is base
    assert multivariate_params(config, "churn", base=base) == MultivariateParams(
        reference_events=100, events=1_000, variance=0.8, clip_sigma=float("inf")
    )
    assert multivariate_params({"multivariate": {"reference_events": 7}}, "m").reference_events == 7
    validate_config(config)
    # The univariate parameters do not see the section.
    assert resolve(config, "fraud", "amount") == MonitorParams()


@pytest.mark.parametrize(
    ("config", "message"),
    [
        (
            {"multivariate": {"window": 500}},
            "at multivariate: unknown key 'window'; valid keys are: reference_events",
        ),
        (
            {"models": {"m": {"multivariate": {"event": 5}}}},
            "at models.m.multivariate: unknown key 'event'",
        ),
        ({"multivariate": {"events": "500"}}, "at multivariate.events: expected an integer"),
        ({"multivariate": {"events": True}}, "at multivariate.events: expected an integer"),
        (
            {"models": {"m": {"multivariate": {"variance": 1.5}}}},
            r"at models.m.multivariate: variance must be in \(0, 1\)",
        ),
        (
            {"multivariate": {"events": 500, "target_false_alarm_interval": 100}},
            r"target_false_alarm_interval must be >= events \(500\)",
        ),
        ({"multivariate": [1, 2]}, "at multivariate: expected a mapping"),
    ],
)
def test_multivariate_errors_name_the_section_and_are_found_at_start_up(config, message):
    with pytest.raises(ValueError, match=message):
        validate_config(config)
    with pytest.raises(ValueError, match=message):
        multivariate_params(config, "m")


def test_the_multivariate_section_is_not_a_monitor_default():
    with pytest.raises(ValueError, match="at defaults: unknown key 'multivariate'"):
        validate_config({"defaults": {"multivariate": {"events": 5}}})


def test_the_configuration_page_documents_the_multivariate_section_with_the_real_defaults():
    """docs/configuration.md's last section: its example is a valid config, and its top-level
    section shows every parameter with the code's default."""
    page = (Path(__file__).parents[2] / "docs" / "configuration.md").read_text()
    section = page.split("\n## Multivariate (PCA) monitor\n", 1)[1]
    (example,) = re.findall(r"```\n(.*?)```", section, flags=re.S)
    config = yaml.safe_load(example)
    validate_config(config)
    shown = config["multivariate"]
    assert list(shown) == [f.name for f in dataclasses.fields(MultivariateParams)]
    assert MultivariateParams.from_mapping(shown) == MultivariateParams()
    assert multivariate_params(config, "fraud").events == 1_000
