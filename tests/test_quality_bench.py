"""The quality benchmark's harness (``bench/``): scoring on cases with known answers, the columns,
the seeded streams, and a ``--quick`` run end to end. Nothing here judges streamdrift itself."""

from __future__ import annotations

import doctest
import json
import math
from dataclasses import dataclass

import numpy as np
import pytest

import bench.scoring
from bench import quality
from bench.columns import RiverColumn, StreamdriftColumn, WindowTestColumn, default_columns
from bench.scenarios import QUICK, ROWS, SCENARIOS, Row, Series, Trial, shuttle
from bench.scoring import Outcome, Summary, incidents_of, quantile, score, summarise, verdict


@dataclass(frozen=True)
class FixedColumn:
    """Alarms at fixed indices of every series (``every`` alarms at every value)."""

    name: str
    at: tuple[int, ...] = ()
    every: bool = False
    description: str = "test column"

    def alarms(self, series: Series) -> np.ndarray:
        if self.every:
            return np.arange(len(series.values))
        return np.asarray([i for i in self.at if i < len(series.values)], dtype=np.int64)


def numeric(name: str, n: int) -> Series:
    return Series(name, "numeric", np.zeros(n))


# --- scoring ---------------------------------------------------------------------------------


def test_score_splits_false_alarms_detection_and_duplicates():
    trial = Trial("t", (numeric("a", 200), numeric("b", 200)), change=100, affected=frozenset("a"))
    outcome = score(trial, {"a": np.array([50, 99, 100, 150, 160]), "b": np.array([10])})
    # 50 and 99 precede the change, 10 is on a series the change does not affect
    assert outcome == Outcome(
        fa=3, fa_events=100 + 200, episode=True, delay=1, alerts=3, series_alerts=3
    )


def test_score_of_a_miss_and_of_a_stationary_trial():
    trial = Trial("t", (numeric("a", 200),), change=100, affected=frozenset("a"))
    assert score(trial, {"a": np.array([5])}) == Outcome(1, 100, True, None, 0)
    still = Trial("t", (numeric("a", 300), numeric("b", 50)))
    assert score(still, {"a": np.array([]), "b": np.array([1, 2])}) == Outcome(
        2, 350, False, None, 0
    )


def test_delay_is_the_earliest_alarm_over_the_affected_series():
    trial = Trial("t", (numeric("a", 500), numeric("b", 500)), 200, frozenset({"a", "b"}))
    outcome = score(trial, {"a": np.array([260, 400]), "b": np.array([230])})
    assert outcome.delay == 31 and outcome.alerts == 3 and outcome.fa == 0
    assert outcome.series_alerts == 2 and outcome.incidents is None  # no lifecycles: none


def test_the_incidents_of_an_episode_follow_the_workers_rules():
    """Two features detected 300 values apart are one incident; a third 6,000 values later (past
    the window, after the first two resolved) another; a false alarm before the change is not
    part of the episode."""
    trial = Trial(
        "t",
        (numeric("a", 20_000), numeric("b", 20_000), numeric("c", 20_000)),
        1_000,
        frozenset({"a", "b", "c"}),
    )
    lifecycles = {
        "a": [(500, "detected"), (600, "resolved"), (1_100, "detected"), (3_000, "resolved")],
        "b": [(1_400, "detected"), (3_100, "resolved")],
        "c": [(9_500, "detected")],
    }
    alarms = {s: np.array([p for p, e in c if e == "detected"]) for s, c in lifecycles.items()}
    assert incidents_of(trial, lifecycles) == 2
    assert score(trial, alarms, lifecycles).incidents == 2
    lifecycles["c"] = [(1_500, "detected")]
    assert incidents_of(trial, lifecycles) == 1


def test_trial_rejects_inconsistent_labels():
    with pytest.raises(ValueError):
        Trial("t", (numeric("a", 10),), change=5)
    with pytest.raises(ValueError):
        Trial("t", (numeric("a", 10),), change=5, affected=frozenset({"z"}))
    with pytest.raises(ValueError):
        Trial("t", (numeric("a", 10),), change=10, affected=frozenset({"a"}))


def test_quantile_counts_misses_as_infinitely_late():
    assert doctest.testmod(bench.scoring).failed == 0
    assert quantile([10, 20, 30, 40, 50], 0.5) == 30
    assert quantile([10.0, 20.0], 0.5) == 15
    assert quantile([10, 20, math.inf], 0.5) == 20
    assert quantile([10, math.inf, math.inf], 0.5) == math.inf
    assert quantile([1] * 9 + [math.inf], 0.9) == math.inf  # the 9th decile sits on the miss
    assert quantile([*range(1, 11), math.inf], 0.9) == 10


