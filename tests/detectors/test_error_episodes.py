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
    rng = np.random.default_rng(seed)
    values = errors(rng, (BASE, 3_000), (RAISED, 6_000), (BASE, 12_000), (RAISED, 6_000))
    found = run(ErrorMonitor(), values, batch)
    assert [event for event, _, _ in found] == ["detected", "resolved", "detected"]
    detected, resolved, again = (position for _, _, position in found)
    assert 3_000 <= detected < 9_000 <= resolved < 21_000 <= again
    # resolved after window.resolve_windows (3) blocks of window.events (500) at the old rate
    assert resolved - 9_000 >= 3 * 500 - 500


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
