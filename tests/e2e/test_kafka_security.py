"""Workers against a secured Apache Kafka 4.x: SASL/SCRAM-SHA-512 over TLS, mutual TLS, ACLs.

One broker for the module (``KafkaSecurity``: a SASL_SSL listener, an SSL listener that requires
client certificates, the StandardAuthorizer with nothing allowed without an ACL; the harness
creates topics, ACLs and test data as the super user on the PLAINTEXT listener):

* a worker that logs in (SCRAM over TLS; a client certificate with an encrypted key) and has
  exactly the ACLs of docs/own-kafka.md ("ACLs the worker needs") checkpoints every event once,
  alerts and writes dead letters — the successful login Tansu cannot show;
* refused logins and handshakes end the worker within seconds with one ``error:`` line naming
  what to fix, exit code 1, and no secret anywhere in its output;
* each missing ACL ends the worker at start with the permission and the command that grants it.
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
import redis
from confluent_kafka.admin import (
    AclBinding,
    AclBindingFilter,
    AclOperation,
    AclPermissionType,
    AdminClient,
    ResourcePatternType,
    ResourceType,
)
from conftest import (
    KAFKA_TIMINGS,
    SASL_TEST_PASSWORD,
    TEST_SECRETS,
    TOPIC_PARTITIONS,
    WORKER_TEST_ENV,
    consume_all,
    drift_alerts,
    produce,
    secret_leaks,
    topic_names,
    wait_for,
)
from servers.kafka_broker import KafkaBroker, KafkaSecurity, kafka_version
from servers.kafka_tls import Certificate, CertificateAuthority

from streamdrift.streams.dev.embedded import (
    WORKER_COMMAND,
    EmbeddedRedis,
    Topics,
    WorkerProcess,
    free_port,
)
from streamdrift.streams.kafka.admin import create_topics
from streamdrift.streams.ops.status import read_status

pytestmark = pytest.mark.e2e

SCRAM_USER = "scram-worker"  # SASL principal User:scram-worker
TLS_USER = "tls-worker"  # client certificate CN=tls-worker -> User:tls-worker
SCRAM_PASSWORD = SASL_TEST_PASSWORD  # the session's secret scan knows it
KEY_PASSWORD = "k3y-pass"  # encrypts the mTLS worker's key; also scanned (SETTINGS_TEST_PASSWORDS)
WRONG_PASSWORD = "wr0ng-scram-pw-x7"  # scanned by this module's tests
SECRETS = (SCRAM_PASSWORD, KEY_PASSWORD, WRONG_PASSWORD)
assert SCRAM_PASSWORD in TEST_SECRETS and KEY_PASSWORD in TEST_SECRETS


@dataclass(frozen=True)
class Secured:
    broker: KafkaBroker
    ca: CertificateAuthority
    other_ca: CertificateAuthority
    client: Certificate  # CN=tls-worker, signed by ca
    rogue: Certificate  # CN=tls-worker, signed by other_ca

    def sasl_env(self, password: str = SCRAM_PASSWORD) -> dict[str, str]:
        return {
            "STREAMDRIFT_KAFKA_BOOTSTRAP": self.broker.sasl_ssl_bootstrap,
            "STREAMDRIFT_KAFKA_SECURITY_PROTOCOL": "SASL_SSL",
            "STREAMDRIFT_KAFKA_SASL_MECHANISM": "SCRAM-SHA-512",
            "STREAMDRIFT_KAFKA_SASL_USERNAME": SCRAM_USER,
            "STREAMDRIFT_KAFKA_SASL_PASSWORD": password,
            "STREAMDRIFT_KAFKA_SSL_CAFILE": str(self.ca.cert),
        }

    def mtls_env(
        self, certificate: Certificate | None = None, key: Path | None = None
    ) -> dict[str, str]:
        certificate = certificate or self.client
        return {
            "STREAMDRIFT_KAFKA_BOOTSTRAP": self.broker.ssl_bootstrap,
            "STREAMDRIFT_KAFKA_SECURITY_PROTOCOL": "SSL",
            "STREAMDRIFT_KAFKA_SSL_CAFILE": str(self.ca.cert),
            "STREAMDRIFT_KAFKA_SSL_CERTFILE": str(certificate.cert),
            "STREAMDRIFT_KAFKA_SSL_KEYFILE": str(key or certificate.key),
        }


@pytest.fixture(scope="module")
def secured(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Secured]:
    """One secured single-node Kafka for this module, with its CA and client certificates."""
    pki = tmp_path_factory.mktemp("kafka-pki")
    ca, other_ca = (
        CertificateAuthority(pki / "ca", "ca"),
        CertificateAuthority(pki / "other", "other-ca"),
    )
    server = ca.issue("broker", server=True)
    security = KafkaSecurity(
        keystore=server.keystore, truststore=ca.cert, scram_users={SCRAM_USER: SCRAM_PASSWORD}
    )
    broker = KafkaBroker(workdir=tmp_path_factory.mktemp("kafka-secured"), security=security)
    try:
        broker.start()
        KAFKA_TIMINGS.append(
            f"Apache Kafka {kafka_version()} with SASL_SSL, mTLS and ACLs: storage formatted in "
            f"{broker.format_seconds:.1f} s, ready {broker.start_seconds:.1f} s after start()"
        )
        yield Secured(broker, ca, other_ca, ca.issue(TLS_USER), other_ca.issue(TLS_USER))
    finally:
        broker.stop()
    # The broker saw every login, good and bad: none of their secrets may be in its log.
    assert secret_leaks(broker.workdir, SECRETS) == []


@pytest.fixture
def topics(secured: Secured, request: pytest.FixtureRequest) -> Topics:
    """This test's four topics and group (created as the super user; no ACL yet)."""
    names = topic_names(request)
    create_topics(
        secured.broker.bootstrap, {getattr(names, role): n for role, n in TOPIC_PARTITIONS.items()}
    )
    return names


