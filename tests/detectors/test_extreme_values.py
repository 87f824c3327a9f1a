"""Any finite float64 — up to +-1.8e308, subnormals, huge next to tiny — must leave every monitor
working: no exception, no overflow warning, finite scores, summaries, detections and checkpoints
that round-trip, and a genuine change after the extremes still detected. Event-time windows
must not let one outlying timestamp close them."""

import math

import msgspec
import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from streamdrift.detectors import (
    CategoricalMonitor,
    ErrorMonitor,
    MonitorParams,
    MultivariateParams,
    NumericMonitor,
    PCAReconstructionMonitor,
    QuantileSketch,
    RunningStats,
    WindowParams,
    monitor_from_bytes,
)
from streamdrift.detectors.adwin import Adwin
from streamdrift.detectors.cusum import Cusum
from streamdrift.detectors.distances import cdf_distances, wasserstein_bound
from streamdrift.detectors.page_hinkley import PageHinkley
from streamdrift.detectors.stats import FLOAT_MAX, LARGE
from streamdrift.detectors.windows import NumericWindows

pytestmark = pytest.mark.filterwarnings("error::RuntimeWarning")

TINY = 5e-324
EXTREMES = [FLOAT_MAX, -FLOAT_MAX, 1e308, -1e308, 1e154, 1e100, -1e101, TINY, -TINY, 1e-308, 0.0]
finite = st.one_of(
    st.floats(allow_nan=False, allow_infinity=False),
    st.sampled_from(EXTREMES),
    st.floats(-3.0, 3.0),
)
value_or_missing = st.one_of(finite, st.just(math.nan))
batches = st.lists(st.lists(value_or_missing, max_size=60), min_size=1, max_size=8)
SMALL = dict(
    warmup_events=20,
    error_warmup_events=20,
    cooldown_events=30,
    window=WindowParams(events=20, reference_events=20),
)
ALL_DETECTORS = ("adwin", "page_hinkley", "cusum", "window")
settings.register_profile(
    "extremes", deadline=None, max_examples=60, suppress_health_check=[HealthCheck.too_slow]
)


def non_finite(value, path="state"):
    """Paths of the non-finite floats in a decoded state, summary or detection."""
    if isinstance(value, float):
        return [] if math.isfinite(value) else [path]
    if isinstance(value, dict):  # (the configuration may say clip_sigma: .inf)
        return [
            p
            for key, item in value.items()
            if key != "params"
            for p in non_finite(item, f"{path}.{key}")
        ]
    if isinstance(value, list | tuple):
        return [p for i, item in enumerate(value) for p in non_finite(item, f"{path}[{i}]")]
    return []


def check_detection(detection):
    fields = {
        name: getattr(detection, name)
        for name in (
            "statistic",
            "threshold",
            "effect_size",
            "reference",
            "current",
            "p_value",
            "details",
        )
    }
    assert non_finite(fields, "detection") == []


def check_monitor(monitor):
    assert math.isfinite(monitor.drift_score())
    assert non_finite(monitor.summary(), "summary") == []
    data = monitor.to_bytes()
    assert non_finite(msgspec.msgpack.decode(data)) == []
    restored = monitor_from_bytes(data)
    assert restored.to_bytes() == data
    assert restored.summary() == monitor.summary()
    return restored


def feed(monitor, batch_list, restore_every=3):
    found, position = [], 0
    for i, batch in enumerate(batch_list):
        values = np.array(batch, dtype=np.float64)
        found += monitor.update(values, np.arange(position, position + len(values)))
        position += len(values)
        if i % restore_every == restore_every - 1:
            monitor = check_monitor(monitor)  # and go on with the restored one
    for detection in found:
        check_detection(detection)
    check_monitor(monitor)
    return monitor, found


@settings(settings.get_profile("extremes"))
@given(batches, st.sampled_from(["numeric", "error", "numeric-all", "numeric-unclipped"]))
def test_numeric_and_error_monitors_take_any_finite_value(batch_list, kind):
    params = {
        "numeric": MonitorParams(**SMALL),
        "error": MonitorParams(**SMALL),
        "numeric-all": MonitorParams(**SMALL, detectors=ALL_DETECTORS),
        "numeric-unclipped": MonitorParams(**SMALL, detectors=ALL_DETECTORS, clip_sigma=math.inf),
    }[kind]
    monitor = (ErrorMonitor if kind == "error" else NumericMonitor)(params)
    # a warm-up of ordinary values, then the generated batches: the detectors see extremes
    monitor.update(np.random.default_rng(0).normal(size=40), np.arange(-40, 0))
    feed(monitor, batch_list)


