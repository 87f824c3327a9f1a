"""A worker against a password-protected Redis (plain, and over mutual TLS), with a token on
/status: it works, checkpoints exactly, and no secret reaches its logs; a wrong CA is refused
with a clear message."""

from __future__ import annotations

import json
import subprocess
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest
import redis
from conftest import TOPIC_PARTITIONS, produce, wait_for

from streamdrift.streams.dev.embedded import EmbeddedBroker, EmbeddedRedis, RedisTLS
from streamdrift.streams.state.keys import KeyLayout
from streamdrift.streams.state.partition import restore_monitor

pytestmark = pytest.mark.e2e

REDIS_PASSWORD = "r3dis-s3cret-pw"
TOKEN = "status-t0ken-xyz"


def get(url: str, token: str | None = None) -> tuple[int, bytes]:
    request = urllib.request.Request(
        url, headers={"Authorization": f"Bearer {token}"} if token else {}
    )
    try:
        with urllib.request.urlopen(request, timeout=5) as response:
            return response.status, response.read()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read()


def test_password_redis_and_token_protected_status_leak_no_secret(
    broker, topics, start_worker, tmp_path
):
    with EmbeddedRedis(workdir=tmp_path / "redis") as server:
        redis.Redis.from_url(server.url).config_set("requirepass", REDIS_PASSWORD)
        url = server.url.replace("redis://", f"redis://:{REDIS_PASSWORD}@")
        worker = start_worker(redis_url=url, http_token=TOKEN, log_level="debug").wait_ready()
        produce(
            broker.bootstrap,
            topics.input,
            [json.dumps({"model": "m", "features": {"x": 1.0}}).encode()] * 50,
            key="m",
        )

        status, _ = get(f"{worker.base_url}/status")
        assert status == 401
        status, body = get(f"{worker.base_url}/status", TOKEN)
        assert status == 200 and {p["topic"] for p in json.loads(body)["partitions"]} == {
            topics.input,
            topics.labels,
        }
        assert get(f"{worker.base_url}/metrics")[0] == 200  # probes and scrapers need no token

        server.pause()  # Redis unavailable: the worker logs the (redacted) URL of what it waits for
        try:
            produce(
                broker.bootstrap,
                topics.input,
                [json.dumps({"model": "m", "features": {"x": 2.0}}).encode()] * 5,
                key="m",
            )
            time.sleep(12)  # past the worker's 10 s Redis socket timeout
        finally:
            server.resume()
        log = worker.log_path.read_text()
        assert "unavailable" in log, "the Redis outage should have been logged"
        assert REDIS_PASSWORD not in log and TOKEN not in log


