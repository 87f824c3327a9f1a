"""An error stream's episode lasts as long as its error rate stays off the reference: one
``detected`` however long a rise lasts and however fast labels come, one ``resolved`` when the
rate is back, and the same through checkpoints at any point."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from streamdrift.detectors import ErrorMonitor, MonitorParams, monitor_from_bytes
from streamdrift.detectors.blocks import Blocks

BASE, RAISED = 0.10, 0.35


def errors(rng: np.random.Generator, *segments: tuple[float, int]) -> np.ndarray:
    return np.concatenate([rng.random(n) < rate for rate, n in segments]).astype(float)


def run(monitor: ErrorMonitor, values: np.ndarray, batch: int) -> list[tuple[str, str, int]]:
    found = []
    for start in range(0, len(values), batch):
        chunk = values[start : start + batch]
        found += monitor.update(chunk, np.arange(start, start + len(chunk)))
    return [(d.event, d.detector, d.position) for d in found]


@settings(max_examples=8, deadline=None)
@given(st.integers(0, 2**32 - 1), st.sampled_from([7, 37, 500, 4_000]))
def test_a_sustained_rise_is_one_episode_however_long(seed, batch):
    """60,000 errors at 3.5 times the reference rate: the detectors fire again and again (the
    CUSUM bank restarts after each firing), but only the first firing is an alert."""
    rng = np.random.default_rng(seed)
    monitor = ErrorMonitor()
    found = run(monitor, errors(rng, (BASE, 3_000), (RAISED, 60_000)), batch)
    assert [event for event, _, _ in found] == ["detected"]
    assert found[0][2] >= 3_000
    assert monitor.lifecycle.is_open and monitor.episodes == 1


@settings(max_examples=8, deadline=None)
@given(st.integers(0, 2**32 - 1), st.sampled_from([3, 250, 3_000]))
def test_the_rate_coming_back_resolves_and_a_new_rise_opens_a_new_episode(seed, batch):
    """Back at the reference's rate means back at the rate the reference measured: a reference
    of 2,000 errors (the default 200 can be off by half of a 10% rate, and then the detectors
    keep firing on the old rate: the episode stays open, rightly, against that reference)."""
    rng = np.random.default_rng(seed)
    values = errors(rng, (BASE, 4_000), (RAISED, 6_000), (BASE, 12_000), (RAISED, 6_000))
    monitor = ErrorMonitor(MonitorParams(error_warmup_events=2_000))
    found = run(monitor, values, batch)
    assert [event for event, _, _ in found] == ["detected", "resolved", "detected"]
    detected, resolved, again = (position for _, _, position in found)
    assert 4_000 <= detected < 10_000 <= resolved < 22_000 <= again
    # resolved after window.resolve_windows (3) blocks of window.events (500) at the old rate
    assert resolved - 10_000 >= 3 * 500 - 500


def test_on_a_stationary_stream_only_an_open_episode_resolves():
    """Blocks close all the time; a resolution comes only after a detection (a false alarm of
    the detectors, here and there over 200,000 errors), never on its own."""
    rng = np.random.default_rng(11)
    monitor = ErrorMonitor()
    found = run(monitor, errors(rng, (BASE, 200_000)), 2_000)
    events = [event for event, _, _ in found]
    pairs, unpaired = divmod(len(events), 2)
    assert events == ["detected", "resolved"] * pairs + ["detected"] * unpaired
    assert monitor.lifecycle.resolved == len(events) // 2


@settings(
    max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(st.integers(0, 2**32 - 1), st.lists(st.integers(1, 30_000), min_size=1, max_size=4))
def test_checkpoints_anywhere_give_the_same_alerts_and_state(seed, cuts):
    """Restored from its bytes at any point (mid-block, mid-episode), the monitor goes on as if
    never stopped: the block filled so far is part of the state."""
    rng = np.random.default_rng(seed)
    values = errors(rng, (BASE, 3_000), (RAISED, 8_000), (BASE, 12_000), (RAISED, 5_000))
    params = MonitorParams(cooldown_events=1_000)
    whole = ErrorMonitor(params)
    expected = run(whole, values, 700)
    pieces, monitor, start = [], ErrorMonitor(params), 0
    for cut in [*sorted(set(cuts)), len(values)]:
        chunk = values[start:cut]
        pieces += monitor.update(chunk, np.arange(start, start + len(chunk)))
        monitor = monitor_from_bytes(monitor.to_bytes())
        start = cut
    assert [(d.event, d.detector, d.position) for d in pieces] == expected
    # (the running moments and the KLL sketch round by batch, so the whole bytes may differ)
    assert monitor.blocks.to_state() == whole.blocks.to_state()
    assert monitor.lifecycle.to_state() == whole.lifecycle.to_state()


def test_a_block_that_does_not_fit_is_refused():
    blocks = Blocks(10)
    blocks.update(np.ones(4), np.arange(4))
    state = blocks.to_state()
    assert Blocks.from_state(state, 10).to_state() == state
    with pytest.raises(ValueError, match="does not fit"):
        Blocks.from_state(state, 4)


def run_timed(monitor, values, times, batch=500):
    found = []
    for start in range(0, len(values), batch):
        end = min(start + batch, len(values))
        found += monitor.update(values[start:end], np.arange(start, end), times[start:end])
    return [(d.event, d.position) for d in found]


@settings(max_examples=6, deadline=None)
@given(st.integers(0, 2**32 - 1))
def test_a_series_that_flaps_alerts_at_most_once_per_cooldown_s(seed):
    """Rise, fall, rise: the second rise comes 120 s (of event time) after the first opened.
    With cooldown_s = 600 it is counted, not alerted; with 60 it is a new episode. Without event
    times only the cool-down in values applies."""
    rng = np.random.default_rng(seed)
    values = errors(rng, (BASE, 4_000), (RAISED, 6_000), (BASE, 12_000), (RAISED, 6_000))
    times = 1.7e9 + np.arange(len(values)) * 0.01  # 100 labels per second
    events = {}
    for cooldown_s in (0.0, 60.0, 600.0):
        params = MonitorParams(error_warmup_events=2_000, cooldown_s=cooldown_s)
        events[cooldown_s] = [e for e, _ in run_timed(ErrorMonitor(params), values, times)]
    assert events[0.0] == events[60.0] == ["detected", "resolved", "detected"]
    assert events[600.0] == ["detected", "resolved"]
    untimed = ErrorMonitor(MonitorParams(error_warmup_events=2_000, cooldown_s=600.0))
    assert [e for e, _, _ in run(untimed, values, 500)] == events[0.0]


def test_an_event_stamped_far_ahead_does_not_silence_the_series():
    """The opening's event time comes from the input: one stamped a year ahead leaves later
    detections (stamped before it) outside the cool-down."""
    rng = np.random.default_rng(3)
    values = errors(rng, (BASE, 4_000), (RAISED, 6_000), (BASE, 12_000), (RAISED, 6_000))
    times = 1.7e9 + np.arange(len(values)) * 0.01
    times[4_000:10_000] += 365 * 86_400.0  # the first rise stamped a year ahead
    params = MonitorParams(error_warmup_events=2_000, cooldown_s=600.0)
    found = run_timed(ErrorMonitor(params), values, times)
    assert [event for event, _ in found] == ["detected", "resolved", "detected"]