@settings(settings.get_profile("extremes"))
@given(batches)
def test_extremes_in_the_warm_up_too(batch_list):
    feed(NumericMonitor(MonitorParams(**SMALL, detectors=ALL_DETECTORS)), batch_list)


@settings(settings.get_profile("extremes"))
@given(st.lists(finite, min_size=1, max_size=300), st.integers(1, 5))
def test_running_stats_stay_finite_and_merge_like_one_pass(values, parts):
    whole, merged = RunningStats(), RunningStats()
    whole.update_many(np.array(values))
    for chunk in np.array_split(np.array(values), parts):
        part = RunningStats()
        part.update_many(chunk)
        merged.merge(part)
    for stats in (whole, merged):
        assert all(
            math.isfinite(x) for x in (stats.mean, stats.variance, stats.std, stats.min, stats.max)
        )
        assert stats.min <= stats.mean <= stats.max
        assert RunningStats.from_state(stats.to_state()).to_state() == stats.to_state()
    # Deviations from a mean of magnitude M carry float64's rounding, ~eps * M each: values
    # near 3e15 that differ by ~100 have a std known to ~0.5 absolute, whatever the algorithm.
    conditioning = 16 * np.finfo(float).eps * max(abs(v) for v in values)
    assert merged.std == pytest.approx(whole.std, rel=1e-6, abs=max(1e-300, conditioning))


def test_the_spread_of_extremes_is_exact_beyond_the_float_range():
    values = np.array([1.5e308, -1.5e308] * 50 + [1.0])
    stats = RunningStats()
    for chunk in np.array_split(values, 7):
        stats.update_many(chunk)
    exact = math.sqrt(sum((v / 1e300) ** 2 for v in values) / 100) * 1e300  # mean ~0
    assert stats.std == pytest.approx(exact, rel=1e-12)
    assert stats.variance == FLOAT_MAX  # ~2.3e616 saturates where it is read


@settings(settings.get_profile("extremes"))
@given(st.lists(finite, min_size=1, max_size=200), st.lists(finite, min_size=1, max_size=200))
def test_sketches_and_their_distances_take_any_finite_value(reference, window):
    sketches = []
    for values in (reference, window):
        sketch = QuantileSketch(8)
        sketch.update_many(np.array(values))
        assert QuantileSketch.from_bytes(sketch.to_bytes()).to_bytes() == sketch.to_bytes()
        assert all(math.isfinite(q) for q in sketch.quantiles([0.0, 0.5, 1.0]))
        sketches.append(sketch)
    statistic, distance = cdf_distances(*sketches)
    assert 0 <= statistic <= 1 and 0 <= distance <= FLOAT_MAX
    assert math.isfinite(wasserstein_bound(*sketches))


@settings(settings.get_profile("extremes"))
@given(
    st.lists(
        st.one_of(st.floats(-LARGE, LARGE), st.sampled_from([LARGE, -LARGE, TINY])), max_size=400
    )
)
def test_change_detectors_take_anything_the_monitors_feed_them(values):
    """The monitors bound what they feed the detectors to +-LARGE (standardised values clipped,
    absolute errors clipped); within that, every detector stays finite and restorable."""
    reference = np.random.default_rng(1).normal(size=200)
    for detector in (
        Adwin(),
        PageHinkley(),
        Cusum.calibrated(MonitorParams().cusum, reference, np.ones(200), 1e-6),
    ):
        for _, statistic in detector.update_many(np.array(values)):
            assert math.isfinite(statistic)
        state = detector.to_state()
        assert non_finite(msgspec.to_builtins(state)) == []
        assert type(detector).from_state(state).to_state() == state
        assert non_finite(detector.describe()) == []


@settings(settings.get_profile("extremes"))
@given(
    st.lists(
        st.lists(st.one_of(finite, st.just(math.nan)), min_size=3, max_size=3),
        min_size=1,
        max_size=120,
    )
)
def test_pca_monitor_takes_any_finite_value(rows):
    params = MultivariateParams(
        reference_events=20, calibration_events=20, events=10, target_false_alarm_interval=1e4
    )
    rng = np.random.default_rng(2)
    for fitted_first in (True, False):
        monitor = PCAReconstructionMonitor(["a", "b", "c"], params)
        if fitted_first:
            monitor.update(rng.normal(size=(40, 3)), np.arange(40))
        found = monitor.update(np.array(rows, dtype=np.float64), np.arange(len(rows)))
        for detection in found:
            check_detection(detection)
        assert non_finite(monitor.summary()) == [] and math.isfinite(monitor.drift_score())
        data = monitor.to_bytes()
        assert PCAReconstructionMonitor.from_bytes(data).to_bytes() == data


