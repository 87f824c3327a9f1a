"""End to end: a topic in the user's own JSON shape, consumed beside the native input through
the configuration's ``inputs`` mapping, on a real broker and Redis with real workers — a drift
in a mapped feature alerts once, every event is counted once through a kill -9, and messages the
mapping cannot read land in the dead-letter topic with their reason."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
import uuid
from collections import Counter
from typing import Any

import numpy as np
import pytest
from conftest import Topics, consume_all, produce, told_once, wait_for
from platforms import oip as seldon_oip

from streamdrift.streams.kafka.admin import create_topics
from streamdrift.streams.ops.status import read_status
from streamdrift.streams.pipeline.kserve import REQUEST, RESPONSE
from streamdrift.streams.pipeline.seldon import REQUEST as SELDON_REQUEST
from streamdrift.streams.pipeline.seldon import RESPONSE as SELDON_RESPONSE

pytestmark = pytest.mark.e2e

CONFIG = """
inputs:
  - topic: {topic}
    format: json
    mapping:
      rows: predictions
      model: header:x-model
      model_version: message:service.version
      event_id: request_id
      features: request.inputs
      prediction: response.score
      exclude: [session]
"""


def messages(n: int, *, seed: int, shift: float = 0.0, start: int = 0) -> list[bytes]:
    """``n`` messages of two rows each in the user's shape; ``amount`` moves by ``shift`` σ."""
    rng = np.random.default_rng(seed)
    out = []
    for i in range(n):
        rows = [
            {
                "request_id": f"req-{start + i}-{j}",
                "request": {
                    "inputs": {
                        "amount": float(rng.normal() + shift),
                        "age": float(rng.normal(40.0, 5.0)),
                        "session": f"s{rng.integers(1_000_000)}",
                    }
                },
                "response": {"score": float(rng.uniform())},
            }
            for j in range(2)
        ]
        out.append(json.dumps({"service": {"version": "7"}, "predictions": rows}).encode())
    return out


def counted(redis_client, topics: Topics) -> dict[str, int]:
    series = read_status(redis_client, topics.group_id)["models"].get("fraud", {})
    return {feature: s.get("count", 0) for feature, s in series.items()}


def detections(broker, topics: Topics) -> list[dict[str, Any]]:
    """The drift alerts that opened an episode, each once."""
    found = [json.loads(m.value) for m in consume_all(broker.bootstrap, topics.alerts)]
    unique = {a["id"]: a for a in found if a["type"] == "io.streamdrift.drift.detected"}
    return list(unique.values())


def events_of(redis_client, topics: Topics, topic: str) -> int:
    """Events applied from ``topic``, as its partitions' checkpoints count them."""
    partitions = read_status(redis_client, topics.group_id)["partitions"]
    return sum(p.get("events", 0) for p in partitions if p["topic"] == topic)


def dead_letter_reasons(broker, topics: Topics, source: str, at_least: int) -> Counter[str]:
    """The reasons of the dead letters that came from ``source``."""
    letters = consume_all(broker.bootstrap, topics.dlq, expect_at_least=at_least)
    return Counter(
        (m.header("streamdrift-reason") or b"").decode()
        for m in letters
        if m.header("streamdrift-source-topic") == source.encode()
    )


def test_a_mapped_topic_is_monitored_exactly_once_through_a_kill(
    broker, topics, start_worker, redis_client, tmp_path
):
    mapped = f"{topics.input}-mapped"
    create_topics(broker.bootstrap, {mapped: 2})
    config = tmp_path / "inputs.yaml"
    config.write_text(CONFIG.format(topic=mapped))
    worker = start_worker(config=config, checkpoint_every_events=1_000).wait_ready()
    header = [("x-model", b"fraud")]
    before, during = 4_000, 4_000  # messages, two events each
    bad = [b"{not json", json.dumps({"predictions": "none"}).encode(), b""]
    produce(broker.bootstrap, mapped, bad + messages(before, seed=1), headers=header, key="k")
    wait_for(lambda: counted(redis_client, topics).get("amount", 0) >= 2_000, 120, "a first part")
    worker.kill()  # kill -9 mid-stream
    start_worker(config=config, checkpoint_every_events=1_000).wait_ready(timeout=90)
    produce(
        broker.bootstrap,
        mapped,
        messages(during, seed=2, shift=2.0, start=before),
        headers=header,
        key="k",
    )
    total = 2 * (before + during)
    wait_for(
        lambda: counted(redis_client, topics).get("amount", 0) == total,
        180,
        f"{total} mapped events checkpointed",
    )
    time.sleep(2)  # anything applied twice would show in a later checkpoint
    counts = counted(redis_client, topics)
    assert {counts[f] for f in ("amount", "age", "prediction")} == {total}, counts
    assert "session" not in counts  # excluded by the mapping

    time.sleep(2)
    detected = detections(broker, topics)
    moved = Counter(a["data"]["feature"] for a in detected)
    assert moved.get("amount", 0) >= 1, moved
    assert set(moved) <= {"amount", "multivariate"}, moved
    (alert,) = [a for a in detected if a["data"]["feature"] == "amount"][:1]
    assert alert["data"]["model_version"] == "7"
    assert alert["data"]["evidence"]["topic"] == mapped
    told_once(broker, topics, "fraud")
    reasons = dead_letter_reasons(broker, topics, mapped, at_least=len(bad))
    assert reasons == {"malformed_json": 2, "mapping_failed": 1}, reasons


