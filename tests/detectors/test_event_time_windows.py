"""Event-time windows: a watermark (newest event time minus the allowed lateness) closes them."""

import math

import numpy as np
import pytest

from streamdrift.detectors import (
    CategoricalMonitor,
    MonitorParams,
    NumericMonitor,
    WindowParams,
    monitor_from_bytes,
)
from streamdrift.detectors.windows import NumericWindows

SIZE, LATENESS = 10.0, 3.0


def stream(n=12_000, jitter=5.0, seed=0):
    """100 events/s whose event times arrive up to ``jitter`` seconds out of order."""
    rng = np.random.default_rng(seed)
    times = 1_000 + np.arange(n) * 0.01 + rng.uniform(-jitter, jitter, n)
    return rng.normal(size=n), times


def windows(lateness=LATENESS):
    params = WindowParams(seconds=SIZE, allowed_lateness_s=lateness, reference_events=1_000)
    return NumericWindows(params, 1e-6, NumericWindows.cuts_of(np.linspace(-2, 2, 50), 10))


def event_by_event(times, lateness=LATENESS, skip=1_000):
    """The definition, one event at a time: (window, events) of each closed window, and the
    number of late events."""
    newest, open_, closed, late = -math.inf, {}, [], 0
    for t in times[skip:]:
        w = math.floor(t / SIZE)
        if (w + 1) * SIZE + lateness <= newest:
            late += 1
        else:
            open_[w] = open_.get(w, 0) + 1
        newest = max(newest, t)
        for done in sorted(w for w in open_ if (w + 1) * SIZE + lateness <= newest):
            closed.append((done * SIZE, open_.pop(done)))
    return closed, late


def feed(win, values, times, batch):
    found = []
    for i in range(0, len(values), batch):
        sl = slice(i, i + batch)
        found += win.update(
            values[sl], np.zeros(len(values[sl]), bool), np.arange(len(values))[sl], times[sl]
        )
    return found


@pytest.mark.parametrize("batch", [1, 97, 12_000])
def test_windows_and_late_events_follow_the_definition_whatever_the_batches(batch):
    values, times = stream()
    win = windows()
    found = feed(win, values, times, batch)
    expected, late = event_by_event(times)
    assert [(e.details["window_start"], e.current["count"]) for e in found] == expected
    assert win.late == late > 0  # 5 s of disorder, 3 s allowed: some events come too late


def test_enough_allowed_lateness_takes_every_event():
    values, times = stream(jitter=2.0)
    win = windows(lateness=4.0)
    found = feed(win, values, times, 500)
    assert win.late == 0
    assert (
        sum(e.current["count"] for e in found) + sum(p.events for p, _, _ in win.open.values())
        == 11_000
    )


def test_state_round_trips_with_open_windows():
    params = MonitorParams(
        detectors=("window",),
        window=WindowParams(seconds=SIZE, allowed_lateness_s=LATENESS, reference_events=1_000),
    )
    values, times = stream(seed=1)
    values[8_000:] += 1.0  # event time ~1080 s
    whole = NumericMonitor(params)
    expected = [(d.event, d.position) for d in whole.update(values, np.arange(len(values)), times)]
    first = NumericMonitor(params)
    found = first.update(values[:5_000], np.arange(5_000), times[:5_000])
    restored = monitor_from_bytes(first.to_bytes())
    assert (
        restored.windows.open.keys() == first.windows.open.keys()
        and restored.windows.late == first.windows.late
    )
    found += restored.update(values[5_000:], np.arange(5_000, len(values)), times[5_000:])
    assert [(d.event, d.position) for d in found] == expected and expected[0][0] == "detected"
    assert restored.summary()["windows"]["late"] == whole.windows.late


def test_categorical_monitors_use_event_time_too_and_times_are_required():
    params = MonitorParams(window=WindowParams(seconds=SIZE, reference_events=100))
    monitor = CategoricalMonitor(params)
    monitor.update(["a", "b"] * 100, range(200), 1_000 + np.arange(200) * 0.1)
    # [1010, 1020) still open
    assert monitor.windows.evaluated == 0 and len(monitor.windows.open) == 1
    monitor.update(["a"], [200], [1_030.0])
    assert monitor.windows.evaluated == 1
    with pytest.raises(ValueError, match="need the events' times"):
        monitor.update(["a"], [201])


def test_a_warm_up_ending_on_a_batchs_last_value_leaves_the_windows_nothing_to_add():
    """The warm-up's last value ends the batch: the windows get an empty stretch, before their
    reference is complete (this raised IndexError)."""
    params = MonitorParams(
        warmup_events=30, window=WindowParams(events=50, reference_events=100, seconds=SIZE)
    )
    monitor = NumericMonitor(params)
    assert monitor.update(np.arange(30.0), np.arange(30), 1_000 + np.arange(30.0)) == []
    assert monitor.windows is not None and monitor.windows.reference.count == 0
    monitor.update(np.arange(200.0), np.arange(30, 230), 1_030 + np.arange(200.0))
    assert monitor.windows.reference.count == 100