# -- a genuine change after the extremes is still detected --------------------------------


def shifted_after(extremes, seed=0, shift=3.0):
    """2,000 N(0, 1), the extremes, 2,000 more, then 1,000 of N(shift, 1)."""
    rng = np.random.default_rng(seed)
    return np.concatenate(
        [rng.normal(size=2_000), extremes, rng.normal(size=2_000), rng.normal(shift, 1.0, 1_000)]
    )


@pytest.mark.parametrize(
    "extremes", [[FLOAT_MAX], [-FLOAT_MAX], [FLOAT_MAX, -FLOAT_MAX, TINY, 1e300]]
)
@pytest.mark.parametrize(
    "detectors",
    [("adwin", "cusum", "window"), ("adwin",), ("page_hinkley",), ("cusum",), ("window",)],
)
def test_a_mean_shift_after_extreme_values_is_detected(extremes, detectors):
    values = shifted_after(extremes)
    shift_at = 4_000 + len(extremes)
    monitor = NumericMonitor(
        MonitorParams(detectors=detectors, window=WindowParams(reference_events=1_000))
    )
    found = []
    for start in range(0, len(values), 250):
        found += monitor.update(
            values[start : start + 250], np.arange(start, min(start + 250, len(values)))
        )
        monitor = check_monitor(monitor)
    assert [d.event for d in found if d.position < shift_at] == []  # the extremes alone: no alert
    assert any(shift_at <= d.position < shift_at + 600 for d in found)


def test_an_error_stream_still_sees_a_rise_after_an_extreme_error():
    rng = np.random.default_rng(4)
    errors = np.concatenate(
        [rng.random(2_000) < 0.1, [True], rng.random(2_000) < 0.1, rng.random(2_000) < 0.3]
    ).astype(float)
    errors[2_000] = FLOAT_MAX  # an absolute error of a hostile prediction
    monitor = ErrorMonitor(MonitorParams(cooldown_events=500))
    found = monitor.update(errors, np.arange(len(errors)))
    check_monitor(monitor)
    assert any(4_001 <= d.position < 4_600 for d in found)


def test_a_constant_stream_then_an_extreme_then_a_shift():
    values = np.concatenate(
        [np.full(2_000, 5.0), [FLOAT_MAX], np.full(2_000, 5.0), np.full(500, 6.0)]
    )
    monitor = NumericMonitor()
    found = monitor.update(values, np.arange(len(values)))
    check_monitor(monitor)
    assert any(d.position >= 4_001 for d in found)


def test_a_correlation_change_after_an_extreme_row_is_detected():
    rng = np.random.default_rng(11)

    def rows(n, sign=1.0):
        shared = rng.normal(size=(n, 1))
        return (np.sqrt(0.9) * shared + np.sqrt(0.1) * rng.normal(size=(n, 4))) * [
            1.0,
            1.0,
            1.0,
            sign,
        ]

    stream = np.vstack(
        [rows(11_000), [[FLOAT_MAX, -FLOAT_MAX, TINY, 1e300]], rows(1_000), rows(2_000, -1.0)]
    )
    monitor = PCAReconstructionMonitor(["a", "b", "c", "d"])
    found = monitor.update(stream, np.arange(len(stream)))
    assert found[0].event == "detected" and 12_001 <= found[0].position < 12_600


# -- the previous implementation on ordinary values ---------------------------------------


class PreviousRunningStats:
    """RunningStats before the float-range guards (the reference: ordinary values must give
    bit-identical moments)."""

    def __init__(self):
        self.count, self.mean, self.m2, self.min, self.max = 0, 0.0, 0.0, math.inf, -math.inf

    def update_many(self, values):
        if len(values) == 0:
            return
        mean = float(np.add.reduce(values)) / len(values)
        deviations = values - mean
        m2 = float(np.add.reduce(deviations * deviations))
        self._combine(
            len(values),
            mean,
            m2,
            float(np.minimum.reduce(values)),
            float(np.maximum.reduce(values)),
        )

    def merge(self, other):
        if other.count:
            self._combine(other.count, other.mean, other.m2, other.min, other.max)

    def _combine(self, count, mean, m2, min_, max_):
        total = self.count + count
        delta = mean - self.mean
        self.min = min(self.min, min_)
        self.max = max(self.max, max_)
        # With the clamp added since (473bd9c): rounding can put the mean of near-equal values
        # an ulp outside them, e.g. three values near 6.4e16.
        self.mean = min(max(self.mean + delta * count / total, self.min), self.max)
        self.m2 += m2 + delta * delta * self.count * count / total
        self.count = total


