"""The state envelope: kind and library versions recorded, older states loaded, and river-backed
detectors of another river release restarted afresh instead of failing the whole series.

``states/3868714-*.msgpack`` were written by the code of commit 3868714, before the envelope
recorded the kind and the library versions (monitor format 3, multivariate format 1).
"""

import copy
from pathlib import Path

import msgspec
import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from streamdrift.detectors import (
    FORMAT_VERSION,
    CategoricalMonitor,
    ErrorMonitor,
    Monitor,
    MonitorParams,
    MultivariateParams,
    NumericMonitor,
    PCAReconstructionMonitor,
    StateError,
    UnivariateMonitor,
    WindowParams,
    kernels,
    merge_summaries,
    monitor_from_bytes,
)
from streamdrift.detectors import page_hinkley as page_hinkley_module
from streamdrift.detectors.adwin import Adwin
from streamdrift.detectors.blocks import Blocks
from streamdrift.detectors.monitor import LIBRARIES
from streamdrift.detectors.multivariate import STATE_VERSION

STATES = Path(__file__).parent / "states"
NEW_FIELDS = ("kind", "river", "numpy")
ALL_DETECTORS = MonitorParams(
    detectors=("adwin", "page_hinkley", "cusum", "window"),
    target_false_alarm_interval=1e6,
    window=WindowParams(reference_events=1_000),
)


def numeric(n=4_000, params=ALL_DETECTORS, seed=40):
    monitor = NumericMonitor(params)
    values = np.random.default_rng(seed).normal(10.0, 2.0, n)
    values[::97] = np.nan
    monitor.update(values, np.arange(n))
    return monitor


def error():
    monitor = ErrorMonitor()
    monitor.update((np.random.default_rng(41).random(1_000) < 0.1).astype(float), np.arange(1_000))
    return monitor


def categorical():
    monitor = CategoricalMonitor()
    values = [str(v) for v in np.random.default_rng(42).choice(["a", "b", "c"], 6_000)]
    monitor.update(values, range(6_000))
    return monitor


def pca():
    monitor = PCAReconstructionMonitor(
        ["a", "b", "c"], MultivariateParams(reference_events=300, calibration_events=300, events=50)
    )
    rng = np.random.default_rng(43)
    rows = rng.normal(size=(1_000, 1)) + 0.3 * rng.normal(size=(1_000, 3))
    monitor.update(rows, np.arange(1_000))
    return monitor


MAKERS = {"numeric": numeric, "error": error, "categorical": categorical, "pca": pca}


def decoded(data):
    return msgspec.msgpack.decode(data)


def edited(data, change):
    state = decoded(data)
    change(state)
    return msgspec.msgpack.encode(state)


def without_new_fields(data):
    """The state as the code before the envelope's kind and versions (and an error monitor's
    blocks) wrote it."""

    def drop(state):
        for key in NEW_FIELDS:
            state.pop(key)
        if isinstance(state.get("monitor"), dict):
            state["monitor"].pop("blocks", None)

    return edited(data, drop)


def older_river(state):
    state["river"] = "0.19.0"


# -- what is recorded, and round trips ---------------------------------------------------------


@pytest.mark.parametrize("make", MAKERS.values(), ids=MAKERS.keys())
def test_every_monitor_records_its_kind_and_the_library_versions(make):
    monitor = make()
    assert isinstance(monitor, Monitor)
    state = decoded(monitor.to_bytes())
    version = STATE_VERSION if isinstance(monitor, PCAReconstructionMonitor) else FORMAT_VERSION
    assert state["version"] == version
    assert (state["kind"], state["river"], state["numpy"]) == (monitor.kind, *LIBRARIES)
    assert LIBRARIES.numpy == np.__version__


@pytest.mark.parametrize("make", MAKERS.values(), ids=MAKERS.keys())
def test_a_state_written_today_round_trips_bit_identically(make):
    data = make().to_bytes()
    restored = monitor_from_bytes(data)
    assert restored.to_bytes() == data
    assert restored.rewarmed == ()
    assert restored.restored_from == {
        "format": decoded(data)["version"],
        "river": LIBRARIES.river,
        "numpy": LIBRARIES.numpy,
    }
    assert type(restored).from_bytes(data).to_bytes() == data


# -- states written before this envelope -------------------------------------------------------


