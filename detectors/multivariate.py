"""Multivariate drift of a model's numeric features: PCA reconstruction error, computed online.

The method is NannyML's *data reconstruction with PCA* (``DataReconstructionDriftCalculator``),
made streaming. In batch, NannyML imputes missing values with the reference mean, standardises
the features, fits a PCA on the reference keeping the components that explain 65% of the
variance, and reports each chunk's mean reconstruction error: the distance between a row and
its projection onto the components mapped back to feature space. A change in the features'
correlation structure moves rows off the reference's principal subspace and raises the error,
even when no feature's own distribution changes, which no univariate test can see.

Here:

reference
    :class:`CoMoments`, the mean vector and co-moment (scatter) matrix of the first
    ``reference_events`` rows, folded in batch by batch with Chan et al.'s parallel formula, or
    restored from a stored :class:`MultivariateProfile` (e.g. of the training data). Moments
    of separate batches or partitions merge exactly, and the memory is O(d²) whatever the
    number of rows.
missing values
    NaN marks a missing value. As in NannyML, it is imputed with the reference mean of its
    feature, both in the reference (the moments are those of the mean-imputed reference: see
    :class:`CoMoments`) and in later rows, where a missing value standardises to 0.
fit
    :class:`PCAReconstruction`: features standardised by the reference std (a feature constant
    in the reference keeps its own units), eigendecomposition of the correlation matrix, and
    the fewest components whose explained variance exceeds ``variance`` (0.65, as NannyML).
    Standardised values are clipped to ``+-clip_sigma`` before the projection, as in the
    univariate monitors: unclipped, one outlier of a lognormal feature lifts a window's mean
    error past the effect floor, and 20 stationary streams of 250k rows of 10 correlated
    lognormal features fired 2.9 times the target rate (0.83 times clipped at 4 sigma).
calibration
    The error of the rows a PCA was fitted on is biased low (the components are fitted to them;
    NannyML derives its thresholds from those in-sample reference chunks). The next
    ``calibration_events`` rows, which the fit has not seen, give the reference mean and std of
    the error instead. They must be representative: with a stored baseline, they are the
    first rows the monitor sees.
windows
    Tumbling windows of ``events`` rows. A window *drifts* when both gates pass, as in
    :mod:`detectors.windows`: the one-sided two-sample z-test of its mean error against the
    calibration's (``z = (mean - reference mean) / (reference std * sqrt(1/events +
    1/calibration rows))``, normal by the central limit theorem) gives a p-value below
    ``alpha``, and the mean error is at least ``effect_floor`` (10%) above the reference's. It
    is *quiet* when the p-value is at least ``alpha`` or the increase is below half the floor;
    :class:`~detectors.lifecycle.Lifecycle` turns that into one ``detected`` and one
    ``resolved`` per change episode, with the same cool-down.
false alarms
    ``alpha`` comes from ``target_false_alarm_interval`` as for the other monitors'
    window tests (:func:`detectors.budget.window_alpha`): one test every ``events`` rows gets
    ``alpha = events / interval`` (5e-4 for windows of 500 and one false alarm per 10^6 rows).
    The calibration's own sampling error is in the test's standard error, so the p-values
    hold on average over references: on 10 correlated normal features (40 references x 2000
    windows) the p-value gate fired 0.96, 1.01 and 1.03 times alpha at 0.05, 5e-3 and 5e-4,
    the error's right skew (0.25) leaving the normal approximation close. On such features
    the effect floor is out of the noise's reach, so alerts are much rarer still.

Cost: a row costs one d x d matrix product (its residual), batches being vectorised: 0.17 µs
per row for 20 features and 0.6 µs for 100, in batches of 1000. The state is three d x d
matrices and a few vectors (11 KB at d = 20, 240 KB at d = 100) and serialises to msgpack
(:meth:`PCAReconstructionMonitor.to_bytes`).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from statistics import NormalDist
from typing import Annotated, Any, Self

import msgspec
import numpy as np
from numpy.typing import NDArray

from streamdrift.detectors.config import MultivariateParams
from streamdrift.detectors.lifecycle import Lifecycle, LifecycleState
from streamdrift.detectors.monitor import (
    LIBRARIES,
    Detection,
    Monitor,
    StateError,
    check_state_version,
)
from streamdrift.detectors.stats import FLOAT_MAX, LARGE, RunningStats, RunningStatsState, saturate
from streamdrift.detectors.windows import severity

__all__ = [
    "STATE_VERSION",
    "CoMoments",
    "MultivariateParams",
    "MultivariateProfile",
    "PCAReconstruction",
    "PCAReconstructionMonitor",
]

KIND = "pca_reconstruction"
STATE_VERSION = 1
TOP_CONTRIBUTORS = 5
# Relative increase of the mean error: +25% medium, +50% high (the floor, 10%, is low).
ERROR_SEVERITY_CUTS = ((0.5, "high"), (0.25, "medium"))

_Count = Annotated[int, msgspec.Meta(ge=0)]
_FLOAT = np.dtype("<f8")
_INT = np.dtype("<i8")


class MultivariateProfile(msgspec.Struct, frozen=True):
    """Stored reference moments of a model's features (see :class:`CoMoments`).

    ``count``, ``mean`` and ``comoment`` are d x d matrices, row-major, as little-endian int64
    and float64 bytes; ``rows`` counts the rows folded in, missing values included.
    """

    features: list[str]
    rows: _Count
    count: bytes
    mean: bytes
    comoment: bytes


class CoMoments:
    """Mean vector and co-moment matrix of rows with missing values, mergeable.

    For each pair of features (j, k) it keeps the rows in which both are present:
    their number ``count[j, k]``, the mean of feature j over them ``mean[j, k]``, and the sum of
    the products of both features' deviations from those means ``comoment[j, k]``. Batches and
    other instances fold in with Chan et al.'s pairwise update, elementwise, so merging the
    moments of several partitions equals one pass over all their rows up to rounding, without
    the cancellation of raw sums of squares. The diagonals are each feature's own count, mean
    and sum of squared deviations; without missing values every row of ``mean`` is the mean
    vector and ``comoment`` the usual scatter matrix.

    Imputing the missing values with the feature means (NannyML's ``SimpleImputer``) adds no
    deviation, so :meth:`covariance` gives the covariance of the mean-imputed rows exactly.

    >>> moments = CoMoments.of_rows(np.array([[1.0, 2.0], [3.0, np.nan]]))
    >>> other = CoMoments.of_rows(np.array([[5.0, 8.0]]))
    >>> moments.merge(other)
    >>> moments.rows, moments.means.tolist()
    (3, [3.0, 5.0])
    >>> moments.covariance().tolist()  # np.cov of [[1, 2], [3, 5], [5, 8]]
    [[4.0, 6.0], [6.0, 9.0]]
    """

    def __init__(self, d: int) -> None:
        self.rows = 0
        self.count = np.zeros((d, d), dtype=np.int64)
        self.mean = np.zeros((d, d))
        self.comoment = np.zeros((d, d))

    @property
    def d(self) -> int:
        return len(self.count)

    @property
    def means(self) -> NDArray[np.float64]:
        """Each feature's mean over the rows in which it is present (0.0 if never)."""
        return np.diagonal(self.mean).copy()

    @classmethod
    def of_rows(cls, rows: NDArray[np.float64]) -> CoMoments:
        """The moments of a batch (n x d, NaN missing), computed with three matrix products.

        Magnitudes beyond ``LARGE`` are summarised scaled by a power of two and scaled back,
        the co-moments saturating at the float range (their products would overflow)."""
        # fmin/fmax skip NaN without warning about an all-missing batch.
        low, high = float(np.fmin.reduce(rows, axis=None)), float(np.fmax.reduce(rows, axis=None))
        if not (-LARGE <= low and high <= LARGE) and math.isfinite(max(-low, high)):
            exponent = math.frexp(max(-low, high))[1]
            moments = cls._of_rows(np.ldexp(rows, -exponent))
            moments.mean = np.ldexp(moments.mean, exponent)
            with np.errstate(over="ignore"):
                moments.comoment = np.ldexp(moments.comoment, 2 * exponent)
            moments.comoment = np.clip(moments.comoment, -FLOAT_MAX, FLOAT_MAX)
            return moments
        return cls._of_rows(rows)

    @classmethod
    def _of_rows(cls, rows: NDArray[np.float64]) -> CoMoments:
        observed = ~np.isnan(rows)
        present = observed.sum(axis=0)
        # Centre by the batch means first: the products then hold no large cancelling terms.
        shift = np.where(observed, rows, 0.0).sum(axis=0) / np.maximum(present, 1)
        centred = np.where(observed, rows - shift, 0.0)
        indicator = observed.astype(np.float64)
        moments = cls(rows.shape[1])
        moments.rows = len(rows)
        moments.count = (indicator.T @ indicator).round().astype(np.int64)
        sums = centred.T @ indicator  # sums[j, k]: feature j over the rows where k is present
        mean = np.divide(sums, moments.count, out=np.zeros_like(sums), where=moments.count > 0)
        moments.comoment = centred.T @ centred - moments.count * mean * mean.T
        moments.mean = mean + shift[:, None]
        return moments

    def update(self, rows: NDArray[np.float64]) -> None:
        """Fold in a batch of rows (n x d, NaN missing)."""
        if len(rows):
            self.merge(CoMoments.of_rows(rows))

    def merge(self, other: CoMoments) -> None:
        """Fold in the moments of rows seen elsewhere (another batch or partition)."""
        if other.d != self.d:
            raise ValueError(f"cannot merge moments of {other.d} features into {self.d}")
        total = self.count + other.count
        share = np.divide(other.count, total, out=np.zeros(total.shape), where=total > 0)
        with np.errstate(over="ignore", invalid="ignore"):
            delta = other.mean - self.mean
            comoment = self.comoment + other.comoment + delta * delta.T * self.count * share
            mean = self.mean + delta * share
        if not (np.isfinite(comoment).all() and np.isfinite(mean).all()):
            comoment, mean = self._merged_saturated(other, share)
        self.comoment, self.mean = comoment, mean
        self.count = total
        self.rows += other.rows

    def _merged_saturated(
        self, other: CoMoments, share: NDArray[np.float64]
    ) -> tuple[NDArray[np.float64], NDArray[np.float64]]:
        """:meth:`merge` for moments beyond the float range: means as weighted averages of
        finite terms, co-moments saturated (an off-diagonal sum of opposite infinities, which
        has no meaningful value, becomes 0; the diagonal only adds non-negative terms)."""
        with np.errstate(over="ignore", invalid="ignore"):
            mean = self.mean * (1 - share) + other.mean * share
            half = other.mean / 2 - self.mean / 2  # finite, unlike the difference
            between = np.where(self.count > 0, 4 * half * half.T * self.count * share, 0.0)
            comoment = self.comoment + other.comoment + between
        return _saturated(comoment), _saturated(mean)

    def covariance(self) -> NDArray[np.float64]:
        """Sample covariance (``ddof=1``) of the rows with missing values imputed by the means
        (saturated at the float range)."""
        with np.errstate(over="ignore", invalid="ignore"):
            offset = self.mean - self.means[:, None]  # pair means' distance from the feature means
            scatter = self.comoment + self.count * offset * offset.T
        return _saturated(scatter) / max(self.rows - 1, 1)

    def profile(self, features: Sequence[str]) -> MultivariateProfile:
        """The moments, to store (e.g. in Redis) and restore with :meth:`from_profile`."""
        if len(features) != self.d:
            raise ValueError(f"{len(features)} feature names for {self.d} features")
        return MultivariateProfile(
            list(features),
            self.rows,
            self.count.astype(_INT).tobytes(),
            self.mean.astype(_FLOAT).tobytes(),
            self.comoment.astype(_FLOAT).tobytes(),
        )

    @classmethod
    def from_profile(cls, profile: MultivariateProfile) -> CoMoments:
        """Restore stored moments; ``ValueError`` if they are inconsistent."""
        d = len(profile.features)
        moments = cls(d)
        moments.rows = profile.rows
        try:
            moments.count = np.frombuffer(profile.count, _INT).reshape(d, d).astype(np.int64)
            moments.mean = np.frombuffer(profile.mean, _FLOAT).reshape(d, d).astype(np.float64)
            moments.comoment = (
                np.frombuffer(profile.comoment, _FLOAT).reshape(d, d).astype(np.float64)
            )
        except ValueError:
            raise ValueError(f"profile matrices are not {d} x {d}") from None
        consistent = (
            d >= 1
            and np.all((moments.count >= 0) & (moments.count <= profile.rows))
            and np.all(np.isfinite(moments.mean))
            and np.all(np.isfinite(moments.comoment))
            and np.all(np.diagonal(moments.comoment) >= 0)
        )
        if not consistent:
            raise ValueError("profile moments are inconsistent (counts, non-finite values)")
        return moments


def _saturated(values: NDArray[np.float64]) -> NDArray[np.float64]:
    return np.nan_to_num(values, nan=0.0, posinf=FLOAT_MAX, neginf=-FLOAT_MAX)


class DegenerateReference(ValueError):
    """Reference moments without any variance (every feature constant or always missing)."""


class PCAReconstruction:
    """PCA of standardised features fitted from reference moments, and reconstruction errors.

    Features are standardised by the reference mean and std; the components are the
    eigenvectors of the resulting correlation matrix with the largest eigenvalues, the fewest
    whose share of the variance exceeds ``variance``. A row's residual is its standardised
    form minus its projection onto the components (``z (I - W Wᵀ)``) and its error the
    residual's Euclidean norm. Missing values are imputed with the reference mean: 0 once
    standardised. Standardised values are clipped to ``+-clip_sigma`` (default: not at all) so
    that one outlier cannot dominate the errors of a window, as the univariate monitors do.

    >>> rng = np.random.default_rng(0)
    >>> shared = rng.normal(size=(2000, 1))
    >>> rows = shared + 0.3 * rng.normal(size=(2000, 3))  # three strongly correlated features
    >>> pca = PCAReconstruction(CoMoments.of_rows(rows))
    >>> pca.components.shape[1], round(pca.explained_variance, 2)
    (1, 0.95)
    >>> pca.errors(np.array([[1.0, 1.0, 1.0], [1.0, -1.0, 1.0], [np.nan, 0.0, 0.0]])).round(2)
    array([0.01, 1.55, 0.02])
    """

    def __init__(
        self, moments: CoMoments, variance: float = 0.65, clip_sigma: float = math.inf
    ) -> None:
        if moments.rows < 2 or moments.d < 2:
            raise ValueError("a PCA needs at least two rows of at least two features")
        covariance = moments.covariance()
        self.mean = moments.means
        self.clip_sigma = clip_sigma
        std = np.sqrt(np.diagonal(covariance))
        # A constant feature keeps its own units.
        self.scale: NDArray[np.float64] = np.where(std > 0, std, 1.0)
        with np.errstate(over="ignore", invalid="ignore"):  # saturated moments: see CoMoments
            correlation = _saturated(covariance / np.outer(self.scale, self.scale))
        eigenvalues, vectors = np.linalg.eigh(correlation)
        eigenvalues = np.clip(eigenvalues[::-1], 0.0, None)
        if not eigenvalues.sum():
            raise DegenerateReference("the reference has no variance to fit components to")
        ratios = eigenvalues / eigenvalues.sum()
        # As scikit-learn's PCA(n_components=variance), which NannyML uses.
        k = min(int(np.searchsorted(np.cumsum(ratios), variance, side="right")) + 1, moments.d)
        self.components: NDArray[np.float64] = vectors[:, ::-1][:, :k]
        self.explained_variance_ratio: NDArray[np.float64] = ratios[:k]
        self._residual_operator: NDArray[np.float64] = (
            np.eye(moments.d) - self.components @ self.components.T
        )

    @property
    def explained_variance(self) -> float:
        """Share of the reference variance the kept components explain."""
        return float(self.explained_variance_ratio.sum())

    def standardise(self, rows: NDArray[np.float64]) -> NDArray[np.float64]:
        """Rows (n x d) standardised by the reference and clipped, missing values imputed (0)."""
        # Any finite value: beyond LARGE sigma (or the float range) it is clipped there.
        bound = min(self.clip_sigma, LARGE)
        with np.errstate(over="ignore"):
            standardised = np.clip((rows - self.mean) / self.scale, -bound, bound)
        return np.nan_to_num(standardised, nan=0.0)

    def residuals(self, rows: NDArray[np.float64]) -> NDArray[np.float64]:
        """Standardised rows minus their reconstruction from the components (n x d)."""
        return self.standardise(rows) @ self._residual_operator

    def errors(self, rows: NDArray[np.float64]) -> NDArray[np.float64]:
        """Reconstruction error of each row: the norm of its residual."""
        errors: NDArray[np.float64] = np.linalg.norm(self.residuals(rows), axis=1)
        return errors


class _PeriodState(msgspec.Struct, frozen=True):
    errors: RunningStatsState
    squared_residuals: list[float]
    missing: _Count


class _ErrorPeriod:
    """Reconstruction errors of the calibration period or of one window, with each feature's
    sum of squared residuals and the number of missing values."""

    def __init__(self, d: int) -> None:
        self.errors = RunningStats()
        self.squared_residuals = np.zeros(d)
        self.missing = 0

    @property
    def rows(self) -> int:
        return self.errors.count

    def add(
        self, residuals: NDArray[np.float64], errors: NDArray[np.float64], missing: int
    ) -> None:
        self.errors.update_many(errors)
        self.squared_residuals += np.square(residuals).sum(axis=0)
        self.missing += missing

    def shares(self) -> NDArray[np.float64]:
        """Each feature's share of the squared residual."""
        total = self.squared_residuals.sum()
        return self.squared_residuals / total if total else self.squared_residuals

    def summary(self) -> dict[str, Any]:
        d = len(self.squared_residuals)
        return {
            "count": self.rows,
            "mean_error": self.errors.mean if self.rows else None,
            "std_error": self.errors.std if self.rows else None,
            "missing_rate": self.missing / (self.rows * d) if self.rows else 0.0,
        }

    def to_state(self) -> _PeriodState:
        return _PeriodState(self.errors.to_state(), self.squared_residuals.tolist(), self.missing)

    @classmethod
    def from_state(cls, state: _PeriodState, d: int) -> _ErrorPeriod:
        if len(state.squared_residuals) != d:
            raise ValueError(f"{len(state.squared_residuals)} residual sums for {d} features")
        period = cls(d)
        period.errors = RunningStats.from_state(state.errors)
        period.squared_residuals = np.array(state.squared_residuals, dtype=np.float64)
        period.missing = state.missing
        return period


@dataclass(frozen=True)
class _Test:
    """The test of one window against the calibration period (see the module docstring)."""

    statistic: float
    p_value: float
    effect_size: float
    error_threshold: float
    drifted: bool
    quiet: bool


class _MultivariateState(msgspec.Struct, frozen=True):
    """The monitor's state and its envelope in one: ``version`` (:data:`STATE_VERSION`) first,
    ``kind``, ``river`` and ``numpy`` last (as in :mod:`detectors.monitor`'s envelope; states
    written before them have none, and were told from the others by their version)."""

    version: int
    params: MultivariateParams
    reference: MultivariateProfile
    fitted: bool
    rows: _Count
    missing: _Count
    calibration: _PeriodState
    window: _PeriodState
    window_from: int | None
    evaluated: _Count
    drifted: _Count
    score: float
    lifecycle: LifecycleState
    kind: str | None = None
    river: str | None = None
    numpy: str | None = None


class PCAReconstructionMonitor(Monitor):
    """Multivariate drift monitor of a model's numeric features (see the module docstring).

    Rows go through three phases: the reference (skipped with :meth:`from_profile`), the
    calibration, then tumbling windows whose lifecycle changes :meth:`update` returns.

    >>> rng = np.random.default_rng(11)
    >>> def rows(n, sign=1.0):  # four features driven by one factor: pairwise correlation 0.9
    ...     shared = rng.normal(size=(n, 1))
    ...     x = np.sqrt(0.9) * shared + np.sqrt(0.1) * rng.normal(size=(n, 4))
    ...     return x * [1.0, 1.0, 1.0, sign]  # sign -1: same marginals, d's correlations flip
    >>> monitor = PCAReconstructionMonitor(["a", "b", "c", "d"])
    >>> stream = np.vstack([rows(12_000), rows(2_000, sign=-1.0), rows(3_000)])
    >>> found = monitor.update(stream, np.arange(len(stream)))
    >>> [(d.event, d.position, d.severity) for d in found]
    [('detected', 12499, 'high'), ('resolved', 15499, 'low')]
    >>> found[0].details["components"], found[0].details["top_contributors"][0]["feature"]
    (1, 'd')
    """

    kind = KIND
    untagged_versions = (STATE_VERSION,)

    def __init__(self, features: Sequence[str], params: MultivariateParams | None = None) -> None:
        if len(features) < 2 or len(set(features)) != len(features):
            raise ValueError("a multivariate monitor needs at least two distinct feature names")
        super().__init__()
        self.features = list(features)
        self.params = params or MultivariateParams()
        self.reference = CoMoments(len(features))
        self.pca: PCAReconstruction | None = None
        self.rows = 0  # rows seen (self.missing: missing values seen)
        self.calibration = _ErrorPeriod(len(features))
        self.window = _ErrorPeriod(len(features))
        self.window_from: int | None = None  # tag of the open window's first row
        self.evaluated = 0  # windows tested
        self.drifted = 0  # windows in which both gates passed
        self.score = 0.0  # relative increase of the last window's mean error
        self.lifecycle = Lifecycle(
            self.params.cooldown_events, self.params.resolve_windows, True, self.params.cooldown_s
        )

    @classmethod
    def from_profile(
        cls, profile: MultivariateProfile, params: MultivariateParams | None = None
    ) -> Self:
        """A monitor whose reference is a stored baseline; it starts with the calibration."""
        monitor = cls(profile.features, params)
        monitor.reference = CoMoments.from_profile(profile)
        monitor.pca = monitor._pca()
        return monitor

    def profile(self) -> MultivariateProfile:
        """The reference moments (so far, during the reference period)."""
        return self.reference.profile(self.features)

    @property
    def count(self) -> int:
        return self.rows

    @property
    def calibrated(self) -> bool:
        return self.calibration.rows >= self.params.calibration_events

    def update(
        self,
        rows: NDArray[np.float64],
        positions: NDArray[np.integer[Any]],
        times: NDArray[np.float64] | None = None,
    ) -> list[Detection]:
        """Add ``rows`` (n x d, features in the order given, NaN missing) in stream order,
        tagged by ``positions`` (e.g. Kafka offsets), with their event times if known (the
        windows count rows; the times serve ``cooldown_s`` only).

        Returns the lifecycle changes: the detection that opens an episode and its resolution.
        """
        rows = np.asarray(rows, dtype=np.float64)
        positions = np.asarray(positions, dtype=np.int64)
        if rows.ndim != 2 or rows.shape[1] != len(self.features):
            raise ValueError(f"rows must be an n x {len(self.features)} array")
        if positions.shape != (len(rows),):
            raise ValueError("positions must be a 1-d array with one tag per row")
        if np.isinf(rows).any():
            raise ValueError("rows hold infinite values")
        missing = np.isnan(rows).sum(axis=1)
        self.missing += int(missing.sum())
        start = 0
        while self.pca is None and start < len(rows):
            taken = min(len(rows) - start, self.params.reference_events - self.reference.rows)
            self.reference.update(rows[start : start + taken])
            self.rows += taken
            start += taken
            if self.reference.rows >= self.params.reference_events:
                self._fit()
        if start == len(rows):
            return []
        later = None if times is None else np.asarray(times, dtype=np.float64)[start:]
        return self._watch(rows[start:], missing[start:], positions[start:], later)

    def _pca(self) -> PCAReconstruction:
        return PCAReconstruction(self.reference, self.params.variance, self.params.clip_sigma)

    def _fit(self) -> None:
        """Fit the PCA on the reference; a reference without variance teaches nothing (the
        features were constant or missing): it is dropped and collected afresh."""
        try:
            self.pca = self._pca()
        except DegenerateReference:
            self.reference = CoMoments(len(self.features))

    def _watch(
        self,
        rows: NDArray[np.float64],
        missing: NDArray[np.int64],
        positions: NDArray[np.integer[Any]],
        times: NDArray[np.float64] | None = None,
    ) -> list[Detection]:
        """Calibrate on, then test, rows after the fit."""
        assert self.pca is not None
        residuals = self.pca.residuals(rows)
        errors = np.linalg.norm(residuals, axis=1)
        detections = []
        start = 0
        while start < len(rows):
            if self.calibrated:
                period, room = self.window, self.params.events - self.window.rows
                if not self.window.rows:
                    self.window_from = int(positions[start])
            else:
                period = self.calibration
                room = self.params.calibration_events - self.calibration.rows
            stop = min(len(rows), start + room)
            period.add(residuals[start:stop], errors[start:stop], int(missing[start:stop].sum()))
            self.rows += stop - start
            if period is self.window and self.window.rows >= self.params.events:
                at = None if times is None else float(times[stop - 1])
                found = self._judge(int(positions[stop - 1]), at)
                if found is not None:
                    detections.append(found)
            start = stop
        return detections

    def _test(self) -> _Test:
        reference, current = self.calibration.errors, self.window.errors
        se = reference.std * math.sqrt(1 / current.count + 1 / reference.count)
        excess = current.mean - reference.mean
        statistic = excess / se if se else math.copysign(math.inf, excess) if excess else 0.0
        p_value = 0.5 * math.erfc(statistic / math.sqrt(2))
        # Saturated: a detection's numbers stay finite (JSON, checkpoints) even for a window
        # against a calibration without spread.
        statistic = saturate(statistic)
        effect = saturate(excess / reference.mean) if reference.mean else 0.0
        alpha, floor = self.params.alpha, self.params.effect_floor
        critical = NormalDist().inv_cdf(1 - alpha) * se
        return _Test(
            statistic,
            p_value,
            effect,
            error_threshold=saturate(reference.mean + max(critical, floor * reference.mean)),
            drifted=p_value < alpha and effect >= floor,
            quiet=p_value >= alpha or effect < floor / 2,
        )

    def _judge(self, position: int, at: float | None = None) -> Detection | None:
        """Test the closed window (whose last row has the event time ``at``, if known), turn
        the result into a lifecycle change, start a window."""
        test = self._test()
        self.evaluated += 1
        self.drifted += test.drifted
        self.score = test.effect_size
        found = None
        if self.lifecycle.observe(test.quiet):
            opened = {"opened_by": self.lifecycle.opened_by, "opened_at": self.lifecycle.opened_at}
            found = self._detection(test, position, "resolved", opened)
        elif test.drifted and self.lifecycle.fire(self.rows, KIND, position, at):
            found = self._detection(test, position, "detected", {})
        self.window = _ErrorPeriod(len(self.features))
        self.window_from = None
        return found

    def _detection(
        self, test: _Test, position: int, event: str, extra: dict[str, Any]
    ) -> Detection:
        assert self.pca is not None and self.window_from is not None
        return Detection(
            detector=KIND,
            statistic=test.statistic,
            threshold=self.params.alpha,
            severity=severity(test.effect_size, ERROR_SEVERITY_CUTS),
            effect_size=test.effect_size,
            position=position,
            evidence_from=self.window_from,
            events_seen=self.rows,
            reference=self.calibration.summary(),
            current=self.window.summary(),
            event=event,
            test="z",
            p_value=test.p_value,
            details={
                "alpha": self.params.alpha,
                "window_events": self.params.events,
                "error_threshold": test.error_threshold,
                "effect": "relative_mean_error_increase",
                "effect_floor": self.params.effect_floor,
                "components": int(self.pca.components.shape[1]),
                "explained_variance": self.pca.explained_variance,
                "top_contributors": self._top_contributors(),
                **extra,
            },
        )

    def _top_contributors(self) -> list[dict[str, Any]]:
        """The features whose mean squared residual grew most, with their shares of it."""
        current, reference = self.window, self.calibration
        growth = current.squared_residuals / current.rows - (
            reference.squared_residuals / reference.rows
        )
        shares, reference_shares = current.shares(), reference.shares()
        return [
            {
                "feature": self.features[j],
                "share": float(shares[j]),
                "reference_share": float(reference_shares[j]),
            }
            for j in np.argsort(-growth, kind="stable")[:TOP_CONTRIBUTORS]
        ]

    def drift_score(self) -> float:
        """The last window's relative rise of the mean reconstruction error (0.0 before one)."""
        return self.score

    def false_alarms(self) -> dict[str, Any]:
        """The target next to the counts to measure it: on a stationary stream ``firings /
        evaluations`` should stay below ``rate``, the false alarms per window configured."""
        return {
            "target_interval": self.params.target_false_alarm_interval,
            "detectors": {
                KIND: {
                    "evaluations": self.evaluated,
                    "firings": self.drifted,
                    "rate": self.params.alpha,
                }
            },
        }

    def summary(self) -> dict[str, Any]:
        """JSON-able status of the monitor."""
        pca = self.pca
        return {
            "kind": KIND,
            "features": list(self.features),
            "count": self.rows,
            "missing": self.missing,
            "reference_remaining": (
                max(self.params.reference_events - self.reference.rows, 0) if pca is None else 0
            ),
            "calibration_remaining": max(self.params.calibration_events - self.calibration.rows, 0),
            "pca": None
            if pca is None
            else {
                "reference_rows": self.reference.rows,
                "components": int(pca.components.shape[1]),
                "explained_variance": pca.explained_variance,
            },
            "reference": self.calibration.summary() if self.calibrated else None,
            "drift_score": self.score,
            "episodes": self.lifecycle.episodes,
            "suppressed": self.lifecycle.suppressed,
            "resolved": self.lifecycle.resolved,
            "episode_open": self.lifecycle.is_open,
            "windows": {
                "evaluated": self.evaluated,
                "drifted": self.drifted,
                "alpha": self.params.alpha,
            },
            "false_alarms": self.false_alarms(),
        }

    @classmethod
    def _merged_summary(cls, monitors: Sequence[Self]) -> dict[str, Any]:
        # Each partition fits its own PCA on its own rows: their numbers do not merge.
        summaries = [monitor.summary() for monitor in monitors]
        return {
            "kind": cls.kind,
            "count": sum(summary["count"] for summary in summaries),
            "missing": sum(summary["missing"] for summary in summaries),
            "episodes": sum(summary["episodes"] for summary in summaries),
            "drift_score": max(summary["drift_score"] for summary in summaries),
            "partitions": summaries,
        }

    def _to_envelope(self) -> _MultivariateState:
        return _MultivariateState(
            version=STATE_VERSION,
            params=self.params,
            reference=self.profile(),
            fitted=self.pca is not None,
            rows=self.rows,
            missing=self.missing,
            calibration=self.calibration.to_state(),
            window=self.window.to_state(),
            window_from=self.window_from,
            evaluated=self.evaluated,
            drifted=self.drifted,
            score=self.score,
            lifecycle=self.lifecycle.to_state(),
            kind=self.kind,
            river=LIBRARIES.river,
            numpy=LIBRARIES.numpy,
        )

    @classmethod
    def _read(cls, data: bytes, version: int) -> Self:
        check_state_version(data, STATE_VERSION, "multivariate")
        try:
            state = _DECODER.decode(data)
            if state.kind not in (None, KIND):
                raise ValueError(f"the envelope says {state.kind!r}, not {KIND!r}")
            monitor = cls(state.reference.features, state.params)
            d = len(monitor.features)
            monitor.reference = CoMoments.from_profile(state.reference)
            if state.fitted:
                monitor.pca = monitor._pca()
            monitor.rows, monitor.missing = state.rows, state.missing
            monitor.calibration = _ErrorPeriod.from_state(state.calibration, d)
            monitor.window = _ErrorPeriod.from_state(state.window, d)
            monitor.window_from = state.window_from
            monitor.evaluated, monitor.drifted = state.evaluated, state.drifted
            monitor.score = state.score
            monitor.lifecycle = Lifecycle.from_state(
                state.lifecycle,
                monitor.params.cooldown_events,
                monitor.params.resolve_windows,
                True,
                monitor.params.cooldown_s,
            )
        except Exception as exc:
            # Anything at all: a state that cannot be restored must not stop the worker.
            raise StateError(f"corrupt multivariate state ({exc})") from None
        monitor.restored_from = {"format": version, "river": state.river, "numpy": state.numpy}
        return monitor


_ENCODER = msgspec.msgpack.Encoder()
_DECODER = msgspec.msgpack.Decoder(_MultivariateState)