#: What the worker needs, and nothing else (docs/own-kafka.md, "ACLs the worker needs").
def minimal_acls(topics: Topics) -> dict[str, tuple[ResourceType, str, AclOperation]]:
    return {
        "input READ": (ResourceType.TOPIC, topics.input, AclOperation.READ),
        "labels READ": (ResourceType.TOPIC, topics.labels, AclOperation.READ),
        "alerts WRITE": (ResourceType.TOPIC, topics.alerts, AclOperation.WRITE),
        "dlq WRITE": (ResourceType.TOPIC, topics.dlq, AclOperation.WRITE),
        "group READ": (ResourceType.GROUP, topics.group_id, AclOperation.READ),
    }


def grant(
    broker: KafkaBroker, user: str, acls: list[tuple[ResourceType, str, AclOperation]]
) -> None:
    """Create ALLOW ACLs for ``User:<user>`` (as the super user) and wait until the broker applies
    them."""
    admin = AdminClient({"bootstrap.servers": broker.bootstrap})
    bindings = [AclBinding(kind, name, ResourcePatternType.LITERAL, f"User:{user}", "*", operation,
                           AclPermissionType.ALLOW) for kind, name, operation in acls]  # fmt: skip
    for future in admin.create_acls(bindings).values():
        future.result(timeout=30)
    everything = AclBindingFilter(
        ResourceType.ANY,
        None,
        ResourcePatternType.ANY,
        f"User:{user}",
        None,
        AclOperation.ANY,
        AclPermissionType.ANY,
    )
    wait_for(
        lambda: set(bindings) <= set(admin.describe_acls(everything).result(timeout=10)),
        10,
        "the ACLs applied",
    )


@pytest.fixture
def start(secured: Secured, topics: Topics, redis_server: EmbeddedRedis, tmp_path: Path
          ) -> Iterator[Callable[..., WorkerProcess]]:  # fmt: skip
    """Factory: ``start(kafka_env, *args, topics=...)``, a worker on this test's topics (or
    ``topics``) with these STREAMDRIFT_KAFKA_* variables and ``streamdrift worker`` arguments
    (built like conftest's ``start_worker``); all killed at teardown."""
    workers: list[WorkerProcess] = []
    inherited = {k: v for k, v in os.environ.items() if not k.startswith("STREAMDRIFT_")}

    def launch(kafka_env: dict[str, str], *args: str, topics: Topics = topics) -> WorkerProcess:
        env = {
            **inherited, "PYTHONUNBUFFERED": (
                "1"
            ), "STREAMDRIFT_REDIS_URL": redis_server.url, **topics.env(),
            "STREAMDRIFT_METRICS_PORT": str(free_port()), **WORKER_TEST_ENV, **kafka_env,
        }  # fmt: skip
        worker = WorkerProcess(
            env, tmp_path / f"worker-{len(workers)}.log", command=[*WORKER_COMMAND, *args]
        )
        workers.append(worker)
        return worker.start()

    try:
        yield launch
    finally:
        for worker in workers:
            worker.kill()


