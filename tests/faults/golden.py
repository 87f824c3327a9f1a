"""The golden replay and recovery figures shared by the fault tests (``tests/faults``).

The golden replay runs the same Kafka records, partition by partition, through the pure
processor in this process. After each fault, the state in Redis must equal it:

* I1/I2 — every series' count, missing count, moments and change-detector state are exactly the
  golden ones (no event lost, none applied twice);
* I3 — the alert topic holds exactly the golden alerts, each id once after de-duplication, and
  every copy of an id has the same bytes; each alert names the golden incident (the golden
  replay's alerts through the incident rules, :class:`IncidentLedger`), each incident is opened
  once, and its events too have one body per id;
* I4 — writes from a fenced epoch were refused (counted by the zombie's own metrics);
* I5 — the worker recovered by itself within the stated time.

Recovery figures: with ``STREAMDRIFT_FAULT_REPORT=<file>`` set, each test appends one JSON line
per fault to that file — seconds from the fault's end (or injection) until the pipeline processed
again and until it caught up — for ``python -m bench.faults_report``. Recorded, never asserted.
"""

from __future__ import annotations

import json
import os
import time
from collections import Counter, defaultdict
from collections.abc import Iterable
from typing import Any

import numpy as np
import pytest
import redis
from conftest import Topics, consume_all, produce

from streamdrift.streams.pipeline.alerts import alert_id
from streamdrift.streams.pipeline.incidents import (
    Decision,
    IncidentLedger,
    incident_id,
    member_key,
)
from streamdrift.streams.pipeline.outcome import Record
from streamdrift.streams.runtime import prediction_processor, with_setting_defaults
from streamdrift.streams.settings import Settings
from streamdrift.streams.state.keys import META_PREFIX, KeyLayout
from streamdrift.streams.state.partition import PartitionState, restore_monitor

#: Marks a fault test to run on Tansu and on a single Apache Kafka broker.
KAFKA_AND_TANSU = pytest.mark.brokers("tansu", "kafka")


def on(broker: Any) -> str:
    """The broker's name in recovery figures: ``Tansu``, ``Kafka 1 node``, ``Kafka 3 nodes``."""
    nodes = getattr(broker, "nodes", None)
    return "Tansu" if nodes is None else f"Kafka {len(nodes)} node{'s' if len(nodes) > 1 else ''}"


MODELS = ("fraud", "churn", "pricing", "ads")
FEATURES = [f"f{i}" for i in range(8)]
RECOVERY_S = 60  # I5: a stated bound on recovery, well above the measured seconds
REPORT = os.environ.get("STREAMDRIFT_FAULT_REPORT")  # JSON lines of recovery figures, if set


