"""Deterministic sampling by event id: the same decision in every process and run."""

from __future__ import annotations

from hashlib import blake2b

__all__ = ["sampled"]


def sampled(event_id: str, rate: float) -> bool:
    """Whether the event ``event_id`` is kept at sampling ``rate``: deterministic, the same in
    every process and run (a keyed BLAKE2b of the id compared with the rate), and nested (an id
    kept at a rate is kept at every higher rate).

    >>> sampled("e-123", 1.0), sampled("e-123", 0.0)
    (True, False)
    >>> sampled("e-123", 0.5) == sampled("e-123", 0.5)
    True
    """
    if rate >= 1.0:
        return True
    if rate <= 0.0:
        return False
    return _hash64(event_id, b"sd-sample") < rate * 18446744073709551616.0  # 2**64


def _hash64(text: str, person: bytes) -> int:
    return int.from_bytes(blake2b(text.encode(), digest_size=8, person=person).digest(), "big")
