"""Bounded-memory summaries of a feature's distribution: quantiles and category counts."""

from __future__ import annotations

from collections import Counter
from collections.abc import Mapping, Sequence, Set
from typing import Annotated, Protocol

import msgspec
import numpy as np
from datasketches import kll_doubles_sketch
from numpy.typing import NDArray

__all__ = ["CategoryCounts", "CategoryCountsState", "QuantileSketch"]


class _KllSketch(Protocol):
    """What is used of datasketches' ``kll_doubles_sketch`` (datasketches ships no types)."""

    @property
    def k(self) -> int: ...
    @property
    def n(self) -> int: ...
    def get_min_value(self) -> float: ...
    def get_max_value(self) -> float: ...
    def is_estimation_mode(self) -> bool: ...
    def is_empty(self) -> bool: ...
    def update(self, array: NDArray[np.float64], /) -> None: ...
    def get_quantiles(self, ranks: Sequence[float], inclusive: bool = False) -> list[float]: ...
    def merge(self, other: _KllSketch, /) -> None: ...
    def serialize(self) -> bytes: ...


class QuantileSketch:
    """Approximate quantiles of a stream of floats in bounded memory (a KLL sketch).

    Wraps datasketches' ``kll_doubles_sketch``. The value returned for a rank ``r`` has a true
    rank within ``rank_error`` of ``r``: for k=200 that is 1.33%, datasketches' fit of the 99th
    percentile of the maximum error over all ranks (so 1% of sketches may exceed it somewhere).
    Answers are exact while at most k values have been seen. Sketches merge with the same
    guarantee, which is how partitions are combined.

    Compaction is randomised (the random source cannot be seeded), so two sketches of the same
    values may answer slightly differently once more than k values have been seen.

    >>> import numpy as np
    >>> sketch = QuantileSketch()
    >>> sketch.update_many(np.arange(101, dtype=np.float64))
    >>> sketch.quantiles([0.0, 0.05, 0.5, 1.0])
    [0.0, 5.0, 50.0, 100.0]
    >>> round(sketch.rank_error, 4)
    0.0133

    """

    def __init__(self, k: int = 200) -> None:
        self._sketch: _KllSketch = kll_doubles_sketch(k)
        self._kept: tuple[NDArray[np.float64], NDArray[np.float64]] | None = None

    @property
    def k(self) -> int:
        return self._sketch.k

    @property
    def count(self) -> int:
        return self._sketch.n

    @property
    def min(self) -> float:
        return self._sketch.get_min_value()

    @property
    def max(self) -> float:
        return self._sketch.get_max_value()

    @property
    def exact(self) -> bool:
        """True while the sketch still holds every value it was given (at most about k)."""
        return not self._sketch.is_estimation_mode()

    @property
    def rank_error(self) -> float:
        """Normalised rank error of single-rank queries (99% confidence)."""
        error: float = kll_doubles_sketch.get_normalized_rank_error(self.k, False)
        return error

    def update_many(self, values: NDArray[np.float64]) -> None:
        self._kept = None
        self._sketch.update(values)

    def items(self, keep: bool = False) -> tuple[NDArray[np.float64], NDArray[np.float64]]:
        """The retained values, sorted, and their weights: the sketch's whole estimate of the
        distribution (each value stands for ``weight`` values of the stream; weights sum to
        :attr:`count`).

        ``keep``: keep them until the sketch changes, for a sketch that is read again and again
        but no longer updated (a window tests' frozen reference); about 16 bytes per retained
        value (~7.5 KB at k = 200), so not by default. The kept arrays are shared: read only.

        >>> sketch = QuantileSketch()
        >>> sketch.update_many(np.array([3.0, 1.0, 2.0]))
        >>> sketch.items()
        (array([1., 2., 3.]), array([1., 1., 1.]))
        """
        if self._kept is not None:
            return self._kept
        items = _retained(self._sketch.serialize())  # ~10-30 us
        if keep:
            self._kept = items
        return items

    def cdf_items(self) -> tuple[NDArray[np.float64], NDArray[np.float64]]:
        """:meth:`items`, except that equal values of an exact sketch (0.0 and -0.0) may come
        in another order: enough for a CDF, which takes equal values together, and sorted
        faster (numpy's unstable sort)."""
        if self._kept is not None:
            return self._kept
        return _retained(self._sketch.serialize(), stable=False)

    def quantiles(self, ranks: Sequence[float]) -> list[float]:
        """Values at the given ranks in [0, 1]; ``ValueError`` on an empty sketch.

        The value at rank r is the smallest whose share of values <= it is at least r, like
        ``numpy.quantile(..., method="inverted_cdf")``.
        """
        if self._sketch.is_empty():
            raise ValueError("no quantiles of an empty sketch")
        return self._sketch.get_quantiles(list(ranks), inclusive=True)

    def merge(self, other: QuantileSketch) -> None:
        self._kept = None
        self._sketch.merge(other._sketch)

    def to_bytes(self) -> bytes:
        return self._sketch.serialize()

    @classmethod
    def from_bytes(cls, data: bytes) -> QuantileSketch:
        """Inverse of :meth:`to_bytes`; ``ValueError`` on malformed bytes."""
        sketch = cls.__new__(cls)
        sketch._kept = None
        try:
            sketch._sketch = kll_doubles_sketch.deserialize(data)
        # datasketches reports malformed input as IndexError, ValueError or RuntimeError.
        except Exception as exc:
            raise ValueError(f"malformed quantile sketch: {exc}") from exc
        return sketch


