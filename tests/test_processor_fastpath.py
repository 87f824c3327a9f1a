"""The columnar path of ``PredictionProcessor.process`` against the per-event path.

The columnar path takes the common events (a known shape: model, version, feature names and
kinds) a column at a time and leaves the others to the per-event path; the per-event path alone
(``columnar=False``) is the reference. Random batches — shapes that repeat, new names, type
changes, nulls, booleans, non-finite and huge numbers, too many categories, features or models,
arrays of events, event timestamps within and beyond the skews, redelivered and out-of-order
offsets — must give identical outcomes and identical state.
"""

from __future__ import annotations

import dataclasses
import json
import random
from typing import Any
from unittest import mock

import msgspec
import pytest
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st

from streamdrift.detectors import MultivariateParams
from streamdrift.streams.pipeline import processor as processor_module
from streamdrift.streams.pipeline.batch import Batch
from streamdrift.streams.pipeline.codec import Limits
from streamdrift.streams.pipeline.outcome import Record
from streamdrift.streams.pipeline.processor import AdmissionLimits, PredictionProcessor
from streamdrift.streams.state.partition import PartitionState

LIMITS = Limits(
    max_message_bytes=1_500,
    max_events_per_message=4,
    max_features_per_event=5,
    max_name_length=10,
    max_category_length=6,
)
# Event timestamps a little ahead of or behind the Kafka timestamp are refused.
SKEWED = dataclasses.replace(LIMITS, max_future_skew_s=40.0, max_past_skew_s=60.0)
# Established from the first event (the columnar path takes only established models' events) ...
ADMISSION = AdmissionLimits(
    max_models=2, max_features_per_model=6, max_versions_per_model=2, probation_events=1
)
# ... or on probation for a few events, one at a time: newcomers evict each other mid-batch.
PROBATION = AdmissionLimits(
    max_models=2,
    max_features_per_model=6,
    max_versions_per_model=2,
    probation_events=3,
    max_probation_models=1,
)
# Small warm-ups and windows so that detectors, windows and the PCA monitor all run; kll_k above
# the values any series gets keeps the sketches exact (KLL compaction is randomised), so monitors
# compare byte for byte.
CONFIG = {
    "defaults": {
        "warmup_events": 4,
        "cooldown_events": 0,
        "max_categories": 4,
        "kll_k": 2_000,
        "detectors": ["adwin", "page_hinkley", "cusum", "window"],
        "adwin": {"clock": 1, "grace_period": 2, "min_window_length": 1, "delta": 0.2},
        "page_hinkley": {"threshold": 1.0, "min_instances": 1},
        "window": {"events": 10, "reference_events": 10},
    },
    # Without window tests an episode ends with its cooldown, so model m alerts often.
    "models": {
        "m": {
            "ignore_features": ["i"],
            "defaults": {"detectors": ["adwin", "page_hinkley", "cusum"]},
        }
    },
}
MULTIVARIATE = MultivariateParams(reference_events=4, calibration_events=4, events=3)

VALID_NAMES = ["a", "b", "c", "d", "i", "prediction"]
NAMES = [*VALID_NAMES, "longer_name", "bad\tname"]
# other kinds, new categories, refused
ODD_VALUES = [
    "u",
    "v",
    "w",
    "toolongvalue",
    10**400,
    1e16,
    1e6,
    -3,
    True,
    False,
    None,
]
TIMESTAMPS = [1.7e9, 0.0, -1.0, "2025-11-21T10:00:00Z", "yesterday", "2025-11-21T10:00:00"]
JUNK = [
    b"{not json",
    b"[]",
    b"[1, 2]",
    b'{"model": "m"}',
    b'{"model": "n", "features": {"a": 1e999}}',
    b"x" * 1_600,
    None,
]