@pytest.mark.parametrize("kind", ["numeric", "error", "categorical", "pca"])
def test_states_written_before_the_envelope_recorded_versions_still_load(kind):
    data = (STATES / f"3868714-{kind}.msgpack").read_bytes()
    assert not set(NEW_FIELDS) & set(decoded(data))
    monitor = monitor_from_bytes(data)
    expected = {"pca": PCAReconstructionMonitor, "numeric": NumericMonitor}.get(kind)
    assert monitor.kind == {"pca": "pca_reconstruction"}.get(kind, kind)
    assert expected is None or type(monitor) is expected
    assert monitor.rewarmed == ()  # an unknown river, but the states fit today's layout
    assert monitor.restored_from["river"] is None and monitor.restored_from["numpy"] is None
    assert monitor.count > 0 and monitor.drift_score() > 0
    # Written again: the same state, now with the kind and the versions.
    again = monitor.to_bytes()
    assert without_new_fields(again) == data
    assert monitor_from_bytes(again).to_bytes() == again
    assert type(monitor).from_bytes(data).summary() == monitor.summary()


@pytest.mark.parametrize("make", MAKERS.values(), ids=MAKERS.keys())
def test_states_without_the_new_fields_load_as_before(make):
    monitor = make()
    data = monitor.to_bytes()
    old = without_new_fields(data)
    restored = monitor_from_bytes(old)
    assert type(restored) is type(monitor) and restored.rewarmed == ()
    if isinstance(monitor, ErrorMonitor):  # without its blocks, an error monitor starts one afresh
        monitor.blocks = Blocks(monitor.params.window.events)
        data = monitor.to_bytes()
    assert restored.to_bytes() == data
    assert restored.summary() == monitor.summary()


def test_a_numeric_monitor_restored_from_an_old_state_detects_as_the_original():
    params = MonitorParams(detectors=("adwin", "page_hinkley", "cusum", "window"))
    original = numeric(3_000, params)
    restored = monitor_from_bytes(without_new_fields(original.to_bytes()))
    shifted = np.random.default_rng(44).normal(13.0, 2.0, 2_000)
    positions = np.arange(3_000, 5_000)
    expected = original.update(shifted, positions)
    assert expected
    assert restored.update(shifted, positions) == expected
    sketched = ("sketch", "reference_sketch", "windows")  # KLL compaction is randomised
    assert without(restored, sketched) == without(original, sketched)
    assert restored.windows.evaluated == original.windows.evaluated


def without(monitor, keys):
    state = msgspec.structs.asdict(monitor._to_state())
    return {k: v for k, v in state.items() if k not in keys}


# -- another river release ---------------------------------------------------------------------


def test_a_state_of_another_river_that_still_fits_restores_fully():
    monitor = numeric()
    data = edited(monitor.to_bytes(), older_river)
    restored = monitor_from_bytes(data)
    assert restored.rewarmed == () and restored.restored_from["river"] == "0.19.0"
    assert restored.to_bytes() == monitor.to_bytes()  # written again with today's river


def _everything_but(monitor, detector):
    other = copy.copy(monitor)
    other.detectors = {k: v for k, v in monitor.detectors.items() if k != detector}
    other._evidence_from = {k: v for k, v in monitor._evidence_from.items() if k != detector}
    return msgspec.structs.asdict(other._to_state())


def _check_rewarmed(monitor, restored, name, goes_on=True):
    """``restored`` is ``monitor`` (restored as written: a summary sorts the sketches' items) but
    for the detector ``name``, which starts afresh."""
    assert restored.rewarmed == (name,)
    assert _everything_but(restored, name) == _everything_but(monitor, name)
    assert restored._evidence_from[name] is None  # starts with the next value
    before, after = monitor.detectors[name], restored.detectors[name]
    assert after.params == before.params  # the calibrated threshold (delta) kept
    assert (after.n_detections, after.statistic) == (before.n_detections, before.statistic)
    if not goes_on:
        return
    for part in ("reference", "windows", "false_alarms"):
        assert restored.summary()[part] == monitor.summary()[part]
    # It goes on, and its next state is today's river's, restored strictly.
    more = np.random.default_rng(45).normal(10.0, 2.0, 1_000)
    restored.update(more, np.arange(4_000, 5_000))
    again = monitor_from_bytes(restored.to_bytes())
    assert again.rewarmed == () and again.to_bytes() == restored.to_bytes()


GOOD = numeric().to_bytes()


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(window=st.binary(max_size=400), version=st.sampled_from(["0.19.0", "0.27.0", None]))
def test_an_adwin_window_of_another_river_layout_restarts_adwin_only(window, version):
    def change(state):
        state["river"] = version
        state["monitor"]["detectors"]["adwin"]["window"] = window

    data = edited(GOOD, change)
    restored = monitor_from_bytes(data)  # never raises
    _check_rewarmed(monitor_from_bytes(GOOD), restored, "adwin")
    assert restored.restored_from["river"] == version


