"""A bank of two-sided CUSUMs with calibrated thresholds, vectorised over batches."""

from __future__ import annotations

import functools
import math
from collections.abc import Callable, Iterable, Sequence
from typing import Any

import numpy as np
from numpy.typing import NDArray

from streamdrift.detectors import kernels
from streamdrift.detectors.base import ChangeDetector, DetectorState
from streamdrift.detectors.budget import cusum_thresholds
from streamdrift.detectors.config import CusumParams

__all__ = ["Cusum", "CusumState"]

_SIDES = {"up": (1.0,), "down": (-1.0,), "both": (1.0, -1.0)}
# The watched CUSUMs (see Cusum._rows): their indices into the sums, then their signs,
# allowances and thresholds as columns.
_Bank = tuple[NDArray[np.int64], NDArray[np.float64], NDArray[np.float64], NDArray[np.float64]]


class CusumState(DetectorState, frozen=True, tag="cusum"):
    params: CusumParams
    allowances: tuple[float, ...]
    thresholds: tuple[float | None, ...]  # None: not calibrated yet (infinite)
    fired: int  # the CUSUM (index into the bank) of the last detection
    n: int  # values since the last restart
    mean: float  # their mean
    sums: tuple[float, ...]  # CUSUM values: per allowance, the up side then the down side


