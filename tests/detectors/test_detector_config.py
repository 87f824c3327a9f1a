import copy
import dataclasses
import typing

import pytest

from streamdrift.detectors import (
    MonitorParams,
    allowed_features,
    ignored_features,
    is_ignored,
    model_task,
    resolve,
    validate_config,
)
from streamdrift.detectors.config import DEFAULT_DETECTORS, DETECTOR_NAMES, _FromMapping
from streamdrift.detectors.monitor import _DETECTORS

CONFIG = {
    "defaults": {"warmup_events": 300, "page_hinkley": {"threshold": 60, "delta": 0.3}},
    "models": {
        "fraud": {
            "task": "classification",
            "ignore_features": ["user_id"],
            "defaults": {"cooldown_events": 100, "page_hinkley": {"threshold": 70}},
            "features": {
                "amount": {"page_hinkley": {"threshold": 80}, "detectors": ["page_hinkley"]},
            },
        },
        "churn": None,
    },
}


def test_layers_apply_in_order_key_by_key():
    amount = resolve(CONFIG, "fraud", "amount")
    assert amount.page_hinkley.threshold == 80.0  # feature beats model beats defaults
    assert amount.page_hinkley.delta == 0.3  # nested keys not overridden are inherited
    assert amount.cooldown_events == 100 and amount.warmup_events == 300
    assert amount.detectors == ("page_hinkley",)
    age = resolve(CONFIG, "fraud", "age")
    assert age.page_hinkley.threshold == 70.0 and age.detectors == DEFAULT_DETECTORS
    other = resolve(CONFIG, "churn", "x")
    assert other.page_hinkley.threshold == 60.0 and other.cooldown_events == 5000
    assert resolve(None, "m", "f") == MonitorParams()
    validate_config(CONFIG)


def test_ints_become_floats_where_floats_are_meant():
    params = resolve({"defaults": {"page_hinkley": {"threshold": 80}}}, "m", "f")
    assert isinstance(params.page_hinkley.threshold, float)


def test_ignore_features_and_task():
    assert is_ignored(CONFIG, "fraud", "user_id")
    assert not is_ignored(CONFIG, "fraud", "amount")
    assert not is_ignored(CONFIG, "unknown_model", "user_id")
    assert model_task(CONFIG, "fraud") == "classification"
    assert model_task(CONFIG, "churn") == "auto"


ERRORS = [
    (
        {"default": {}},
        "invalid config at top level: unknown key 'default'; valid keys are: defaults, models",
    ),
    (
        {"defaults": {"warmup": 5}},
        "invalid config at defaults: unknown key 'warmup'; valid keys are: warmup_events, ",
    ),
    (
        {"defaults": {"adwin": {"delat": 0.1}}},
        "invalid config at defaults.adwin: unknown key 'delat'; valid keys are: delta, clock",
    ),
    (
        {"defaults": {"warmup_events": "500"}},
        "invalid config at defaults.warmup_events: expected an integer, got '500'",
    ),
    (
        {"defaults": {"warmup_events": 5.0}},
        "invalid config at defaults.warmup_events: expected an integer, got 5.0",
    ),
    (
        {"defaults": {"cooldown_events": True}},
        "invalid config at defaults.cooldown_events: expected an integer, got True",
    ),
    (
        {"defaults": {"page_hinkley": {"threshold": True}}},
        "invalid config at defaults.page_hinkley.threshold: expected a number, got True",
    ),
    (
        {"defaults": {"page_hinkley": {"threshold": -5}}},
        "invalid config at defaults.page_hinkley: threshold must be > 0, got -5.0",
    ),
    (
        {"defaults": {"adwin": {"delta": 2}}},
        "invalid config at defaults.adwin: delta must be in (0, 1), got 2.0",
    ),
    (
        {"defaults": {"detectors": ["adwin", "kswin"]}},
        "invalid config at defaults: detectors must be distinct names among adwin, page_hinkley, "
        "cusum, window, got ['adwin', 'kswin']",
    ),
    (
        {"defaults": {"detectors": "adwin"}},
        "invalid config at defaults.detectors: expected a list of strings, got 'adwin'",
    ),
    ({"defaults": {"adwin": 0.1}}, "invalid config at defaults.adwin: expected a mapping, got 0.1"),
    (
        {"models": {"fraud": {"feature": {}}}},
        "invalid config at models.fraud: unknown key 'feature'; "
        "valid keys are: task, ignore_features, allow_features, defaults, features",
    ),
    (
        {"models": {"fraud": {"task": "ranking"}}},
        "invalid config at models.fraud.task: "
        "expected one of auto, classification, regression, got 'ranking'",
    ),
    (
        {"models": {"fraud": {"ignore_features": "user_id"}}},
        "invalid config at models.fraud.ignore_features: "
        "expected a list of feature names, got 'user_id'",
    ),
    (
        {"models": {"fraud": {"allow_features": ["amount", 3]}}},
        "invalid config at models.fraud.allow_features: "
        "expected a list of feature names, got ['amount', 3]",
    ),
    (
        {"models": {"fraud": {"features": {"amount": {"ewma_alpha": 0}}}}},
        "invalid config at models.fraud.features.amount: ewma_alpha must be in (0, 1], got 0.0",
    ),
    ({"models": ["fraud"]}, "invalid config at models: expected a mapping, got ['fraud']"),
]