class Stream:
    """Messages made from a few shapes, ``rng`` setting how often the unusual happens."""

    def __init__(self, rng: random.Random, steady: bool) -> None:
        """Steady streams have valid names, two models and few odd values, so that many events
        go column by column; the others draw more widely."""
        self.rng, self.odd = rng, 0.03 if steady else 0.15
        self.names, self.models = (VALID_NAMES, ["m", "n"]) if steady else (NAMES, ["m", "n", "o"])
        self.shapes = [self.shape() for _ in range(rng.randint(1, 3 if steady else 4))]
        # Every event stamped with epoch seconds (the bench's and a client's events), or rarely;
        # dense: no nulls or booleans but the odd ones (the columnar path's block conversion).
        self.stamped = rng.random() < 0.4
        self.dense = steady and rng.random() < 0.4

    def shape(self) -> tuple[Any, ...]:
        """Model, version, features with their usual kinds, the prediction's kind (None: none)."""
        rng = self.rng
        kinds = ["num", "num", "cat"]
        features = [(name, rng.choice(kinds)) for name in rng.sample(self.names, rng.randint(1, 6))]
        # A feature named prediction stands in for the prediction, and may not come with one.
        prediction = (
            None
            if "prediction" in dict(features) and rng.random() < 0.8
            else rng.choice([None, *kinds])
        )
        return rng.choice(self.models), rng.choice([None, "1", "2", "3"]), features, prediction

    def value(self, kind: str) -> Any:
        rng = self.rng
        if rng.random() < self.odd:
            return rng.choice(ODD_VALUES)
        if not self.dense and rng.random() < 0.15:
            return None
        if kind == "num":
            return rng.choice([round(rng.gauss(0, 10), 3), rng.randint(-3, 3)])
        return rng.choice(["x", "y", "z"] if self.dense else ["x", "y", "z", True])

    def body(self) -> dict[str, Any]:
        rng = self.rng
        model, version, features, prediction = rng.choice(self.shapes)
        body: dict[str, Any] = {
            "model": model,
            "features": {name: self.value(kind) for name, kind in features},
        }
        if version is not None:
            body["model_version"] = version
        if prediction is not None:
            body["prediction"] = self.value(prediction)
        if rng.random() < 0.5:
            body["event_id"] = rng.choice(["e1", "e2"])
        if rng.random() < self.odd:
            body["timestamp"] = rng.choice(TIMESTAMPS)
        elif self.stamped:  # around the records' Kafka timestamps (1000 + offset)
            body["timestamp"] = round(rng.uniform(950.0, 1150.0), 3)
        return body

    def message(self) -> bytes | None:
        """Mostly single events; arrays of events (one too many now and then); junk."""
        rng = self.rng
        if rng.random() < 0.75:
            return json.dumps(self.body()).encode()
        if rng.random() < 1 - self.odd:
            return json.dumps(
                [self.body() for _ in range(rng.randint(1, LIMITS.max_events_per_message))]
            ).encode()
        if rng.random() < 0.5:
            return rng.choice(JUNK)
        return json.dumps([self.body() for _ in range(LIMITS.max_events_per_message + 1)]).encode()


@st.composite
def streams(draw: st.DrawFn) -> list[list[Record]]:
    """Batches of records (a long first one if steady); a batch may start before the last one
    ended (a redelivery)."""
    steady = draw(st.integers(0, 3)) > 0
    # hypothesis' own randoms favour 0.0: junk everywhere
    rng = random.Random(draw(st.integers(0, 2**32)))
    stream = Stream(rng, steady)
    batches, offset = [], 0
    for batch in range(rng.randint(2 if steady else 1, 5)):
        if batch and rng.random() < 0.3:  # new features, a new version or model
            stream.shapes.append(stream.shape())
        offset -= rng.choice([0, 0, 0, 2])
        size = rng.randint(40, 80) if steady and not batch else rng.randint(1, 40)
        values = [stream.message() for _ in range(size)]
        records = [Record(offset + i, 1000.0 + offset + i, value) for i, value in enumerate(values)]
        if size > 1 and rng.random() < 0.1:  # out of order: the later one is a duplicate
            i = rng.randrange(size - 1)
            records[i], records[i + 1] = records[i + 1], records[i]
        batches.append(records)
        offset += len(values)
    return batches


def snapshot(state: PartitionState) -> dict[str, Any]:
    """The state, orders included (they decide checkpoint and retirement order)."""
    return {
        "monitors": [(name, m.to_bytes()) for name, m in state.monitors.items()],
        "features": {model: sorted(names) for model, names in state.features_by_model.items()},
        "versions": list(state.versions.items()),
        "unknown_missing": list(state.unknown_missing.items()),
        "dirty": sorted(state.dirty),
        "retired": sorted(state.retired),
        "offsets": (state.next_offset, state.events_since_checkpoint),
        "ledger": msgspec.msgpack.encode(state.ledger),
    }


def processor(
    min_columnar_events: int = 8, admission: AdmissionLimits = ADMISSION, limits: Limits = LIMITS
) -> PredictionProcessor:
    return PredictionProcessor(
        CONFIG,
        limits,
        admission,
        multivariate=MULTIVARIATE,
        min_columnar_events=min_columnar_events,
    )