def openssl(*args: object) -> None:
    subprocess.run(["openssl", *map(str, args)], check=True, capture_output=True)


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A throwaway CA with a server certificate for 127.0.0.1 and a client certificate, and an
    unrelated CA (``ca``, ``other-ca``, ``server``, ``client``: ``.pem`` and ``.key`` each)."""
    folder = tmp_path_factory.mktemp("pki")
    for ca in ("ca", "other-ca"):
        openssl(
            "req",
            "-x509",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-days",
            "1",
            "-subj",
            f"/CN=streamdrift test {ca}",
            "-keyout",
            folder / f"{ca}.key",
            "-out",
            folder / f"{ca}.pem",
        )
    for name, extension in (
        ("server", "subjectAltName=IP:127.0.0.1"),
        ("client", "extendedKeyUsage=clientAuth"),
    ):
        (folder / f"{name}.ext").write_text(extension + "\n")
        openssl(
            "req",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-subj",
            f"/CN=streamdrift test {name}",
            "-keyout",
            folder / f"{name}.key",
            "-out",
            folder / f"{name}.csr",
        )
        openssl(
            "x509",
            "-req",
            "-in",
            folder / f"{name}.csr",
            "-CA",
            folder / "ca.pem",
            "-CAkey",
            folder / "ca.key",
            "-CAcreateserial",
            "-days",
            "1",
            "-extfile",
            folder / f"{name}.ext",
            "-out",
            folder / f"{name}.pem",
        )
    return folder


def checkpointed(client: redis.Redis, topics, partitions: int) -> tuple[int, int]:
    """(records covered by the checkpoints, events counted by the stored series of feature x)."""
    layout, offsets, counted = KeyLayout(topics.group_id), 0, 0
    for partition in range(partitions):
        ckpt, state = layout.keys(topics.input, partition)
        offsets += int(client.hget(ckpt, "offset") or 0)
        counted += sum(
            restore_monitor(name.decode(), blob).count
            for name, blob in client.hgetall(state).items()
            if name.decode().endswith("\x1fx")
        )
    return offsets, counted


def test_a_worker_checkpoints_exactly_into_redis_over_mutual_tls_and_a_wrong_ca_fails_clearly(
    broker, topics, start_worker, pki, tmp_path
):
    tls = RedisTLS(
        pki / "server.pem",
        pki / "server.key",
        pki / "ca.pem",
        auth_clients="yes",
        client_cert_file=pki / "client.pem",
        client_key_file=pki / "client.key",
    )
    with EmbeddedRedis(workdir=tmp_path / "redis", tls=tls, password=REDIS_PASSWORD) as server:
        assert server.url.startswith(f"rediss://:{REDIS_PASSWORD}@127.0.0.1:")
        without_client_cert = server.url.partition("&")[0]
        with pytest.raises(
            redis.ConnectionError
        ):  # mTLS: the server refuses a client without a certificate
            redis.Redis.from_url(without_client_cert, socket_timeout=5).ping()

        worker = start_worker(redis_url=server.url, log_level="debug").wait_ready()
        models = [f"m{i % 4}" for i in range(400)]
        produce(
            broker.bootstrap,
            topics.input,
            [
                json.dumps({"model": m, "features": {"x": float(i)}}).encode()
                for i, m in enumerate(models)
            ],
            keys=models,
        )
        with redis.Redis.from_url(server.url) as client:
            wait_for(
                lambda: checkpointed(client, topics, TOPIC_PARTITIONS["input"]) == (400, 400),
                60,
                "400 records checkpointed over TLS, each counted once",
            )

        wrong_ca = server.url.replace(str(pki / "ca.pem"), str(pki / "other-ca.pem"))
        refused = start_worker(redis_url=wrong_ca)
        wait_for(lambda: not refused.running, 60, "the worker with the wrong CA to exit")
        assert refused.returncode == 1
        refusal = " ".join(refused.log_path.read_text().split())  # the terminal wraps long lines
        assert (
            "cannot reach Redis at rediss://:***@127.0.0.1" in refusal
            and "certificate verify failed" in refusal
        )
        assert "ssl_ca_certs" in refusal  # the hint names the setting to fix
        for log in (worker.log_path.read_text(), refusal):
            assert REDIS_PASSWORD not in log


SASL_PASSWORD = "kafka-s3cret-pw"


@pytest.mark.parametrize("mechanism", ["SCRAM-SHA-256", "SCRAM-SHA-512"])
def test_sasl_credentials_the_broker_refuses_make_the_worker_exit_at_once_with_the_reason(
    mechanism, tmp_path, topics, start_worker
):
    """Tansu with --authentication runs a real SCRAM exchange. Its users can only be created by an
    authenticated client (memory storage), so no login succeeds: this proves the refusal path."""
    with EmbeddedBroker(workdir=tmp_path / "tansu", authentication=True) as secured:
        started = time.monotonic()
        worker = start_worker(
            kafka_bootstrap=secured.bootstrap,
            kafka_security_protocol="SASL_PLAINTEXT",
            kafka_sasl_mechanism=mechanism,
            kafka_sasl_username="svc",
            kafka_sasl_password=SASL_PASSWORD,
        )
        wait_for(lambda: not worker.running, 60, "the worker to exit")
        elapsed = time.monotonic() - started
        log = " ".join(worker.log_path.read_text().split())  # the terminal wraps long lines
        assert worker.returncode == 1
        assert (
            f"Kafka at {secured.bootstrap} refused the login" in log
            and "SCRAM authentication failed" in log
        )
        assert "STREAMDRIFT_KAFKA_SASL_PASSWORD" in log and SASL_PASSWORD not in log
        assert elapsed < 30, (
            f"a refused login should end the worker at once, not after {elapsed:.0f} s"
        )