KSERVE = """
inputs:
  - topic: {topic}
    format: kserve
    mapping:
      names: [amount, age, tenure]
    pairing:
      window_s: 2
      unpaired: dead_letter
"""


def kserve_logs(
    n: int, *, seed: int, shift: float = 0.0, start: int = 0, halves: str = "both"
) -> list[tuple]:
    """(value, headers) of ``n`` request/response pairs as Knative's Kafka sink writes KServe's
    payload logs (binary mode); ``amount`` moves by ``shift`` σ; ``halves``: "both",
    "response" (responses whose requests were never logged)."""
    rng = np.random.default_rng(seed)
    out = []
    for i in range(n):
        ident = f"req-{seed}-{start + i}".encode()
        base = [("ce_specversion", b"1.0"), ("ce_id", ident), ("ce_source", b"kserve")]
        base += [("ce_inferenceservicename", b"fraud"), ("content-type", b"application/json")]
        row = [float(rng.normal() + shift), float(rng.normal(40, 5)), float(rng.exponential(3))]
        request = {"instances": [row]}
        response = {"predictions": [float(rng.uniform())]}
        if halves == "both":
            out.append((json.dumps(request).encode(), [*base, ("ce_type", REQUEST.encode())]))
        out.append((json.dumps(response).encode(), [*base, ("ce_type", RESPONSE.encode())]))
    return out


def test_kserve_payload_logs_in_binary_mode_are_monitored(
    broker, topics, start_worker, redis_client, tmp_path
):
    logs = f"{topics.input}-kserve"
    create_topics(broker.bootstrap, {logs: 2})
    config = tmp_path / "kserve.yaml"
    config.write_text(KSERVE.format(topic=logs))
    start_worker(config=config).wait_ready()
    records = kserve_logs(6_000, seed=3) + kserve_logs(4_000, seed=4, shift=2.0)
    records += kserve_logs(30, seed=7, halves="response")  # their requests were never logged
    headers_v2 = [("ce_type", REQUEST.encode()), ("ce_id", b"bad"), ("ce_specversion", b"1.0")]
    hostile = [
        (
            json.dumps({"inputs": [{"name": "x", "shape": [2, 2], "data": [1]}]}).encode(),
            headers_v2,
        ),
        (b"{}", [("ce_type", b"dev.knative.other"), ("ce_id", b"x")]),
    ]
    produce(
        broker.bootstrap,
        logs,
        [value for value, _ in hostile + records],
        headers_each=[headers for _, headers in hostile + records],
        keys=[
            (headers[1][1] if headers[1][0] == "ce_id" else b"k")
            for _, headers in hostile + records
        ],
    )
    wait_for(
        lambda: counted(redis_client, topics).get("prediction", 0) == 10_000,
        180,
        "10,000 paired events checkpointed",
    )
    counts = counted(redis_client, topics)
    assert {counts[f] for f in ("amount", "age", "tenure")} == {10_000}, counts
    assert events_of(redis_client, topics, logs) == 10_000  # one event per pair
    time.sleep(3)
    moved = {a["data"]["feature"] for a in detections(broker, topics)}
    assert "amount" in moved and not moved & {"age", "tenure", "prediction"}, moved
    told_once(broker, topics, "fraud")
    reasons = dead_letter_reasons(broker, topics, logs, at_least=32)
    assert reasons == {
        "tensor_shape_mismatch": 1,
        "unsupported_event_type": 1,
        "unpaired_response": 30,  # past their 2 s window, as the input asks
    }, reasons


SELDON = """
inputs:
  - topic: {topic}
    format: seldon
    pairing:
      window_s: 20
"""


