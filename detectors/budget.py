"""False-alarm budgets: from a target mean time between false alarms to detector thresholds.

A series configured with ``target_false_alarm_interval: T`` may raise one false alarm per ``T``
events (per ``T * model_features`` with ``false_alarm_scope: model``: Bonferroni over the
model's features). The budget ``1 / T`` is split evenly over the series' detectors
(Bonferroni again), and each detector's share is turned into its threshold:

window tests
    A window of ``W`` events runs ``m`` tests (KS, chi-square and missing rate for numeric
    features; chi-square and missing rate for categorical ones), so each test gets the
    significance level ``alpha = rate * W / m``. Exact for the p-values, conservative with the
    effect floors (a window must also show a large enough change).
ADWIN
    Its ``delta`` bounds the false-positive probability of each check, but the measured rate is
    far lower: on standardised, clipped streams (normal, exponential, lognormal; 10^8 values per
    cell) it is linear in delta at ~2.8e-4 (normal) to 6.8e-4 (lognormal) false alarms per value
    and unit of delta (0/1 error streams: lower). ``delta = rate / ADWIN_RATE_PER_DELTA`` with
    1e-3 per unit (1.5x margin on the worst) and at most ``ADWIN_MAX_DELTA`` = 0.1, where the
    rate is still linear: delta = 1e-3 for one false alarm per 10^6 values.
Page-Hinkley
    The threshold ``h`` is solved at warm-up end from the reference values (standardised and
    clipped as the detector sees them) with Wald's approximation of the CUSUM's mean run length,
    ``ARL = (exp(θ h') - 1 - θ h') / (θ δ)``, where ``θ`` is the root of
    ``E[exp(θ (x - mean - δ))] = 1`` (for a normal ``θ = 2δ``), ``h' = h + 1.166`` (Siegmund's
    overshoot correction) and each side (up, down) contributes ``1 / ARL``. River's detector
    compares values with its own running mean, which adds false alarms after each restart:
    the measured rate was 1.0-1.8x the approximation (10^7-4 x 10^7 values per distribution,
    targets 10^4-10^6), so the threshold is solved for ``PH_MARGIN`` = 3 times fewer.
CUSUM bank
    The same statistic for each allowance ``k`` of the bank (:class:`detectors.cusum.Cusum`),
    the detector's share split evenly over the ``k`` values (Bonferroni once more):
    ``cusum_thresholds``.

``python -m streamdrift.detectors.calibrate_targets`` measures the achieved rates against the
targets. At one
false alarm per 10^5 events (20 streams of 5 x 10^5 per distribution: normal, uniform,
exponential, lognormal, normal with 5% missing, categorical) each detector fired 0.1-0.8 times
its share, and the alerts (episodes) came at 0.29-0.44 times the target (none for the
categorical stream, whose PSI floor the noise never reaches). Without the effect floors the
window tests fire at 0.6-1.07 times their Bonferroni bound (``tests/detectors``).

>>> window_alpha(1e-6, window_events=500, tests=3)  # doctest: +ELLIPSIS
0.000166...
>>> adwin_delta(1e-6)
0.001
"""

from __future__ import annotations

import math

import numpy as np
from numpy.typing import NDArray

__all__ = [
    "ADWIN_MAX_DELTA",
    "ADWIN_RATE_PER_DELTA",
    "PH_MARGIN",
    "adwin_delta",
    "cusum_thresholds",
    "page_hinkley_threshold",
    "window_alpha",
]

ADWIN_RATE_PER_DELTA = 1e-3
ADWIN_MAX_DELTA = 0.1
PH_MARGIN = 3.0
SIEGMUND_OVERSHOOT = 1.166
_LARGEST_THRESHOLD = 1e6
_SMALLEST_EXPONENT = 1e-12


def window_alpha(rate: float, window_events: int, tests: int) -> float:
    """Significance level of each of ``tests`` tests run every ``window_events`` events."""
    return min(rate * window_events / tests, 0.5)


def adwin_delta(rate: float) -> float:
    """ADWIN's ``delta`` for ``rate`` false alarms per value (measured mapping, see above)."""
    return min(rate / ADWIN_RATE_PER_DELTA, ADWIN_MAX_DELTA)


def page_hinkley_threshold(
    values: NDArray[np.float64],
    weights: NDArray[np.float64],
    delta: float,
    rate: float,
    mode: str = "both",
) -> float:
    """Page-Hinkley threshold giving ``rate / PH_MARGIN`` false alarms per value on the
    distribution of ``values`` (weighted, as the detector sees them).

    >>> import numpy as np
    >>> values = np.random.default_rng(0).standard_normal(5_000)
    >>> round(page_hinkley_threshold(values, np.ones(5_000), delta=0.25, rate=1e-6), 1)
    25.6
    """
    target = rate / PH_MARGIN
    exponents = [
        _exponent(sign * values, weights, delta)
        for sign, side in ((1.0, "up"), (-1.0, "down"))
        if mode in (side, "both")
    ]
    exponents = [theta for theta in exponents if math.isfinite(theta)]
    if not exponents:  # no side can ever fire (e.g. a constant reference)
        return _LARGEST_THRESHOLD

    def excess(h: float) -> float:
        alarms = sum(_alarm_rate(theta, delta, h) for theta in exponents)
        return math.log(max(alarms, 1e-300) / target)

    if excess(0.0) <= 0:
        return 0.0
    if excess(_LARGEST_THRESHOLD) > 0:  # extremes in the reference: no threshold reaches it
        return _LARGEST_THRESHOLD
    from scipy import optimize  # here: importing the configuration stays light

    return float(optimize.brentq(excess, 0.0, _LARGEST_THRESHOLD))


def cusum_thresholds(
    values: NDArray[np.float64],
    weights: NDArray[np.float64],
    allowances: list[float],
    rate: float,
    mode: str,
) -> list[float]:
    """Thresholds of a bank of CUSUMs sharing ``rate`` false alarms per value evenly.

    >>> import numpy as np
    >>> values = np.random.default_rng(0).standard_normal(5_000)
    >>> [round(h, 1) for h in cusum_thresholds(values, np.ones(5_000), [0.25, 0.5], 2e-6, "both")]
    [25.6, 13.5]
    """
    share = rate / len(allowances)
    return [page_hinkley_threshold(values, weights, k, share, mode) for k in allowances]


def _exponent(values: NDArray[np.float64], weights: NDArray[np.float64], delta: float) -> float:
    """Root θ > 0 of ``E[exp(θ (x - mean - δ))] = 1``; inf if the steps are never positive."""
    steps = values - np.average(values, weights=weights) - delta
    if steps.max() <= 0:
        return math.inf
    log_weights = np.log(weights / weights.sum())

    def log_mgf(theta: float) -> float:
        return float(np.logaddexp.reduce(log_weights + theta * steps))

    if log_mgf(_SMALLEST_EXPONENT) >= 0:  # a step so large the root is below any use
        return _SMALLEST_EXPONENT
    high = 1.0
    while log_mgf(high) < 0:
        if high > 1e300:  # positive steps too small to ever add up
            return math.inf
        high *= 2
    from scipy import optimize

    return float(optimize.brentq(log_mgf, _SMALLEST_EXPONENT, high))


def _alarm_rate(theta: float, delta: float, h: float) -> float:
    """1 / Wald's mean run length of one CUSUM side (see above)."""
    a = theta * (h + SIEGMUND_OVERSHOOT)
    if a > 700:  # exp overflows; the rate is below 1e-300 anyway
        return 0.0
    return theta * delta / (math.expm1(a) - a)
