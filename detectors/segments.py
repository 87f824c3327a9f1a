"""Segment triage: which values of a segment feature (a categorical such as ``country``) carry
a shift.

One :class:`SegmentProfile` per (model, version, segment feature) keeps, for each value of the
segment feature (its first ``max_values`` values; later ones share the bucket :data:`OTHER`),
its number of events and the moments (count, mean, sum of squared deviations) of every
numeric feature of those events, twice:

- over the **reference**: the first ``reference_events`` events that carry a segment value;
- over the **latest events**: a ring of ``blocks`` blocks of ``block_events`` events each
  (the oldest block is dropped as a new one starts).

When a feature drifts, :meth:`SegmentProfile.triage` compares each value's mean of that
feature over the latest 1, 2, 4, … blocks with its reference mean (Welch's z,
Bonferroni-corrected over every window and value judged) and names the values that carry the
shift; when none does but the values' shares of traffic moved, the shift comes from the mix of
segments (``scope`` ``mix``).

Pure numpy, with bounded memory: ``(blocks + 1) * (max_values + 1) * max_features`` moments.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import msgspec
import numpy as np
from scipy import stats

from streamdrift.detectors.monitor import StateError

OTHER = "(other)"  # the bucket of the values beyond ``max_values``
_FORMAT = 1
_T_CAP = 1e6  # |t| when a constant feature's mean moved (no variance to scale by)


@dataclass(frozen=True, slots=True)
class SegmentParams:
    """How a segment profile is kept and judged.

    max_values
        Values of the segment feature tracked one by one; later values share :data:`OTHER`.
    max_features
        Numeric features tracked per segment value (the first seen); later ones are ignored.
    reference_events, block_events, blocks
        The reference's size, and the ring of blocks of the latest events (see the module).
    min_events
        Events a value needs in the reference and in the current window to be judged.
    alpha
        Family-wise false-positive rate of naming a carrier, per triage (Bonferroni over the
        values judged).
    min_effect
        Smallest shift, in the feature's reference standard deviation, that makes a carrier
        (a large segment makes tiny shifts significant).
    min_mix_shift
        Total variation distance between the values' reference and current shares (over the
        whole ring, and beyond chance at ``alpha``) from which a shift without carriers is put
        down to the mix of segments.
    """

    max_values: int = 12
    max_features: int = 50
    reference_events: int = 2_000
    block_events: int = 32
    blocks: int = 16
    min_events: int = 8
    alpha: float = 0.001
    min_effect: float = 0.25
    min_mix_shift: float = 0.1

    def __post_init__(self) -> None:
        for name in ("max_values", "max_features", "reference_events", "block_events", "blocks"):
            if getattr(self, name) < 1:
                raise ValueError(f"segment {name} must be at least 1")
        if self.min_events < 2:
            raise ValueError("segment min_events must be at least 2")
        if not 0.0 < self.alpha < 1.0:
            raise ValueError("segment alpha must lie in (0, 1)")


class _Moments:
    """Per (value, feature): count, mean and sum of squared deviations; per value: events."""

    __slots__ = ("events", "m2", "mean", "n")

    def __init__(self, values: int, features: int) -> None:
        self.events = np.zeros(values, dtype=np.float64)
        self.n = np.zeros((values, features), dtype=np.float64)
        self.mean = np.zeros((values, features), dtype=np.float64)
        self.m2 = np.zeros((values, features), dtype=np.float64)

    def grow(self, values: int, features: int) -> None:
        pad_v, pad_f = values - self.n.shape[0], features - self.n.shape[1]
        if pad_v or pad_f:
            self.events = np.pad(self.events, (0, pad_v))
            self.n, self.mean, self.m2 = (
                np.pad(a, ((0, pad_v), (0, pad_f))) for a in (self.n, self.mean, self.m2)
            )

    def add(self, codes: np.ndarray, matrix: np.ndarray) -> None:
        """Add events: each one's value code and its row of features (NaN: absent)."""
        events, n, mean, m2 = _group_moments(codes, matrix, *self.n.shape, groups=1)
        self.add_moments(events[0], n[0], mean[0], m2[0])

    def add_moments(
        self, events: np.ndarray, n: np.ndarray, mean: np.ndarray, m2: np.ndarray
    ) -> None:
        self.events += events
        with np.errstate(invalid="ignore", divide="ignore", over="ignore"):
            self._merge(n, mean, m2)

    def merged(self, other: _Moments) -> _Moments:
        out = _Moments(*self.n.shape)
        out.events = self.events + other.events
        out.n, out.mean, out.m2 = self.n.copy(), self.mean.copy(), self.m2.copy()
        with np.errstate(invalid="ignore", divide="ignore", over="ignore"):
            out._merge(other.n, other.mean, other.m2)
        return out

    def _merge(self, n: np.ndarray, mean: np.ndarray, m2: np.ndarray) -> None:
        """Chan et al.'s parallel update (errstate set by the caller)."""
        total = self.n + n
        delta = mean - self.mean
        share = np.where(total > 0, n / np.maximum(total, 1.0), 0.0)
        self.mean = self.mean + delta * share
        self.m2 = self.m2 + m2 + delta * delta * self.n * share
        self.n = total

    def clear(self) -> None:
        for array in (self.events, self.n, self.mean, self.m2):
            array[...] = 0.0

    def variance(self) -> np.ndarray:
        with np.errstate(invalid="ignore", divide="ignore"):
            return np.where(self.n > 1, self.m2 / np.maximum(self.n - 1, 1.0), 0.0)

    def arrays(self) -> list[bytes]:
        return [a.tobytes() for a in (self.events, self.n, self.mean, self.m2)]

    @classmethod
    def of(cls, blobs: Any, values: int, features: int) -> _Moments:
        if not isinstance(blobs, list) or len(blobs) != 4:
            raise StateError("segment moments: expected 4 arrays")
        moments = cls(values, features)
        try:
            moments.events = np.frombuffer(blobs[0], dtype=np.float64).copy().reshape(values)
            moments.n, moments.mean, moments.m2 = (
                np.frombuffer(blob, dtype=np.float64).copy().reshape(values, features)
                for blob in blobs[1:]
            )
        except (TypeError, ValueError) as exc:
            raise StateError(f"segment moments: {exc}") from exc
        return moments