def compare(
    batches: list[list[Record]],
    min_columnar_events: int = 1,
    admission: AdmissionLimits = ADMISSION,
    limits: Limits = LIMITS,
) -> tuple[int, int]:
    """Process ``batches`` both ways, checking outcomes and states after each; return the events
    that went column by column and the most findings of a batch."""
    fast = processor(min_columnar_events, admission, limits)
    reference = processor(admission=admission, limits=limits)
    fast_state, reference_state = (PartitionState("in", 0, 1, None) for _ in range(2))
    columnar_events = findings = 0
    for records in batches:
        with (
            mock.patch.object(
                Batch, "add_columns", autospec=True, side_effect=Batch.add_columns
            ) as columns,
            mock.patch.object(processor_module, "log", wraps=processor_module.log) as log,
        ):
            out = fast.process(fast_state, records)
        assert not log.exception.called  # the columnar path never falls back on an error
        columnar_events += sum(len(call.args[2]) for call in columns.call_args_list)
        expected = reference.process(reference_state, records, columnar=False)
        assert repr(out) == repr(expected)  # repr: findings may hold NaN
        assert snapshot(fast_state) == snapshot(reference_state)
        findings = max(findings, len(out.findings))
    return columnar_events, findings


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    streams(),
    st.sampled_from([1, 1, 2, 8]),
    st.sampled_from([ADMISSION, ADMISSION, PROBATION]),
    st.sampled_from([LIMITS, LIMITS, SKEWED]),
)
def test_the_columnar_path_matches_the_per_event_path(
    batches, min_columnar_events, admission, limits
):
    columnar_events, findings = compare(batches, min_columnar_events, admission, limits)
    event(f"columnar events: {'some' if columnar_events else 'none'}")
    event(f"most findings in a batch: {min(findings, 3)}")


KNOWN = [
    {"model": "n", "features": {"a": 1.0, "b": 2.0, "c": "x"}},
    {"model": "n", "features": {"d": 1.0, "e": 2.0, "f": "y"}},
]


@pytest.mark.parametrize(
    "later",
    [
        pytest.param(
            {"model": "n", "features": dict.fromkeys("abcdef", None)},
            id="too many features of known names",
        ),
        pytest.param(
            {"model": "n", "features": {"prediction": None}, "prediction": 1.0},
            id="prediction twice",
        ),
        pytest.param(
            {"model": "n", "features": {"a": 1.0, "g": None}},
            id="a new name, null, one too many for the model",
        ),
        pytest.param(
            [KNOWN[0], {"model": "n", "features": {"a": 1.0, "b": 2.0, "c": "new"}}, KNOWN[0]],
            id="a new category mid-array",
        ),
        pytest.param(
            [KNOWN[0], {"model": "n", "features": {"a": "x", "b": 2.0, "c": "x"}}, KNOWN[0]],
            id="a type change mid-array",
        ),
        pytest.param(
            [KNOWN[0], {"model": "n", "features": {"a": True, "b": 0.0, "c": "x"}}, KNOWN[0]],
            id="a boolean among numbers that look like booleans",
        ),
        pytest.param(
            [KNOWN[0], {"model": "n", "features": {"a": "1.5", "b": 2.0, "c": "x"}}, KNOWN[0]],
            id="a number in a string",
        ),
        pytest.param(
            [KNOWN[0], {"model": "n", "features": {"a": 1e16, "b": 2.0, "c": "x"}}, KNOWN[0]],
            id="a number beyond max_abs_value",
        ),
        pytest.param(
            [KNOWN[0], {"model": "n", "features": {"a": None, "b": 2.0, "c": "x"}}, KNOWN[0]],
            id="a null among numbers",
        ),
    ],
)
def test_rare_refusals_of_known_shapes_match(later):
    first = [Record(i, 1000.0 + i, json.dumps(body).encode()) for i, body in enumerate(KNOWN * 3)]
    second = [
        Record(6 + i, 1006.0 + i, json.dumps(body).encode())
        for i, body in enumerate([KNOWN[1], later, KNOWN[0]])
    ]
    assert compare([first, second])[0] > 0


def test_the_common_case_goes_column_by_column():
    """Once a shape is known, its events skip the per-event path entirely."""
    proc, state = processor(), PartitionState("in", 0, 1, None)

    def batch(first: int) -> list[Record]:
        # d: all null in the second batch; i: ignored
        features = [
            {
                "a": float(i % 7),
                "b": "xyz"[i % 3],
                "c": None if i % 4 else True,
                "d": None if first else i,
                "i": "id",
            }
            for i in range(first, first + 40)
        ]
        bodies = [
            {
                "model": "m",
                "model_version": "1",
                "event_id": f"e{i}",
                "prediction": 0.5 + i % 3,
                "features": f,
            }
            for i, f in enumerate(features, first)
        ]
        return [
            Record(i, 1000.0 + i, json.dumps(body).encode()) for i, body in enumerate(bodies, first)
        ]

    proc.process(state, batch(0))  # new names: one by one
    with mock.patch.object(PredictionProcessor, "_admit", autospec=True) as admit:
        out = proc.process(state, batch(40))
    assert admit.call_count == 0
    assert out.events == 40 and len(out.joins) == 40 and out.dead_letters == []