def previous_cdf_distances(reference, window):
    ref_values, ref_weights = reference.items()
    win_values, win_weights = window.items()
    points = np.union1d(ref_values, win_values)

    def cdf(values, weights):
        cumulative = np.concatenate([[0.0], np.cumsum(weights)])
        return cumulative[np.searchsorted(values, points, side="right")] / cumulative[-1]

    gaps = np.abs(cdf(ref_values, ref_weights) - cdf(win_values, win_weights))
    return float(gaps.max()), float(np.dot(gaps[:-1], np.diff(points)))


ordinary = st.one_of(st.floats(-1e6, 1e6), st.floats(-1e90, 1e90), st.floats(-1e-300, 1e-300))


@settings(deadline=None, max_examples=200)
@given(st.lists(st.lists(ordinary, max_size=50), min_size=1, max_size=10))
def test_ordinary_values_give_the_previous_moments_bit_for_bit(chunks):
    new, old, new_merged, old_merged = (
        RunningStats(),
        PreviousRunningStats(),
        RunningStats(),
        PreviousRunningStats(),
    )
    for chunk in chunks:
        values = np.array(chunk, dtype=np.float64)
        new.update_many(values)
        old.update_many(values)
        part_new, part_old = RunningStats(), PreviousRunningStats()
        part_new.update_many(values)
        part_old.update_many(values)
        new_merged.merge(part_new)
        old_merged.merge(part_old)
    for a, b in ((new, old), (new_merged, old_merged)):
        assert (a.count, a.mean, a.m2, a.min, a.max, a.m2_exponent) == (
            b.count,
            b.mean,
            b.m2,
            b.min,
            b.max,
            0,
        )


@settings(deadline=None, max_examples=100)
@given(st.lists(ordinary, min_size=1, max_size=300), st.lists(ordinary, min_size=1, max_size=300))
def test_ordinary_values_give_the_previous_distances_bit_for_bit(reference, window):
    sketches = []
    for values in (reference, window):
        sketches.append(QuantileSketch(16))
        sketches[-1].update_many(np.array(values))
    assert cdf_distances(*sketches) == previous_cdf_distances(*sketches)


@settings(deadline=None, max_examples=30)
@given(st.integers(0, 10_000), st.sampled_from([1, 137, 1_000]))
def test_ordinary_streams_give_the_previous_detections(seed, batch):
    """Monitors fed ordinary values detect exactly where the previous implementation did:
    its detections on these streams, recorded with the same code paths (standardisation,
    EWMA, moments) computed as before, inline."""
    rng = np.random.default_rng(seed)
    values = np.concatenate([rng.normal(10, 3, 3_000), rng.normal(11.5, 3, 1_000)])
    values[rng.random(len(values)) < 0.02] = np.nan
    params = MonitorParams(detectors=ALL_DETECTORS, window=WindowParams(reference_events=1_000))
    monitor, previous = NumericMonitor(params), NumericMonitor(params)
    previous._standardise = lambda v, within_stats=True: (
        (v - previous.reference.mean) / previous._scale
    )
    found, expected = [], []
    for start in range(0, len(values), batch):
        positions = np.arange(start, min(start + batch, len(values)))
        found += monitor.update(values[start : start + batch], positions)
        expected += previous.update(values[start : start + batch], positions)
    key = [(d.detector, d.position, d.statistic, d.effect_size) for d in found]
    assert key == [(d.detector, d.position, d.statistic, d.effect_size) for d in expected]
    assert monitor._ewma_mean == previous._ewma_mean and monitor._ewma_sq == previous._ewma_sq


# -- event-time windows: an outlying timestamp does not close them --------------------------

SIZE = 10.0


def time_params(**window):
    return MonitorParams(
        detectors=("window",),
        warmup_events=100,
        window=WindowParams(seconds=2.0, allowed_lateness_s=1.0, reference_events=1_000, **window),
    )


def timed_stream(seed=0, n=9_000, shift_at=6_000):
    """100 events/s, up to 0.5 s out of order, a 1.5 sigma shift from event ``shift_at``."""
    rng = np.random.default_rng(seed)
    times = 1_000 + np.arange(n) * 0.01 + rng.uniform(-0.5, 0.5, n)
    values = rng.normal(size=n)
    values[shift_at:] += 1.5
    return values, times


