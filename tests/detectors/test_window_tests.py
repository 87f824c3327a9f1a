"""Window tests inside the monitors: false alarms against the target, detections, both gates,
and the alert lifecycle."""

import dataclasses
import json

import msgspec
import numpy as np
import pytest
from scipy import stats

from streamdrift.detectors import (
    CategoricalMonitor,
    MonitorParams,
    NumericMonitor,
    StateError,
    WindowParams,
    monitor_from_bytes,
)
from streamdrift.detectors.windows import NumericWindows

WINDOW_ONLY = ("window",)
MEAN_DETECTORS = ("adwin", "page_hinkley", "cusum")
CATEGORIES = list("abcdefgh")
SHARES = [0.3, 0.2, 0.15, 0.1, 0.1, 0.1, 0.04, 0.01]


def categorical(rng, n, shares=SHARES):
    return rng.choice(CATEGORIES, n, p=shares).tolist()


def feed_all(monitor, values, batch=2_000):
    found = []
    for start in range(0, len(values), batch):
        part = values[start : start + batch]
        found += monitor.update(part, np.arange(start, start + len(part)))
    return found


def upper_bound(expected):
    """A one-sided 99.9% bound on a Poisson count of mean ``expected``."""
    return stats.poisson.ppf(0.999, expected)


@pytest.mark.parametrize(
    ("make", "stream"),
    [
        (NumericMonitor, lambda rng, n: rng.lognormal(0.0, 1.0, n)),
        (NumericMonitor, lambda rng, n: np.where(rng.random(n) < 0.05, np.nan, rng.normal(size=n))),
        (CategoricalMonitor, categorical),
    ],
    ids=["lognormal", "normal-5%-missing", "categorical"],
)
def test_false_alarm_rate_of_the_p_values_matches_the_target(make, stream):
    """Target one false alarm per 10^5 events, windows of 500: alpha = 5e-3 per window split
    over the tests. Without the effect floors the p-values alone decide: 40 streams of 50
    windows (each stream with its own reference) must fire close to the target."""
    params = MonitorParams(
        detectors=WINDOW_ONLY,
        target_false_alarm_interval=1e5,
        window=WindowParams(psi_floor=0.0, wasserstein_floor=0.0, missing_floor=0.0),
    )
    evaluated = drifted = 0
    for seed in range(40):
        monitor = make(params)
        feed_all(monitor, stream(np.random.default_rng(seed), 6_000 + 50 * 500))
        budget = monitor.false_alarms()
        assert budget["target_interval"] == 1e5
        window = budget["detectors"]["window"]
        evaluated += window["evaluations"]
        drifted += window["firings"]
    expected = evaluated * window["rate"]  # Bonferroni: an upper bound
    assert window["rate"] == pytest.approx(500 / 1e5)
    assert evaluated >= 40 * 50
    assert expected / 4 <= drifted <= upper_bound(expected)


def test_effect_floors_cut_false_alarms_further():
    params = MonitorParams(detectors=WINDOW_ONLY, target_false_alarm_interval=1e5)
    evaluated = drifted = 0
    for seed in range(40):
        monitor = NumericMonitor(params)
        feed_all(monitor, np.random.default_rng(seed).exponential(2.0, 5_500 + 50 * 500))
        evaluated += monitor.windows.evaluated
        drifted += monitor.windows.drifted
    assert drifted <= upper_bound(evaluated * 500 / 1e5 / 2)


@pytest.mark.parametrize("shift", [0.5, 1.0])
def test_mean_shift_is_found_at_the_first_window_after_it(shift):
    rng = np.random.default_rng(int(shift * 10))
    values = rng.normal(10.0, 2.0, 12_000)
    values[8_000:] += shift * 2.0
    found = feed_all(NumericMonitor(MonitorParams(detectors=WINDOW_ONLY)), values)
    (detection,) = found
    assert detection.event == "detected" and detection.detector == "window"
    assert 8_000 <= detection.position < 8_000 + 1_000
    assert detection.test in ("ks", "chi2") and detection.p_value < detection.threshold


def test_variance_change_is_found_by_the_window_tests_not_the_mean_detectors():
    rng = np.random.default_rng(7)
    values = rng.normal(0.0, 1.0, 20_000)
    values[10_000:] *= 1.6
    # ADWIN and Page-Hinkley miss it (the CUSUM bank's k = 0.5 CUSUM may see the wider spread)
    assert feed_all(NumericMonitor(MonitorParams(detectors=MEAN_DETECTORS[:2])), values) == []
    (detection,) = feed_all(NumericMonitor(), values)
    assert detection.detector == "window" and 10_000 <= detection.position < 11_000
    assert detection.current["std"] > 1.4 * detection.reference["std"]
    tests = detection.details["tests"]
    assert tests["ks"]["drifted"] or tests["chi2"]["drifted"]
    tails = sorted(c["bin"] for c in detection.details["top_contributors"][:2])
    assert tails[0].startswith("(-inf,") and tails[1].endswith(", inf]")  # the tails lead
    json.dumps(detection.details, allow_nan=False)


