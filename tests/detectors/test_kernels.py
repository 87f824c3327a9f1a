"""The compiled kernels against the reference backend (river's ADWIN and Page-Hinkley, the
CUSUM bank's and the running moments' numpy passes) on random streams: the same detections,
statistics and state, bit for bit, whatever the batches; checkpoints that move between the
backends; hostile ADWIN state bytes refused."""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from river import drift

from streamdrift.detectors import kernels
from streamdrift.detectors.adwin import Adwin, AdwinState
from streamdrift.detectors.config import (
    AdwinParams,
    CusumParams,
    MonitorParams,
    PageHinkleyParams,
)
from streamdrift.detectors.cusum import Cusum
from streamdrift.detectors.monitor import ErrorMonitor, NumericMonitor, monitor_from_bytes
from streamdrift.detectors.page_hinkley import PageHinkley
from streamdrift.detectors.stats import RunningStats

# Where the compiled kernels (native/) are not installed: tests/detectors/test_kernel_backends.py.
AdwinWindow = pytest.importorskip(
    "streamdrift.detectors.kernels.adwin", exc_type=ImportError
).AdwinWindow
moments = pytest.importorskip("streamdrift.detectors.kernels.moments", exc_type=ImportError).moments

Detector = Adwin | PageHinkley
KINDS = ["normal", "shifts", "constant", "binary", "extremes", "mixed_scale", "integers"]
RANDOM = settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])


@contextmanager
def backend(name: kernels.Backend) -> Iterator[None]:
    previous = kernels.active()
    kernels.use(name)
    try:
        yield
    finally:
        kernels.use(previous)