def stream(n: int, shift_at: int) -> list[bytes]:
    """``n`` events of model ``m`` (feature ``x`` ~ N(0, 1), shifted by 3σ from ``shift_at``)."""
    values = np.random.default_rng(11).normal(size=n)
    values[shift_at:] += 3.0
    return [json.dumps({"model": "m", "event_id": f"e{i}", "features": {"x": float(v)}}).encode()
            for i, v in enumerate(values)]  # fmt: skip


EVENTS, SHIFT_AT = 4_000, 2_000


def check_the_worker_works(
    secured: Secured, topics: Topics, worker: WorkerProcess, redis_url: str
) -> None:
    """Events in, every one checkpointed once, one drift alert and one dead letter out."""
    worker.wait_ready(timeout=90)
    bootstrap = secured.broker.bootstrap  # the harness produces and reads as the super user
    produce(bootstrap, topics.input, [*stream(EVENTS, SHIFT_AT)[:SHIFT_AT], b"{not json",
                                      *stream(EVENTS, SHIFT_AT)[SHIFT_AT:]], key="m")  # fmt: skip
    produce(
        bootstrap,
        topics.labels,
        [json.dumps({"model": "m", "event_id": "e1", "label": 1}).encode()],
        key="m",
    )
    with redis.Redis.from_url(redis_url) as client:

        def count() -> int | None:
            return (
                read_status(client, topics.group_id)["models"]
                .get("m", {})
                .get("x", {})
                .get("count")
            )

        wait_for(lambda: count() == EVENTS, 90, f"{EVENTS} events checkpointed")
        letters = consume_all(bootstrap, topics.dlq, expect_at_least=1)
        assert [m.value for m in letters] == [b"{not json"]
        found = drift_alerts(consume_all(bootstrap, topics.alerts, expect_at_least=1))
        assert {a["subject"] for a in found} == {"m/x"}, found
        assert all(a["data"]["evidence"]["to_offset"] >= SHIFT_AT for a in found)
        time.sleep(1.5)  # nothing counted twice in a later checkpoint
        assert count() == EVENTS
    assert worker.running
    log = worker.log_path.read_text()
    listener = worker.env["STREAMDRIFT_KAFKA_BOOTSTRAP"]
    # the start-up check's line
    assert f"Kafka at {listener}: protocol of Apache Kafka 4.0 or later" in log
    assert "not checked" not in log  # Kafka told every permission
    assert "Traceback" not in log and "ERROR" not in log


def test_a_worker_logs_in_with_scram_sha_512_over_tls_and_needs_only_the_documented_acls(
    secured, topics, start, redis_server, tmp_path
):
    grant(secured.broker, SCRAM_USER, list(minimal_acls(topics).values()))
    check_the_worker_works(secured, topics, start(secured.sasl_env()), redis_server.url)
    assert secret_leaks(tmp_path, SECRETS) == []


def test_a_worker_with_a_client_certificate_and_an_encrypted_key_works_over_mutual_tls(
    secured, topics, start, redis_server, tmp_path
):
    grant(secured.broker, TLS_USER, list(minimal_acls(topics).values()))
    key = secured.client.encrypted_key(KEY_PASSWORD)
    env = secured.mtls_env(key=key) | {"STREAMDRIFT_KAFKA_SSL_KEY_PASSWORD": KEY_PASSWORD}
    check_the_worker_works(secured, topics, start(env), redis_server.url)
    assert secret_leaks(tmp_path, SECRETS) == []


def test_create_topics_uses_the_secured_client_settings(
    secured, start, redis_server, tmp_path, request
):
    """``worker --create-topics`` creates missing topics over the worker's own SASL_SSL login
    (it used to connect without the security settings): CREATE on the four names is enough."""
    fresh = topic_names(request)
    acls = list(minimal_acls(fresh).values())
    creates = [
        (ResourceType.TOPIC, name, AclOperation.CREATE)
        for name in (fresh.input, fresh.labels, fresh.alerts, fresh.dlq)
    ]
    grant(secured.broker, SCRAM_USER, acls + creates)
    worker = start(secured.sasl_env(), "--create-topics", "--partitions", "2", topics=fresh)
    check_the_worker_works(secured, fresh, worker, redis_server.url)
    listed = (
        AdminClient({"bootstrap.servers": secured.broker.bootstrap}).list_topics(timeout=10).topics
    )
    assert {name: len(listed[name].partitions) for name in (fresh.input, fresh.dlq)} == {
        fresh.input: 2,
        fresh.dlq: 2,
    }
    assert secret_leaks(tmp_path, SECRETS) == []