def test_categorical_frequency_shift_explains_itself():
    rng = np.random.default_rng(8)
    swapped = [0.1, 0.2, 0.15, 0.3, 0.1, 0.1, 0.04, 0.01]  # a and d trade places
    values = categorical(rng, 8_000) + categorical(rng, 2_000, swapped)
    monitor = CategoricalMonitor()
    (detection,) = feed_all(monitor, values)
    assert detection.detector == "window" and detection.test == "chi2"
    assert 8_000 <= detection.position < 8_500
    assert detection.effect_size >= 0.1 and detection.severity in ("medium", "high")
    assert {c["bin"] for c in detection.details["top_contributors"][:2]} == {"a", "d"}
    assert detection.reference["top"][0] == {"value": "a", "share": pytest.approx(0.3, abs=0.02)}
    assert monitor.drift_score() >= 0.1
    assert monitor.summary()["episode_open"]


def test_new_categories_are_reported():
    rng = np.random.default_rng(9)
    values = categorical(rng, 6_000) + rng.choice(["a", "z"], 1_000).tolist()
    (detection,) = feed_all(CategoricalMonitor(), values)
    assert detection.details["distances"]["new_category_rate"] == pytest.approx(0.5, abs=0.1)
    assert detection.details["top_contributors"][0]["bin"] == "(new)"


@pytest.mark.parametrize("inline", [True, False], ids=["nan-in-values", "update_missing"])
def test_missing_rate_jump(inline):
    rng = np.random.default_rng(10)
    values = rng.normal(size=12_000)
    jump = rng.random(12_000) < np.where(np.arange(12_000) < 8_000, 0.01, 0.08)
    monitor = NumericMonitor(MonitorParams(detectors=WINDOW_ONLY))
    found = []
    for start in range(0, 12_000, 250):
        part = slice(start, start + 250)
        if inline:
            batch = np.where(jump[part], np.nan, values[part])
            found += monitor.update(batch, np.arange(start, start + 250))
        else:
            kept = ~jump[part]
            found += monitor.update(values[part][kept], np.arange(start, start + 250)[kept])
            found += monitor.update_missing(int(jump[part].sum()), position=start + 249)
    (detection,) = found
    assert detection.test == "missing" and detection.effect_size >= 0.2
    assert 8_000 <= detection.position < 9_000
    assert detection.current["missing_rate"] > 0.05 > 0.02 > detection.reference["missing_rate"]
    assert monitor.missing == jump.sum()


def test_a_feature_that_goes_missing_entirely_alerts():
    rng = np.random.default_rng(11)
    monitor = CategoricalMonitor()
    feed_all(monitor, categorical(rng, 6_000))
    found = monitor.update_missing(1_000, position=6_999)
    found = [(d.test, d.position, d.current["missing_rate"]) for d in found]
    assert found == [("missing", 6_999, 1.0)]


def test_huge_windows_do_not_alert_on_a_trivial_shift():
    """0.05 sigma over 50,000-value windows: p-values far below alpha, effects below the floors."""
    rng = np.random.default_rng(12)
    cuts = NumericWindows.cuts_of(rng.normal(size=500), bins=10)
    params = WindowParams(events=50_000, reference_events=100_000)
    values = np.concatenate([rng.normal(size=100_000), rng.normal(0.05, 1.0, 100_000)])
    windows = NumericWindows(params, alpha=1e-6, cuts=cuts)
    found = windows.update(values, np.zeros(len(values), bool), np.arange(len(values)))
    assert len(found) == 2 and not any(e.drifted for e in found)
    ks = next(r for r in found[-1].results if r.test == "ks")
    assert ks.p_value < 1e-6 and ks.effect_size < params.wasserstein_floor
    floorless = NumericWindows(
        WindowParams(events=50_000, reference_events=100_000, wasserstein_floor=0.0, psi_floor=0.0),
        alpha=1e-6,
        cuts=cuts,
    )
    found = floorless.update(values, np.zeros(len(values), bool), np.arange(len(values)))
    assert found[-1].drifted


