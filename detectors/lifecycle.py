"""Alert lifecycle of one series: one ``detected`` per change episode, one ``resolved`` when it
subsides.

Rule
    A detection (of any detector) opens an episode unless one is open or the previous one
    opened less than ``cooldown_events`` values ago; otherwise it is counted as suppressed.
    With window tests, an open episode is resolved after ``resolve_windows`` consecutive
    window evaluations in which every test is *quiet* (p-value at least alpha, or effect below
    half its floor): a hysteresis band between alerting (p < alpha and effect >= floor) and
    resolving. Without window tests (error streams, or ``window`` not among the detectors),
    nothing can resolve an episode, and it ends with the cool-down as before.

>>> lifecycle = Lifecycle(cooldown_events=100, resolve_windows=2, resolvable=True)
>>> lifecycle.fire(50, "window", 50), lifecycle.fire(400, "adwin", 400)  # open: suppressed
(True, False)
>>> [lifecycle.observe(quiet) for quiet in (True, False, True, True)]
[False, False, False, True]
>>> lifecycle.is_open, lifecycle.episodes, lifecycle.suppressed
(False, 1, 1)
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
        self.cooldown_until = 0  # detections up to this many values are suppressed
        self.is_open = False
        self.quiet = 0  # consecutive quiet windows of the open episode
        self.opened_by: str | None = None
        self.opened_at: int | None = None
        self.episodes = 0
        self.suppressed = 0
        self.resolved = 0

    def fire(self, events_seen: int, detector: str, position: int) -> bool:
        """A detector fired after ``events_seen`` values; True if that opens an episode."""
        if self.is_open or events_seen <= self.cooldown_until:
            self.suppressed += 1
            return False
        self.cooldown_until = events_seen + self.cooldown_events
        self.is_open = self.resolvable
        self.quiet = 0
        self.opened_by, self.opened_at = detector, position
        self.episodes += 1
        return True

    def observe(self, quiet: bool) -> bool:
        """A window was evaluated; True if that resolves the open episode."""
        if not self.is_open:
            return False
        self.quiet = self.quiet + 1 if quiet else 0
        if self.quiet < self.resolve_windows:
            return False
        self.is_open = False
        self.resolved += 1
        return True

    def to_state(self) -> LifecycleState:
        return LifecycleState(
            self.cooldown_until, self.is_open, self.quiet, self.opened_by, self.opened_at,
            self.episodes, self.suppressed, self.resolved,
        )

    @classmethod
    def from_state(
        cls, state: LifecycleState, cooldown_events: int, resolve_windows: int, resolvable: bool
    ) -> Lifecycle:
        lifecycle = cls(cooldown_events, resolve_windows, resolvable)
        lifecycle.cooldown_until, lifecycle.is_open, lifecycle.quiet = (
            state.cooldown_until, state.is_open, state.quiet
        )
        lifecycle.opened_by, lifecycle.opened_at = state.opened_by, state.opened_at
        lifecycle.episodes, lifecycle.suppressed = state.episodes, state.suppressed
        lifecycle.resolved = state.resolved
        return lifecycle
