import json

import numpy as np
import pytest

from streamdrift.detectors import (
    CategoricalMonitor,
    ErrorMonitor,
    MonitorParams,
    NumericMonitor,
    merge_summaries,
)

MEAN_DETECTORS = ("adwin", "page_hinkley")


def test_shift_in_one_feature_gives_one_detection_for_it_only(feed):
    rng = np.random.default_rng(11)
    n, change = 30_000, 12_000
    features = {f"f{k}": rng.normal(10.0 * k, k + 1.0, n) for k in range(6)}
    features["f3"][change:] += 4.0  # +1 sigma
    monitors = {name: NumericMonitor() for name in features}
    detections = {name: feed(monitors[name], values) for name, values in features.items()}
    assert {name: len(found) for name, found in detections.items()} == {
        "f0": 0,
        "f1": 0,
        "f2": 0,
        "f3": 1,
        "f4": 0,
        "f5": 0,
    }
    (detection,) = detections["f3"]
    assert change <= detection.position < change + 200
    assert detection.evidence_from == 500  # first value after the warm-up
    assert detection.events_seen == detection.position + 1
    assert detection.statistic > detection.threshold or detection.detector == "adwin"
    assert detection.reference["mean"] == pytest.approx(30.0, abs=0.5)
    assert detection.reference["std"] == pytest.approx(4.0, rel=0.1)
    assert detection.current["mean"] > detection.reference["mean"] + 2.0
    assert detection.effect_size == pytest.approx(
        (detection.current["mean"] - detection.reference["mean"]) / detection.reference["std"]
    )
    assert detection.severity in ("medium", "high")
    assert monitors["f3"].episodes == 1
    assert monitors["f3"].drift_score() == pytest.approx(1.0, abs=0.5)
    assert monitors["f0"].drift_score() < 0.5


def test_cooldown_groups_detections_into_episodes(feed):
    rng = np.random.default_rng(12)
    values = rng.normal(0.0, 1.0, 40_000)
    values[10_000:12_000] += 1.5  # back at 12,000: within the cool-down of the first detection
    values[25_000:] += 1.5
    monitor = NumericMonitor()
    found = feed(monitor, values)
    assert [d.event for d in found] == ["detected", "resolved", "detected"]
    positions = [d.position for d in found]
    assert 10_000 <= positions[0] < 10_200 and 25_000 <= positions[2] < 25_200
    assert 12_000 < positions[1] < 14_000  # three quiet windows after the return
    assert monitor.suppressed >= 1 and monitor.episodes == 2
    # Without window tests nothing resolves an episode: it ends with the cool-down.
    no_cooldown = NumericMonitor(MonitorParams(cooldown_events=0, detectors=MEAN_DETECTORS))
    assert len(feed(no_cooldown, values)) >= 3


@pytest.mark.parametrize("batch", [1, 1000])  # 1: every detection ends its batch
def test_evidence_starts_after_the_previous_detection(feed, batch):
    rng = np.random.default_rng(21)
    values = rng.normal(0.0, 1.0, 9_000)
    values[2_000:4_000] += 2.0  # up, back down, up again
    values[6_000:] += 2.0
    params = MonitorParams(detectors=("page_hinkley",), cooldown_events=0)
    detections = feed(NumericMonitor(params), values, batch=batch)
    assert len(detections) == 3
    starts = [d.evidence_from for d in detections]
    assert starts == [500] + [d.position + 1 for d in detections[:-1]]