def test_one_detected_and_one_resolved_per_episode():
    rng = np.random.default_rng(13)
    values = rng.normal(50.0, 5.0, 40_000)
    values[10_000:14_000] += 5.0
    values[24_000:30_000] *= 1.0 + (values[24_000:30_000] > 50.0)  # right tail stretched
    monitor = NumericMonitor(MonitorParams(cooldown_events=1_000))
    found = feed_all(monitor, values)
    assert [d.event for d in found] == ["detected", "resolved", "detected", "resolved"]
    opened, resolved = found[0], found[1]
    assert 10_000 <= opened.position < 10_200 and 14_000 < resolved.position < 16_000
    assert resolved.details["opened_by"] == opened.detector
    assert resolved.details["opened_at"] == opened.position
    assert 24_000 <= found[2].position < 25_000 and 30_000 < found[3].position < 32_000
    assert monitor.episodes == 2 and monitor.lifecycle.resolved == 2 and monitor.suppressed > 0


def test_target_mode_derives_every_threshold():
    params = MonitorParams(target_false_alarm_interval=1e6, detectors=(*MEAN_DETECTORS, "window"))
    monitor = NumericMonitor(params)
    feed_all(monitor, np.random.default_rng(14).normal(size=6_000))
    # four detectors share the budget: 1/4 of 10^-6 per event each
    assert monitor.detector_rate == pytest.approx(1e-6 / 4)
    assert monitor.detectors["adwin"].threshold == pytest.approx(1e-3 / 4)
    assert 20 < monitor.detectors["page_hinkley"].threshold < 35
    assert monitor.windows.alpha == pytest.approx(1e-6 / 4 * 500 / 3)
    # the bank splits its share over its three allowances: 1/12 of 10^-6 each
    low, middle, high = monitor.detectors["cusum"].thresholds  # from the reference's sketch
    assert 45 < low < 65 and 25 < middle < 35 and 12 < high < 20
    model = NumericMonitor(
        dataclasses.replace(params, false_alarm_scope="model", model_features=10)
    )
    assert model.detector_rate == pytest.approx(monitor.detector_rate / 10)
    assert NumericMonitor().false_alarms()["target_interval"] is None
    restored = monitor_from_bytes(monitor.to_bytes())
    for name in MEAN_DETECTORS:
        assert restored.detectors[name].threshold == monitor.detectors[name].threshold


@pytest.mark.parametrize("detector", MEAN_DETECTORS)
def test_sequential_detectors_stay_within_their_share_of_the_target(detector):
    """One false alarm per 10^4 events for this detector alone: 4 x 10^5 stationary values."""
    params = MonitorParams(detectors=(detector,), target_false_alarm_interval=1e4)
    firings = evaluations = 0
    for seed in range(4):
        monitor = NumericMonitor(params)
        feed_all(monitor, np.random.default_rng(seed).normal(size=100_500), batch=10_000)
        counts = monitor.false_alarms()["detectors"][detector]
        assert counts["rate"] == 1e-4
        firings += counts["firings"]
        evaluations += counts["evaluations"]
    assert 0 < firings <= evaluations * 1e-4


def test_window_state_round_trips_mid_stream():
    rng = np.random.default_rng(15)
    values = categorical(rng, 9_000) + categorical(rng, 3_000, SHARES[::-1])
    params = MonitorParams(max_categories=20)
    expected = feed_all(CategoricalMonitor(params), values, batch=700)
    monitor = CategoricalMonitor(params)
    found = []
    for start in range(0, len(values), 700):
        monitor = monitor_from_bytes(monitor.to_bytes())
        part = values[start : start + 700]
        found += monitor.update(part, list(range(start, start + len(part))))
    assert found == expected and len(found) == 1
    assert monitor.summary() == monitor_from_bytes(monitor.to_bytes()).summary()
    assert monitor_from_bytes(monitor.to_bytes()).to_bytes() == monitor.to_bytes()


def tampered(data, change):
    state = msgspec.msgpack.decode(data)
    change(state["monitor"])
    return msgspec.msgpack.encode(state)


def test_corrupt_window_state_raises_state_error():
    monitor = NumericMonitor()
    feed_all(monitor, np.random.default_rng(16).normal(size=6_200))
    good = monitor.to_bytes()
    assert monitor_from_bytes(good).windows.current.count == 200
    corrupt = [
        tampered(good, lambda s: s["windows"]["reference"]["bins"].pop()),
        tampered(good, lambda s: s["windows"]["cuts"].reverse()),
        tampered(good, lambda s: s["windows"]["current"].update(sketch=b"\x00" * 40)),
        tampered(good, lambda s: s.update(windows=None)),  # the parameters say window tests
        tampered(good, lambda s: s["lifecycle"].update(quiet=-1)),
    ]
    for data in corrupt:
        with pytest.raises(StateError, match="corrupt"):
            monitor_from_bytes(data)
    with pytest.raises(StateError, match="format version 1 "):
        monitor_from_bytes(msgspec.msgpack.encode({"version": 1, "monitor": {}}))
