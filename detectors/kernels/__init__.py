"""Compiled batch kernels: the detectors' per-value loops, run over a whole batch at once.

A detector hands a series' batch of values to one kernel call instead of running a Python loop
(or a dozen numpy calls) per value. Every kernel computes what the reference implementation
computes, in the same floating-point order, so detections, statistics and checkpointed state are
bit-identical (``tests/detectors/test_kernels.py`` checks that against river and the numpy code
on thousands of random streams). Two backends:

``compiled``
    the kernels of the Rust extension ``streamdrift_kernels`` (the repository's ``native/``,
    built by ``make`` where a Rust toolchain is installed), called through :mod:`.adwin`,
    :mod:`.cusum`, :mod:`.moments`, :mod:`.page_hinkley` and :mod:`.windows`, and
    :mod:`.fused`, which runs several of them over a numeric series' batch in one call.
``reference``
    river's ADWIN and Page-Hinkley called value by value, the CUSUM bank and the moments as
    numpy array passes: the oracle the kernels are tested against, and what runs where the
    extension is not installed.

``auto`` (the default of :func:`use` and of ``STREAMDRIFT_KERNELS``) takes ``compiled`` when the
extension is installed and ``reference`` otherwise; asking for ``compiled`` explicitly fails
(:class:`KernelsUnavailable`) where it is not. The backend is chosen per process, before
detectors are created; a detector keeps the backend it was created with. Both backends read and
write the same checkpoint state.

>>> use("reference")
'reference'
>>> active()
'reference'
>>> use() == ("reference" if unavailable() else "compiled")  # auto
True
"""

from __future__ import annotations

import importlib
import time
from types import ModuleType
from typing import Literal, get_args

__all__ = [
    "API_VERSION",
    "BACKENDS",
    "CHOICES",
    "Backend",
    "Choice",
    "KernelsUnavailable",
    "active",
    "compiled",
    "unavailable",
    "use",
    "warm_up",
]

Backend = Literal["compiled", "reference"]
Choice = Literal["auto", "compiled", "reference"]
BACKENDS: tuple[Backend, ...] = get_args(Backend)
CHOICES: tuple[Choice, ...] = get_args(Choice)

# The extension's interface version (its ``API_VERSION``): a build of another version, left in a
# virtualenv from an older checkout, could take other arguments, so it counts as not installed.
API_VERSION = 3
EXTENSION = "streamdrift_kernels"
BUILD_HINT = (
    "build them with `make` on a machine with a Rust toolchain (cargo; https://rustup.rs), or "
    "`pip install ./native` from the repository"
)

_active: Backend = "reference"  # until use(), called below: auto


class KernelsUnavailable(RuntimeError):
    """``compiled`` was asked for, and the extension cannot be loaded."""

    def __init__(self, problem: str, remedy: str) -> None:
        super().__init__(f"{problem}. {remedy}")
        self.problem, self.remedy = problem, remedy


def _extension() -> ModuleType:
    return importlib.import_module(EXTENSION)


def unavailable() -> str | None:
    """Why the compiled kernels cannot be used here, or None if they can."""
    try:
        module = _extension()
    except ImportError as error:
        return f"the compiled kernels ({EXTENSION}) are not installed ({error})"
    version = getattr(module, "API_VERSION", None)
    if version != API_VERSION:
        return (
            f"the installed compiled kernels ({EXTENSION}) have interface version {version}, "
            f"this streamdrift needs {API_VERSION}"
        )
    return None


def use(choice: Choice = "auto") -> Backend:
    """Select the backend of the detectors created from now on in this process; returns it."""
    global _active
    if choice not in CHOICES:
        raise ValueError(f"unknown kernel backend {choice!r}: one of {', '.join(CHOICES)}")
    if choice == "reference":
        _active = "reference"
        return _active
    reason = unavailable()
    if reason is None:
        _active = "compiled"
    elif choice == "compiled":
        raise KernelsUnavailable(
            reason,
            f"Either {BUILD_HINT}, or set STREAMDRIFT_KERNELS=auto (or reference) to run the "
            "reference kernels: the same detections, slower",
        )
    else:
        _active = "reference"
    return _active


def active() -> Backend:
    return _active


def compiled() -> bool:
    return _active == "compiled"


def warm_up() -> float:
    """Load every kernel module now rather than on the first batch; the seconds it took. A no-op
    with the reference backend."""
    if not compiled():
        return 0.0
    began = time.perf_counter()
    for name in ("adwin", "cusum", "fused", "moments", "page_hinkley", "windows"):
        importlib.import_module(f"{__name__}.{name}")
    return time.perf_counter() - began


use("auto")
