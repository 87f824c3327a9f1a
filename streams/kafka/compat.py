"""The other libraries' internals the worker relies on, named in one place and checked at start.

Neither faust-streaming nor aiokafka offers a public way to do these things the worker needs:

* clamp every offset commit to the Redis checkpoint (Faust's ``Consumer._commit``),
* take whole batches of records from Faust's consumer thread (``Consumer._wait_next_records``,
  ``App._fetcher``) and size its polls (aiokafka's ``AIOKafkaConsumer._max_poll_records``),
* shorten aiokafka's fetch wait, which faust-streaming hard-codes to 1.5 s
  (``AIOKafkaConsumerThread._create_worker_consumer``, ``AIOKafkaConsumer._fetch_max_wait_ms``),
* and, for the start-up check of the brokers, read the request versions aiokafka speaks
  (``Request._CLASSES``) and ask a broker's (``aiokafka.conn.create_conn``);

and checkpoints hold river's ADWIN / Page-Hinkley state layout. Those uses live in
:mod:`streams.kafka.app` and :mod:`streams.kafka.intake` (and :mod:`detectors` for river). A new
release may rename any of them, and the failure would be silent (a commit no longer clamped is
a lost exactly-once guarantee). So the worker calls :func:`check` before it starts: a library
outside the range tested here, or missing one of these names, stops it with one line saying
which and what to do. ``STREAMDRIFT_ALLOW_UNTESTED_LIBRARIES=1`` turns the version check into a
warning (the names are still checked).
"""

from __future__ import annotations

import inspect
import logging
import os
from collections.abc import Callable
from dataclasses import dataclass
from importlib.metadata import PackageNotFoundError, version

from packaging.version import Version

log = logging.getLogger("streamdrift")

#: Distribution -> [lowest tested, first untested) version: the pins of pyproject.toml.
TESTED = {
    "faust-streaming": ("0.15.3", "0.16"),
    "aiokafka": ("0.13", "0.15"),
    "river": ("0.26.1", "0.27"),
}


class IncompatibleLibrary(RuntimeError):
    """A library the worker relies on is of an untested version or lacks a needed internal:
    ``problem`` says which, ``remedy`` what to do."""

    def __init__(self, problem: str, remedy: str) -> None:
        super().__init__(f"{problem}: {remedy}")
        self.problem = problem
        self.remedy = remedy


@dataclass(frozen=True)
class Internal:
    """One private name of another library, and how to tell it is there."""

    library: str
    name: str
    present: Callable[[], bool]


def _faust_consumer_has(name: str) -> Callable[[], bool]:
    def present() -> bool:
        from faust.transport.consumer import Consumer

        return callable(getattr(Consumer, name, None))

    return present


def _faust_thread_has(name: str) -> Callable[[], bool]:
    def present() -> bool:
        from faust.transport.drivers.aiokafka import AIOKafkaConsumerThread

        return callable(getattr(AIOKafkaConsumerThread, name, None))

    return present


def _set_in_init(module: str, cls: str, attribute: str) -> Callable[[], bool]:
    """An instance attribute: the class's ``__init__`` must assign it (read from its source,
    since making an instance needs a running loop and a broker)."""

    def present() -> bool:
        owner = getattr(__import__(module, fromlist=[cls]), cls)
        return f"self.{attribute} =" in inspect.getsource(owner.__init__)

    return present


INTERNALS = (
    Internal("faust-streaming", "Consumer._commit", _faust_consumer_has("_commit")),
    Internal(
        "faust-streaming", "Consumer._wait_next_records", _faust_consumer_has("_wait_next_records")
    ),
    Internal(
        "faust-streaming",
        "AIOKafkaConsumerThread._create_worker_consumer",
        _faust_thread_has("_create_worker_consumer"),
    ),
    Internal(
        "faust-streaming", "App._fetcher", lambda: hasattr(__import__("faust").App, "_fetcher")
    ),
    Internal(
        "aiokafka",
        "AIOKafkaConsumer._fetch_max_wait_ms",
        _set_in_init("aiokafka.consumer.consumer", "AIOKafkaConsumer", "_fetch_max_wait_ms"),
    ),
    Internal(
        "aiokafka",
        "AIOKafkaConsumer._max_poll_records",
        _set_in_init("aiokafka.consumer.consumer", "AIOKafkaConsumer", "_max_poll_records"),
    ),
    # The start-up check of the brokers (streams.kafka.preflight): the request versions the
    # client speaks, and one connection of its own for ApiVersions.
    Internal("aiokafka", "Request._CLASSES", lambda: _fetch_request_versions() > 0),
    Internal(
        "aiokafka",
        "aiokafka.conn.create_conn",
        lambda: callable(
            getattr(__import__("aiokafka.conn", fromlist=["conn"]), "create_conn", None)
        ),
    ),
)


def _fetch_request_versions() -> int:
    """How many versions of the Fetch request aiokafka lists in ``FetchRequest._CLASSES``."""
    from aiokafka.protocol.fetch import FetchRequest

    return len(getattr(FetchRequest, "_CLASSES", ()))


def untested_versions(installed: dict[str, str | None] | None = None) -> list[str]:
    """One line per library whose installed version is outside :data:`TESTED`."""
    found = installed if installed is not None else {name: _installed(name) for name in TESTED}
    problems = []
    for name, (low, high) in TESTED.items():
        got = found.get(name)
        if got is None:
            problems.append(f"{name} is not installed (streamdrift needs >={low},<{high})")
        elif not Version(low) <= Version(got) < Version(high):
            problems.append(
                f"{name} {got} is installed; streamdrift is tested with >={low},<{high}"
            )
    return problems


def missing_internals(internals: tuple[Internal, ...] | None = None) -> list[str]:
    """The internals (default: :data:`INTERNALS`) that are not there, as ``library: name``."""
    missing = []
    for internal in INTERNALS if internals is None else internals:
        try:
            there = internal.present()
        except (ImportError, AttributeError, OSError, TypeError):
            there = False
        if not there:
            missing.append(f"{internal.library}: {internal.name}")
    return missing


def check(allow_untested: bool | None = None) -> None:
    """Raise :class:`IncompatibleLibrary` (one line, with what to do) unless every library is of
    a tested version and has every internal the worker uses."""
    if allow_untested is None:
        allow_untested = os.environ.get("STREAMDRIFT_ALLOW_UNTESTED_LIBRARIES", "") in (
            "1",
            "true",
            "yes",
        )
    missing = missing_internals()
    if missing:
        raise IncompatibleLibrary(
            f"the installed libraries lack what the worker relies on ({'; '.join(missing)})",
            f"install the tested versions ({_pins()})",
        )
    untested = untested_versions()
    if untested and not allow_untested:
        raise IncompatibleLibrary(
            "; ".join(untested),
            f"install the tested versions ({_pins()}), or set "
            "STREAMDRIFT_ALLOW_UNTESTED_LIBRARIES=1 to run anyway",
        )
    for line in untested:
        log.warning("untested library version: %s", line)


def _installed(name: str) -> str | None:
    try:
        return version(name)
    except PackageNotFoundError:
        return None


def _pins() -> str:
    return ", ".join(f"{name}>={low},<{high}" for name, (low, high) in TESTED.items())