def test_batching_does_not_change_detections(feed):
    rng = np.random.default_rng(13)
    values = rng.normal(5.0, 2.0, 8_000)
    values[3_000:] -= 2.0
    runs = {}
    for batch in (1, 13, 1000, len(values)):
        # Page-Hinkley's raw threshold: the CUSUM bank's come from the reference's quantile
        # sketch, whose compaction (and so the thresholds, within ~1%) depends on the batches.
        params = MonitorParams(cooldown_events=500, detectors=("adwin", "page_hinkley", "window"))
        monitor = NumericMonitor(params)
        runs[batch] = (feed(monitor, values, batch=batch), monitor)
    expected, reference = runs[1]
    assert len(expected) == 1  # the shift is found
    for found, monitor in runs.values():
        # Batches are summed in another order, so floats may differ in the last bits.
        assert [(d.detector, d.position, d.evidence_from, d.events_seen) for d in found] == [
            (d.detector, d.position, d.evidence_from, d.events_seen) for d in expected
        ]
        assert [d.statistic for d in found] == pytest.approx([d.statistic for d in expected])
        assert [d.effect_size for d in found] == pytest.approx([d.effect_size for d in expected])
        assert monitor.drift_score() == pytest.approx(reference.drift_score(), abs=1e-9)
        assert monitor.stats.mean == pytest.approx(values.mean())


def test_detections_are_scale_free(feed):
    rng = np.random.default_rng(14)
    values = rng.normal(0.0, 1.0, 15_000)
    values[7_000:] += 0.7
    found = [d.position for d in feed(NumericMonitor(), values)]
    rescaled = [d.position for d in feed(NumericMonitor(), 5e6 + 1000.0 * values)]
    assert found and rescaled == found


def test_warmup_builds_the_reference_and_detects_nothing(feed):
    rng = np.random.default_rng(15)
    warmup = np.concatenate([rng.normal(0, 1, 250), rng.normal(50, 1, 250)])  # wild, ignored
    monitor = NumericMonitor()
    assert feed(monitor, warmup[:300], batch=64) == [] and monitor.drift_score() == 0.0
    assert monitor.summary()["warmup_remaining"] == 200 and monitor.summary()["reference"] is None
    assert feed(monitor, warmup[300:], batch=64, first_position=300) == []
    assert monitor.reference.mean == pytest.approx(warmup.mean())
    assert monitor.reference.std == pytest.approx(warmup.std(ddof=1))
    assert all(d.n_detections == 0 for d in monitor.detectors.values())
    assert monitor.summary()["warmup_remaining"] == 0


def test_clipping_keeps_one_outlier_from_firing(feed):
    values = np.random.default_rng(16).normal(0.0, 1.0, 10_000)
    values[6_000] = 1e6
    assert feed(NumericMonitor(), values) == []
    unclipped = feed(NumericMonitor(MonitorParams(clip_sigma=float("inf"))), values)
    # The window tests are not fooled (one value moves no p-value) and resolve the episode.
    assert [(d.detector, d.position, d.event) for d in unclipped] == [
        ("cusum", 6_000, "detected"),
        ("window", 7_499, "resolved"),
    ]


def test_feature_constant_during_warmup(feed):
    values = np.zeros(3_000)
    values[1_000:] = np.random.default_rng(17).integers(0, 2, 2_000)
    monitor = NumericMonitor()
    (detection,) = feed(monitor, values)
    assert 1_000 <= detection.position < 1_100
    assert detection.reference["std"] == 0.0
    json.dumps(monitor.summary(), allow_nan=False)


def test_error_monitor_detects_error_rate_rise():
    for seed in range(5):
        rng = np.random.default_rng(seed)
        errors = np.concatenate([rng.random(5_000) < 0.1, rng.random(5_000) < 0.3]).astype(float)
        monitor = ErrorMonitor()
        (detection,) = monitor.update(errors, np.arange(len(errors)))
        assert 5_000 <= detection.position < 5_800
        assert detection.detector in ("adwin", "cusum")
        assert detection.reference["error_rate"] == pytest.approx(0.1, abs=0.06)
        assert detection.current["error_rate"] > detection.reference["error_rate"]
        assert monitor.summary()["current"]["error_rate"] == pytest.approx(0.3, abs=0.1)


def test_error_monitor_is_quiet_on_a_stable_error_rate():
    errors = (np.random.default_rng(18).random(200_000) < 0.1).astype(float)
    monitor = ErrorMonitor()
    assert monitor.update(errors, np.arange(len(errors))) == []
    assert monitor.detectors["adwin"].n_detections == 0


