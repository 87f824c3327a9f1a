"""numba's ``njit`` with an on-disk cache where one can be written, and without one elsewhere."""

from __future__ import annotations

import os
import warnings
from collections.abc import Callable
from typing import Any, TypeVar, cast

from streamdrift.detectors.kernels.cache import check_cache_dir

# Before numba reads its configuration (at import).
check_cache_dir(os.environ.get("NUMBA_CACHE_DIR"))

import numba  # noqa: E402

F = TypeVar("F", bound=Callable[..., Any])


def jit(function: F) -> F:
    """``numba.njit(cache=True)``: compiled on first call, the machine code cached beside the
    module (or in ``NUMBA_CACHE_DIR``) so the next process loads it in milliseconds.

    numba refuses to decorate a cached function when no cache directory is writable (a read-only
    root filesystem without ``NUMBA_CACHE_DIR``): the kernel is then compiled in every process
    (a few seconds at start) instead of failing the import. No ``fastmath``: the kernels must
    round exactly as the reference implementations do.
    """
    try:
        return cast(F, numba.njit(cache=True)(function))
    except RuntimeError as error:  # "cannot cache function ...: no locator available"
        warnings.warn(
            f"numba cannot cache {function.__name__} ({error}); set NUMBA_CACHE_DIR to a "
            "writable directory to keep compiled kernels across restarts",
            RuntimeWarning,
            stacklevel=2,
        )
        return cast(F, numba.njit(cache=False)(function))