def seldon_logs(n: int, *, seed: int, shift: float = 0.0, halves: str = "both") -> list[tuple]:
    """(value, headers, partition) of ``n`` request/response pairs as Seldon Core 1's executor
    logs them to Kafka (no key): requests on partition 0, responses on 1, so every pair meets
    across partitions; ``hours`` moves by ``shift`` σ; ``halves``: "both", "request" or
    "response" (only those)."""
    rng = np.random.default_rng(seed)
    out = []
    for i in range(n):
        base = [("requestid", f"r-{seed}-{i}".encode()), ("inferenceservicename", b"income")]
        base += [("modelid", b"classifier"), ("protocol", b"seldon")]
        row = [float(rng.normal(40, 5)), float(rng.normal(38, 4) + 4 * shift)]
        request = {"data": {"names": ["age", "hours"], "ndarray": [row]}}
        p = float(rng.uniform())
        response = {"data": {"names": ["t:0", "t:1"], "ndarray": [[p, 1 - p]]}}
        if halves in ("both", "request"):
            out.append(
                (json.dumps(request).encode(), [("type", SELDON_REQUEST.encode()), *base], 0)
            )
        if halves in ("both", "response"):
            out.append(
                (json.dumps(response).encode(), [("type", SELDON_RESPONSE.encode()), *base], 1)
            )
    return out


def test_seldon_core_1_requests_pair_with_their_responses_exactly_once_through_a_kill(
    broker, topics, start_worker, redis_client, tmp_path
):
    """Halves on two partitions meet through Redis; a kill -9 strikes with halves waiting (in
    the checkpoint or not yet in it); requests whose responses come only after the restart
    still pair; a request never answered is monitored alone, as is a response never asked."""
    logs = f"{topics.input}-seldon"
    create_topics(broker.bootstrap, {logs: 2})
    config = tmp_path / "seldon.yaml"
    config.write_text(SELDON.format(topic=logs))
    worker = start_worker(config=config, checkpoint_every_events=500).wait_ready()
    feedback = (b'{"reward": 1}', [("type", b"io.seldon.serving.feedback")], 0)
    late = seldon_logs(150, seed=8)  # requests just before the kill, responses after the restart
    lone = seldon_logs(60, seed=9, halves="request") + seldon_logs(40, seed=10, halves="response")
    first = [feedback, *lone, *seldon_logs(3_000, seed=5)]
    second = [r for r in late if r[2] == 1] + seldon_logs(3_000, seed=6, shift=2.0)

    def send(records: list[tuple]) -> None:
        produce(
            broker.bootstrap,
            logs,
            [value for value, _, _ in records],
            headers_each=[headers for _, headers, _ in records],
            partitions=[partition for _, _, partition in records],
        )

    def counts() -> dict[str, int]:
        series = read_status(redis_client, topics.group_id)["models"].get("income", {})
        return {feature: s.get("count", 0) for feature, s in series.items()}

    send(first)
    wait_for(lambda: counts().get("t:1", 0) >= 1_000, 120, "a first part paired")
    send([r for r in late if r[2] == 0])
    worker.kill()  # kill -9 with halves waiting (checkpointed or not yet)
    start_worker(config=config, checkpoint_every_events=500).wait_ready(timeout=90)
    send(second)
    pairs = 3_000 + 150 + 3_000
    # the never-answered requests and never-asked responses settle once their 20 s window is over
    wait_for(
        lambda: (counts().get("age", 0), counts().get("t:1", 0)) == (pairs + 60, pairs + 40),
        180,
        f"{pairs + 60} request events and {pairs + 40} response events",
    )
    time.sleep(2)  # anything applied twice would show in a later checkpoint
    assert {counts()[f] for f in ("age", "hours")} == {pairs + 60}, counts()
    assert {counts()[f] for f in ("t:0", "t:1")} == {pairs + 40}, counts()
    assert events_of(redis_client, topics, logs) == pairs + 60 + 40  # one event per pair
    moved = {a["data"]["feature"] for a in detections(broker, topics)}
    assert "hours" in moved and not moved & {"age", "t:0", "t:1"}, moved
    told_once(broker, topics, "income")
    reasons = dead_letter_reasons(broker, topics, logs, at_least=1)
    assert reasons == {"unsupported_event_type": 1}, reasons


SELDON2 = """
inputs:
  - topic: {inputs}
    format: seldon2
    pairing: {{window_s: 3}}
  - topic: {outputs}
    format: seldon2
    pairing: {{window_s: 3}}
"""


