"""How the Faust app is wired (without a broker: nothing here connects)."""

from __future__ import annotations

import asyncio
from types import SimpleNamespace

import pytest
from aiokafka.structs import ConsumerRecord
from faust.types import TP

from streamdrift.streams.kafka.app import create_app
from streamdrift.streams.kafka.intake import Intake, batches, events_in
from streamdrift.streams.runtime import Publisher, Runtime
from streamdrift.streams.settings import Settings


def test_the_kafka_fetch_wait_is_ours_not_faust_streamings_1500_ms():
    """faust-streaming hard-codes fetch_max_wait_ms=1500, the floor of alert latency on quiet
    partitions; the worker's consumer must get STREAMDRIFT_FETCH_MAX_WAIT_MS instead."""

    async def fetch_wait() -> int:
        app, _ = create_app(Settings(kafka_bootstrap="127.0.0.1:9", fetch_max_wait_ms=77))
        consumer = app.consumer._thread._create_worker_consumer(app.transport)
        try:
            return consumer._fetch_max_wait_ms
        finally:
            await consumer.stop()

    assert asyncio.run(fetch_wait()) == 77


@pytest.mark.parametrize(("setting", "joined"), [("*", {"a", "b"}), ("b, c", {"b"}), ("", set())])
def test_only_the_listed_models_predictions_wait_for_labels(setting, joined):
    runtime = Runtime(
        Settings(redis_url="redis://127.0.0.1:9/0", label_join_models=setting), {}, Publisher()
    )
    assert {model for model in ("a", "b") if runtime._joinable(model)} == joined


# --- the intake: Faust's consumer without its per-event machinery ---------------------------


def _records(
    topic: str, partition: int, values: list[bytes], first: int = 0
) -> list[ConsumerRecord]:
    return [
        ConsumerRecord(
            topic, partition, first + i, 1_700_000_000_000 + i, 0, None, v, None, 0, len(v), ()
        )
        for i, v in enumerate(values)
    ]


def test_events_are_counted_without_decoding():
    assert events_in(b'{"model": "m", "features": {}}') == 1
    assert events_in(b"[" + b",".join([b'{"model":"m","features":{}}'] * 100) + b"]") == 100
    assert events_in(b"not json") == 1 and events_in(None) == 1


def test_a_fetch_is_split_into_batches_bounded_by_events_in_offset_order():
    one, hundred = b'{"model":"m"}', b"[" + b",".join([b'{"model":"m"}'] * 100) + b"]"
    fetched = {
        TP("in", 0): _records("in", 0, [one] * 5, first=10),
        TP("in", 1): _records("in", 1, [hundred] * 3),
        TP("labels", 0): _records("labels", 0, [one] * 2),
    }
    got = list(batches(fetched, max_events=4))
    assert [
        (topic, {p: [r.offset for r in rs] for p, rs in batch.items()}) for topic, batch in got
    ] == [
        ("in", {0: [10, 11, 12, 13]}),
        ("in", {0: [14], 1: [0]}),  # a message is never split: this batch holds 101 events
        ("in", {1: [1]}),
        ("in", {1: [2]}),
        ("labels", {0: [0, 1]}),
    ]
    first = got[0][1][0][0]
    assert (first.timestamp, first.value) == (1_700_000_000.0, one)  # Kafka ms -> epoch seconds


def test_the_intake_replaces_fausts_fetcher_and_subscribes_without_acks():
    settings = Settings(kafka_bootstrap="127.0.0.1:9", input_topic="in", labels_topic="lab")
    app, _ = create_app(settings)
    assert isinstance(app._fetcher, Intake)
    assert {t.get_topic_name() for t in app.topics} == {"in", "lab"} and not app.agents
    assert not any(app.topics.acks_enabled_for(name) for name in ("in", "lab"))


class _Consumer:
    def __init__(self) -> None:
        self.commits: list[dict[TP, int]] = []

    async def _commit(self, offsets: dict[TP, int]) -> bool:
        self.commits.append(dict(offsets))
        return True


def test_the_intake_commits_only_checkpointed_offsets_that_moved():
    runtime = Runtime(Settings(redis_url="redis://127.0.0.1:9/0"), {}, Publisher())
    intake = Intake.__new__(Intake)  # no app: commit() needs only the consumer and the runtime
    intake.runtime, intake._committed = runtime, {}
    intake.app = SimpleNamespace(consumer=_Consumer(), rebalancing=False)
    runtime.states = {("in", 0): object(), ("in", 1): object()}
    runtime.saved_offsets = {("in", 0): 7, ("in", 1): None}  # partition 1: no checkpoint yet

    async def commits() -> list[dict[TP, int]]:
        await intake.commit()
        await intake.commit()  # nothing moved
        runtime.saved_offsets[("in", 0)] = 9
        await intake.commit()
        return intake.app.consumer.commits

    assert asyncio.run(commits()) == [{TP("in", 0): 7}, {TP("in", 0): 9}]


# --- /status: the bearer token check ---------------------------------------------------------


@pytest.mark.parametrize(
    ("header", "ok"),
    [
        ("Bearer s3cret-t0ken", True),
        (b"Bearer s3cret-t0ken", True),
        ("Bearer s3cret-t0ken ", False),
        ("bearer s3cret-t0ken", False),
        ("Bearer wrong", False),
        ("", False),
        (None, False),
        (
            "Bearer s3cret-tökèn",
            False,
        ),  # non-ASCII: hmac.compare_digest refuses such str (was a 500)
        ("Bearer \udcff\udc80", False),  # undecodable header bytes, as aiohttp passes them on
        ("Bearer \ud800", False),  # a lone surrogate
        ("Bearer " + "x" * 100_000, False),
        (b"Bearer \xff\xfe", False),
    ],
)
def test_the_bearer_check_takes_any_header_and_never_raises(header, ok):
    from streamdrift.streams.security import bearer_ok

    assert bearer_ok(header, "s3cret-t0ken") is ok


def test_a_non_ascii_token_can_be_matched():
    from streamdrift.streams.security import bearer_ok

    assert bearer_ok("Bearer jeton-é", "jeton-é") and not bearer_ok("Bearer jeton-e", "jeton-é")


def test_status_answers_401_to_any_wrong_header():
    """The view itself: a non-ASCII Authorization header gets a 401, not a 500."""

    async def statuses(headers: list[dict[str, str]]) -> list[int]:
        app, _ = create_app(Settings(kafka_bootstrap="127.0.0.1:9", http_token="s3cret-t0ken"))
        view = app.web.views["/status"]
        return [(await view.get(SimpleNamespace(headers=h))).status for h in headers]

    wrong = [
        {"Authorization": "Bearer tökèn"},
        {"Authorization": "Bearer \udcff"},
        {},
        {"Authorization": "Bearer x"},
    ]
    assert asyncio.run(statuses(wrong)) == [401] * 4
