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

import math
import struct

import numpy as np
from numpy.typing import NDArray

from streamdrift.detectors.config import AdwinParams
from streamdrift.detectors.kernels._jit import jit

__all__ = ["LEVELS", "AdwinWindow", "warm_up"]

# Levels of buckets: level l holds buckets of 2**l values, so 62 levels hold more than 2**62
# values, more than a series meets in centuries at any rate. Restored state must stay below.
LEVELS = 64
_TOTAL, _VARIANCE, _WIDTH, _TOTAL_WIDTH = range(4)
_N_BUCKETS, _MAX_N_BUCKETS, _TICK, _DETECTIONS, _LEVELS, _DRIFT = range(6)
_I32 = 2**31
Floats = NDArray[np.float64]
Ints = NDArray[np.int64]


@jit
def _shift_out(totals: Floats, variances: Floats, used: Ints, level: int, k: int) -> None:
    """Drop the ``k`` oldest buckets of ``level`` (river's ``compress_buckets_row``)."""
    c = used[level]
    for i in range(c - k):
        totals[level, i] = totals[level, i + k]
        variances[level, i] = variances[level, i + k]
    for i in range(max(c - k, 0), c):
        totals[level, i] = 0.0
        variances[level, i] = 0.0
    used[level] = c - k


@jit
def _reset(sums: Floats, counts: Ints, totals: Floats, variances: Floats, used: Ints) -> None:
    """An empty window (river's ``ADWIN._reset``, a new Rust window)."""
    for level in range(counts[4]):
        used[level] = 0
        for i in range(totals.shape[1]):
            totals[level, i] = 0.0
            variances[level, i] = 0.0
    for i in range(4):
        sums[i] = 0.0
    for i in range(6):
        counts[i] = 0
    counts[4] = 1


@jit
def _insert(
    value: float,
    sums: Floats,
    counts: Ints,
    totals: Floats,
    variances: Floats,
    used: Ints,
    max_buckets: int,
) -> None:
    """river's ``insert_element`` then ``compress_buckets``."""
    totals[0, used[0]] = value
    variances[0, used[0]] = 0.0
    used[0] += 1
    counts[0] += 1
    if counts[0] > counts[1]:
        counts[1] = counts[0]
    sums[2] += 1.0
    increment = 0.0
    if sums[2] > 1.0:
        deviation = value - sums[0] / (sums[2] - 1.0)
        increment = (sums[2] - 1.0) * deviation * deviation / sums[2]
    sums[1] += increment
    sums[0] += value
    level = 0
    while used[level] == max_buckets + 1:
        size = float(np.int64(1) << level)
        total0 = totals[level, 0]
        total1 = totals[level, 1]
        mean0 = total0 / size
        mean1 = total1 / size
        spread = size * 0.5 * (mean0 - mean1) * (mean0 - mean1)
        merged_variance = variances[level, 0] + variances[level, 1] + spread
        if level + 1 >= counts[4]:
            counts[4] += 1
        totals[level + 1, used[level + 1]] = total0 + total1
        variances[level + 1, used[level + 1]] = merged_variance
        used[level + 1] += 1
        counts[0] += 1
        _shift_out(totals, variances, used, level, 2)
        if used[level + 1] <= max_buckets:
            break
        level += 1


@jit
def _drop_oldest(sums: Floats, counts: Ints, totals: Floats, variances: Floats, used: Ints) -> None:
    """river's ``delete_element``: the oldest bucket leaves the window."""
    last = counts[4] - 1
    size = float(np.int64(1) << last)
    total = totals[last, 0]
    mean = total / size
    sums[2] -= size
    sums[0] -= total
    window_mean = sums[0] / sums[2]
    sums[1] -= variances[last, 0] + size * sums[2] * (mean - window_mean) * (mean - window_mean) / (
        size + sums[2]
    )
    _shift_out(totals, variances, used, last, 1)
    counts[0] -= 1
    if used[last] == 0:
        counts[4] -= 1


@jit
def _cut(
    sums: Floats,
    counts: Ints,
    totals: Floats,
    variances: Floats,
    used: Ints,
    min_window_length: float,
    delta: float,
) -> bool:
    """One pass of river's ``detect_change`` over the cut points, from the oldest buckets (the
    highest level) to the newest; drops the oldest bucket and returns True at the first cut whose
    two sides' means differ by more than the bound."""
    n0 = 0.0
    n1 = sums[2]
    u0 = 0.0
    u1 = sums[0]
    width = sums[2]
    if width < 2.0 * min_window_length:  # no cut point has min_window_length on both sides
        return False
    # Fixed until a cut returns: river computes them at every cut point, to the same bits.
    delta_prime = math.log(2.0 * math.log(width) / delta)
    variance = sums[1] / width
    for level in range(counts[4] - 1, -1, -1):
        size = float(np.int64(1) << level)
        in_use = used[level]
        for k in range(in_use):
            n0 += size
            n1 -= size
            total = totals[level, k]
            u0 += total
            u1 -= total
            if level == 0 and k == in_use - 1:
                return False
            delta_mean = (u0 / n0) - (u1 / n1)
            if n1 >= min_window_length and n0 >= min_window_length:
                m_recip = 1.0 / (n0 - min_window_length + 1.0)
                m_recip += 1.0 / (n1 - min_window_length + 1.0)
                epsilon = (
                    math.sqrt(2.0 * m_recip * variance * delta_prime)
                    + 2.0 / 3.0 * delta_prime * m_recip
                )
                if abs(delta_mean) > epsilon:
                    if sums[2] > 0.0:
                        _drop_oldest(sums, counts, totals, variances, used)
                    return True
    return False


@jit
def _update_batch(
    values: Floats,
    params: Floats,
    sums: Floats,
    counts: Ints,
    totals: Floats,
    variances: Floats,
    used: Ints,
    hit_index: Ints,
    hit_statistic: Floats,
) -> int:
    """Feed ``values`` in order (river's ``ADWIN.update`` per value: reset after a detection,
    then the Rust window's update). The index and statistic of each detection go to
    ``hit_index`` / ``hit_statistic``; returns how many there were."""
    delta = params[0]
    clock = int(params[1])
    max_buckets = int(params[2])
    min_window_length = params[3]
    grace_period = params[4]
    hits = 0
    for i in range(values.shape[0]):
        value = values[i]
        if counts[5]:
            _reset(sums, counts, totals, variances, used)
        width_before = sums[2]
        total_before = sums[0]
        _insert(value, sums, counts, totals, variances, used, max_buckets)
        detected = False
        counts[2] += 1
        if counts[2] >= _I32:  # river's tick is an i32, which wraps in its release build
            counts[2] -= 2 * _I32
        if counts[2] % clock == 0 and sums[2] > grace_period:
            while _cut(sums, counts, totals, variances, used, min_window_length, delta):
                detected = True
        sums[3] += sums[2]
        if detected:
            counts[3] += 1
            kept = sums[2]
            kept_total = sums[0]
            dropped_mean = (total_before + value - kept_total) / (width_before + 1.0 - kept)
            hit_index[hits] = i
            hit_statistic[hits] = abs(kept_total / kept - dropped_mean)
            hits += 1
            counts[5] = 1
        else:
            counts[5] = 0
    return hits


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


def warm_up() -> None:
    """Compile the kernel (or load it from the cache) on a two-value batch."""
    AdwinWindow(AdwinParams()).update(np.zeros(2))
