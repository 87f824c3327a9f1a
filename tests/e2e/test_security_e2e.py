"""A worker against a password-protected Redis, with a token on /status: it works, and no secret
reaches its logs."""

from __future__ import annotations

import json
import time
import urllib.error
import urllib.request

import pytest
import redis

from conftest import produce
from streams.embedded import EmbeddedRedis

pytestmark = pytest.mark.e2e

REDIS_PASSWORD = "r3dis-s3cret-pw"
TOKEN = "status-t0ken-xyz"


def get(url: str, token: str | None = None) -> tuple[int, bytes]:
    request = urllib.request.Request(url, headers={"Authorization": f"Bearer {token}"} if token else {})
    try:
        with urllib.request.urlopen(request, timeout=5) as response:
            return response.status, response.read()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read()


def test_password_redis_and_token_protected_status_leak_no_secret(broker, topics, start_worker, tmp_path):
    with EmbeddedRedis(workdir=tmp_path / "redis") as server:
        redis.Redis.from_url(server.url).config_set("requirepass", REDIS_PASSWORD)
        url = server.url.replace("redis://", f"redis://:{REDIS_PASSWORD}@")
        worker = start_worker(redis_url=url, http_token=TOKEN, log_level="debug").wait_ready()
        produce(broker.bootstrap, topics.input, [json.dumps({"model": "m", "features": {"x": 1.0}}).encode()] * 50, key="m")

        status, _ = get(f"{worker.base_url}/status")
        assert status == 401
        status, body = get(f"{worker.base_url}/status", TOKEN)
        assert status == 200 and {p["topic"] for p in json.loads(body)["partitions"]} == {topics.input, topics.labels}
        assert get(f"{worker.base_url}/metrics")[0] == 200  # probes and scrapers need no token

        server.pause()  # Redis unavailable: the worker logs the (redacted) URL of what it waits for
        try:
            produce(broker.bootstrap, topics.input, [json.dumps({"model": "m", "features": {"x": 2.0}}).encode()] * 5, key="m")
            time.sleep(12)  # past the worker's 10 s Redis socket timeout
        finally:
            server.resume()
        log = worker.log_path.read_text()
        assert "unavailable" in log, "the Redis outage should have been logged"
        assert REDIS_PASSWORD not in log and TOKEN not in log
