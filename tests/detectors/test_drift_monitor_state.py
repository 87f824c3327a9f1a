from itertools import pairwise

import msgspec
import numpy as np
import pytest

from streamdrift.detectors import (
    FORMAT_VERSION,
    CategoricalMonitor,
    ErrorMonitor,
    MonitorParams,
    NumericMonitor,
    StateError,
    WindowParams,
    monitor_from_bytes,
)


def numeric_stream():
    rng = np.random.default_rng(30)
    values = rng.normal(100.0, 15.0, 12_000)
    values[4_000:] += 15.0
    values[5_000:] += 15.0  # within the episode: suppressed
    values[9_000:] -= 30.0  # back at the reference: the episode is resolved
    return values


# The window tests' reference (values 500-3,500) ends before the first change; sketches this
# large keep the warm-up and that reference exactly, so two runs bin and test alike.
NUMERIC_PARAMS = MonitorParams(
    cooldown_events=3_000, kll_k=4_096, window=WindowParams(reference_events=3_000)
)


def error_stream():
    rng = np.random.default_rng(31)
    return np.concatenate([rng.random(3_000) < 0.1, rng.random(3_000) < 0.3]).astype(float)


def run(monitor, values, bounds, restore_at):
    """Feed values[bounds[k]:bounds[k+1]], saving and restoring before batch k in restore_at."""
    detections = []
    for k, (start, stop) in enumerate(pairwise(bounds)):
        if k in restore_at:
            restored = monitor_from_bytes(monitor.to_bytes())
            assert type(restored) is type(monitor)
            monitor = restored
        detections += monitor.update(values[start:stop], np.arange(start, stop))
    return detections, monitor


def comparable_state(monitor):
    """The state without the sketches, whose compaction is randomised."""
    state = msgspec.structs.asdict(monitor._to_state())
    return {k: v for k, v in state.items() if k not in ("sketch", "reference_sketch")}


def without_quantiles(detections):
    """Two runs build their reference sketches with different random compactions."""
    return [
        (
            d.detector,
            d.statistic,
            d.position,
            d.evidence_from,
            d.events_seen,
            d.effect_size,
            {k: v for k, v in d.reference.items() if k != "quantiles"},
            d.current,
        )
        for d in detections
    ]


@pytest.mark.parametrize(
    ("make", "values", "params"),
    [
        (NumericMonitor, numeric_stream(), NUMERIC_PARAMS),
        (ErrorMonitor, error_stream(), MonitorParams()),
    ],
    ids=["numeric", "error"],
)
def test_restored_mid_stream_behaves_identically(make, values, params):
    bounds = [*range(0, len(values), 250), len(values)]
    expected, uninterrupted = run(make(params), values, bounds, restore_at=())
    assert expected
    # A batch ending on a detection leaves the next evidence_from pending: restore there too.
    cut = expected[0].position + 1
    bounds = sorted(set(bounds) | {cut})
    # Same batches without restoring: batches change the float rounding of the moments.
    _, uninterrupted = run(make(params), values, bounds, restore_at=())
    restore_at = set(range(1, len(bounds) - 1))  # mid warm-up, end of warm-up, every batch
    detections, restored = run(make(params), values, bounds, restore_at)
    assert without_quantiles(detections) == without_quantiles(expected)
    assert comparable_state(restored) == comparable_state(uninterrupted)


def test_restored_numeric_monitor_keeps_counters():
    monitor = NumericMonitor(NUMERIC_PARAMS)
    values = numeric_stream()
    found = monitor.update(values, np.arange(len(values)))
    assert [d.event for d in found] == ["detected", "resolved"]
    monitor.update_missing(7)
    restored = monitor_from_bytes(monitor.to_bytes())
    assert (restored.count, restored.missing, restored.episodes) == (12_000, 7, 1)
    assert restored.suppressed == monitor.suppressed >= 1
    assert restored.lifecycle.resolved == 1 and not restored.lifecycle.is_open
    assert restored.windows.evaluated == monitor.windows.evaluated == 17
    assert restored.params == monitor.params
    assert restored.summary() == monitor.summary()  # sketches included


def test_categorical_round_trip():
    monitor = CategoricalMonitor(MonitorParams(max_categories=3))
    monitor.update(["a", "b", "a"], [0, 1, 2])
    monitor.update_missing(2)
    restored = monitor_from_bytes(monitor.to_bytes())
    assert isinstance(restored, CategoricalMonitor)
    assert restored.summary() == monitor.summary()
    assert not restored.accepts("d", pending_new={"c"})


def test_state_is_plain_msgpack_data():
    monitor = NumericMonitor()
    monitor.update(numeric_stream()[:1_000], np.arange(1_000))
    state = msgspec.msgpack.decode(monitor.to_bytes())  # untyped: only maps, lists, numbers
    assert state["version"] == FORMAT_VERSION and state["monitor"]["type"] == "numeric"


def tampered(data, change):
    state = msgspec.msgpack.decode(data)
    change(state)
    return msgspec.msgpack.encode(state)


def test_corrupt_or_incompatible_bytes_raise_state_error():
    monitor = NumericMonitor()
    monitor.update(numeric_stream()[:5_000], np.arange(5_000))
    good = monitor.to_bytes()
    monitor_from_bytes(good)

    with pytest.raises(StateError, match="format version 99"):
        monitor_from_bytes(tampered(good, lambda s: s.update(version=99)))
    corrupt = [
        b"",
        b"\xc1",
        np.random.default_rng(32).bytes(2_000),
        good[:-20],
        tampered(good, lambda s: s["monitor"]["params"].update(warmup_events=-1)),
        tampered(good, lambda s: s["monitor"].update(type="spectral")),
        tampered(good, lambda s: s["monitor"].update(missing=-3)),
        tampered(good, lambda s: s["monitor"].update(sketch=b"\x00" * 40)),
        tampered(good, lambda s: s["monitor"]["detectors"]["adwin"].update(window=b"\x00" * 700)),
        tampered(good, lambda s: s["monitor"]["detectors"].pop("adwin")),
        tampered(good, lambda s: s["monitor"]["stats"].update(m2=-1.0)),
    ]
    for data in corrupt:
        with pytest.raises(StateError):
            monitor_from_bytes(data)
