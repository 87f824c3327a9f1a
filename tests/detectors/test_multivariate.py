"""PCA reconstruction error online: the moments and the PCA against batch numpy, detection of a
correlation change no univariate test sees, false alarms, missing values, serialisation."""

import json

import msgspec
import numpy as np
import pytest
from scipy import stats

from streamdrift.detectors import MonitorParams, NumericMonitor, StateError
from streamdrift.detectors.multivariate import (
    CoMoments,
    MultivariateParams,
    MultivariateProfile,
    PCAReconstruction,
    PCAReconstructionMonitor,
)

D = 10
FEATURES = [f"f{j}" for j in range(D)]
FLIPPED = list(range(D // 2, D))


def correlated(rng, n, d=D, rho=0.8, flip=False, missing=0.0):
    """Rows of ``d`` features with pairwise correlation ``rho`` (one shared factor), each with its
    own mean and scale. ``flip`` reflects the second half of the features about their means:
    every marginal stays the same, but their correlation with the first half becomes -rho."""
    x = np.sqrt(rho) * rng.normal(size=(n, 1)) + np.sqrt(1 - rho) * rng.normal(size=(n, d))
    if flip:
        x[:, FLIPPED] *= -1
    x = 10.0 + x * np.arange(1, d + 1)
    x[rng.random(x.shape) < missing] = np.nan
    return x


def feed(monitor, rows, start=0, batch=1_000):
    found = []
    for offset in range(0, len(rows), batch):
        part = rows[offset : offset + batch]
        positions = np.arange(start + offset, start + offset + len(part))
        found += monitor.update(part, positions)
    return found


def flip_stream(rng, missing=0.0):
    """20k stationary rows (reference, calibration, 20 windows), 5k flipped, 5k back."""
    return np.vstack(
        [
            correlated(rng, 20_000, missing=missing),
            correlated(rng, 5_000, flip=True, missing=missing),
            correlated(rng, 5_000, missing=missing),
        ]
    )


def imputed(rows):
    return np.where(np.isnan(rows), np.nanmean(rows, axis=0), rows)


def test_merged_moments_equal_np_cov_of_the_mean_imputed_rows():
    rng = np.random.default_rng(0)
    rows = correlated(rng, 3_000, missing=0.1) * 1e3 + 1e6  # a large mean: no cancellation
    moments = [CoMoments.of_rows(part) for part in np.split(rows, [1, 700, 701, 2_000])]
    merged = CoMoments(D)
    for part in moments[::-1]:  # partitions merge in any order
        merged.merge(part)
    assert merged.rows == len(rows)
    np.testing.assert_allclose(merged.means, np.nanmean(rows, axis=0), rtol=1e-12)
    np.testing.assert_allclose(
        merged.covariance(), np.cov(imputed(rows), rowvar=False), rtol=1e-9, atol=1e-6
    )
    np.testing.assert_array_equal(np.diagonal(merged.count), (~np.isnan(rows)).sum(axis=0))


def test_moments_without_missing_values_are_the_usual_mean_and_scatter():
    rows = correlated(np.random.default_rng(1), 500)
    built = CoMoments(D)
    for part in np.array_split(rows, 7):
        built.update(part)
    centred = rows - rows.mean(axis=0)
    np.testing.assert_allclose(built.mean, np.tile(rows.mean(axis=0)[:, None], D), rtol=1e-12)
    np.testing.assert_allclose(built.comoment, centred.T @ centred, rtol=1e-9)
    assert (built.count == len(rows)).all()


def test_a_stored_profile_restores_the_same_moments():
    moments = CoMoments.of_rows(correlated(np.random.default_rng(2), 1_000, missing=0.05))
    stored = msgspec.msgpack.encode(moments.profile(FEATURES))
    profile = msgspec.msgpack.decode(stored, type=MultivariateProfile)
    restored = CoMoments.from_profile(profile)
    assert profile.features == FEATURES and restored.rows == moments.rows
    for name in ("count", "mean", "comoment"):
        np.testing.assert_array_equal(getattr(restored, name), getattr(moments, name))


@pytest.mark.parametrize(
    "broken",
    [
        {"count": b"\x00" * 8},  # not d x d
        {"rows": 10},  # fewer rows than the pair counts
        {"comoment": np.full((D, D), -1.0).tobytes()},  # negative sums of squares
        {"mean": np.full((D, D), np.nan).tobytes()},
    ],
)
def test_an_inconsistent_profile_is_refused(broken):
    profile = CoMoments.of_rows(correlated(np.random.default_rng(3), 100)).profile(FEATURES)
    with pytest.raises(ValueError):
        CoMoments.from_profile(msgspec.structs.replace(profile, **broken))


@pytest.mark.parametrize("missing", [0.0, 0.05])
def test_the_pca_matches_an_svd_of_the_standardised_reference(missing):
    rng = np.random.default_rng(4)
    reference = correlated(rng, 4_000, rho=0.5, missing=missing)
    reference[:, 3] = 2.0 * reference[:, 0] + rng.normal(size=len(reference))  # a second factor
    pca = PCAReconstruction(CoMoments.of_rows(reference), variance=0.65)

    filled = imputed(reference)
    mean, std = filled.mean(axis=0), filled.std(axis=0, ddof=1)
    _, singular, vt = np.linalg.svd((filled - mean) / std, full_matrices=False)
    ratios = singular**2 / np.sum(singular**2)
    k = int(np.searchsorted(np.cumsum(ratios), 0.65, side="right")) + 1
    assert k > 1 and pca.components.shape == (D, k)
    np.testing.assert_allclose(pca.explained_variance_ratio, ratios[:k], rtol=1e-9)
    # Components are defined up to sign: compare the projections.
    np.testing.assert_allclose(pca.components @ pca.components.T, vt[:k].T @ vt[:k], atol=1e-9)

    new = correlated(rng, 200, missing=missing)
    z = np.nan_to_num((new - mean) / std)
    expected = np.linalg.norm(z - z @ vt[:k].T @ vt[:k], axis=1)
    np.testing.assert_allclose(pca.errors(new), expected, rtol=1e-8, atol=1e-10)


def test_a_missing_value_is_imputed_with_the_reference_mean():
    rng = np.random.default_rng(5)
    pca = PCAReconstruction(CoMoments.of_rows(correlated(rng, 2_000, missing=0.1)))
    rows = correlated(rng, 50)
    holes = rows.copy()
    holes[::3, 2] = np.nan
    holes[1] = np.nan  # a row with nothing present
    filled = np.where(np.isnan(holes), pca.mean, holes)
    np.testing.assert_allclose(pca.errors(holes), pca.errors(filled), rtol=1e-12)
    assert pca.errors(holes)[1] == 0.0


def test_a_correlation_flip_is_detected_once_and_resolved_where_univariate_tests_see_nothing():
    rng = np.random.default_rng(6)
    rows = flip_stream(rng)
    monitor = PCAReconstructionMonitor(FEATURES)
    found = feed(monitor, rows)

    assert [d.event for d in found] == ["detected", "resolved"]
    detected, resolved = found
    assert 20_000 <= detected.position < 20_000 + 3 * monitor.params.events  # within 3 windows
    assert 25_000 <= resolved.position < 25_000 + 5 * monitor.params.events
    assert monitor.lifecycle.episodes == 1 and monitor.summary()["episode_open"] is False
    assert detected.detector == "pca_reconstruction" and detected.severity == "high"
    assert detected.p_value < monitor.params.alpha and detected.effect_size >= 0.1
    details = detected.details
    assert details["components"] == 1 and details["explained_variance"] > 0.65
    assert detected.current["mean_error"] > details["error_threshold"]
    assert details["error_threshold"] > detected.reference["mean_error"]
    top = details["top_contributors"]
    assert len(top) == 5 and {c["feature"] for c in top} <= set(FEATURES)
    assert resolved.details["opened_at"] == detected.position

    # Every marginal is unchanged: the per-feature window tests stay silent.
    params = MonitorParams(detectors=("window",), target_false_alarm_interval=1e6)
    for j in range(D):
        univariate = NumericMonitor(params)
        assert feed(univariate, rows[:, j]) == [], FEATURES[j]


def test_the_top_contributor_is_the_feature_whose_correlations_changed():
    rng = np.random.default_rng(7)
    rows = correlated(rng, 12_000)
    changed = correlated(rng, 1_000)
    changed[:, 4] = 20.0 - changed[:, 4]  # reflect f4 about its mean (10)
    found = feed(PCAReconstructionMonitor(FEATURES), np.vstack([rows, changed]))
    assert [d.event for d in found] == ["detected"]
    top = found[0].details["top_contributors"][0]
    assert top["feature"] == "f4" and top["share"] > 3 * top["reference_share"]


def test_no_false_alarm_on_a_long_stationary_stream():
    """The p-value gate alone would allow one false alarm per 10^6 rows; on normal features the
    effect floor (a 10% higher mean error) is out of the noise's reach."""
    rng = np.random.default_rng(8)
    monitor = PCAReconstructionMonitor(FEATURES)
    found = feed(monitor, correlated(rng, 250_000, missing=0.02), batch=5_000)
    assert found == []
    alarms = monitor.false_alarms()["detectors"]["pca_reconstruction"]
    assert alarms["evaluations"] == (250_000 - 10_000) // 500 and alarms["firings"] == 0
    summary = monitor.summary()
    assert summary["reference"]["count"] == 5_000 and abs(summary["drift_score"]) < 0.05
    json.dumps(summary)


def test_heavy_tailed_features_alarm_no_more_often_than_the_target():
    """Lognormal features: one outlier moves a window's mean error past the effect floor, so the
    p-value gate decides. Clipped at 4 sigma, 20 streams of 250k rows fired 0.83 times the
    target (2.9 times unclipped)."""
    rows = correlated(np.random.default_rng(13), 600_000, missing=0.02)
    rows = np.exp((rows - 10.0) / np.arange(1, D + 1))  # correlated lognormal(0, 1) features
    monitor = PCAReconstructionMonitor(FEATURES)
    feed(monitor, rows, batch=10_000)
    expected = len(rows) / monitor.params.target_false_alarm_interval
    assert monitor.lifecycle.episodes <= stats.poisson.ppf(0.999, expected)


def test_the_p_values_alone_fire_at_the_target():
    """Without the effect floor, at alpha = 500 / 10^4 = 0.05 per window: 100 streams of 40
    windows. A stream's windows share its calibration (whose sampling error the test includes,
    so the rate holds on average over streams, not in each): the bound is on the mean of the
    streams' rates (see the module docstring for the rates at smaller alphas)."""
    params = MultivariateParams(effect_floor=0.0, target_false_alarm_interval=1e4)
    rates = []
    for seed in range(100):
        monitor = PCAReconstructionMonitor(FEATURES, params)
        feed(monitor, correlated(np.random.default_rng(100 + seed), 30_000), batch=10_000)
        assert monitor.evaluated == 40
        rates.append(monitor.drifted / monitor.evaluated)
    mean, error = np.mean(rates), np.std(rates) / np.sqrt(len(rates))
    assert 0.5 * params.alpha < mean < params.alpha + 3.3 * error, (mean, error)


def test_missing_values_neither_raise_alarms_nor_hide_the_flip():
    rng = np.random.default_rng(9)
    monitor = PCAReconstructionMonitor(FEATURES)
    found = feed(monitor, flip_stream(rng, missing=0.05))
    assert [d.event for d in found] == ["detected", "resolved"]
    assert 20_000 <= found[0].position < 21_500
    assert monitor.missing == pytest.approx(0.05 * 30_000 * D, rel=0.05)
    assert 0.04 < found[0].current["missing_rate"] < 0.06


def test_a_stored_baseline_skips_the_reference_period():
    rng = np.random.default_rng(10)
    training = CoMoments(D)
    for _ in range(5):  # built batch by batch, e.g. offline over the training data
        training.update(correlated(rng, 2_000))
    profile = msgspec.msgpack.decode(
        msgspec.msgpack.encode(training.profile(FEATURES)), type=MultivariateProfile
    )
    monitor = PCAReconstructionMonitor.from_profile(profile)
    assert monitor.summary()["reference_remaining"] == 0
    assert monitor.summary()["calibration_remaining"] == 5_000
    stream = np.vstack([correlated(rng, 10_000), correlated(rng, 2_000, flip=True)])
    found = feed(monitor, stream)
    assert [d.event for d in found] == ["detected"]
    assert 10_000 <= found[0].position < 11_500
    assert monitor.profile() == profile


@pytest.mark.parametrize("cut", [3_210, 7_777, 20_250, 24_999])
def test_a_restored_monitor_finds_what_the_original_finds(cut):
    """Cut mid-reference, mid-calibration, mid-window, and during the episode."""
    rows = flip_stream(np.random.default_rng(11), missing=0.01)
    original = PCAReconstructionMonitor(FEATURES, MultivariateParams(events=400))
    feed(original, rows[:cut], batch=997)
    restored = PCAReconstructionMonitor.from_bytes(original.to_bytes())
    assert restored.summary() == original.summary()
    after = rows[cut:]
    expected = feed(original, after, start=cut, batch=997)
    assert feed(restored, after, start=cut, batch=997) == expected
    episode = ["resolved"] if cut > 21_000 else ["detected", "resolved"]
    assert [d.event for d in expected] == episode
    assert restored.to_bytes() == original.to_bytes()


def test_states_that_cannot_be_restored_raise_state_error():
    monitor = PCAReconstructionMonitor(FEATURES)
    feed(monitor, correlated(np.random.default_rng(12), 6_000))
    data = monitor.to_bytes()
    state = msgspec.msgpack.decode(data)
    with pytest.raises(StateError, match="format version 99"):
        PCAReconstructionMonitor.from_bytes(msgspec.msgpack.encode({**state, "version": 99}))
    with pytest.raises(StateError, match="not a streamdrift"):
        PCAReconstructionMonitor.from_bytes(b"\x01garbage")
    state["calibration"]["squared_residuals"] = [1.0]
    with pytest.raises(StateError, match="corrupt"):
        PCAReconstructionMonitor.from_bytes(msgspec.msgpack.encode(state))


def test_bad_input_is_refused():
    monitor = PCAReconstructionMonitor(FEATURES)
    with pytest.raises(ValueError, match="n x 10"):
        monitor.update(np.zeros((3, 4)), np.arange(3))
    with pytest.raises(ValueError, match="one tag per row"):
        monitor.update(np.zeros((3, D)), np.arange(2))
    with pytest.raises(ValueError, match="infinite"):
        monitor.update(np.full((1, D), np.inf), np.arange(1))
    with pytest.raises(ValueError, match="distinct feature names"):
        PCAReconstructionMonitor(["a", "a"])
    with pytest.raises(ValueError, match="variance"):
        MultivariateParams(variance=1.0)
    assert MultivariateParams.from_mapping({"events": 1_000}).alpha == 1e-3


def test_a_reference_without_variance_is_collected_afresh_not_raised():
    """Constant (or always missing) features teach the PCA nothing: the monitor keeps
    collecting instead of failing the batch."""
    params = MultivariateParams(reference_events=100, calibration_events=100, events=50)
    monitor = PCAReconstructionMonitor(["a", "b"], params)
    constant = np.column_stack([np.ones(250), np.full(250, np.nan)])
    assert monitor.update(constant, np.arange(250)) == []
    assert monitor.pca is None and monitor.reference.rows == 50 and monitor.count == 250
    rng = np.random.default_rng(3)
    varied = rng.normal(size=(150, 2))
    monitor.update(varied, np.arange(250, 400))
    assert monitor.pca is not None  # 50 constant + 50 varied rows: variance to fit


def test_a_flip_that_comes_back_within_cooldown_s_is_counted_not_alerted():
    """flip, back, flip again 100 s (of event time, 100 rows/s) after the first opened: with
    cooldown_s = 600 the second flip is suppressed; with the default (0) it is a new episode."""
    rows = np.vstack(
        [
            flip_stream(np.random.default_rng(6)),
            correlated(np.random.default_rng(7), 5_000, flip=True),
        ]
    )
    times = 1.7e9 + np.arange(len(rows)) * 0.01

    def events(params):
        monitor, found = PCAReconstructionMonitor(FEATURES, params), []
        for offset in range(0, len(rows), 1_000):
            part = slice(offset, offset + 1_000)
            found += monitor.update(rows[part], np.arange(len(rows))[part], times[part])
        return [d.event for d in found], monitor

    plain, _ = events(MultivariateParams())
    assert plain == ["detected", "resolved", "detected"]
    cooled, monitor = events(MultivariateParams(cooldown_s=600.0))
    assert cooled == ["detected", "resolved"] and monitor.lifecycle.suppressed > 0
    assert PCAReconstructionMonitor.from_bytes(monitor.to_bytes()).lifecycle.last_time == (
        monitor.lifecycle.last_time
    )