def stream(rng: np.random.Generator, kind: str, length: int) -> np.ndarray:
    """Streams that exercise the edges: constant, binary, integer steps, values over 300
    decades, shifts of random sizes."""
    if kind == "normal":
        return rng.normal(rng.normal(0, 10), rng.uniform(0.01, 10), length)
    if kind == "shifts":
        x = rng.normal(0, 1, length)
        for at in rng.integers(0, length, rng.integers(1, 6)):
            x[at:] += rng.normal(0, 2)
        return x
    if kind == "constant":
        return np.full(length, rng.choice([0.0, 1.0, -3.5, 1e15, 1e-300]))
    if kind == "binary":
        x = (rng.random(length) < rng.uniform(0.05, 0.95)).astype(float)
        half = length // 2
        x[half:] = rng.random(length - half) < rng.uniform(0.05, 0.95)
        return x
    if kind == "extremes":
        return np.clip(rng.standard_cauchy(length) * 10.0 ** rng.integers(-300, 16), -1e15, 1e15)
    if kind == "mixed_scale":
        return rng.normal(0, 1, length) * 10.0 ** rng.integers(-5, 16, length)
    return rng.integers(-3, 4, length).astype(float) + (np.arange(length) > length // 3) * 2


def batches(rng: np.random.Generator, length: int) -> Iterator[tuple[int, int]]:
    """Batch bounds covering ``length``: single values, tiny, mixed, one whole batch."""
    # One value per batch makes the reference paths slow: on the shorter streams only.
    style = rng.choice(["ones", "tiny", "mixed", "whole"] if length <= 3000 else ["mixed", "whole"])
    start = 0
    while start < length:
        if style == "whole":
            size = length
        elif style == "ones":
            size = 1
        elif style == "tiny":
            size = int(rng.integers(1, 4))
        else:
            size = int(rng.choice([1, 2, 7, 40, 100, 333, 2000]))
        yield start, min(start + size, length)
        start += size


streams = st.tuples(
    st.integers(0, 2**32 - 1), st.sampled_from(KINDS), st.sampled_from([1, 50, 500, 3000, 12000])
)


@st.composite
def adwin_params(draw: st.DrawFn) -> AdwinParams:
    return AdwinParams(
        delta=draw(st.sampled_from([0.002, 2e-6, 0.1, 1e-10])),
        clock=draw(st.sampled_from([32, 1, 7])),
        max_buckets=draw(st.sampled_from([5, 2, 9])),
        min_window_length=draw(st.sampled_from([5, 3, 10])),
        grace_period=draw(st.sampled_from([10, 5, 50])),
    )


@RANDOM
@given(streams, adwin_params())
def test_compiled_adwin_gives_rivers_detections_statistics_and_state(spec, params) -> None:
    seed, kind, length = spec
    rng = np.random.default_rng(seed)
    assert_backends_agree(lambda: Adwin(params), Adwin.from_state, stream(rng, kind, length), rng)


def assert_backends_agree(
    make: Callable[[], Detector],
    restore: Callable[[Any], Detector],
    values: np.ndarray,
    rng: np.random.Generator,
) -> None:
    """A detector of each backend fed the same random batches: the same detections, drift
    flags, states and descriptions, with checkpoints now and then taken by one backend and
    restored by the other."""
    with backend("reference"):
        reference = make()
    with backend("compiled"):
        compiled = make()
    for a, b in batches(rng, len(values)):
        chunk = values[a:b]
        assert compiled.update_many(chunk) == reference.update_many(chunk)
        assert compiled.drift_detected == reference.drift_detected
        if rng.random() < 0.05:
            with backend("compiled"):
                compiled = restore(reference.to_state())
            with backend("reference"):
                reference = restore(compiled.to_state())
    assert compiled.to_state() == reference.to_state()
    assert compiled.describe() == reference.describe()


@settings(max_examples=60, deadline=None)
@given(st.integers(0, 2**32 - 1), st.sampled_from(KINDS))
def test_compiled_adwin_fires_where_a_plain_river_loop_does(seed, kind) -> None:
    values = stream(np.random.default_rng(seed), kind, 5000)
    river_adwin = drift.ADWIN(delta=0.002)
    expected = []
    for i, x in enumerate(values.tolist()):
        river_adwin.update(x)
        if river_adwin.drift_detected:
            expected.append(i)
    window = AdwinWindow(AdwinParams(delta=0.002))
    assert [i for i, _ in window.update(values)] == expected
    assert window.to_bytes() == river_adwin._helper.__getstate__()


@RANDOM
@given(streams, st.sampled_from(["both", "up", "down"]), st.sampled_from([30, 1, 5]))
def test_compiled_cusum_bank_equals_the_numpy_bank_bit_for_bit(spec, mode, min_instances) -> None:
    seed, kind, length = spec
    rng = np.random.default_rng(seed)
    values = stream(rng, kind, length)
    # As the monitor feeds it: standardised by a reference, clipped.
    inputs = np.clip((values - values[:50].mean()) / (values[:50].std() or 1.0), -8.0, 8.0)
    allowances = [0.125, 0.25, 0.5]
    thresholds = (
        [math.inf] * 3 if rng.random() < 0.1 else rng.uniform(0.5, 40, 3).tolist()
    )  # not calibrated yet: never fires
    params = CusumParams(min_instances=min_instances, mode=mode)
    with backend("reference"):
        reference = Cusum(params, allowances, thresholds)
    with backend("compiled"):
        compiled = Cusum(params, allowances, thresholds)
    for a, b in batches(rng, length):
        chunk = inputs[a:b]
        assert compiled.update_many(chunk) == reference.update_many(chunk)
        assert (compiled.fired, compiled.drift_detected) == (
            reference.fired,
            reference.drift_detected,
        )
    assert compiled.to_state() == reference.to_state()


def monitor_run(
    kind: type[NumericMonitor] | type[ErrorMonitor], seed: int, page_hinkley: bool = False
) -> list[object]:
    """A monitor's detections and its detectors' checkpointed states after a stream with shifts
    in batches, checkpointed and restored now and then. (Not the whole checkpoint: its KLL
    sketches compact at random, so two runs of one backend differ there.)"""
    rng = np.random.default_rng(seed)
    values = stream(rng, "shifts", 8000) if kind is NumericMonitor else stream(rng, "binary", 8000)
    values[rng.random(len(values)) < 0.02] = np.nan
    # Without the window tests: their reference is a KLL sketch that compacts at random, so
    # whether and when a window fires differs from run to run whatever the backend (and an
    # episode a window opens suppresses other detections). tests/detectors/test_window_kernels.py
    # checks the window tests against their previous code.
    detectors = tuple(name for name in MonitorParams().detectors if name != "window")
    params = MonitorParams(detectors=(*detectors, *(("page_hinkley",) if page_hinkley else ())))
    monitor = kind(params)
    out: list[object] = []
    for a, b in batches(rng, len(values)):
        detections = monitor.update(values[a:b], np.arange(a, b))
        out += [(d.detector, d.position, d.statistic, d.threshold) for d in detections]
        if rng.random() < 0.02:
            monitor = monitor_from_bytes(monitor.to_bytes())  # type: ignore[assignment]
    return [*out, {name: d.to_state() for name, d in monitor.detectors.items()}]


@settings(max_examples=25, deadline=None)
@given(st.integers(0, 2**32 - 1), st.sampled_from([NumericMonitor, ErrorMonitor]), st.booleans())
def test_monitors_detect_and_checkpoint_the_same_with_either_backend(
    seed, kind, page_hinkley
) -> None:
    with backend("reference"):
        expected = monitor_run(kind, seed, page_hinkley)
    with backend("compiled"):
        assert monitor_run(kind, seed, page_hinkley) == expected


def valid_adwin_state(seed: int) -> AdwinState:
    with backend("compiled"):
        adwin = Adwin(AdwinParams())
        adwin.update_many(np.random.default_rng(seed).normal(0, 1, 3000))
        return adwin.to_state()


@settings(max_examples=300, deadline=None)
@given(st.integers(0, 50), st.data())
def test_hostile_adwin_state_is_refused_or_a_working_window(seed, data) -> None:
    """Bytes from the state store are not trusted: the kernel indexes arrays by them. Cut,
    extended or overwritten, they are refused with ValueError or restore a window that updates
    without harm. (A window whose numbers were overwritten with other finite numbers may then
    overflow: its next state is refused in turn, as river's own decoder would take it.)"""
    state = valid_adwin_state(seed)
    raw = bytearray(state.window)
    edit = data.draw(st.sampled_from(["cut", "extend", "overwrite", "random"]))
    if edit == "cut":
        raw = raw[: data.draw(st.integers(0, len(raw) - 1))]
    elif edit == "extend":
        raw += data.draw(st.binary(min_size=1, max_size=64))
    elif edit == "overwrite":
        at = data.draw(st.integers(0, len(raw) - 1))
        patch = data.draw(st.binary(min_size=1, max_size=16))
        raw[at : at + len(patch)] = patch
    else:
        raw = bytearray(data.draw(st.binary(max_size=2048)))
    with backend("compiled"):
        try:
            window = AdwinWindow.from_bytes(bytes(raw), state.params)
        except ValueError:
            return
        window.update(np.random.default_rng(seed).normal(0, 1, 2000))
        try:
            again = AdwinWindow.from_bytes(window.to_bytes(), state.params)
        except ValueError as error:
            assert "not finite" in str(error)
        else:
            assert again.to_bytes() == window.to_bytes()


@pytest.mark.parametrize("name", ["compiled", "reference"])
def test_a_mismatched_adwin_state_is_refused_by_both_backends(name) -> None:
    state = valid_adwin_state(1)
    fields = {name: getattr(state, name) for name in state.__struct_fields__}
    with backend(name), pytest.raises(ValueError, match="width"):
        Adwin.from_state(AdwinState(**{**fields, "width": 5}))


@RANDOM
@given(streams, st.booleans())
def test_compiled_moments_equal_the_numpy_passes_bit_for_bit(spec, huge) -> None:
    """RunningStats with either backend, batch by batch: the same count, mean, sum of squared
    deviations (and its exponent), min and max — including batches beyond LARGE (the scaled
    path, numpy's in both)."""
    seed, kind, length = spec
    rng = np.random.default_rng(seed)
    values = stream(rng, kind, length)
    if huge:
        values[rng.random(length) < 0.01] = rng.choice([1e300, -1.7e308, 1e101])
    with backend("reference"):
        reference = RunningStats()
    compiled = RunningStats()
    for a, b in batches(rng, length):
        with backend("reference"):
            reference.update_many(values[a:b])
        with backend("compiled"):
            compiled.update_many(values[a:b])
        assert compiled.to_state() == reference.to_state()


@settings(max_examples=300, deadline=None)
@given(st.integers(0, 2**32 - 1), st.integers(1, 3000))
def test_the_pairwise_sum_is_numpys(seed, length) -> None:
    """Every block size and split of numpy's pairwise summation, on values of mixed scale
    whose sum depends on the order of the additions."""
    rng = np.random.default_rng(seed)
    x = rng.normal(0, 1, length) * 10.0 ** rng.integers(-8, 9, length)
    low, high, mean, m2 = moments(x, 1e100)  # type: ignore[misc]
    assert mean == float(np.add.reduce(x)) / length
    assert m2 == float(np.add.reduce((x - mean) * (x - mean)))
    assert (low, high) == (float(x.min()), float(x.max()))


@RANDOM
@given(
    streams,
    st.sampled_from(["both", "up", "down"]),
    st.sampled_from([1.0, 0.9999, 0.99]),
    st.sampled_from([(5.0, 0.005), (50.0, 0.005), (20.0, 0.25), (1e3, 0.0)]),
    st.sampled_from([30, 1, 5]),
)
def test_compiled_page_hinkley_gives_rivers_detections_and_state(
    spec, mode, alpha, threshold_delta, min_instances
) -> None:
    seed, kind, length = spec
    rng = np.random.default_rng(seed)
    threshold, delta = threshold_delta
    params = PageHinkleyParams(
        threshold=threshold, delta=delta, alpha=alpha, min_instances=min_instances, mode=mode
    )
    values = stream(rng, kind, length)
    assert_backends_agree(lambda: PageHinkley(params), PageHinkley.from_state, values, rng)
