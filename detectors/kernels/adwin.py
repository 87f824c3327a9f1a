"""ADWIN over a batch: river's ``AdaptiveWindowing`` (its Rust core, 0.26) line for line, compiled.

The window lives in numpy arrays (:class:`AdwinWindow`) and serialises to exactly the bytes
river's own ``__getstate__`` gives (bincode of the Rust struct and its constructor arguments), so
a checkpoint written by either backend restores in the other, and an ADWIN state written before
the kernels existed restores unchanged.

Layout of the arrays
    ``params``  float64[5]: delta, clock, max_buckets, min_window_length, grace_period
    ``sums``    float64[4]: total, variance, width, total_width
    ``counts``  int64[6]: n_buckets, max_n_buckets, tick, n_detections, levels, drift flag
    ``totals``, ``variances``  float64[LEVELS, max_buckets + 1]: per level of buckets holding
    2**level values each, the buckets' totals and variances
    ``used``    int64[LEVELS]: buckets in use per level
"""

from __future__ import annotations

import struct

import numpy as np
from numpy.typing import NDArray
from streamdrift_kernels import adwin_update_batch as _update_batch  # native/src/adwin.rs

from streamdrift.detectors.config import AdwinParams

__all__ = ["LEVELS", "AdwinWindow"]

# Levels of buckets: level l holds buckets of 2**l values, so 62 levels hold more than 2**62
# values, more than a series meets in centuries at any rate. Restored state must stay below.
LEVELS = 64
_TOTAL, _VARIANCE, _WIDTH, _TOTAL_WIDTH = range(4)
_N_BUCKETS, _MAX_N_BUCKETS, _TICK, _DETECTIONS, _LEVELS, _DRIFT = range(6)
_I32 = 2**31
Floats = NDArray[np.float64]
Ints = NDArray[np.int64]


class AdwinWindow:
    """One ADWIN window in arrays, updated a batch at a time by the compiled kernel.

    >>> import numpy as np
    >>> from river import drift
    >>> rng = np.random.default_rng(7)
    >>> stream = np.concatenate([rng.normal(0, 1, 2_000), rng.normal(1, 1, 500)])
    >>> window = AdwinWindow(AdwinParams(delta=0.002))
    >>> [i for i, _ in window.update(stream)]
    [2047]
    >>> river_adwin = drift.ADWIN(delta=0.002)
    >>> [i for i, x in enumerate(stream) if (river_adwin.update(x), river_adwin.drift_detected)[1]]
    [2047]
    >>> window.to_bytes() == river_adwin._helper.__getstate__()
    True
    """

    __slots__ = ("counts", "params", "sums", "totals", "used", "variances")

    def __init__(self, params: AdwinParams) -> None:
        self.params = np.array(
            [
                params.delta,
                params.clock,
                params.max_buckets,
                params.min_window_length,
                params.grace_period,
            ],
            dtype=np.float64,
        )
        self.sums = np.zeros(4)
        self.counts = np.zeros(6, dtype=np.int64)
        self.counts[_LEVELS] = 1
        self.totals = np.zeros((LEVELS, params.max_buckets + 1))
        self.variances = np.zeros((LEVELS, params.max_buckets + 1))
        self.used = np.zeros(LEVELS, dtype=np.int64)

    @property
    def width(self) -> int:
        return int(self.sums[_WIDTH])

    @property
    def total(self) -> float:
        return float(self.sums[_TOTAL])

    @property
    def estimation(self) -> float:
        width = self.sums[_WIDTH]
        return float(self.sums[_TOTAL] / width) if width else 0.0

    @property
    def drift_detected(self) -> bool:
        return bool(self.counts[_DRIFT])

    @drift_detected.setter
    def drift_detected(self, value: bool) -> None:
        self.counts[_DRIFT] = int(value)

    def update(self, values: NDArray[np.float64]) -> list[tuple[int, float]]:
        """Feed ``values`` (float64, in order); (index, statistic) of each detection, the
        statistic as :class:`~streamdrift.detectors.adwin.Adwin` defines it."""
        values = np.ascontiguousarray(values, dtype=np.float64)
        hit_index = np.empty(len(values), dtype=np.int64)
        hit_statistic = np.empty(len(values))
        hits = _update_batch(
            values,
            self.params,
            self.sums,
            self.counts,
            self.totals,
            self.variances,
            self.used,
            hit_index,
            hit_statistic,
        )
        return list(zip(hit_index[:hits].tolist(), hit_statistic[:hits].tolist(), strict=True))

    def to_bytes(self) -> bytes:
        """The bytes river's ``AdaptiveWindowing.__getstate__`` gives for this window."""
        delta, clock, max_buckets, min_window_length, grace_period = self.params.tolist()
        buckets = int(max_buckets)
        counts = [_wrap_i32(int(c)) for c in self.counts[:4]]
        levels = int(self.counts[_LEVELS])
        parts = [
            struct.pack("<diQdd", delta, int(clock), buckets, min_window_length, grace_period),
            struct.pack("<dddd", *self.sums.tolist()),
            struct.pack("<iiii", *counts),
            struct.pack("<Q", levels),
        ]
        row = struct.pack("<Q", buckets + 1)
        for level in range(levels):
            parts += [
                struct.pack("<QQ", buckets, int(self.used[level])),
                row + self.totals[level].astype("<f8").tobytes(),
                row + self.variances[level].astype("<f8").tobytes(),
            ]
        parts.append(
            struct.pack(
                "<diQii", delta, int(clock), buckets, int(min_window_length), int(grace_period)
            )
        )
        return b"".join(parts)

    @classmethod
    def from_bytes(cls, data: bytes, params: AdwinParams) -> AdwinWindow:
        """The window river's bytes describe, for a detector of ``params``; ``ValueError`` unless
        they are exactly such a window (the state store is not trusted: the kernel indexes its
        arrays by what is restored here)."""
        try:
            return _parse(data, params)
        except struct.error as error:
            raise ValueError(f"malformed ADWIN window: {error}") from None


