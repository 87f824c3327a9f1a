import dataclasses

import msgspec
import numpy as np
import pytest
from river import drift

from streamdrift.detectors import Adwin, AdwinParams, PageHinkley, PageHinkleyParams


def stream_with_changes(seed=0, segment=2000, means=(0.0, 1.5, -1.0, 3.0, 3.5)):
    rng = np.random.default_rng(seed)
    return np.concatenate([rng.normal(mean, 1.0, segment) for mean in means]).tolist()


def river_hits(detector, values):
    hits = []
    for i, x in enumerate(values):
        detector.update(x)
        if detector.drift_detected:
            hits.append(i)
    return hits


ADWIN_PARAMS = [AdwinParams(), AdwinParams(delta=0.002, clock=8, min_window_length=10)]
PH_PARAMS = [
    PageHinkleyParams(),
    PageHinkleyParams(threshold=50.0, delta=0.005, alpha=1 - 0.0001),  # river's defaults
    PageHinkleyParams(threshold=20.0, delta=0.1, mode="up"),
]


@pytest.mark.parametrize("params", ADWIN_PARAMS)
def test_adwin_fires_where_river_does(params):
    values = stream_with_changes()
    expected = river_hits(drift.ADWIN(**dataclasses.asdict(params)), values)
    assert len(expected) >= 3  # the stream has changes to find
    adwin = Adwin(params)
    assert [i for i, x in enumerate(values) if adwin.update(x)] == expected
    assert adwin.n_detections == len(expected)


@pytest.mark.parametrize("params", PH_PARAMS)
def test_page_hinkley_fires_where_river_does(params):
    values = stream_with_changes()
    expected = river_hits(drift.PageHinkley(**dataclasses.asdict(params)), values)
    assert len(expected) >= 2
    ph = PageHinkley(params)
    assert [i for i, x in enumerate(values) if ph.update(x)] == expected


def test_adwin_statistic_is_the_mean_difference_at_the_cut():
    values = stream_with_changes(seed=1)
    adwin = Adwin(AdwinParams(delta=0.002))
    start = 0  # river starts a fresh window after each detection
    checked = 0
    for i, x in enumerate(values):
        if adwin.update(x):
            kept = adwin.describe()["width"]
            cut = i + 1 - int(kept)
            dropped_mean = np.mean(values[start:cut])
            kept_mean = np.mean(values[cut : i + 1])
            assert adwin.statistic == pytest.approx(abs(kept_mean - dropped_mean), rel=1e-9)
            start, checked = i + 1, checked + 1
    assert checked >= 3


@pytest.mark.parametrize("mode", ["both", "up", "down"])
def test_page_hinkley_statistic_is_the_cusum_at_detection(mode):
    """Recompute the two-sided CUSUM (alpha = 1) from the raw values since the last reset."""
    params = PageHinkleyParams(threshold=30.0, delta=0.25, mode=mode)
    values = stream_with_changes(seed=2, means=(0.0, 1.5, -1.0, 3.0, 0.0))
    ph = PageHinkley(params)
    start, checked = 0, 0
    for i, x in enumerate(values):
        if ph.update(x):
            segment = np.array(values[start : i + 1])
            deviation = segment - np.cumsum(segment) / np.arange(1, len(segment) + 1)
            increase = np.cumsum(deviation - params.delta)
            decrease = np.cumsum(deviation + params.delta)
            up = increase[-1] - increase.min()
            down = max(decrease.max(), -1.0) - decrease[-1]  # river starts the max at -1
            expected = {"up": up, "down": down, "both": max(up, down)}[mode]
            assert ph.statistic == pytest.approx(expected, rel=1e-9)
            assert ph.statistic > ph.threshold == params.threshold
            start, checked = i + 1, checked + 1
    assert checked >= 1


@pytest.mark.parametrize("make", [Adwin, PageHinkley])
def test_update_many_reports_each_detection_with_its_statistic(make):
    values = stream_with_changes(seed=4)
    one_by_one = make()
    expected = [(i, one_by_one.statistic) for i, x in enumerate(values) if one_by_one.update(x)]
    assert len(expected) >= 3 and len({s for _, s in expected}) == len(expected)
    detector = make()
    assert (
        detector.update_many(values[:5_000])
        + [(i + 5_000, s) for i, s in detector.update_many(values[5_000:])]
        == expected
    )


def run_with_restores(detector, values, restore_at):
    hits = []
    for i, x in enumerate(values):
        if i in restore_at:
            encoded = msgspec.msgpack.encode(detector.to_state())
            state = msgspec.msgpack.decode(encoded, type=type(detector).state_type)
            detector = type(detector).from_state(state)
        if detector.update(x):
            hits.append((i, detector.statistic))
    return hits, detector


@pytest.mark.parametrize(
    "make", [lambda: Adwin(AdwinParams(delta=0.002)), lambda: PageHinkley(PH_PARAMS[1])]
)
def test_restored_mid_stream_behaves_identically(make):
    values = stream_with_changes(seed=3)
    expected, uninterrupted = run_with_restores(make(), values, restore_at=set())
    assert len(expected) >= 3
    # every 997 values, and right after each detection (river resets on the next update)
    restore_at = set(range(1, len(values), 997)) | {i + 1 for i, _ in expected}
    hits, restored = run_with_restores(make(), values, restore_at)
    assert hits == expected  # same indices, bit-identical statistics
    assert restored.to_state() == uninterrupted.to_state()
    assert restored.describe() == uninterrupted.describe()


def test_corrupt_adwin_window_is_rejected():
    adwin = Adwin()
    for x in stream_with_changes()[:3000]:
        adwin.update(x)
    state = adwin.to_state()
    for window in (bytes(len(state.window)), state.window[:40], b""):
        with pytest.raises(ValueError, match="ADWIN window"):
            Adwin.from_state(msgspec.structs.replace(state, window=window))
    other_params = msgspec.structs.replace(state, params=AdwinParams(delta=0.01))
    with pytest.raises(ValueError, match="does not match"):
        Adwin.from_state(other_params)


def test_river_state_is_what_the_wrappers_save():
    """A river upgrade adding state the wrappers do not save must fail here, not silently."""
    ph = drift.PageHinkley()
    assert set(vars(ph)) == {
        "_drift_detected",
        "min_instances",
        "delta",
        "threshold",
        "alpha",
        "mode",
        "_x_mean",
        "_sum_increase",
        "_sum_decrease",
        "_min_increase",
        "_max_decrease",
        "_test_drift",
    }
    assert set(vars(ph._x_mean)) == {"n", "_mean"}
    adwin = drift.ADWIN()
    assert set(vars(adwin)) == {
        "_drift_detected",
        "delta",
        "clock",
        "max_buckets",
        "min_window_length",
        "grace_period",
        "_helper",
    }


def test_describe_is_json_safe_before_any_value():
    for detector in (Adwin(), PageHinkley()):
        description = detector.describe()
        assert description["n_detections"] == 0 and description["statistic"] is None
        assert all(np.isfinite(v) for v in description.values() if isinstance(v, float))
