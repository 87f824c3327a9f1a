"""`streamdrift alerts` reads the alert topic without waiting for a consumer group (real broker)."""

from __future__ import annotations

import json
import time

import pytest
from conftest import produce

from streamdrift.streams.ops.tail import tail_alerts

pytestmark = pytest.mark.e2e


def test_a_bounded_tail_returns_every_alert_before_its_idle_timeout(broker, topics):
    alerts = [{"id": f"a{i}", "subject": f"m/f{i}"} for i in range(3)]
    produce(
        broker.bootstrap, topics.alerts, [json.dumps(a).encode() for a in alerts] + [b"not json"]
    )
    unreadable: list[str] = []
    started = time.monotonic()
    got = list(
        tail_alerts(
            {"bootstrap.servers": broker.bootstrap},
            topics.alerts,
            follow=False,
            idle_timeout=2.0,
            on_unreadable=unreadable.append,
        )
    )
    # A consumer-group join on the embedded broker alone takes longer than the idle timeout.
    assert [a["id"] for a in got] == ["a0", "a1", "a2"] and len(unreadable) == 1
    assert time.monotonic() - started < 10
