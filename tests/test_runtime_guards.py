"""The runtime's guards with a real Redis (no broker: a recording publisher): a monitor that
raises is restored from its checkpoint, not wiped; evicted models leave no metric label sets."""

from __future__ import annotations

import asyncio
import json
import uuid

from conftest import RecordingPublisher

from streamdrift.detectors import NumericMonitor
from streamdrift.streams.pipeline.outcome import Record
from streamdrift.streams.runtime import Runtime
from streamdrift.streams.settings import Settings
from streamdrift.streams.state.keys import series_name


def settings_for(redis_url: str, **overrides: object) -> Settings:
    return Settings(
        redis_url=redis_url,
        group_id=f"test-guards-{uuid.uuid4().hex[:12]}",
        input_topic="preds",
        labels_topic="labels",
        checkpoint_interval_s=3600.0,
        **overrides,
    )


def batch(first: int, n: int, model: str = "m", value: float = 1.0) -> list[Record]:
    body = json.dumps({"model": model, "features": {"x": value, "y": value}}).encode()
    return [Record(first + i, 1_000.0 + first + i, body) for i in range(n)]


def test_a_monitor_that_raises_is_restored_from_its_last_checkpoint(redis_server, monkeypatch):
    async def body() -> None:
        runtime = Runtime(settings_for(redis_server.url), {}, RecordingPublisher())
        await runtime.on_assigned([("preds", 0)])
        await runtime.handle("preds", {0: batch(0, 50)})
        await runtime.checkpoint()
        state = runtime.states[("preds", 0)]
        x, y = series_name("m", None, "x"), series_name("m", None, "y")
        await runtime.handle("preds", {0: batch(50, 30)})
        assert state.monitors[x].count == 80

        original = NumericMonitor.update

        def explode(self, values, *args, **kwargs):
            if self is state.monitors.get(x):
                raise FloatingPointError("boom")
            return original(self, values, *args, **kwargs)

        monkeypatch.setattr(NumericMonitor, "update", explode)
        await runtime.handle("preds", {0: batch(80, 20)})
        monkeypatch.setattr(NumericMonitor, "update", original)
        # x is back at its checkpoint (50 values): its history survives, the 50 since are lost;
        # y and the offsets went on.
        assert state.monitors[x].count == 50 and state.monitors[y].count == 100
        assert state.next_offset == 100 and x not in state.retired
        assert runtime.metrics.registry.get_sample_value("streamdrift_state_errors_total") == 1
        await runtime.close()

    asyncio.run(body())


def test_evicted_models_leave_no_label_sets_in_metrics(redis_server):
    async def body() -> None:
        settings = settings_for(redis_server.url, max_probation_models=2)
        runtime = Runtime(settings, {}, RecordingPublisher())
        await runtime.on_assigned([("preds", 0)])
        for i in range(20):  # 20 made-up models with event ids: each a joinable-counter label set
            value = json.dumps(
                {
                    "model": f"made-up-{i}",
                    "event_id": f"e{i}",
                    "prediction": 0.5,
                    "features": {"x": 1.0},
                }
            ).encode()
            await runtime.handle("preds", {0: [Record(i, 1_000.0 + i, value)]})
        exposed = {
            sample.labels["model"]
            for family in runtime.metrics.joinable.collect()
            for sample in family.samples
        }
        assert exposed == {"made-up-18", "made-up-19"}  # the two still on probation
        assert runtime.metrics.registry.get_sample_value("streamdrift_models_evicted_total") == 18
        await runtime.close()

    asyncio.run(body())


def test_halves_of_a_model_not_allowed_never_wait_in_redis(redis_server, redis_client):
    """Pairing comes after the allowlist: a flood of made-up models' halves is refused at once
    (model_not_allowed), stores nothing in Redis and waits in no partition."""
    config = {"inputs": [{"topic": "kserve-logs", "format": "kserve"}]}
    settings = settings_for(redis_server.url, allowed_models="fraud")

    def half(model: str, ident: str, offset: int) -> Record:
        headers = [
            ("ce_type", b"org.kubeflow.serving.inference.request"),
            ("ce_id", ident.encode()),
            ("ce_inferenceservicename", model.encode()),
        ]
        return Record(offset, 1_000.0, b'{"instances": [[1.0, 2.0]]}', None, headers)

    publisher = RecordingPublisher()

    async def body() -> None:
        runtime = Runtime(settings, config, publisher)
        await runtime.on_assigned([("kserve-logs", 0)])
        records = [half(f"made-up-{i}", f"id-{i}", i) for i in range(50)]
        await runtime.handle("kserve-logs", {0: [*records, half("fraud", "ok", 50)]})
        state = runtime.states[("kserve-logs", 0)]
        assert [p.half.model for p in state.pairs] == ["fraud"]
        await runtime.close()

    asyncio.run(body())
    reasons = [dict(headers)["streamdrift-reason"] for _, _, _, headers in publisher.sent]
    assert reasons == [b"model_not_allowed"] * 50
    pair_keys = list(redis_client.scan_iter(f"sd:{{{settings.group_id}}}:pair:*"))
    assert [key.decode().rsplit(":", 2)[1] for key in pair_keys] == ["fraud"]
