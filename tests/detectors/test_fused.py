"""The fused kernels of a numeric series' batch (native/src/fused.rs) against the reference
backend and the separate kernels: the same detections, statistics and checkpointed state bytes,
bit for bit, on random streams in random batches, across checkpoints; hostile calls raise."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import msgspec
import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from streamdrift.detectors import kernels
from streamdrift.detectors.adwin import Adwin
from streamdrift.detectors.config import AdwinParams, CusumParams, MonitorParams, WindowParams
from streamdrift.detectors.cusum import Cusum
from streamdrift.detectors.monitor import ErrorMonitor, NumericMonitor, monitor_from_bytes
from streamdrift.detectors.stats import LARGE, RunningStats

fused = pytest.importorskip("streamdrift.detectors.kernels.fused", exc_type=ImportError)
native = pytest.importorskip("streamdrift_kernels")

KINDS = ["stationary", "shifted", "constant", "gaps", "extremes", "integers", "huge"]
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
    if kind == "stationary":
        x = rng.normal(rng.normal(0, 10), rng.uniform(0.01, 10), length)
    elif kind == "shifted":
        x = rng.normal(0, 1, length)
        for at in rng.integers(0, max(length, 1), rng.integers(1, 4)):
            x[at:] += rng.normal(0, 2)
    elif kind == "constant":
        x = np.full(length, rng.choice([0.0, -0.0, 1.0, -3.5, 1e15, 1e-300]))
    elif kind == "gaps":  # long stretches of missing values
        x = rng.normal(5, 2, length)
        for at in rng.integers(0, max(length, 1), rng.integers(1, 5)):
            x[at : at + int(rng.integers(1, 300))] = np.nan
    elif kind == "extremes":  # near +-1e15, and beyond LARGE once the reference is set
        x = np.clip(rng.standard_cauchy(length) * 10.0 ** rng.integers(-3, 16), -1e15, 1e15)
        x[rng.random(length) < 0.01] = rng.choice([1e15, -1e15, 1.5e308, -1.5e308])
    elif kind == "integers":
        x = rng.integers(-3, 4, length).astype(float) + (np.arange(length) > length // 3) * 2
    else:  # "huge": ordinary values with a few beyond LARGE from the start
        x = rng.normal(0, 1, length) * 10.0 ** rng.integers(-5, 16, length)
        x[rng.random(length) < 0.005] = 1e200
    x[rng.random(length) < rng.choice([0.0, 0.02, 0.3])] = np.nan
    return x


def batches(rng: np.random.Generator, length: int) -> Iterator[tuple[int, int]]:
    """Batch bounds covering ``length``: single values, tiny, mixed, huge."""
    style = rng.choice(["ones", "tiny", "mixed", "whole"])
    start = 0
    while start < length:
        if style == "whole":
            size = length
        elif style == "ones":
            size = 1 if rng.random() < 0.9 else 50
        elif style == "tiny":
            size = int(rng.integers(1, 4))
        else:
            size = int(rng.choice([1, 2, 7, 40, 100, 333, 2000]))
        yield start, min(start + size, length)
        start += size


def params(rng: np.random.Generator, by_time: bool, detectors: tuple[str, ...]) -> MonitorParams:
    """Small warm-ups and windows so that a few thousand values close many windows; a large
    ``kll_k``, so that every sketch stays exact (KLL compaction is randomised and cannot be
    seeded: two runs would differ there whatever the backend)."""
    window = WindowParams(
        events=int(rng.choice([10, 50, 200])),
        reference_events=int(rng.choice([10, 100, 400])),
        seconds=float(rng.choice([0.5, 3.0])) if by_time else 0.0,
        allowed_lateness_s=float(rng.choice([0.0, 0.5])),
        alpha=float(rng.choice([1e-6, 0.01])),
    )
    return MonitorParams(
        warmup_events=int(rng.choice([2, 30, 300])),
        cooldown_events=int(rng.choice([0, 100, 5000])),
        detectors=detectors,
        kll_k=65535,
        clip_sigma=float(rng.choice([4.0, 1.0, np.inf])),
        window=window,
    )


def run(
    seed: int, kind: str, length: int, by_time: bool, detectors: tuple[str, ...], monitor_type: Any
) -> list[Any]:
    """Every detection (its repr: all fields, floats to the last bit) and the whole checkpoint
    after every batch, checkpointed and restored now and then."""
    rng = np.random.default_rng(seed)
    values = stream(rng, kind, length)
    times = 1_000 + np.cumsum(rng.exponential(0.05, length)) + rng.uniform(-0.3, 0.3, length)
    monitor = monitor_type(params(rng, by_time, detectors))
    out: list[Any] = []
    for a, b in batches(rng, length):
        found = monitor.update(values[a:b], np.arange(a, b), times[a:b] if by_time else None)
        out += [repr(d) for d in found]
        out.append(monitor.to_bytes())
        if rng.random() < 0.05:
            monitor = monitor_from_bytes(monitor.to_bytes())
    return out


DEFAULT = ("adwin", "cusum", "window")


@RANDOM
@given(
    st.integers(0, 2**32 - 1),
    st.sampled_from(KINDS),
    st.sampled_from([1, 60, 700, 3000]),
    st.booleans(),
)
def test_fused_monitors_give_the_reference_backends_detections_and_bytes(
    seed, kind, length, by_time
) -> None:
    with backend("reference"):
        expected = run(seed, kind, length, by_time, DEFAULT, NumericMonitor)
    with backend("compiled"):
        assert run(seed, kind, length, by_time, DEFAULT, NumericMonitor) == expected


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    st.integers(0, 2**32 - 1),
    st.sampled_from(KINDS),
    st.sampled_from([("cusum", "adwin", "window"), ("adwin",), ("cusum", "page_hinkley")]),
    st.sampled_from([NumericMonitor, ErrorMonitor]),
)
def test_other_detector_sets_and_error_monitors_stay_the_same(
    seed, kind, detectors, monitor_type
) -> None:
    if monitor_type is ErrorMonitor and kind in ("extremes", "huge"):
        # Errors near 1e308 overflow the bank's sums to NaN (whatever the backend), and such a
        # state is refused on restore: not what is tested here.
        kind = "gaps"
    with backend("reference"):
        expected = run(seed, kind, 1500, False, detectors, monitor_type)
    with backend("compiled"):
        assert run(seed, kind, 1500, False, detectors, monitor_type) == expected


@settings(max_examples=20, deadline=None)
@given(st.integers(0, 2**32 - 1), st.sampled_from(KINDS))
def test_checkpoints_move_between_the_fused_and_the_reference_path(seed, kind) -> None:
    """A checkpoint written mid-stream by one backend, restored by the other, goes on exactly
    as it would have."""
    rng = np.random.default_rng(seed)
    values = stream(rng, kind, 2400)
    monitor_params = params(rng, False, DEFAULT)
    with backend("compiled"):
        monitor = NumericMonitor(monitor_params)
        monitor.update(values[:1200], np.arange(1200))
        state = monitor.to_bytes()
    outcomes = []
    for name in ("compiled", "reference"):
        with backend(name):
            restored = monitor_from_bytes(state)
            found = restored.update(values[1200:], np.arange(1200, 2400))
            outcomes.append(([repr(d) for d in found], restored.to_bytes()))
    assert outcomes[0] == outcomes[1]


# --- each kernel against what it replaced --------------------------------------------------


@given(st.integers(0, 2**32 - 1), st.sampled_from(KINDS), st.integers(0, 700))
@settings(max_examples=200, deadline=None)
def test_split_moments_is_the_numpy_split_and_the_moments_kernel(seed, kind, length) -> None:
    rng = np.random.default_rng(seed)
    values = stream(rng, kind, length)
    present, index, moments = fused.split_moments(values, LARGE)
    missing = np.isnan(values)
    assert present.tobytes() == values[~missing].tobytes()
    assert index.tolist() == np.flatnonzero(~missing).tolist()
    compiled, reference = RunningStats(), RunningStats()
    compiled.update_summarised(present, moments)
    with backend("reference"):
        reference.update_many(values[~missing])
    assert compiled.to_state() == reference.to_state()


@given(st.integers(0, 2**32 - 1), st.sampled_from(KINDS), st.integers(0, 700))
@settings(max_examples=200, deadline=None)
def test_fill_period_is_the_numpy_fill(seed, kind, length) -> None:
    rng = np.random.default_rng(seed)
    values = stream(rng, kind, length)
    missing = np.isnan(values) | (rng.random(length) < 0.1)  # flags are what count
    cuts = np.unique(rng.normal(0, 3, int(rng.integers(1, 12))))
    bins = rng.integers(0, 50, len(cuts) + 1)
    expected = bins + np.bincount(np.searchsorted(cuts, values[~missing]), minlength=len(bins))
    present, moments = fused.fill_period(values, missing, cuts, bins, LARGE)
    assert present.tobytes() == values[~missing].tobytes()
    assert bins.tolist() == expected.tolist()
    compiled, reference = RunningStats(), RunningStats()
    compiled.update_summarised(present, moments)
    with backend("reference"):
        reference.update_many(values[~missing])
    assert compiled.to_state() == reference.to_state()


def detectors_pair(rng: np.random.Generator) -> tuple[Adwin, Cusum]:
    adwin = Adwin(
        AdwinParams(delta=float(rng.choice([0.002, 0.1])), clock=int(rng.choice([1, 32])))
    )
    mode = str(rng.choice(["both", "up", "down"]))
    allowances = (0.125, 0.25, 0.5)
    cusum = Cusum(
        CusumParams(mode=mode, min_instances=int(rng.choice([1, 30]))),
        allowances,
        tuple(rng.uniform(1, 20, 3).tolist()),
    )
    return adwin, cusum


@given(st.integers(0, 2**32 - 1), st.sampled_from(KINDS), st.booleans())
@settings(max_examples=150, deadline=None)
def test_numeric_detect_is_standardise_clip_adwin_then_cusum(seed, kind, bounded) -> None:
    rng = np.random.default_rng(seed)
    raw = stream(rng, kind, int(rng.integers(0, 2000)))
    values = raw[~np.isnan(raw)]
    mean, scale = float(rng.normal(0, 5)), float(rng.choice([1.0, 1e-300, 3.7]))
    clip_sigma = float(rng.choice([4.0, np.inf]))
    if len(values):  # bounded only where the monitor would say so (no value beyond LARGE sigma)
        low, high = float(values.min()), float(values.max())
        bounded = bounded and max(high - mean, mean - low) / scale <= LARGE
    with backend("compiled"):
        one, other = (
            detectors_pair(np.random.default_rng(seed)),
            detectors_pair(np.random.default_rng(seed)),
        )
    with np.errstate(over="ignore"):
        standardised = (values - mean) / scale
    if not bounded:
        standardised = np.clip(standardised, -LARGE, LARGE)
    inputs = np.clip(standardised, -clip_sigma, clip_sigma)
    expected = (one[0].update_many(inputs), one[1].update_many(inputs))
    adwin, cusum = other
    bank = cusum.compiled_bank
    assert adwin.window is not None and bank is not None
    got, adwin_hits, bank_hits, n, bank_mean = fused.detect(
        values,
        (mean, scale, bounded, LARGE),
        clip_sigma,
        adwin.window,
        bank[0],
        cusum.params.min_instances,
        (cusum.n, cusum.mean),
        bank[1],
    )
    found = (adwin.record(adwin_hits), cusum.record(bank_hits, len(values), n, bank_mean))
    assert got.tobytes() == standardised.tobytes()
    assert found == expected
    states = msgspec.msgpack.encode((adwin.to_state(), cusum.to_state()))
    assert states == msgspec.msgpack.encode((one[0].to_state(), one[1].to_state()))


# --- hostile calls ------------------------------------------------------------------------


def detect_args() -> dict[str, Any]:
    with backend("compiled"):
        adwin, cusum = detectors_pair(np.random.default_rng(0))
    window = adwin.window
    bank = cusum.compiled_bank
    assert window is not None and bank is not None
    rows, signs, allowances, thresholds = bank[0]
    return {
        "values": np.arange(200.0),
        "mean": 0.0,
        "scale": 1.0,
        "bounded": True,
        "large": LARGE,
        "clip_sigma": 4.0,
        "adwin_params": window.params,
        "adwin_sums": window.sums,
        "adwin_counts": window.counts,
        "adwin_totals": window.totals,
        "adwin_variances": window.variances,
        "adwin_used": window.used,
        "rows": rows,
        "signs": np.ascontiguousarray(signs),
        "allowances": np.ascontiguousarray(allowances),
        "thresholds": np.ascontiguousarray(thresholds),
        "min_instances": 1.0,
        "n": 0.0,
        "bank_mean": 0.0,
        "bank_sums": bank[1],
    }


def read_only(array: np.ndarray) -> np.ndarray:
    copy = array.copy()
    copy.flags.writeable = False
    return copy


WRITTEN = {
    "adwin_sums",
    "adwin_counts",
    "adwin_totals",
    "adwin_variances",
    "adwin_used",
    "bank_sums",
}


def hostile_detect_calls() -> Iterator[tuple[str, dict[str, Any]]]:
    for name, value in detect_args().items():
        if not isinstance(value, np.ndarray):
            yield f"{name} as an array", {name: np.zeros(3)}
            continue
        yield f"{name} int32", {name: value.astype(np.int32)}
        yield f"{name} float32", {name: value.astype(np.float32)}
        yield f"{name} 3-d", {name: value.reshape(-1)[:1].reshape(1, 1, 1)}
        yield f"{name} a list", {name: value.tolist()}
        yield f"{name} None", {name: None}
        if value.ndim == 1 and len(value) > 1:
            if name != "values":  # any number of values goes
                yield f"{name} shorter", {name: value[:1].copy()}
            yield f"{name} strided", {name: np.repeat(value, 2)[::2]}
        if name in WRITTEN:
            yield f"{name} read-only", {name: read_only(value)}
    yield "sums alias totals", {"adwin_sums": lambda a: a["adwin_totals"].reshape(-1)[:4]}
    yield "bank sums alias values", {"bank_sums": lambda a: a["values"][:6]}
    yield "values alias counts' memory", {"values": lambda a: a["adwin_counts"].view(np.float64)}
    yield "bank sums alias totals", {"bank_sums": lambda a: a["adwin_totals"].reshape(-1)[:6]}
    yield "variances of another shape", {"adwin_variances": np.zeros((64, 3))}
    yield "rows outside the sums", {"rows": np.array([0, 1, 2, 3, 4, 99])}
    yield "rows far negative", {"rows": np.array([0, 1, 2, 3, 4, -99])}
    yield "used of another length", {"adwin_used": np.zeros(3, dtype=np.int64)}
    yield "params of 4", {"adwin_params": np.zeros(4)}
    yield "corrupt used", {"adwin_used": np.full(64, 10**6, dtype=np.int64)}
    yield "levels beyond the rows", {"adwin_counts": np.array([0, 0, 0, 0, 10**6, 0])}


@pytest.mark.parametrize(("label", "changes"), list(hostile_detect_calls()))
def test_hostile_numeric_detect_calls_raise(label, changes) -> None:
    args = detect_args()
    args.update({k: v(args) if callable(v) else v for k, v in changes.items()})
    with pytest.raises((TypeError, ValueError)):
        native.numeric_detect(**args)


def hostile_split_calls() -> Iterator[tuple[str, tuple[Any, ...]]]:
    values, out = np.arange(10.0), np.empty(4)
    yield "int values", (values.astype(np.int64), LARGE, out)
    yield "float32 values", (values.astype(np.float32), LARGE, out)
    yield "2-d values", (values.reshape(2, 5), LARGE, out)
    yield "strided values", (np.repeat(values, 2)[::2], LARGE, out)
    yield "out of 3", (values, LARGE, np.empty(3))
    yield "read-only out", (values, LARGE, read_only(out))
    yield "out aliases values", (values, LARGE, values[:4])
    yield "a list", (values.tolist(), LARGE, out)
    yield "large as a string", (values, "big", out)


@pytest.mark.parametrize(("label", "args"), list(hostile_split_calls()))
def test_hostile_split_moments_calls_raise(label, args) -> None:
    with pytest.raises((TypeError, ValueError)):
        native.split_moments(*args)


def hostile_fill_calls() -> Iterator[tuple[str, tuple[Any, ...]]]:
    values, missing = np.arange(10.0), np.zeros(10, dtype=bool)
    cuts, bins, out = np.array([2.0, 5.0]), np.zeros(3, dtype=np.int64), np.empty(4)
    yield "missing of another length", (values, missing[:-1], cuts, bins, LARGE, out)
    yield "missing as uint8", (values, missing.astype(np.uint8), cuts, bins, LARGE, out)
    yield "bins of another length", (values, missing, cuts, np.zeros(2, np.int64), LARGE, out)
    yield "float bins", (values, missing, cuts, np.zeros(3), LARGE, out)
    yield "read-only bins", (values, missing, cuts, read_only(bins), LARGE, out)
    yield "bins alias out", (values, missing, cuts, bins, LARGE, bins.view(np.float64)[:3])
    yield "out aliases values", (values, missing, cuts, bins, LARGE, values[2:6])
    yield "strided cuts", (values, missing, np.repeat(cuts, 2)[::2], bins, LARGE, out)
    yield "2-d values", (values.reshape(2, 5), missing, cuts, bins, LARGE, out)
    yield "int cuts", (values, missing, cuts.astype(np.int64), bins, LARGE, out)


@pytest.mark.parametrize(("label", "args"), list(hostile_fill_calls()))
def test_hostile_fill_period_calls_raise(label, args) -> None:
    with pytest.raises((TypeError, ValueError)):
        native.fill_period(*args)


def test_empty_batches_leave_the_state_as_it_was() -> None:
    args = detect_args()
    before = [a.copy() for a in args.values() if isinstance(a, np.ndarray)][1:]
    args["values"] = np.empty(0)
    standardised, adwin_hits, bank_hits, n, mean = native.numeric_detect(**args)
    after = [a for a in args.values() if isinstance(a, np.ndarray)][1:]
    assert (len(standardised), adwin_hits, bank_hits, n, mean) == (0, [], [], 0.0, 0.0)
    assert all(x.tobytes() == y.tobytes() for x, y in zip(before, after, strict=True))
    present, index, computed = native.split_moments(np.full(3, np.nan), LARGE, np.empty(4))
    assert (len(present), len(index), computed) == (0, 0, False)


def test_default_numeric_monitors_take_the_fused_path(monkeypatch) -> None:
    """The equality tests above compare the fused path only if it is taken: with the compiled
    backend, a numeric monitor with the default detectors runs each batch through one
    numeric_detect call, its windows through fill_period."""
    calls = {"detect": 0, "fill_period": 0, "split_moments": 0}

    def counting(name: str) -> Any:
        kernel = getattr(fused, name)

        def counted(*args: Any) -> Any:
            calls[name] += 1
            return kernel(*args)

        return counted

    for name in calls:
        monkeypatch.setattr(fused, name, counting(name))
    with backend("compiled"):
        monitor = NumericMonitor(
            MonitorParams(warmup_events=50, window=WindowParams(events=50, reference_events=100))
        )
        values = np.random.default_rng(1).normal(size=400)
        for start in range(0, 400, 100):
            monitor.update(values[start : start + 100], np.arange(start, start + 100))
    # fill_period: the reference (50 + 50 values), then five windows of 50
    assert calls == {"detect": 4, "fill_period": 7, "split_moments": 4}