def test_create_topics_without_create_permission_says_so(secured, start, tmp_path, request):
    fresh = topic_names(request)
    grant(secured.broker, SCRAM_USER, list(minimal_acls(fresh).values()))
    worker = start(secured.sasl_env(), "--create-topics", topics=fresh)
    wait_for(lambda: not worker.running, 60, "the worker to exit")
    output = worker.log_path.read_text()
    errors = [line for line in output.splitlines() if line.startswith("error:")]
    assert worker.returncode == 1 and len(errors) == 1, output
    assert (
        "failed: Authorization failed" in errors[0]
        and "grant the worker's principal CREATE" in output
    )


REFUSALS = {
    "wrong SCRAM password": (
        lambda s: s.sasl_env(WRONG_PASSWORD),
        "refused the login", "SCRAM-SHA-512", "STREAMDRIFT_KAFKA_SASL_PASSWORD",
    ),
    "client certificate of another CA": (
        lambda s: s.mtls_env(s.rogue),
        "TLS with Kafka at", "bad certificate",
        "the brokers refused the client certificate STREAMDRIFT_KAFKA_SSL_CERTFILE",
    ),
    "no client certificate on the mTLS listener": (
        lambda s: {
            k: v for k, v in s.mtls_env().items() if not k.endswith(("CERTFILE", "KEYFILE"))
        },
        "TLS with Kafka at", "bad certificate", "the brokers require a client certificate",
    ),
    "wrong CA for the broker": (
        lambda s: s.sasl_env() | {"STREAMDRIFT_KAFKA_SSL_CAFILE": str(s.other_ca.cert)},
        "TLS with Kafka at", "certificate verify failed", "STREAMDRIFT_KAFKA_SSL_CAFILE",
    ),
}  # fmt: skip


@pytest.mark.parametrize("case", REFUSALS)
def test_a_refused_login_or_handshake_ends_the_worker_at_once_with_one_clear_line(
    secured, topics, start, tmp_path, case
):
    grant(secured.broker, SCRAM_USER, list(minimal_acls(topics).values()))
    grant(secured.broker, TLS_USER, list(minimal_acls(topics).values()))
    environment, error, reason, hint = REFUSALS[case]
    began = time.monotonic()
    worker = start(environment(secured))
    wait_for(lambda: not worker.running, 60, "the worker to exit")
    elapsed = time.monotonic() - began
    output = worker.log_path.read_text()
    errors = [line for line in output.splitlines() if line.startswith("error:")]
    assert worker.returncode == 1, output
    assert len(errors) == 1 and error in errors[0] and reason in errors[0], output
    assert hint in output and "what to do:" in output and "Traceback" not in output
    assert elapsed < 20, f"a refusal should end the worker at once, not after {elapsed:.0f} s"
    assert secret_leaks(tmp_path, SECRETS) == []


@pytest.mark.parametrize(
    "lacking", ["group READ", "input READ", "alerts WRITE", "labels READ", "dlq WRITE"]
)
def test_each_missing_acl_ends_the_worker_naming_the_permission_and_the_grant(
    secured, topics, start, tmp_path, lacking
):
    acls = minimal_acls(topics)
    kind, name, operation = acls.pop(lacking)
    grant(secured.broker, SCRAM_USER, list(acls.values()))
    worker = start(secured.sasl_env())
    wait_for(lambda: not worker.running, 60, "the worker to exit")
    output = worker.log_path.read_text()
    errors = [line for line in output.splitlines() if line.startswith("error:")]
    resource = "group" if kind == ResourceType.GROUP else "topic"
    assert worker.returncode == 1, output
    assert len(errors) == 1, output
    assert errors[0].endswith(
        f"does not allow User:{SCRAM_USER} {operation.name} on {resource} {name!r} "
        f"(STREAMDRIFT_{lacking.split()[0].replace('alerts', 'alert').upper()}"
        f"{'_ID' if resource == 'group' else '_TOPIC'})"
    ), errors
    grant_command = (
        f"--add --allow-principal User:{SCRAM_USER} --operation {operation.name.capitalize()} "
        f"--{resource} {name}"
    )
    assert grant_command in output and "Traceback" not in output
    assert secret_leaks(tmp_path, SECRETS) == []