@settings(max_examples=20, deadline=None)
@given(field=st.sampled_from(["width", "total"]), by=st.integers(1, 10**6))
def test_an_adwin_window_that_fails_the_layout_check_restarts_adwin_only(field, by):
    def change(state):
        older_river(state)
        state["monitor"]["detectors"]["adwin"][field] += by  # the window no longer matches

    _check_rewarmed(monitor_from_bytes(GOOD), monitor_from_bytes(edited(GOOD, change)), "adwin")


def test_the_same_river_with_a_broken_window_is_corruption():
    def change(state):
        state["monitor"]["detectors"]["adwin"]["window"] = b"\x00" * 700

    with pytest.raises(StateError, match="corrupt"):
        monitor_from_bytes(edited(GOOD, change))


class _RenamedPageHinkley(page_hinkley_module.drift.PageHinkley):
    """river's Page-Hinkley as a release that renamed an attribute might have it."""

    def _reset(self):
        super()._reset()
        self._sum_up = self.__dict__.pop("_sum_increase")


def test_a_page_hinkley_of_another_river_layout_restarts_page_hinkley_only(monkeypatch):
    # river's own Page-Hinkley (the reference backend) holds the state in its attributes; the
    # compiled kernel keeps its own copy of them and is not touched by a river release.
    monkeypatch.setattr(kernels, "_active", "reference")  # the backend is restored after it
    data, monitor = edited(GOOD, older_river), monitor_from_bytes(GOOD)
    monkeypatch.setattr(page_hinkley_module.drift, "PageHinkley", _RenamedPageHinkley)
    restored = monitor_from_bytes(data)
    # (Today's code could not save or run it: a river upgrade like this needs new code anyway.)
    _check_rewarmed(monitor, restored, "page_hinkley", goes_on=False)
    with pytest.raises(StateError, match="layout changed"):  # same river: corrupt, not a crash
        monitor_from_bytes(GOOD)


def test_any_exception_of_river_is_caught(monkeypatch):
    def broken(cls, state):
        raise RuntimeError("river changed")

    monkeypatch.setattr(Adwin, "from_state", classmethod(broken))
    restored = monitor_from_bytes(edited(GOOD, older_river))
    assert restored.rewarmed == ("adwin",)
    with pytest.raises(StateError, match="river changed"):
        monitor_from_bytes(GOOD)


def test_the_error_monitor_restarts_adwin_too():
    monitor = error()
    data = edited(
        monitor.to_bytes(),
        lambda s: [older_river(s), s["monitor"]["detectors"]["adwin"].update(window=b"\x01")],
    )
    restored = monitor_from_bytes(data)
    assert isinstance(restored, ErrorMonitor) and restored.rewarmed == ("adwin",)
    assert restored.detectors["cusum"].to_state() == monitor.detectors["cusum"].to_state()


# -- kinds -------------------------------------------------------------------------------------


def test_the_pca_monitor_is_a_monitor_recognised_by_its_envelope():
    monitor = pca()
    assert isinstance(monitor, Monitor) and not isinstance(monitor, UnivariateMonitor)
    restored = monitor_from_bytes(monitor.to_bytes())
    assert isinstance(restored, PCAReconstructionMonitor)
    assert restored.summary() == monitor.summary()
    assert (restored.episodes, restored.suppressed) == (monitor.episodes, monitor.suppressed)
    assert restored.update(np.zeros((2, 3)), np.arange(2), times=None) == []
    merged = merge_summaries([monitor, restored])
    assert merged["kind"] == "pca_reconstruction" and merged["count"] == 2 * monitor.count + 2
    assert len(merged["partitions"]) == 2


def test_a_state_of_another_kind_or_an_unknown_kind_raises_state_error():
    with pytest.raises(StateError, match="not a NumericMonitor"):
        NumericMonitor.from_bytes(pca().to_bytes())
    with pytest.raises(StateError, match="not a PCAReconstructionMonitor"):
        PCAReconstructionMonitor.from_bytes(GOOD)
    with pytest.raises(StateError, match="not a CategoricalMonitor"):
        CategoricalMonitor.from_bytes(GOOD)
    with pytest.raises(StateError, match="unknown kind 'spectral'"):
        monitor_from_bytes(edited(GOOD, lambda s: s.update(kind="spectral")))
    with pytest.raises(StateError, match="corrupt"):  # the envelope and the state disagree
        monitor_from_bytes(edited(GOOD, lambda s: s.update(kind="categorical")))
    with pytest.raises(StateError, match="multivariate state has format version 3"):
        monitor_from_bytes(edited(GOOD, lambda s: s.update(kind="pca_reconstruction")))
    with pytest.raises(StateError, match="not a streamdrift"):
        monitor_from_bytes(edited(GOOD, lambda s: s.update(kind=7)))
