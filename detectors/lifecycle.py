"""Alert lifecycle of one series: one ``detected`` per change episode, one ``resolved`` when it
subsides.

Rule
    A detection (of any detector) opens an episode unless one is open, the last detection
    came less than ``cooldown_events`` values ago, or the last episode opened less than
    ``cooldown_s`` seconds of event time ago (when both have an event time; one stamped before
    the last opening counts as after the cool-down, so an event stamped far ahead cannot
    silence a series): at most one alert per ``cooldown_s`` however a series flaps. Otherwise
    it is counted as suppressed and
    belongs to the current episode, whose cool-down it extends: a change that keeps firing
    the detectors is one episode however long it lasts. With window tests, an open episode is
    resolved after ``resolve_windows`` consecutive window evaluations that are *settled* (the
    monitor's judgement: every test's p-value at least the looser ``window.resolve_alpha``, or
    its effect below half its floor) with no detection in between: a hysteresis band between
    alerting (p < alpha and effect >= floor) and resolving, so a change too small for the
    window tests to confirm does not flap between detected and resolved. An error stream has no
    window tests: its evaluations are the means of consecutive blocks of errors against the
    reference's (:class:`~detectors.monitor.ErrorMonitor`), with the same hysteresis. Where
    nothing can resolve an episode (``window`` not among a feature's detectors), it ends
    ``cooldown_events`` values after its last detection.

>>> lifecycle = Lifecycle(cooldown_events=100, resolve_windows=2, resolvable=True)
>>> lifecycle.fire(50, "window", 50), lifecycle.fire(400, "adwin", 400)  # open: suppressed
(True, False)
>>> [lifecycle.observe(settled) for settled in (True, False, True, True)]
[False, False, False, True]
>>> lifecycle.is_open, lifecycle.episodes, lifecycle.suppressed
(False, 1, 1)
>>> lifecycle.fire(480, "adwin", 480)  # within 100 values of the last detection (400)
False
>>> lifecycle.fire(581, "adwin", 581)  # the episode's cool-down is over
True
>>> timed = Lifecycle(cooldown_events=100, resolve_windows=2, resolvable=False, cooldown_s=60)
>>> timed.fire(50, "cusum", 50, at=1_000.0), timed.fire(5_000, "cusum", 5_000, at=1_030.0)
(True, False)
>>> timed.fire(9_000, "cusum", 9_000, at=1_065.0)  # 65 s after the episode opened
True
"""

from __future__ import annotations

import math
from typing import Annotated

import msgspec

__all__ = ["Lifecycle", "LifecycleState"]

_Count = Annotated[int, msgspec.Meta(ge=0)]


class LifecycleState(msgspec.Struct, frozen=True, omit_defaults=True):
    cooldown_until: _Count
    is_open: bool
    quiet: _Count
    opened_by: str | None
    opened_at: int | None
    episodes: _Count
    suppressed: _Count
    resolved: _Count
    # Added within format 3: states written before have none.
    last_time: float | None = None


class Lifecycle:
    """Episode state of one series (see the module docstring for the rule)."""

    def __init__(
        self, cooldown_events: int, resolve_windows: int, resolvable: bool, cooldown_s: float = 0.0
    ) -> None:
        self.cooldown_events = cooldown_events
        self.cooldown_s = cooldown_s
        self.last_time: float | None = None  # event time of the last opening, if known
        self.resolve_windows = resolve_windows
        self.resolvable = resolvable
        self.cooldown_until = 0  # detections up to this many values belong to the last episode
        self.is_open = False
        self.quiet = 0  # settled windows of the open episode since its last detection
        self.opened_by: str | None = None
        self.opened_at: int | None = None
        self.episodes = 0
        self.suppressed = 0
        self.resolved = 0

    def fire(
        self, events_seen: int, detector: str, position: int | None, at: float | None = None
    ) -> bool:
        """A detector fired after ``events_seen`` values, on a value of event time ``at`` (if
        known); True if that opens an episode."""
        opens = not self.is_open and events_seen > self.cooldown_until and not self._recent(at)
        self.cooldown_until = max(self.cooldown_until, events_seen + self.cooldown_events)
        self.quiet = 0
        if not opens:
            self.suppressed += 1
            return False
        if at is not None and math.isfinite(at):
            self.last_time = at
        self.is_open = self.resolvable
        self.opened_by, self.opened_at = detector, position
        self.episodes += 1
        return True

    def _recent(self, at: float | None) -> bool:
        """Within ``cooldown_s`` after the last episode opened, by event time."""
        if not self.cooldown_s or at is None or self.last_time is None:
            return False
        return 0.0 <= at - self.last_time < self.cooldown_s

    def observe(self, settled: bool) -> bool:
        """A window was evaluated, ``settled`` near the reference or not; True if that resolves
        the open episode."""
        if not self.is_open:
            return False
        self.quiet = self.quiet + 1 if settled else 0
        if self.quiet < self.resolve_windows:
            return False
        self.is_open = False
        self.resolved += 1
        return True

    def to_state(self) -> LifecycleState:
        return LifecycleState(
            self.cooldown_until,
            self.is_open,
            self.quiet,
            self.opened_by,
            self.opened_at,
            self.episodes,
            self.suppressed,
            self.resolved,
            self.last_time,
        )

    @classmethod
    def from_state(
        cls,
        state: LifecycleState,
        cooldown_events: int,
        resolve_windows: int,
        resolvable: bool,
        cooldown_s: float = 0.0,
    ) -> Lifecycle:
        if state.last_time is not None and not math.isfinite(state.last_time):
            raise ValueError("the last detection's time is not finite")
        lifecycle = cls(cooldown_events, resolve_windows, resolvable, cooldown_s)
        lifecycle.last_time = state.last_time
        lifecycle.cooldown_until, lifecycle.is_open, lifecycle.quiet = (
            state.cooldown_until,
            state.is_open,
            state.quiet,
        )
        lifecycle.opened_by, lifecycle.opened_at = state.opened_by, state.opened_at
        lifecycle.episodes, lifecycle.suppressed = state.episodes, state.suppressed
        lifecycle.resolved = state.resolved
        return lifecycle