def test_summarise():
    outcomes = [
        Outcome(fa=1, fa_events=1000, episode=True, delay=10, alerts=1),
        Outcome(fa=0, fa_events=1000, episode=True, delay=30, alerts=3),
        Outcome(fa=2, fa_events=1000, episode=True, delay=None, alerts=0),
        Outcome(fa=1, fa_events=2000, episode=False, delay=None, alerts=0),
    ]
    s = summarise(outcomes)
    assert (s.episodes, s.detected, s.rate) == (3, 2, 2 / 3)
    assert s.median_delay == 30 and s.p90_delay == math.inf
    assert s.fa == 4 and s.fa_events == 5000 and s.fa_per_million == 800.0
    assert s.dup_mean == 1.0 and s.max_alerts == 3
    assert s.to_json()["p90_delay"] is None and s.to_json()["missed"] == 1
    assert not summarise([outcomes[0], None]).applicable


def _summary(
    median=None, detected=20, episodes=20, fa=0, events=10**6, max_alerts=1, dup=0.0, incidents=1
):
    return Summary(
        True,
        episodes,
        detected,
        median,
        median,
        fa,
        events,
        dup,
        max_alerts,
        incidents_mean=float(incidents),
        max_incidents=incidents,
        max_series_alerts=max_alerts,
    )


def test_verdict():
    row = Row("r", "r", "r", must_detect=True)
    assert verdict(row, {"streamdrift": _summary(50), "ADWIN": _summary(60)}) == []
    missed = verdict(row, {"streamdrift": _summary(50, detected=19), "ADWIN": _summary(60)})
    assert missed == ["detected 19/20 changes"]
    assert verdict(Row("r", "r", "r"), {"streamdrift": _summary(50, detected=19)}) == []
    [slow] = verdict(
        row,
        {
            "streamdrift": _summary(80),
            "PH": _summary(40, fa=600),
            "ADWIN": _summary(70),
        },
    )
    assert "80 > PH's 40 (at 600.0 FA/10^6; best peer within the FA target: ADWIN 70)" in slow
    [dups, noisy] = verdict(row, {"streamdrift": _summary(50, fa=3, max_alerts=2, dup=0.5)})
    assert "3.0 false alarms per 10^6 values (3 in 1,000,000)" in noisy
    assert "up to 2 alerts of one feature per episode" in dups
    [split] = verdict(row, {"streamdrift": _summary(50, incidents=2)})
    assert "up to 2 incidents per episode" in split
    stationary = Row("s", "s", "s", stationary=True)
    assert verdict(stationary, {"streamdrift": _summary(None, 0, 0, fa=1)}) == []
    assert verdict(stationary, {"streamdrift": _summary(None, 0, 0, fa=2)}) != []


# --- the harness with columns whose answers are known ---------------------------------------


@pytest.fixture(scope="module")
def known():
    """Fixed-answer columns over a few quick scenarios (2 seeds, in this process)."""
    columns = [
        FixedColumn("always", every=True),
        FixedColumn("never"),
        FixedColumn("at pre+9", at=(QUICK.pre + 9,)),
    ]
    only = ["stationary-normal", "abrupt-1", "categorical", "error-rate", "shuttle-shift"]
    return quality.run(2, QUICK, columns, jobs=1, only=only)


def test_a_column_that_always_alarms(known):
    stationary = known["stationary-normal"]["always"]
    assert stationary.fa == stationary.fa_events == 2 * QUICK.stationary
    assert stationary.fa_per_million == 1e6 and stationary.episodes == 0
    shift = known["abrupt-1"]["always"]
    n = QUICK.pre + QUICK.post
    assert shift.fa == 2 * ((QUICK.features - 1) * n + QUICK.pre)
    assert (shift.rate, shift.median_delay, shift.p90_delay) == (1.0, 1, 1)
    assert shift.dup_mean == QUICK.post - 1 and shift.max_alerts == QUICK.post
    # all 9 Shuttle features are affected: one episode, 9 series alarming throughout
    assert known["shuttle-shift"]["always"].max_alerts == 9 * QUICK.post


def test_a_column_that_never_alarms(known):
    for row in ("abrupt-1", "categorical", "error-rate"):
        never = known[row]["never"]
        assert never.detected == 0 and never.episodes == 2 and never.fa == 0
        assert math.isinf(never.median_delay) and never.dup_mean is None