def seldon2_messages(
    n: int, *, seed: int, shift: float = 0.0, halves: str = "both"
) -> tuple[list[tuple[str, bytes]], list[tuple[str, bytes]]]:
    """(key, value) of ``n`` requests and of their responses as Seldon Core 2 writes them to a
    model's .inputs and .outputs topics: Open Inference Protocol protobuf built with Seldon's
    own definitions, keyed by the request id; ``hours`` moves by ``shift`` σ."""
    rng = np.random.default_rng(seed)
    request_class = seldon_oip.message("ModelInferRequest")
    response_class = seldon_oip.message("ModelInferResponse")
    requests, responses = [], []
    for i in range(n):
        ident = f"s2-{seed}-{i}"
        request = request_class(model_name="income_1", id=ident)
        age = request.inputs.add(name="age", datatype="INT64", shape=[1])
        age.contents.int64_contents.append(int(rng.integers(18, 80)))
        hours = request.inputs.add(name="hours", datatype="FP32", shape=[1])
        hours.contents.fp32_contents.append(float(rng.normal(38, 4) + 4 * shift))
        response = response_class(model_name="income_1", id=ident)
        predict = response.outputs.add(name="predict", datatype="FP32", shape=[1])
        predict.contents.fp32_contents.append(float(rng.uniform()))
        if halves == "both":
            requests.append((ident, request.SerializeToString()))
        responses.append((ident, response.SerializeToString()))
    return requests, responses


def test_seldon_core_2_model_topics_pair_across_topics_and_are_monitored(
    broker, topics, start_worker, redis_client, tmp_path
):
    namespace = uuid.uuid4().hex[:10]
    inputs = f"seldon.{namespace}.model.income.inputs"
    outputs = f"seldon.{namespace}.model.income.outputs"
    create_topics(broker.bootstrap, {inputs: 2, outputs: 2})
    config = tmp_path / "seldon2.yaml"
    config.write_text(SELDON2.format(inputs=inputs, outputs=outputs))
    start_worker(config=config).wait_ready()
    requests, responses = seldon2_messages(2_500, seed=11)
    shifted_requests, shifted_responses = seldon2_messages(2_000, seed=12, shift=2.0)
    _, orphans = seldon2_messages(20, seed=13, halves="response")  # requests never logged
    for topic, pairs in (
        (inputs, [("bad", b"\xff\xff\xff"), *requests, *shifted_requests]),
        (outputs, [*responses, *shifted_responses, *orphans]),
    ):
        produce(broker.bootstrap, topic, [v for _, v in pairs], keys=[k for k, _ in pairs])

    def counts() -> dict[str, int]:
        series = read_status(redis_client, topics.group_id)["models"].get("income", {})
        return {feature: s.get("count", 0) for feature, s in series.items()}

    wait_for(lambda: counts().get("prediction", 0) == 4_520, 180, "4,520 predictions")
    time.sleep(2)
    assert {counts()[f] for f in ("age", "hours")} == {4_500}, counts()
    assert (
        events_of(redis_client, topics, inputs) + events_of(redis_client, topics, outputs) == 4_520
    )  # one event per pair, the 20 lone responses alone
    moved = {a["data"]["feature"] for a in detections(broker, topics)}
    assert "hours" in moved and not moved & {"age", "prediction"}, moved
    told_once(broker, topics, "income")
    reasons = dead_letter_reasons(broker, topics, inputs, at_least=1)
    assert reasons == {"mapping_failed": 1}, reasons


def test_the_worker_command_refuses_a_mapped_topic_that_does_not_exist(
    broker, topics, redis_server, tmp_path
):
    """Never created on the user's behalf: the message names it and says what to check."""
    config = tmp_path / "missing.yaml"
    config.write_text(CONFIG.format(topic=f"{topics.input}-nowhere"))
    env = (
        {k: v for k, v in os.environ.items() if not k.startswith("STREAMDRIFT_")}
        | topics.env()
        | {
            "STREAMDRIFT_KAFKA_BOOTSTRAP": broker.bootstrap,
            "STREAMDRIFT_REDIS_URL": redis_server.url,
        }
    )
    result = subprocess.run(
        [sys.executable, "-m", "streamdrift.streams", "worker", "-c", str(config)],
        capture_output=True,
        text=True,
        timeout=120,
        env=env,
    )
    assert result.returncode == 1, result.stdout + result.stderr
    assert f"mapped input topics ['{topics.input}-nowhere']" in result.stderr, result.stderr
    assert "check the topic names under inputs" in result.stderr
    assert "Traceback" not in result.stderr
