"""Compiled batch kernels: the detectors' per-value loops, run over a whole batch at once.

A detector hands a series' batch of values to one kernel call instead of running a Python loop
(or a dozen numpy calls) per value. Every kernel computes what the reference implementation
computes, in the same floating-point order, so detections, statistics and checkpointed state are
bit-identical (``tests/detectors/test_kernels.py`` checks that against river and the numpy code
on thousands of random streams). The reference implementations stay selectable:

``compiled`` (the default)
    numba kernels (:mod:`.adwin`, :mod:`.cusum`, :mod:`.moments`, :mod:`.page_hinkley`,
    :mod:`.windows`), compiled on first use and cached on disk.
``reference``
    river's ADWIN and Page-Hinkley called value by value, the CUSUM bank and the moments as
    numpy array passes: the oracle the kernels are tested against, and a fallback should a
    kernel ever be suspected.

The backend is chosen per process, before detectors are created (:func:`use`); a detector keeps
the backend it was created with. Both backends read and write the same checkpoint state.

>>> use("reference"); active()
'reference'
>>> use("compiled"); active()
'compiled'
"""

from __future__ import annotations

import time
from typing import Literal, get_args

from streamdrift.detectors.kernels.cache import UnsafeCacheError, check_cache_dir

__all__ = [
    "BACKENDS",
    "Backend",
    "UnsafeCacheError",
    "active",
    "check_cache_dir",
    "compiled",
    "use",
    "warm_up",
]

Backend = Literal["compiled", "reference"]
BACKENDS: tuple[Backend, ...] = get_args(Backend)

_active: Backend = "compiled"


def use(backend: Backend) -> None:
    """Select the backend of the detectors created from now on in this process."""
    global _active
    if backend not in BACKENDS:
        raise ValueError(f"unknown kernel backend {backend!r}: one of {', '.join(BACKENDS)}")
    _active = backend


def active() -> Backend:
    return _active


def compiled() -> bool:
    return _active == "compiled"


def warm_up() -> float:
    """Compile (or load from the on-disk cache) every kernel now rather than on the first batch;
    the seconds it took. A no-op with the reference backend."""
    if not compiled():
        return 0.0
    began = time.perf_counter()
    # Imported here: the kernels' modules import the detectors' configuration, which imports
    # this package.
    from streamdrift.detectors.kernels import adwin, cusum, moments, page_hinkley, windows

    for module in (adwin, cusum, moments, page_hinkley, windows):
        module.warm_up()
    return time.perf_counter() - began