@pytest.mark.parametrize("outlier", [3_600.0, 1e18 - 1_000, 1e300])
@pytest.mark.parametrize("repeat", [1, 2])
def test_an_outlying_timestamp_does_not_stop_the_windows(outlier, repeat):
    values, times = timed_stream()
    for at in range(3_000, 3_000 + repeat):
        times[at] = times[at] + outlier if outlier < 1e6 else outlier  # +1 hour, or absurd
    monitor = NumericMonitor(time_params())
    found = []
    for start in range(0, len(values), 300):
        stop = min(start + 300, len(values))
        found += monitor.update(values[start:stop], np.arange(start, stop), times[start:stop])
        monitor = check_monitor(monitor)
    windows = monitor.windows
    assert windows.early == repeat and windows.late < 50
    assert windows.evaluated >= 35  # ~ (9,000 - 1,100) events / 100 per s / 2 s
    assert any(d.event == "detected" and 6_000 <= d.position < 7_500 for d in found)
    # without corroboration the outlier would have closed every window for good
    naive = NumericMonitor(time_params(watermark_events=1))
    naive.update(values, np.arange(len(values)), times)
    assert naive.windows.evaluated < 15


def test_a_genuine_jump_of_the_stream_is_followed_after_a_few_events():
    values, times = timed_stream(n=5_000, shift_at=5_000)
    times[3_000:] += 7_200  # the stream resumes two hours later
    monitor = NumericMonitor(time_params())
    monitor.update(values, np.arange(len(values)), times)
    windows = monitor.windows
    assert windows.early == 2  # the first two events after the jump wait for a third
    assert windows.max_time == pytest.approx(times.max(), abs=2.0)
    assert windows.late < 100


def test_categorical_windows_ignore_an_outlier_too():
    monitor = CategoricalMonitor(
        MonitorParams(window=WindowParams(seconds=SIZE, reference_events=100))
    )
    times = 1_000 + np.arange(400) * 0.1
    times[250] = 1e18
    monitor.update(["a", "b"] * 200, range(400), times)
    assert (
        monitor.windows.early == 1 and monitor.windows.late == 0 and monitor.windows.evaluated == 2
    )
    check_monitor(monitor)


def reference_fronts(front, recent, reference, times, k, horizon):
    """The watermark rule event by event (the definition the vectorised fast path must meet)."""
    fronts, early = [front], []
    for t in times:
        recent = [*recent, t]
        if len(recent) > k:
            recent, reference = recent[1:], max(reference - 1, 0)
        limit = (max(front, min(recent)) if len(recent) == k else front) + horizon
        early.append(t > limit)
        front = max([front, *(r for r in recent[reference:] if r <= limit)])
        fronts.append(front)
    return fronts, early, recent, reference


@settings(deadline=None, max_examples=300)
@given(
    st.lists(
        st.one_of(st.floats(0, 100), st.sampled_from([1e18, -1e18, 5e3])), min_size=1, max_size=40
    ),
    st.lists(st.floats(0, 100), max_size=3),
    st.integers(0, 3),
    st.sampled_from([1, 2, 3, 5]),
    st.one_of(st.just(-math.inf), st.floats(0, 100)),
)
def test_the_vectorised_watermark_follows_its_definition(times, recent, reference, k, front):
    windows = NumericWindows(
        WindowParams(seconds=SIZE, allowed_lateness_s=1.0, watermark_events=k),
        1e-6,
        np.array([0.0]),
    )
    windows.max_time, windows.recent = front, recent[-k:]
    windows.recent_reference = min(reference, len(windows.recent))
    expected = reference_fronts(
        front, windows.recent, windows.recent_reference, times, k, windows.horizon
    )
    running, early = windows._fronts(np.array(times))
    assert (running.tolist(), early.tolist(), windows.recent, windows.recent_reference) == expected


def test_state_of_format_version_2_still_loads():
    values, times = timed_stream(n=2_000)
    monitor = NumericMonitor(time_params())
    monitor.update(values, np.arange(len(values)), times)
    state = msgspec.msgpack.decode(monitor.to_bytes())
    state["version"] = 2
    progress = state["monitor"]["windows"]["progress"]
    for key in ("recent", "recent_reference", "early"):
        del progress[key]
    restored = monitor_from_bytes(msgspec.msgpack.encode(state))
    assert restored.windows.max_time == monitor.windows.max_time and restored.windows.recent == []
    restored.update(values[:100], np.arange(100), times[-1] + 0.01 * np.arange(1, 101))
    assert restored.windows.early == 0
