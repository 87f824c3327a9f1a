"""The calibrated defaults on long streams: no false alarms, quick detection."""

import numpy as np

from streamdrift.detectors import NumericMonitor

DISTRIBUTIONS = {
    "normal": lambda rng, n: rng.normal(50.0, 10.0, n),
    "uniform": lambda rng, n: rng.uniform(0.0, 1.0, n),
    "exponential": lambda rng, n: rng.exponential(2.0, n),
    "lognormal": lambda rng, n: rng.lognormal(0.0, 1.0, n),
}


def test_no_false_alarm_on_20_stationary_features_of_100k_values(feed):
    fired = {}
    for k in range(20):
        name = list(DISTRIBUTIONS)[k % 4]
        values = DISTRIBUTIONS[name](np.random.default_rng(1_000 + k), 100_000)
        monitor = NumericMonitor()
        detections = feed(monitor, values, batch=2_000)
        # every firing, including those the episode logic would have suppressed
        fired[f"{name}-{k}"] = len(detections) + sum(
            d.n_detections for d in monitor.detectors.values()
        )
    assert fired == dict.fromkeys(fired, 0)


def test_one_sigma_shift_is_detected_quickly(feed):
    delays = []
    for seed in range(10):
        values = np.random.default_rng(seed).normal(0.0, 1.0, 12_000)
        values[10_000:] += 1.0
        detections = feed(NumericMonitor(), values)
        assert len(detections) == 1 and detections[0].position >= 10_000
        delays.append(detections[0].position - 10_000)
    assert max(delays) < 150 and np.median(delays) < 90
