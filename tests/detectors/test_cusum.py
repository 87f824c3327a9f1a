"""The CUSUM bank against a plain recursion, its false alarms against the target, its state."""

import msgspec
import numpy as np
import pytest

from streamdrift.detectors.config import CusumParams
from streamdrift.detectors.cusum import Cusum, CusumState


def recursion(values, allowances, thresholds, mode="both", min_instances=30):
    """Page's CUSUM on deviations from the running mean, one value at a time, restarting
    after each detection: the definition the vectorised bank must reproduce."""
    sides = {"up": (1.0,), "down": (-1.0,), "both": (1.0, -1.0)}[mode]
    hits = []
    n, mean, sums = 0, 0.0, {}
    for i, x in enumerate(values):
        n += 1
        mean += (x - mean) / n
        fired = None
        for k, h in zip(allowances, thresholds, strict=True):
            for sign in sides:
                s = max(0.0, sums.get((k, sign), 0.0) + sign * (x - mean) - k)
                sums[k, sign] = s
                if fired is None and n >= min_instances and s > h:
                    fired = s
        if fired is not None:
            hits.append((i, fired))
            n, mean, sums = 0, 0.0, {}
    return hits


def shifting_stream(seed=0):
    rng = np.random.default_rng(seed)
    means = (0.0, 0.6, -0.4, 1.5, 1.2, 0.0)
    return np.concatenate([rng.normal(m, 1.0, 1_500) for m in means])


@pytest.mark.parametrize("mode", ["both", "up", "down"])
@pytest.mark.parametrize("chunk", [1, 7, 1000, 9000])
def test_bank_matches_the_plain_recursion(mode, chunk):
    values = shifting_stream()
    allowances, thresholds = (0.125, 0.25, 0.5), (30.0, 15.0, 8.0)
    expected = recursion(values.tolist(), allowances, thresholds, mode)
    assert len(expected) >= 2
    bank = Cusum(CusumParams(allowances=allowances, mode=mode), allowances, thresholds)
    found = []
    for start in range(0, len(values), chunk):
        found += [(start + i, s) for i, s in bank.update_many(values[start : start + chunk])]
    assert [i for i, _ in found] == [i for i, _ in expected]
    assert [s for _, s in found] == pytest.approx([s for _, s in expected], rel=1e-9)
    assert bank.n_detections == len(expected)


def test_single_updates_agree_with_batches():
    values = shifting_stream(1)
    make = lambda: Cusum(CusumParams(), (0.125, 0.25, 0.5), (30.0, 15.0, 8.0))  # noqa: E731
    one = make()
    singles = [i for i, x in enumerate(values) if one.update(x)]
    assert singles == [i for i, _ in make().update_many(values)]


@pytest.mark.parametrize(
    "draw",
    [
        lambda rng, n: rng.standard_normal(n),
        lambda rng, n: np.clip(rng.lognormal(size=n) - np.exp(0.5), -4, 4),
        lambda rng, n: (rng.random(n) < 0.1).astype(float),  # 0/1 errors, increases only
    ],
    ids=["normal", "clipped lognormal", "bernoulli"],
)
def test_false_alarms_stay_below_the_target(draw):
    """One false alarm per 10^4 values for the bank: 3 x 10^6 stationary values, each stream
    calibrated on its own 2000-value reference."""
    interval, alarms, values_seen = 1e4, 0, 0
    for seed in range(3):
        rng = np.random.default_rng(seed)
        reference = draw(rng, 2_000)
        mode = "up" if set(np.unique(reference)) <= {0.0, 1.0} else "both"
        scale = reference.std()
        params = CusumParams(allowances=tuple(k * scale for k in (0.125, 0.25, 0.5)), mode=mode)
        bank = Cusum.calibrated(params, reference, np.ones(len(reference)), 1 / interval)
        stream = draw(rng, 1_000_000)
        alarms += len(bank.update_many(stream))
        values_seen += len(stream)
    expected = values_seen / interval
    # Calibrated for a third of the target (PH_MARGIN): 0.1-1x of it measured.
    assert expected / 20 < alarms <= expected


def test_state_round_trip_continues_identically():
    values = shifting_stream(2)
    whole = Cusum(CusumParams(), (0.125, 0.25, 0.5), (30.0, 15.0, 8.0))
    expected = whole.update_many(values[:4_000])  # the same batches, without a restore
    expected += [(4_000 + i, s) for i, s in whole.update_many(values[4_000:])]
    first = Cusum(CusumParams(), (0.125, 0.25, 0.5), (30.0, 15.0, 8.0))
    found = first.update_many(values[:4_000])
    data = msgspec.msgpack.encode(first.to_state())
    restored = Cusum.from_state(msgspec.msgpack.decode(data, type=CusumState))
    found += [(4_000 + i, s) for i, s in restored.update_many(values[4_000:])]
    assert found == expected
    assert restored.to_state() == whole.to_state()


def test_inconsistent_state_is_rejected():
    state = Cusum(CusumParams(), (0.125, 0.25, 0.5), (30.0, 15.0, 8.0)).to_state()
    for bad in (
        msgspec.structs.replace(state, sums=(0.0,) * 4),
        msgspec.structs.replace(state, fired=3),
        msgspec.structs.replace(state, sums=(-1.0,) + (0.0,) * 5),
    ):
        with pytest.raises(ValueError):
            Cusum.from_state(bad)


def test_uncalibrated_bank_never_fires_and_describes_as_json():
    bank = Cusum()
    assert bank.update_many(np.full(1_000, 50.0)) == []
    assert bank.describe()["threshold"] is None and bank.describe()["thresholds"] == [None] * 3