class SegmentProfile:
    """Per value of one segment feature, the moments of the numeric features over a reference
    and over the latest events (see the module).

    >>> rng = np.random.default_rng(7)
    >>> profile = SegmentProfile("country")
    >>> for shifted in (False, True):
    ...     countries = rng.choice(["DE", "FR", "US"], size=3_000).tolist()
    ...     amount = rng.normal(0.0, 1.0, size=3_000)
    ...     if shifted:  # only German traffic moves
    ...         amount += 3.0 * (np.array(countries) == "DE")
    ...     profile.update(countries, {"amount": amount})
    >>> triage = profile.triage("amount")
    >>> triage["scope"], triage["carriers"]
    ('one_value', ['DE'])
    """

    def __init__(self, segment: str, params: SegmentParams | None = None) -> None:
        self.segment = segment
        self.params = params or SegmentParams()
        self.values: list[str] = []
        self.features: list[str] = []
        self._codes: dict[str, int] = {}
        self._columns: dict[str, int] = {}
        self.reference = _Moments(0, 0)
        self.ring = [_Moments(0, 0) for _ in range(self.params.blocks)]
        self.head = 0  # the ring's block being filled
        self.fill = 0  # events in it

    # -- update ---------------------------------------------------------------------------------

    def update(self, segments: Sequence[str | None], columns: dict[str, np.ndarray]) -> None:
        """Add a batch of events in stream order: each one's segment value (None: the event has
        none and is skipped) and, per numeric feature, its value (NaN: absent), aligned."""
        keep = [i for i, value in enumerate(segments) if value is not None]
        if not keep:
            return
        codes = np.fromiter(
            (self._code(segments[i]) for i in keep),  # type: ignore[arg-type]
            dtype=np.int64,
            count=len(keep),
        )
        named = [(self._column(name), column) for name, column in columns.items()]
        named = [(j, column) for j, column in named if j is not None]
        self._grow()
        matrix = np.full((len(keep), len(self.features)), np.nan)
        rows = np.asarray(keep, dtype=np.int64)
        for j, column in named:
            matrix[:, j] = np.asarray(column, dtype=np.float64)[rows]
        self._add(codes, matrix)

    def _code(self, value: str) -> int:
        code = self._codes.get(value)
        if code is None:
            if len(self.values) < self.params.max_values:
                code = len(self.values)
                self.values.append(value)
            else:  # bounded: the rest share one bucket, added last
                code = self._codes.get(OTHER)
                if code is None:
                    code = len(self.values)
                    self.values.append(OTHER)
                    self._codes[OTHER] = code
                return code
            self._codes[value] = code
        return code

    def _column(self, name: str) -> int | None:
        j = self._columns.get(name)
        if j is None and len(self.features) < self.params.max_features:
            j = self._columns[name] = len(self.features)
            self.features.append(name)
        return j

    def _grow(self) -> None:
        shape = (len(self.values), len(self.features))
        self.reference.grow(*shape)
        for block in self.ring:
            block.grow(*shape)

    def _add(self, codes: np.ndarray, matrix: np.ndarray) -> None:
        p = self.params
        start = 0
        referenced = int(self.reference.events.sum())
        if referenced < p.reference_events:
            start = min(len(codes), p.reference_events - referenced)
            self.reference.add(codes[:start], matrix[:start])
        if start == len(codes):
            return
        # each event's block, counted from the one being filled (0) on; one pass over all of
        # them (the moments per block, value and feature), then only the blocks that stay in
        # the ring are merged in
        steps = (self.fill + np.arange(len(codes) - start)) // p.block_events
        last = int(steps[-1])
        keep = steps >= last - (p.blocks - 1)
        first = last - (p.blocks - 1) if not keep.all() else 0
        events, n, mean, m2 = _group_moments(
            (steps[keep] - first) * len(self.values) + codes[start:][keep],
            matrix[start:][keep],
            *self.reference.n.shape,
            groups=last - first + 1,
        )
        for group, step in enumerate(range(first, last + 1)):
            block = self.ring[(self.head + step) % p.blocks]
            if step > 0:  # a new block: the one it replaces leaves the ring
                block.clear()
            block.add_moments(events[group], n[group], mean[group], m2[group])
        self.head = (self.head + last) % p.blocks
        self.fill = self.fill + len(steps) - last * p.block_events

    # -- decide ---------------------------------------------------------------------------------

    def latest(self, blocks: int | None = None) -> _Moments:
        """The moments of the latest ``blocks`` blocks of the ring (all by default), the one
        being filled included."""
        count = self.params.blocks if blocks is None else blocks
        merged = self.ring[self.head]
        for back in range(1, count):
            merged = merged.merged(self.ring[(self.head - back) % self.params.blocks])
        return merged

    def windows(self) -> list[int]:
        """The current windows a triage tries, in blocks: 1, 2, 4, … up to the whole ring."""
        sizes, size = [], 1
        while size < self.params.blocks:
            sizes.append(size)
            size *= 2
        return [*sizes, self.params.blocks]

    def triage(self, feature: str, top: int = 5) -> dict[str, Any] | None:
        """Which values carry the shift of ``feature`` (None if the profile has no reference or
        current data of it).

        The current window is the one of :meth:`windows` (the latest 1, 2, 4, … blocks) in which
        a value moved most surely (smallest p-value): a recent sudden shift shows best in a
        short window, a slow one in a long one. The test is Bonferroni-corrected over every
        (window, value) judged (a value is judged with ``min_events`` in the reference and the
        window).

        ``scope``: ``one_value`` / ``some_values`` / ``all_values`` (of the values judged in that
        window), ``mix`` (no value moved but their shares did), ``none`` or ``unjudged`` (no
        value has enough events yet). ``carriers``: the values that moved, surest first.
        ``values``: the ``top`` values, surest first, each with its reference and current share
        of events and mean, its effect (shift in the feature's reference standard deviation),
        Welch's t and its p-value. ``window_events``: the events of the window.
        """
        j = self._columns.get(feature)
        reference = self.reference
        if j is None or reference.events.sum() == 0:
            return None
        tried = []
        for size in self.windows():
            current = self.latest(size)
            if current.events.sum() > 0:
                rows = self._judge(j, reference, current)
                tried.append((current, rows, [row for row in rows if row["t"] is not None]))
        if not tried:
            return None
        tests = sum(len(judged) for _, _, judged in tried)
        # the window where a value moved most surely; the longest if none is judged (ties:
        # longer)
        current, rows, judged = min(
            reversed(tried), key=lambda t: min((row["p_value"] for row in t[2]), default=2.0)
        )
        carriers = self._carriers(judged, tests)
        ranked = sorted(rows, key=_surest)
        return {
            "segment": self.segment,
            "scope": self._scope(judged, carriers, reference),
            "carriers": [row["value"] for row in carriers],
            "window_events": int(current.events.sum()),
            "values": ranked[:top],
        }

    def _judge(self, j: int, reference: _Moments, current: _Moments) -> list[dict[str, Any]]:
        p = self.params
        ref_share = reference.events / reference.events.sum()
        cur_share = current.events / current.events.sum()
        ref_var, cur_var = reference.variance()[:, j], current.variance()[:, j]
        spread = math.sqrt(_pooled_variance(reference, j))
        rows = []
        for code, value in enumerate(self.values):
            n_ref, n_cur = reference.n[code, j], current.n[code, j]
            if n_ref == 0 and n_cur == 0:
                continue
            ref_mean, cur_mean = float(reference.mean[code, j]), float(current.mean[code, j])
            t = p_value = effect = None
            if n_ref >= p.min_events and n_cur >= p.min_events:
                t, p_value = _welch(ref_mean, cur_mean, ref_var[code], n_ref, cur_var[code], n_cur)
                effect = (cur_mean - ref_mean) / spread if spread > 0 else None
            rows.append(
                {
                    "value": value,
                    "reference_share": _finite(ref_share[code]),
                    "current_share": _finite(cur_share[code]),
                    "reference_mean": _finite(ref_mean) if n_ref else None,
                    "current_mean": _finite(cur_mean) if n_cur else None,
                    "effect": _finite(effect),
                    "t": t,
                    "p_value": p_value,
                }
            )
        return rows

    def _carriers(self, judged: list[dict[str, Any]], tests: int) -> list[dict[str, Any]]:
        if not judged:
            return []
        p = self.params
        level = p.alpha / tests
        moved = [
            row
            for row in judged
            if row["p_value"] <= level
            and (row["effect"] is None or abs(row["effect"]) >= p.min_effect)
        ]
        return sorted(moved, key=_surest)

    def _scope(
        self,
        judged: list[dict[str, Any]],
        carriers: list[dict[str, Any]],
        reference: _Moments,
    ) -> str:
        if not judged:
            return "unjudged"
        if carriers:
            if len(carriers) == len(judged):
                return "all_values"
            return "one_value" if len(carriers) == 1 else "some_values"
        return "mix" if self._mix_moved(reference, self.latest()) else "none"

    def _mix_moved(self, reference: _Moments, current: _Moments) -> bool:
        """Whether the values' shares of traffic moved (over the whole ring): by at least
        ``min_mix_shift`` in total variation, and beyond chance (chi-square at ``alpha``)."""
        expected_share = reference.events / reference.events.sum()
        total = current.events.sum()
        if total == 0:
            return False
        moved = 0.5 * float(np.abs(current.events / total - expected_share).sum())
        if moved < self.params.min_mix_shift:
            return False
        seen = expected_share > 0
        if (current.events[~seen] > 0).any():
            return True  # a value the reference never had
        expected = expected_share[seen] * total
        statistic = float((((current.events[seen] - expected) ** 2) / expected).sum())
        return bool(stats.chi2.sf(statistic, max(1, int(seen.sum()) - 1)) < self.params.alpha)

    def shifts(self) -> dict[str, dict[str, float]]:
        """Per value judged, each feature's current shift in its reference standard deviation
        (the bias indicators exported as metrics)."""
        reference, current = self.reference, self.latest()
        enough = (reference.n >= self.params.min_events) & (current.n >= self.params.min_events)
        out: dict[str, dict[str, float]] = {}
        for j, feature in enumerate(self.features):
            spread = math.sqrt(_pooled_variance(reference, j))
            if not spread > 0 or not math.isfinite(spread):
                continue
            for code in np.flatnonzero(enough[:, j]).tolist():
                effect = (current.mean[code, j] - reference.mean[code, j]) / spread
                if math.isfinite(effect):
                    out.setdefault(self.values[code], {})[feature] = float(effect)
        return out

    # -- state ----------------------------------------------------------------------------------

    def to_bytes(self) -> bytes:
        p = self.params
        return msgspec.msgpack.encode(
            {
                "format": _FORMAT,
                "segment": self.segment,
                "structure": [
                    p.max_values,
                    p.max_features,
                    p.reference_events,
                    p.block_events,
                    p.blocks,
                ],
                "values": self.values,
                "features": self.features,
                "reference": self.reference.arrays(),
                "ring": [block.arrays() for block in self.ring],
                "head": self.head,
                "fill": self.fill,
            }
        )

    @classmethod
    def from_bytes(cls, blob: bytes, params: SegmentParams | None = None) -> SegmentProfile:
        """Restore a profile saved with :meth:`to_bytes`; :class:`StateError` if it cannot be
        (corrupt, another format, or another structure than ``params`` asks for: the profile
        then starts afresh)."""
        try:
            saved = msgspec.msgpack.decode(blob)
        except msgspec.DecodeError as exc:
            raise StateError(f"segment profile: {exc}") from exc
        if not isinstance(saved, dict) or saved.get("format") != _FORMAT:
            raise StateError("segment profile: unknown format")
        profile = cls(str(saved.get("segment")), params)
        p = profile.params
        if saved.get("structure") != [
            p.max_values,
            p.max_features,
            p.reference_events,
            p.block_events,
            p.blocks,
        ]:
            raise StateError("segment profile: saved with other sizes")
        values, features = saved.get("values"), saved.get("features")
        ring, head, fill = saved.get("ring"), saved.get("head"), saved.get("fill")
        if not (
            _names(values, p.max_values + 1)
            and _names(features, p.max_features)
            and isinstance(ring, list)
            and len(ring) == p.blocks
            and isinstance(head, int)
            and 0 <= head < p.blocks
            and isinstance(fill, int)
            and 0 <= fill <= p.block_events
        ):
            raise StateError("segment profile: malformed")
        assert isinstance(values, list) and isinstance(features, list)  # checked by _names
        profile.values, profile.features = values, features
        profile._codes = {value: code for code, value in enumerate(profile.values)}
        profile._columns = {name: j for j, name in enumerate(profile.features)}
        shape = (len(values), len(features))
        profile.reference = _Moments.of(saved.get("reference"), *shape)
        profile.ring = [_Moments.of(block, *shape) for block in ring]
        profile.head, profile.fill = head, fill
        return profile