class Cusum(ChangeDetector):
    """A bank of Page's (1954) CUSUM tests, one per allowance ``k``, each two-sided.

    Each CUSUM accumulates the deviations of the values from their running mean (since the
    last restart) minus its allowance, ``S_t = max(0, S_{t-1} + s (x_t - mean_t) - k)`` for the
    up (``s = 1``) and down (``s = -1``) side, and fires when ``S_t`` exceeds its threshold
    ``h_k`` once ``min_instances`` values have been seen; the bank fires when any of them does,
    and then restarts (every sum and the mean) with the next value. This is river's
    Page-Hinkley with ``alpha = 1`` run for several allowances at once: a CUSUM with allowance
    ``k`` is the quickest detector of a mean shift of ``2k`` at its false-alarm rate (Lorden,
    1971), so a bank of ``k`` in {0.125, 0.25, 0.5} sigma covers shifts from ~0.25 to ~1 sigma
    and beyond. The running mean makes the test self-starting: it needs no reference mean,
    whose estimation error would change the false-alarm rate of a small ``k`` by orders of
    magnitude (a 500-value reference is off by 0.045 sigma on average).

    The thresholds come from :func:`detectors.budget.cusum_thresholds` (Siegmund's
    approximation of the run length on the reference distribution), the bank's false-alarm
    budget split evenly over its CUSUMs; :meth:`calibrated` does that from reference values.

    statistic
        The value of the CUSUM that fired, in input units.
    threshold
        Its threshold ``h_k`` (the first CUSUM's before any detection).

    >>> import numpy as np
    >>> rng = np.random.default_rng(1)
    >>> reference = rng.standard_normal(2_000)
    >>> bank = Cusum.calibrated(CusumParams(), reference, np.ones(2_000), rate=1e-7)
    >>> [round(h, 1) for h in bank.thresholds]
    [61.8, 33.1, 17.4]
    >>> stream = np.concatenate([rng.standard_normal(3_000), rng.normal(0.5, 1.0, 1_000)])
    >>> bank.update_many(stream.tolist())  # doctest: +ELLIPSIS
    [(3131, 33.25...)]
    >>> bank.allowances[bank.fired], bank.threshold == bank.thresholds[1]
    (0.25, True)

    ``update_many`` returns (index, statistic) of each detection: the shift of 0.5 sigma at
    index 3000 was found 132 values later, by the CUSUM with ``k = 0.25``.
    """

    name = "cusum"
    state_type = CusumState

    def __init__(
        self,
        params: CusumParams | None = None,
        allowances: Sequence[float] | None = None,
        thresholds: Sequence[float] | None = None,
    ) -> None:
        """``allowances`` and ``thresholds`` in input units (default: ``params.allowances``;
        infinite thresholds, i.e. never firing, until calibrated)."""
        super().__init__()
        self.params = params or CusumParams()
        self.allowances = tuple(allowances if allowances is not None else self.params.allowances)
        self.thresholds = tuple(
            thresholds if thresholds is not None else (math.inf,) * len(self.allowances)
        )
        if len(self.thresholds) != len(self.allowances):
            raise ValueError("one threshold per allowance")
        self.fired = 0
        self._bank: _Bank | None = None
        self._flat: _Bank | None = None  # the bank's columns flat (compiled_bank)
        self._compiled = kernels.compiled()  # the backend active when the bank is made
        self._restart()

    @classmethod
    def calibrated(
        cls,
        params: CusumParams,
        values: NDArray[np.float64],
        weights: NDArray[np.float64],
        rate: float,
    ) -> Cusum:
        """A bank whose false alarms on the distribution of ``values`` (weighted, as the
        detector will see them) stay below ``rate`` per value."""
        allowances = list(params.allowances)
        thresholds = cusum_thresholds(values, weights, allowances, rate, params.mode)
        return cls(params, allowances, thresholds)

    @property
    def threshold(self) -> float:
        return self.thresholds[self.fired]

    def _restart(self) -> None:
        self.n = 0
        self.mean = 0.0
        self.sums = np.zeros((len(self.allowances), 2))

    def update_many(self, values: Iterable[float]) -> list[tuple[int, float]]:
        x = np.asarray(values if isinstance(values, np.ndarray) else list(values), dtype=float)
        if self._compiled:
            return self._update_compiled(x)
        hits: list[tuple[int, float]] = []
        start = 0
        self._drift_detected = False
        while start < len(x):
            found = self._scan(x[start:])
            if found is None:
                break
            index, statistic = found
            hits.append((start + index, statistic))
            self.statistic = statistic
            self.n_detections += 1
            start += index + 1
            self._drift_detected = start == len(x)
        return hits

    def _update_compiled(self, x: NDArray[np.float64]) -> list[tuple[int, float]]:
        """:meth:`update_many` by the compiled kernel (:mod:`detectors.kernels.cusum`), which
        restarts the bank after each detection itself."""
        rows, signs, allowances, thresholds = self._rows()
        flat = (rows, signs.ravel(), allowances.ravel(), thresholds.ravel())  # views of the columns
        state = np.array([float(self.n), self.mean])
        sums = self.sums.reshape(-1)  # a view: the kernel writes the sums in place
        found = _scan_kernel()(x, flat, self.params.min_instances, state, sums)
        return self.record(found, len(x), int(state[0]), float(state[1]))

    @property
    def compiled_bank(self) -> tuple[_Bank, NDArray[np.float64]] | None:
        """With the compiled backend, the watched CUSUMs as flat columns (rows, signs,
        allowances, thresholds) and a flat view of the sums, for a kernel that runs the bank
        with other steps in one call (:mod:`detectors.kernels.fused`; the sums are written in
        place, then :meth:`record` takes what it found); None with the reference backend."""
        if not self._compiled:
            return None
        if self._flat is None:
            rows, signs, allowances, thresholds = self._rows()
            self._flat = (rows, signs.ravel(), allowances.ravel(), thresholds.ravel())
        return self._flat, self.sums.reshape(-1)  # a view: the kernel writes the sums in place

    def record(
        self, found: list[tuple[int, float, int]], length: int, n: int, mean: float
    ) -> list[tuple[int, float]]:
        """Take the detections (index, statistic, row) of a batch of ``length`` values the
        compiled bank ran, and its state after them (values since the last restart, their
        mean); returns (index, statistic) of each detection."""
        self.n, self.mean = n, mean
        self._drift_detected = bool(found) and found[-1][0] == length - 1
        if found:
            self.statistic = found[-1][1]
            self.fired = found[-1][2] // 2
            self.n_detections += len(found)
        return [(index, statistic) for index, statistic, _ in found]

    def _update(self, x: float) -> float | None:
        found = self._scan(np.array([x], dtype=float))
        return None if found is None else found[1]

    def _scan(self, x: NDArray[np.float64]) -> tuple[int, float] | None:
        """Run the bank over ``x``; (index, statistic) of the first detection, after which the
        bank has restarted and the values after ``index`` are left unread."""
        n = self.n + np.arange(1, len(x) + 1)
        means = self.mean + np.cumsum(x - self.mean) / n  # including the value itself
        deviations = x - means
        eligible = n >= self.params.min_instances
        # One row per (allowance, side) watched, the whole bank at once:
        # S_t = max(0, S_{t-1} + step_t) = C_t - min(-S_0, C_1, ..., C_t)
        rows, signs, allowances, thresholds = self._rows()
        climbed = np.cumsum(signs * deviations - allowances, axis=1)
        start = -self.sums.ravel()[rows][:, None]
        s = climbed - np.minimum(np.minimum.accumulate(climbed, axis=1), start)
        over = (s > thresholds) & eligible
        fired = over.any(axis=1)
        sums = np.zeros(self.sums.size)
        if not fired.any():
            sums[rows] = s[:, -1]
            self.n, self.mean, self.sums = (
                int(n[-1]),
                float(means[-1]),
                sums.reshape(self.sums.shape),
            )
            return None
        firsts = np.where(fired, over.argmax(axis=1), len(x))
        row = int(firsts.argmin())  # the earliest; on a tie the smallest allowance, up first
        index = int(firsts[row])
        statistic = float(s[row, index])
        self.fired = int(rows[row]) // 2
        self._restart()
        return index, statistic

    def _rows(self) -> _Bank:
        """Indices into ``sums.ravel()`` (allowance * 2 + side) of the watched CUSUMs, with
        their signs, allowances and thresholds as columns."""
        if self._bank is None:
            watched = [
                (j * 2 + side, sign, allowance, threshold)
                for j, (allowance, threshold) in enumerate(
                    zip(self.allowances, self.thresholds, strict=True)
                )
                for side, sign in enumerate((1.0, -1.0))
                if sign in _SIDES[self.params.mode]
            ]
            rows, signs, allowances, thresholds = zip(*watched, strict=True)
            sign_column, allowance_column, threshold_column = (
                np.array(column)[:, None] for column in (signs, allowances, thresholds)
            )
            self._bank = (np.array(rows), sign_column, allowance_column, threshold_column)
        return self._bank

    def _describe(self) -> dict[str, Any]:
        # None: not calibrated yet
        thresholds = [h if math.isfinite(h) else None for h in self.thresholds]
        return {
            "threshold": thresholds[self.fired],
            "n": self.n,
            "estimation": self.mean,
            "score": float(self.sums.max()),
            "allowances": list(self.allowances),
            "thresholds": thresholds,
        }

    def to_state(self) -> CusumState:
        return CusumState(
            n_detections=self.n_detections,
            statistic=self.statistic,
            drift_detected=self.drift_detected,
            params=self.params,
            allowances=self.allowances,
            thresholds=tuple(h if math.isfinite(h) else None for h in self.thresholds),
            fired=self.fired,
            n=self.n,
            mean=self.mean,
            sums=tuple(self.sums.ravel().tolist()),
        )

    @classmethod
    def from_state(cls, state: CusumState) -> Cusum:
        k = len(state.allowances)
        shapes = (len(state.params.allowances), len(state.sums), state.fired)
        if shapes[0] != k or shapes[1] != 2 * k or not 0 <= shapes[2] < k:
            raise ValueError("CUSUM state does not match its allowances")
        if state.n < 0 or any(not s >= 0 for s in state.sums):
            raise ValueError("CUSUM state has negative counts or sums")
        if not all(math.isfinite(s) for s in (*state.sums, state.mean)):
            raise ValueError("CUSUM state is not finite")
        thresholds = [math.inf if h is None else h for h in state.thresholds]
        detector = cls(state.params, state.allowances, thresholds)
        detector.fired, detector.n, detector.mean = state.fired, state.n, state.mean
        detector.sums = np.array(state.sums, dtype=float).reshape(k, 2)
        detector._restore_common(state)
        return detector


@functools.cache
def _scan_kernel() -> Callable[..., list[tuple[int, float, int]]]:
    """The compiled bank, imported on first use (the extension need not be
    installed for the reference backend; an import statement per call would cost ~1 µs)."""
    from streamdrift.detectors.kernels.cusum import scan

    return scan