def _parse(data: bytes, params: AdwinParams) -> AdwinWindow:
    window = AdwinWindow(params)
    buckets = params.max_buckets
    expected = (params.delta, params.clock, buckets)
    head = struct.unpack_from("<diQdd", data, 0)
    if head[:3] != expected or head[3:] != (params.min_window_length, params.grace_period):
        raise ValueError("ADWIN window does not match its parameters")
    offset = struct.calcsize("<diQdd")
    window.sums[:] = struct.unpack_from("<dddd", data, offset)
    offset += 32
    window.counts[:4] = struct.unpack_from("<iiii", data, offset)
    offset += 16
    (levels,) = struct.unpack_from("<Q", data, offset)
    offset += 8
    if not 1 <= levels <= LEVELS - 2:
        raise ValueError(f"ADWIN window has {levels} levels (1 to {LEVELS - 2} expected)")
    window.counts[_LEVELS] = levels
    row_bytes = 8 * (buckets + 1)
    for level in range(levels):
        max_size, in_use, totals_length = struct.unpack_from("<QQQ", data, offset)
        offset += 24
        if max_size != buckets or not 0 <= in_use <= buckets or totals_length != buckets + 1:
            raise ValueError("ADWIN window has a malformed level of buckets")
        window.used[level] = in_use
        window.totals[level] = np.frombuffer(data, "<f8", buckets + 1, offset)
        offset += row_bytes
        (variances_length,) = struct.unpack_from("<Q", data, offset)
        offset += 8
        if variances_length != buckets + 1:
            raise ValueError("ADWIN window has a malformed level of buckets")
        window.variances[level] = np.frombuffer(data, "<f8", buckets + 1, offset)
        offset += row_bytes
    tail = struct.unpack_from("<diQii", data, offset)
    offset += struct.calcsize("<diQii")
    if tail != (*expected, params.min_window_length, params.grace_period):
        raise ValueError("ADWIN window does not match its parameters")
    if offset != len(data):
        raise ValueError("ADWIN window has trailing bytes")
    _check_consistent(window)
    return window


def _check_consistent(window: AdwinWindow) -> None:
    """What the kernel relies on: finite numbers, a width that is the buckets' sizes, no bucket
    in use beyond a level's count."""
    arrays = (window.sums, window.totals, window.variances)
    if not all(np.isfinite(array).all() for array in arrays):
        raise ValueError("ADWIN window is not finite")
    width = sum(int(in_use) << level for level, in_use in enumerate(window.used.tolist()))
    if width != window.sums[_WIDTH]:
        raise ValueError("ADWIN window's width is not its buckets' sizes")
    beyond = np.arange(window.totals.shape[1])[None, :] >= window.used[:, None]
    if window.totals[beyond].any() or window.variances[beyond].any():
        raise ValueError("ADWIN window has values outside its buckets")


def _wrap_i32(value: int) -> int:
    return (value + _I32) % (2 * _I32) - _I32