@pytest.mark.parametrize(("config", "message"), ERRORS)
def test_errors_name_the_key_and_what_is_expected(config, message):
    with pytest.raises(ValueError) as error:
        validate_config(config)
    assert str(error.value).startswith(message)


def test_resolve_reports_errors_of_the_sections_it_reads():
    config = {"models": {"fraud": {"features": {"amount": {"kll_k": 4}}}}}
    message = r"models\.fraud\.features\.amount: kll_k must be in \[8, 65535\]"
    with pytest.raises(ValueError, match=message):
        resolve(config, "fraud", "amount")
    assert resolve(config, "fraud", "age") == MonitorParams()


def test_params_validate_when_built_in_code_too():
    with pytest.raises(ValueError, match="warmup_events must be >= 2"):
        MonitorParams(warmup_events=1)
    with pytest.raises(ValueError, match="alpha must be in"):
        MonitorParams.from_mapping({"page_hinkley": {"alpha": float("nan")}})


def test_detector_names_match_the_implementations():
    assert set(DETECTOR_NAMES) == {*_DETECTORS, "window"}  # window: the window tests
    sections = {f for f in MonitorParams.__dataclass_fields__ if f in DETECTOR_NAMES}
    assert set(DETECTOR_NAMES) == sections


def _uncached_from_mapping(cls, mapping, base=None):
    """What ``from_mapping`` did before its caches: type hints evaluated on every call, a
    replace even without keys (the reference for the cached ``resolve``)."""
    base = cls() if base is None else base
    hints = typing.get_type_hints(cls)
    changes = {}
    for key, value in (mapping or {}).items():
        hint = hints[key]
        if isinstance(hint, type) and issubclass(hint, _FromMapping):
            changes[key] = _uncached_from_mapping(hint, value, getattr(base, key))
        elif hint is float:
            changes[key] = float(value)
        elif typing.get_origin(hint) is tuple:
            changes[key] = tuple(value)
        else:
            changes[key] = value
    return dataclasses.replace(base, **changes)


def _uncached_resolve(config, model, feature):
    config = config or {}
    section = (config.get("models") or {}).get(model) or {}
    params = _uncached_from_mapping(MonitorParams, config.get("defaults"))
    params = _uncached_from_mapping(MonitorParams, section.get("defaults"), params)
    return _uncached_from_mapping(
        MonitorParams, (section.get("features") or {}).get(feature), params
    )


@pytest.mark.parametrize("model", ["fraud", "churn", "unknown"])
@pytest.mark.parametrize("feature", ["amount", "age", "user_id", "x" * 200])
def test_cached_resolve_equals_resolving_from_scratch(model, feature):
    assert resolve(CONFIG, model, feature) == _uncached_resolve(CONFIG, model, feature)
    assert resolve(copy.deepcopy(CONFIG), model, feature) == _uncached_resolve(
        CONFIG, model, feature
    )


def test_resolve_sees_a_config_edited_in_place():
    config = copy.deepcopy(CONFIG)
    assert resolve(config, "fraud", "age").cooldown_events == 100
    config["models"]["fraud"]["defaults"]["cooldown_events"] = 7
    config["defaults"]["page_hinkley"]["delta"] = 0.4
    age = resolve(config, "fraud", "age")
    assert age.cooldown_events == 7 and age.page_hinkley.delta == 0.4
    assert age == _uncached_resolve(config, "fraud", "age")
    # ints and floats where the type matters are not confused by the cache
    assert resolve({"defaults": {"warmup_events": 5}}, "m", "f").warmup_events == 5
    with pytest.raises(ValueError, match=r"expected an integer, got 5.0"):
        resolve({"defaults": {"warmup_events": 5.0}}, "m", "f")


def test_allow_features_is_an_optional_set_per_model():
    config = {
        "models": {
            "fraud": {"allow_features": ["amount", "age"], "ignore_features": ["age"]},
            "churn": {"allow_features": []},
        }
    }
    validate_config(config)
    assert allowed_features(config, "fraud") == frozenset({"amount", "age"})
    assert ignored_features(config, "fraud") == frozenset({"age"})  # the caller drops both lists
    assert allowed_features(config, "churn") == frozenset()  # only the prediction and errors
    assert allowed_features(config, "other") is None and allowed_features(None, "m") is None
    assert allowed_features({"models": {"m": {"allow_features": None}}}, "m") is None