def test_a_column_alarming_nine_values_after_the_change(known):
    late = known["abrupt-1"]["at pre+9"]
    assert (late.rate, late.median_delay, late.p90_delay, late.dup_mean) == (1.0, 10, 10, 0)
    assert late.fa == 2 * (QUICK.features - 1)  # the same index on every unaffected feature
    assert known["stationary-normal"]["at pre+9"].fa == 2


def test_every_column_sees_the_same_values(known):
    for summaries in known.values():
        assert len({s.fa_events for s in summaries.values()}) == 1


# --- columns ---------------------------------------------------------------------------------


def test_window_test_alarms_at_window_ends_after_a_shift():
    values = np.random.default_rng(0).standard_normal(3000)
    values[1000:] += 10
    assert WindowTestColumn().alarms(Series("x", "numeric", values)).tolist() == [
        1499,
        1999,
        2499,
        2999,
    ]
    cats = np.array(["a"] * 1000 + ["b"] * 1000 + ["a"] * 499)  # last window incomplete
    assert WindowTestColumn().alarms(Series("c", "categorical", cats)).tolist() == [1499, 1999]
    errors = np.zeros(1500)
    assert WindowTestColumn().alarms(Series("e", "error", errors)).tolist() == []


def test_river_column_one_hot_encodes_categories():
    from river import drift

    cats = np.array(["a", "b"] * 2000 + ["c"] * 2000)
    hits = RiverColumn("ADWIN", drift.ADWIN).alarms(Series("c", "categorical", cats))
    assert len(hits) and hits.min() >= 4000 and list(hits) == sorted(set(hits))


def test_streamdrift_column_feeds_each_kind_to_its_monitor():
    rng = np.random.default_rng(1)
    values = rng.standard_normal(6000)
    values[4000:] += 2
    column = StreamdriftColumn()
    [alert] = column.alarms(Series("x", "numeric", values))
    assert 4000 <= alert < 4200
    errors = (rng.random(6000) < np.where(np.arange(6000) < 3000, 0.05, 0.5)).astype(float)
    assert column.alarms(Series("e", "error", errors)).min() >= 3000
    assert column.alarms(Series("c", "categorical", np.array(["a", "b"] * 100))).dtype == np.int64
    assert default_columns()[0].name == "streamdrift"


# --- streams ---------------------------------------------------------------------------------


def test_scenarios_are_seeded_and_labelled():
    first, again, other = (SCENARIOS["abrupt-1"].generate(s, QUICK)[0] for s in (3, 3, 4))
    assert all(
        np.array_equal(a.values, b.values) for a, b in zip(first.series, again.series, strict=True)
    )
    assert not np.array_equal(first.series[0].values, other.series[0].values)
    [name] = first.affected
    shifted = {s.name: s.values for s in first.series}[name]
    assert shifted[first.change :].mean() - shifted[: first.change].mean() > 0.8
    for key, scenario in SCENARIOS.items():
        assert set(scenario.rows) <= set(ROWS), key


def test_river_generators_label_the_error_stream_only():
    error_trial, features = SCENARIOS["synth-sea"].generate(0, QUICK)
    assert error_trial.affected == {"errors"} and error_trial.change == (
        QUICK.synth_position - QUICK.synth_width - QUICK.synth_pretrain
    )
    assert len(error_trial.series[0].values) == QUICK.synth_total - QUICK.synth_pretrain
    assert features.change is None and len(features.series) == 3
    assert all(0 <= s.values.min() and s.values.max() <= 10 for s in features.series)


def test_shuttle_comes_from_the_installed_package():
    values, labels, names = shuttle()
    assert values.shape == (49_097, 9) and len(names) == 9
    assert 0.06 < labels.mean() < 0.08


# --- end to end ------------------------------------------------------------------------------


def test_quick_run_end_to_end(tmp_path, capsys):
    out = tmp_path / "quality.json"
    data = quality.main(["--quick", "--jobs", "1", "--out", str(out)])
    printed = capsys.readouterr().out
    assert json.loads(out.read_text()) == json.loads(json.dumps(data))
    assert [row["key"] for row in data["rows"]] == list(ROWS)
    columns = ["streamdrift", "ADWIN", "PageHinkley", "KS/χ² window"]
    for row in data["rows"]:
        assert list(row["results"]) == columns
        assert ROWS[row["key"]].title in printed
        episodes = {r["episodes"] for r in row["results"].values()}
        assert episodes == ({0} if row["stationary"] else {2}), row["key"]
        assert len({r["fa_events"] for r in row["results"].values()}) == 1
        assert row["targets_met"] == (not row["failures"])
    assert "streams meet every target" in printed and "Targets (streamdrift):" in printed