def test_summaries_are_json(feed):
    rng = np.random.default_rng(19)
    values = rng.normal(0, 1, 3_000)
    values[2_000:] += 3
    numeric, error, categorical = NumericMonitor(), ErrorMonitor(), CategoricalMonitor()
    summaries = [numeric.summary(), error.summary(), categorical.summary()]
    feed(numeric, values[:100])
    summaries.append(numeric.summary())
    feed(numeric, values[100:], first_position=100)
    error.update(rng.random(1_000) < 0.2, np.arange(1_000))
    categorical.update(["a", "b", "a"], [0, 1, 2])
    numeric.update_missing(3)
    summaries += [numeric.summary(), error.summary(), categorical.summary()]
    for summary in summaries:
        json.dumps(summary, allow_nan=False)
    assert summaries[-3]["missing"] == 3 and summaries[-3]["episodes"] == 1
    assert set(summaries[-3]["detectors"]) == {"adwin", "cusum"}
    assert summaries[-2]["error_rate"] == pytest.approx(error.stats.mean)
    assert summaries[-1]["top"] == [{"value": "a", "count": 2}, {"value": "b", "count": 1}]


def test_merge_summaries_of_partitions(feed):
    rng = np.random.default_rng(20)
    partitions = [rng.normal(0, 1, 4_000), rng.exponential(3, 2_500), rng.normal(10, 2, 300)]
    monitors = []
    for part in partitions:
        monitor = NumericMonitor()
        feed(monitor, part)
        monitor.update_missing(2)
        monitors.append(monitor)
    merged = merge_summaries(monitors)
    everything = np.concatenate(partitions)
    assert merged["count"] == len(everything) and merged["missing"] == 6
    assert merged["mean"] == pytest.approx(everything.mean())
    assert merged["std"] == pytest.approx(everything.std(ddof=1))
    assert (merged["min"], merged["max"]) == (everything.min(), everything.max())
    ranks = {"p05": 0.05, "p50": 0.5, "p95": 0.95}
    ordered = np.sort(everything)
    for key, rank in ranks.items():
        true_rank = np.searchsorted(ordered, merged["quantiles"][key], side="right") / len(ordered)
        assert abs(true_rank - rank) <= monitors[0].sketch.rank_error
    # only the two warmed-up partitions have a reference
    assert merged["reference"]["count"] == 1_000
    assert merged["reference"]["mean"] == pytest.approx(
        np.concatenate([partitions[0][:500], partitions[1][:500]]).mean()
    )
    assert [p["count"] for p in merged["partitions"]] == [4_000, 2_500, 300]
    assert all(set(p["detectors"]) == {"adwin", "cusum"} for p in merged["partitions"])
    json.dumps(merged, allow_nan=False)


def test_merge_categorical_and_errors():
    left, right = (
        CategoricalMonitor(MonitorParams(max_categories=2)),
        CategoricalMonitor(MonitorParams(max_categories=2)),
    )
    left.update(["a", "b", "a"], [0, 1, 2])
    right.update(["c", "a"], [0, 1])
    merged = merge_summaries([left, right])
    assert merged["count"] == 5 and merged["distinct"] == 3
    assert merged["top"][0] == {"value": "a", "count": 3}
    with pytest.raises(ValueError, match="different kinds"):
        merge_summaries([left, NumericMonitor()])
    with pytest.raises(ValueError, match="no monitors"):
        merge_summaries([])


def test_categorical_monitor_bound():
    monitor = CategoricalMonitor(MonitorParams(max_categories=2))
    assert not monitor.knows("a") and monitor.accepts("a")
    monitor.update(["a", "b", "a"], [0, 1, 2])
    assert monitor.accepts("a") and not monitor.accepts("c")
    assert monitor.knows("b") and not monitor.knows("c") and monitor.distinct == 2
    with pytest.raises(ValueError):
        monitor.update(["a", "c"], [3, 4])
    assert monitor.count == 3
