"""Where compiled kernels are cached, and whether that place is safe (no numba here)."""

from __future__ import annotations

import os
import stat
from pathlib import Path

__all__ = ["UnsafeCacheError", "check_cache_dir"]


class UnsafeCacheError(RuntimeError):
    """The kernel cache directory could hold code planted by another user."""

    def __init__(self, problem: str, remedy: str) -> None:
        super().__init__(f"{problem}. {remedy}")
        self.problem, self.remedy = problem, remedy


def check_cache_dir(path: str | None) -> None:
    """Refuse a ``NUMBA_CACHE_DIR`` that another user owns or may write to: numba loads machine
    code and a pickled index from it, so whoever can write there can run code in the worker.
    A directory that does not exist yet is fine (numba creates it with the worker's umask).

    >>> import tempfile
    >>> with tempfile.TemporaryDirectory() as mine:
    ...     check_cache_dir(mine)
    >>> try:
    ...     check_cache_dir("/tmp")  # world-writable, sticky
    ... except UnsafeCacheError as error:
    ...     print(str(error)[:68])
    NUMBA_CACHE_DIR=/tmp is writable by other users (mode 1777): the wor
    """
    if not path:
        return
    try:
        info = Path(path).stat()
    except FileNotFoundError:
        return
    mode = stat.S_IMODE(info.st_mode)
    if info.st_uid != os.geteuid():
        problem = f"owned by uid {info.st_uid}, not this user ({os.geteuid()})"
    elif mode & (stat.S_IWGRP | stat.S_IWOTH):
        problem = f"writable by other users (mode {mode:o})"
    else:
        return
    raise UnsafeCacheError(
        f"NUMBA_CACHE_DIR={path} is {problem}: the worker would load compiled code from it",
        "Point NUMBA_CACHE_DIR at a directory only this user can write (e.g. a new one), or set "
        "STREAMDRIFT_KERNELS=reference.",
    )