# DataSketches' compact KLL serialisation, a cross-language format stable across versions
# (datasketches-cpp kll_sketch::serialize): 8 preamble bytes (preamble ints, serial version,
# family, flags, k, m); a sketch of two or more values continues with n (uint64), min_k
# (uint16), the number of levels (uint8), one unused byte, the levels' start offsets (uint32
# each, relative to the retained items' start), min and max, then the retained items level
# by level. An item of level i stands for 2**i values.
_KLL_FLAG_EMPTY, _KLL_FLAG_SINGLE = 1, 4
_KLL_LEVELS_AT = 20


def _retained(data: bytes, stable: bool = True) -> tuple[NDArray[np.float64], NDArray[np.float64]]:
    """Sorted retained values and their weights, read from the sketch's serialisation: some
    20x faster than iterating the sketch from Python (which the tests compare it with). Equal
    values keep the serialisation's order, or, if not ``stable`` and every weight is 1, any."""
    flags = data[3]
    if flags & _KLL_FLAG_EMPTY:
        return np.empty(0), np.empty(0)
    if flags & _KLL_FLAG_SINGLE:
        return np.frombuffer(data, "<f8", 1, 8).copy(), np.ones(1)
    levels = int(data[18])
    starts = np.frombuffer(data, "<u4", levels, _KLL_LEVELS_AT).astype(np.int64)
    items_at = _KLL_LEVELS_AT + 4 * levels + 16  # after the levels, min and max
    values = np.frombuffer(data, "<f8", offset=items_at)
    if levels == 1:  # every value kept (exact): a stable sort is the stable argsort's order
        return np.sort(values, kind="stable" if stable else None), np.ones(len(values))
    sizes = np.diff(np.append(starts, starts[0] + len(values)))
    weights = np.repeat(2.0 ** np.arange(levels), sizes)
    order = np.argsort(values, kind="stable")
    return values[order], weights[order]


class CategoryCountsState(msgspec.Struct, frozen=True):
    max_categories: Annotated[int, msgspec.Meta(ge=1)]
    counts: dict[str, Annotated[int, msgspec.Meta(ge=1)]]


class CategoryCounts:
    """Exact counts of at most ``max_categories`` distinct categorical values.

    The bound keeps state small whatever the producers send. Callers check :meth:`accepts`
    before updating anything, so an event with one category too many is rejected as a whole
    instead of being half-counted.

    >>> counts = CategoryCounts(max_categories=2)
    >>> counts.update_many(["card", "cash", "card"])
    >>> counts.accepts("card"), counts.accepts("crypto")
    (True, False)
    >>> counts.top(1)
    [('card', 2)]

    """

    def __init__(self, max_categories: int = 200) -> None:
        if max_categories < 1:
            raise ValueError(f"max_categories must be >= 1, got {max_categories}")
        self.max_categories = max_categories
        self.counts: dict[str, int] = {}
        self.total = 0

    def accepts(self, value: str, pending_new: Set[str] = frozenset()) -> bool:
        """Whether ``value`` can be counted: it is known or there is room for it.

        ``pending_new`` holds the new values already accepted for a batch that is not counted
        yet; they take room too, so the whole batch will fit.
        """
        if value in self.counts or value in pending_new:
            return True
        return len(self.counts) + len(pending_new) < self.max_categories

    def update_many(self, values: Sequence[str]) -> None:
        """Count ``values``; ``ValueError`` (and nothing counted) if they do not fit."""
        self._add(Counter(values))

    def merge(self, other: CategoryCounts) -> None:
        """Add the counts of ``other``; ``ValueError`` (and nothing added) if they do not fit."""
        self._add(other.counts)

    def top(self, n: int) -> list[tuple[str, int]]:
        """The ``n`` most frequent values, ties broken by value so the order is stable."""
        return sorted(self.counts.items(), key=lambda item: (-item[1], item[0]))[:n]

    def _add(self, counts: Mapping[str, int]) -> None:
        new = sum(1 for value in counts if value not in self.counts)
        if len(self.counts) + new > self.max_categories:
            raise ValueError(
                f"{new} new categories do not fit: {len(self.counts)} of "
                f"{self.max_categories} already used (check accepts() first)"
            )
        for value, n in counts.items():
            self.counts[value] = self.counts.get(value, 0) + n
        self.total += sum(counts.values())

    def to_state(self) -> CategoryCountsState:
        return CategoryCountsState(self.max_categories, dict(self.counts))

    @classmethod
    def from_state(cls, state: CategoryCountsState) -> CategoryCounts:
        if len(state.counts) > state.max_categories:
            raise ValueError(
                f"{len(state.counts)} categories stored, max_categories is {state.max_categories}"
            )
        counts = cls(state.max_categories)
        counts.counts = dict(state.counts)
        counts.total = sum(counts.counts.values())
        return counts