def stream(n: int, seed: int = 0) -> tuple[list[bytes], list[str]]:
    """``n`` single-event messages over four models; fraud's f3 shifts by 2σ halfway."""
    rng = np.random.default_rng(seed)
    values = rng.normal(size=(n, len(FEATURES)))
    models = [MODELS[i % len(MODELS)] for i in range(n)]
    shift = np.array([m == "fraud" for m in models]) & (np.arange(n) >= n // 2)
    values[shift, 3] += 2.0
    bodies = [
        json.dumps(
            {
                "model": m,
                "event_id": f"{m}-{i}",
                "features": dict(zip(FEATURES, row.tolist(), strict=True)),
                "prediction": float(abs(row[0]) % 1),
            }
        ).encode()
        for i, (m, row) in enumerate(zip(models, values, strict=True))
    ]
    return bodies, models


class Golden:
    """The same records through the pure processor, partition by partition.

    Each model is keyed to one partition, so its alerts come in one order whatever the worker's
    batches and faults, and which incident each alert opens or joins is the incident rules'
    answer on that order (the window is far longer than the stream takes to produce; the
    replay's record times are all 0). Which incident events an incident publishes depends on
    the worker's batches (one per incident and batch): not predicted.
    """

    def __init__(self, broker, topics: Topics, expected: int) -> None:
        settings = Settings()
        processor = prediction_processor(settings, with_setting_defaults({}, settings))
        self.states: dict[int, PartitionState] = {}
        self.alert_ids: set[str] = set()
        self.incident_of: dict[str, str] = {}  # alert id -> incident id
        ledgers: dict[str, IncidentLedger] = defaultdict(
            lambda: IncidentLedger(settings.incident_window_s, settings.incident_max_members)
        )
        by_partition: dict[int, list[Record]] = defaultdict(list)
        for m in consume_all(broker.bootstrap, topics.input, expect_at_least=expected):
            by_partition[m.partition].append(Record(m.offset, 0.0, m.value))
        group = topics.group_id
        for partition, records in by_partition.items():
            state = self.states[partition] = PartitionState(topics.input, partition, 1, None)
            for start in range(0, len(records), 1000):
                outcome = processor.process(state, records[start : start + 1000])
                for f in outcome.findings:
                    alert = alert_id(group, topics.input, partition, f)
                    self.alert_ids.add(alert)
                    (answer,) = ledgers[f.model].decide(
                        [
                            Decision(
                                alert,
                                f.detection.event,
                                f.time,
                                member_key(topics.input, partition, f),
                                "{}",
                                incident_id(group, f.model, alert),
                            )
                        ]
                    )
                    if answer.incident:
                        self.incident_of[alert] = answer.incident


def deterministic(summary: dict[str, Any]) -> dict[str, Any]:
    """What must be identical after any replay, flattened (KLL quantiles are randomised: left out).

    Floats are rounded to 9 significant digits: batch boundaries differ between the worker and
    the golden replay, and merging moments batch-wise changes the last bits.
    """
    keep = ("kind", "count", "missing", "mean", "std", "min", "max", "episodes")
    detectors = {
        name: d
        for name, d in summary.get("detectors", {}).items()
        if name in ("adwin", "page_hinkley", "cusum")
    }
    flat = {k: summary.get(k) for k in keep}
    for name, state in detectors.items():
        flat |= {f"{name}.{k}": v for k, v in state.items()}
    return {k: _rounded(v) for k, v in flat.items()}


def _rounded(value: Any) -> Any:
    if isinstance(value, float):
        return float(f"{value:.9g}")
    return [_rounded(v) for v in value] if isinstance(value, (list, tuple)) else value


def stored(
    client: redis.Redis, topics: Topics, partition: int
) -> tuple[int | None, dict[str, dict[str, Any]]]:
    ckpt, state = KeyLayout(topics.group_id).keys(topics.input, partition)
    offset = client.hget(ckpt, "offset")
    series = {
        name.decode(): deterministic(restore_monitor(name.decode(), blob).summary())
        for name, blob in client.hgetall(state).items()
        if not name.decode().startswith(META_PREFIX)
    }
    return (int(offset) if offset else None), series


def assert_state_matches(client: redis.Redis, topics: Topics, golden: Golden) -> None:
    for partition, state in golden.states.items():
        offset, series = stored(client, topics, partition)
        assert offset == state.next_offset, (
            f"partition {partition}: checkpointed offset {offset} != {state.next_offset}"
        )
        want = {name: deterministic(m.summary()) for name, m in state.monitors.items()}
        assert series.keys() == want.keys()
        for name in want:
            assert series[name] == want[name], (partition, name)


def assert_alerts_match(
    broker, topics: Topics, golden: Golden, incidents_exact: bool = True
) -> None:
    """I3. ``incidents_exact`` False: Redis lost the incident state during the run, so a later
    alert may open a new incident (documented); every id must still have one body."""
    copies: dict[str, set[bytes]] = defaultdict(set)
    for m in consume_all(
        broker.bootstrap, topics.alerts, expect_at_least=len(golden.alert_ids), timeout=60
    ):
        copies[json.loads(m.value)["id"]].add(m.value)
    assert all(len(bodies) == 1 for bodies in copies.values()), (
        "an id was published with different bodies"
    )
    messages = {i: json.loads(next(iter(bodies))) for i, bodies in copies.items()}
    drift = {i: m for i, m in messages.items() if m["type"].startswith("io.streamdrift.drift.")}
    assert set(drift) == golden.alert_ids, "alerts differ from the golden replay's"
    if not incidents_exact:
        return
    named = {i: m.get("incident") for i, m in drift.items() if m.get("incident")}
    assert named == golden.incident_of, "alerts name other incidents than the golden replay's"
    opened = Counter(
        m["incident"] for m in messages.values() if m["type"] == "io.streamdrift.incident.opened"
    )
    assert opened == Counter(set(golden.incident_of.values())), (
        f"each incident opened once: {opened} against {set(golden.incident_of.values())}"
    )


Ends = dict[int, int]  # partition -> next offset past its last record


def ends_of(delivered: list[tuple[int, int]]) -> Ends:
    """Where each partition ends, from ``produce``'s (partition, offset) of every record."""
    ends: Ends = {}
    for partition, offset in delivered:
        ends[partition] = max(ends.get(partition, 0), offset + 1)
    return ends


def checkpointed_offsets(
    client: redis.Redis, topics: Topics, partitions: Iterable[int]
) -> dict[int, int | None]:
    layout = KeyLayout(topics.group_id)
    offsets = {p: client.hget(layout.keys(topics.input, p)[0], "offset") for p in partitions}
    return {p: int(offset) if offset else None for p, offset in offsets.items()}


def wait_until_caught_up(
    client: redis.Redis,
    topics: Topics,
    ends: Ends,
    timeout: float = RECOVERY_S,
    *,
    fault: str | None = None,
    since: float | None = None,
    **figures: float,
) -> None:
    """Wait until every partition's checkpoint covers its last record (I5).

    With a ``fault`` name, report (see :func:`report`) the seconds from ``since`` (monotonic;
    default now) until the checkpoints first moved past where they stood when called (processing
    again) and until they were caught up, and the records they had left to cover then.
    """
    deadline = time.monotonic() + timeout
    since = time.monotonic() if since is None else since
    first = checkpointed_offsets(client, topics, ends)
    resumed = None
    while time.monotonic() < deadline:
        offsets = checkpointed_offsets(client, topics, ends)
        if resumed is None and (offsets != first or offsets == ends):
            resumed = time.monotonic() - since
        if offsets == ends:
            if fault is not None:
                backlog = sum(ends[p] - (first[p] or 0) for p in ends)
                report(
                    fault,
                    resumed_s=resumed,
                    caught_up_s=time.monotonic() - since,
                    backlog=backlog,
                    **figures,
                )
            return
        time.sleep(0.1)
    raise AssertionError(f"not caught up within {timeout} s")


def report(fault: str, **figures: float) -> None:
    """Append one line of recovery figures to ``STREAMDRIFT_FAULT_REPORT`` (if set)."""
    if REPORT:
        with open(REPORT, "a") as out:
            out.write(
                json.dumps({"fault": fault, **{k: round(v, 2) for k, v in figures.items()}}) + "\n"
            )


def assert_exact(
    broker, client: redis.Redis, topics: Topics, ends: Ends, incidents_exact: bool = True
) -> None:
    """I1-I3: state equal to the golden replay, alerts once each."""
    golden = Golden(broker, topics, sum(ends.values()))
    assert_state_matches(client, topics, golden)
    assert_alerts_match(broker, topics, golden, incidents_exact)


def assert_recovered_exactly(
    broker,
    client: redis.Redis,
    topics: Topics,
    ends: Ends,
    timeout: float = RECOVERY_S,
    incidents_exact: bool = True,
    **recovery: Any,
) -> None:
    """I5 then I1-I3. ``recovery``: the fault's name and figures for
    :func:`wait_until_caught_up`."""
    wait_until_caught_up(client, topics, ends, timeout, **recovery)
    assert_exact(broker, client, topics, ends, incidents_exact)


def produce_stream(broker, topics: Topics, n: int, seed: int = 0) -> Ends:
    """Produce ``stream(n, seed)``; the golden replay waits until after the fault, which so
    strikes while the worker is still busy with the stream."""
    bodies, models = stream(n, seed)
    return ends_of(produce(broker.bootstrap, topics.input, bodies, keys=models))


def produce_slowly(
    broker,
    topics: Topics,
    bodies: list[bytes],
    models: list[str],
    seconds: float,
    delivered: list[tuple[int, int]],
) -> None:
    """Produce ``bodies`` (keyed by model) in half-second chunks over ``seconds``; append each
    record's (partition, offset) to ``delivered``. Run in a thread to keep a load on."""
    chunk = max(1, len(bodies) // int(seconds * 2))
    for start in range(0, len(bodies), chunk):
        delivered += produce(
            broker.bootstrap,
            topics.input,
            bodies[start : start + chunk],
            keys=models[start : start + chunk],
        )
        time.sleep(0.5)
