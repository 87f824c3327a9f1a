"""Alert lifecycle of one series: one ``detected`` per change episode, one ``resolved`` when it
subsides.

Rule
    A detection (of any detector) opens an episode unless one is open or the last detection
    came less than ``cooldown_events`` values ago; otherwise it is counted as suppressed and
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
"""

from __future__ import annotations

from typing import Annotated

import msgspec

__all__ = ["Lifecycle", "LifecycleState"]

_Count = Annotated[int, msgspec.Meta(ge=0)]


class LifecycleState(msgspec.Struct, frozen=True):
    cooldown_until: _Count
    is_open: bool
    quiet: _Count
    opened_by: str | None
    opened_at: int | None
    episodes: _Count
    suppressed: _Count
    resolved: _Count


class Lifecycle:
    """Episode state of one series (see the module docstring for the rule)."""

    def __init__(self, cooldown_events: int, resolve_windows: int, resolvable: bool) -> None:
        self.cooldown_events = cooldown_events
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

    def fire(self, events_seen: int, detector: str, position: int | None) -> bool:
        """A detector fired after ``events_seen`` values; True if that opens an episode."""
        opens = not self.is_open and events_seen > self.cooldown_until
        self.cooldown_until = max(self.cooldown_until, events_seen + self.cooldown_events)
        self.quiet = 0
        if not opens:
            self.suppressed += 1
            return False
        self.is_open = self.resolvable
        self.opened_by, self.opened_at = detector, position
        self.episodes += 1
        return True

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
        )

    @classmethod
    def from_state(
        cls, state: LifecycleState, cooldown_events: int, resolve_windows: int, resolvable: bool
    ) -> Lifecycle:
        lifecycle = cls(cooldown_events, resolve_windows, resolvable)
        lifecycle.cooldown_until, lifecycle.is_open, lifecycle.quiet = (
            state.cooldown_until,
            state.is_open,
            state.quiet,
        )
        lifecycle.opened_by, lifecycle.opened_at = state.opened_by, state.opened_at
        lifecycle.episodes, lifecycle.suppressed = state.episodes, state.suppressed
        lifecycle.resolved = state.resolved
        return lifecycle
