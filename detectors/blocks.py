"""Consecutive blocks of a stream's values and their means: what tells an error stream's episode
that the error rate is back at its reference (:class:`~detectors.monitor.ErrorMonitor`).

A series with window tests resolves an episode when its windows look like the reference again;
an error stream has no window tests (its values are 0/1 misclassifications or absolute errors,
and its detectors watch the mean), so it judges the mean of each block of ``size`` values
instead: :func:`settled_mean` is the window tests' hysteresis applied to a block's mean.

>>> import numpy as np
>>> blocks = Blocks(4)
>>> [(b.index, b.position, b.evidence_from, b.mean) for b in blocks.update(
...     np.array([0.0, 1.0, 1.0, 0.0, 1.0, 1.0]), np.arange(100, 106))]
[(3, 103, 100, 0.5)]
>>> blocks.update(np.array([1.0, 1.0]), np.arange(106, 108))[0].mean
1.0
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Annotated, Any

import msgspec
import numpy as np
from numpy.typing import NDArray

__all__ = ["Block", "Blocks", "BlocksState", "settled_mean"]

_Count = Annotated[int, msgspec.Meta(ge=0)]


class BlocksState(msgspec.Struct, frozen=True):
    filled: _Count
    total: float
    first: int | None


@dataclass(frozen=True)
class Block:
    """A block that closed: ``index`` of its last value in the batch given to
    :meth:`Blocks.update`, the tags of its last and first values, its mean and size."""

    index: int
    position: int
    evidence_from: int
    mean: float
    size: int


class Blocks:
    """Blocks of ``size`` consecutive values; the part of a block filled so far is carried
    from one batch to the next (and in the checkpoint)."""

    def __init__(self, size: int) -> None:
        if size < 1:
            raise ValueError("a block holds at least one value")
        self.size = size
        self.filled = 0
        self.total = 0.0
        self.first: int | None = None  # tag of the open block's first value

    def update(
        self, values: NDArray[np.float64], positions: NDArray[np.integer[Any]]
    ) -> list[Block]:
        """Add finite ``values`` tagged by ``positions``; the blocks that closed, in order."""
        closed = []
        start = 0
        while start < len(values):
            if self.filled == 0:
                self.first = int(positions[start])
            end = min(start + self.size - self.filled, len(values))
            self.total += float(np.sum(values[start:end]))
            self.filled += end - start
            start = end
            if self.filled == self.size:
                assert self.first is not None
                mean = self.total / self.size
                block = Block(end - 1, int(positions[end - 1]), self.first, mean, self.size)
                closed.append(block)
                self.filled, self.total, self.first = 0, 0.0, None
        return closed

    def to_state(self) -> BlocksState:
        return BlocksState(self.filled, self.total, self.first)

    @classmethod
    def from_state(cls, state: BlocksState, size: int) -> Blocks:
        if state.filled >= size or not math.isfinite(state.total):
            raise ValueError("stored block does not fit its size")
        if (state.first is None) != (state.filled == 0):
            raise ValueError("stored block's first tag does not match its fill")
        blocks = cls(size)
        blocks.filled, blocks.total, blocks.first = state.filled, state.total, state.first
        return blocks


def settled_mean(
    mean: float,
    size: int,
    reference: tuple[float, float, int],
    floor: float,
    alpha: float,
) -> tuple[bool, float, float, float]:
    """Whether a block's ``mean`` (of ``size`` values) looks like the reference's (``reference``
    = its mean, standard deviation and count): its effect ``|mean - reference mean| / reference
    std`` below half the ``floor``, or the two-sample z-test of the means (the reference's own
    sampling error included) not significant at ``alpha``. Returns (settled, z, p-value,
    effect).

    >>> settled_mean(0.31, 500, (0.30, 0.46, 1000), floor=0.1, alpha=0.05)[0]
    True
    >>> settled_mean(0.60, 500, (0.30, 0.46, 1000), floor=0.1, alpha=0.05)[0]
    False
    """
    reference_mean, reference_std, reference_count = reference
    effect = abs(mean - reference_mean) / reference_std
    z = effect / math.sqrt(1.0 / size + 1.0 / max(reference_count, 1))
    p_value = math.erfc(z / math.sqrt(2.0))
    return effect < floor / 2 or p_value >= alpha, z, p_value, effect