def _group_moments(
    cells_of_events: np.ndarray, matrix: np.ndarray, values: int, features: int, groups: int
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Events, and per feature count, mean and sum of squared deviations, per (group, value):
    ``cells_of_events`` is each event's ``group * values + value code``; ``matrix`` its row
    (NaN: absent). Shapes (groups, values) and (groups, values, features)."""
    rows = groups * values
    events = np.bincount(cells_of_events, minlength=rows).astype(np.float64)
    present = ~np.isnan(matrix)
    cells = (cells_of_events[:, None] * features + np.arange(features))[present]
    x = matrix[present]
    size = rows * features
    n = np.bincount(cells, minlength=size).astype(np.float64)
    with np.errstate(invalid="ignore", divide="ignore", over="ignore"):
        total = np.bincount(cells, weights=x, minlength=size)
        mean = np.where(n > 0, total / np.maximum(n, 1.0), 0.0)
        deviation = x - mean[cells]
        m2 = np.bincount(cells, weights=deviation * deviation, minlength=size)
    shape = (groups, values, features)
    return events.reshape(groups, values), n.reshape(shape), mean.reshape(shape), m2.reshape(shape)


def _names(names: object, limit: int) -> bool:
    return (
        isinstance(names, list)
        and len(names) <= limit
        and all(isinstance(name, str) for name in names)
        and len(set(names)) == len(names)
    )


def _pooled_variance(moments: _Moments, j: int) -> float:
    """The variance of feature ``j`` over all values together."""
    n = moments.n[:, j]
    total = n.sum()
    if total < 2:
        return 0.0
    with np.errstate(invalid="ignore", over="ignore"):
        mean = float((moments.mean[:, j] * n).sum() / total)
        m2 = float((moments.m2[:, j] + n * (moments.mean[:, j] - mean) ** 2).sum())
    variance = m2 / (total - 1)
    return variance if math.isfinite(variance) and variance > 0 else 0.0


def _welch(
    reference: float, current: float, ref_var: float, n_ref: float, cur_var: float, n_cur: float
) -> tuple[float | None, float | None]:
    """Welch's t of the two means and its two-sided p-value (Welch-Satterthwaite degrees of
    freedom: honest with the few events a short window holds); (None, None) if not finite."""
    difference = current - reference
    a, b = ref_var / n_ref, cur_var / n_cur
    variance = a + b
    if not math.isfinite(difference) or not math.isfinite(variance):
        return None, None
    if variance <= 0:
        if difference == 0:
            return 0.0, 1.0
        return math.copysign(_T_CAP, difference), 0.0
    t = difference / math.sqrt(variance)
    denominator = a * a / max(n_ref - 1, 1) + b * b / max(n_cur - 1, 1)
    freedom = variance * variance / denominator if denominator > 0 else n_ref + n_cur - 2
    p_value = float(2.0 * stats.t.sf(abs(t), freedom))
    return max(-_T_CAP, min(_T_CAP, t)), p_value if math.isfinite(p_value) else None


def _surest(row: dict[str, Any]) -> tuple[float, float]:
    """Smallest p-value first, then largest |t| (p-values underflow to 0 alike)."""
    p_value = row["p_value"]
    return (2.0 if p_value is None else p_value, -abs(row["t"] or 0.0))


def _finite(value: float | None) -> float | None:
    if value is None:
        return None
    value = float(value)
    return value if math.isfinite(value) else None
