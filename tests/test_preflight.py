"""The worker's start-up check, its pure parts: API versions against the client's, the protocol
level, the permissions needed and their hints, and how TLS refusals are told.

(Against real brokers: tests/e2e/test_kafka_security.py on a secured Apache Kafka 4.4; every
end-to-end test's worker passes it on Tansu.)"""

from __future__ import annotations

from types import SimpleNamespace

import pytest
from confluent_kafka import KafkaError, KafkaException

from streamdrift.streams.kafka import preflight
from streamdrift.streams.kafka.preflight import (
    Permission,
    PreflightError,
    client_api_versions,
    grant_commands,
    missing_apis,
    missing_permissions,
    needed_apis,
    permission_problem,
    protocol_release,
    protocol_summary,
    required_permissions,
    tls_hint,
    tls_refused,
)
from streamdrift.streams.security import aiokafka_options, principal
from streamdrift.streams.settings import Settings

#: ApiVersions as Apache Kafka 4.4.0 answers it (measured on the test broker; key: (min, max)).
KAFKA_4_4 = {
    0: (0, 13), 1: (4, 18), 2: (1, 11), 3: (0, 13), 8: (2, 10), 9: (1, 10), 10: (0, 6), 11: (0, 9),
    12: (0, 4), 13: (0, 5), 14: (0, 5), 15: (0, 6), 16: (0, 5), 17: (0, 1), 18: (0, 5), 19: (2, 7),
    20: (1, 6), 21: (0, 2), 22: (0, 5), 23: (2, 4), 24: (0, 5), 25: (0, 4), 26: (0, 5), 27: (1, 2),
    28: (0, 6), 29: (1, 3), 30: (1, 3), 31: (1, 3), 32: (1, 4), 33: (0, 2), 34: (1, 2), 35: (1, 5),
    36: (0, 2), 37: (0, 3), 38: (1, 3), 39: (1, 2), 40: (1, 2), 41: (1, 3), 42: (0, 3), 43: (0, 2),
    44: (0, 1), 45: (0, 1), 46: (0, 0), 47: (0, 0), 48: (0, 1), 49: (0, 1), 50: (0, 0), 51: (0, 0),
    55: (0, 2), 57: (0, 2), 60: (0, 2), 61: (0, 0), 64: (0, 0), 65: (0, 0), 66: (0, 2), 68: (0, 1),
    69: (0, 1), 74: (0, 1), 75: (0, 0), 76: (1, 1), 77: (1, 1), 78: (1, 2), 79: (1, 2), 80: (0, 1),
    81: (0, 0), 83: (0, 0), 84: (0, 0), 85: (0, 1), 86: (0, 0), 87: (0, 1), 88: (0, 1), 89: (0, 1),
    90: (0, 1), 91: (0, 0), 92: (0, 0), 93: (0, 0), 94: (0, 0),
}  # fmt: skip
#: ApiVersions as Tansu 0.6.0 answers it (measured; the embedded development broker).
TANSU_0_6 = {
    0: (0, 11), 1: (0, 17), 2: (0, 9), 3: (0, 12), 8: (0, 9), 9: (0, 9), 10: (0, 6), 11: (0, 9),
    12: (0, 4), 13: (0, 5), 14: (0, 5), 15: (0, 5), 16: (0, 5), 17: (0, 1), 18: (0, 4), 19: (0, 7),
    20: (0, 6), 21: (0, 2), 22: (0, 5), 24: (0, 5), 25: (0, 4), 26: (0, 4), 28: (0, 4), 29: (0, 3),
    30: (0, 3), 32: (0, 4), 36: (0, 2), 42: (0, 2), 44: (0, 1), 46: (0, 0), 50: (0, 0), 51: (0, 0),
    60: (0, 1), 69: (0, 0), 71: (0, 0), 75: (0, 0),
}  # fmt: skip

SASL = Settings(
    kafka_security_protocol="SASL_SSL",
    kafka_sasl_username="sd-worker",
    kafka_sasl_password="pa55-word",
)


def test_the_client_speaks_every_api_the_worker_needs_to_kafka_4_4_and_to_tansu():
    client = client_api_versions()
    # every needed API is checked against aiokafka's versions
    assert set(needed_apis(SASL)) <= set(client)
    assert missing_apis(KAFKA_4_4, client, needed_apis(SASL)) == []
    assert missing_apis(TANSU_0_6, client, needed_apis(SASL)) == []


def test_a_broker_that_dropped_the_clients_versions_or_an_api_is_named():
    client = client_api_versions()
    # a future Kafka without the Fetch versions aiokafka speaks
    newer = KAFKA_4_4 | {1: (client[1][1] + 1, 30)}
    without_join = {k: v for k, v in KAFKA_4_4.items() if k != 11}
    assert missing_apis(newer, client, needed_apis(SASL)) == [
        f"Fetch (API key 1): the broker answers v{client[1][1] + 1}-v30, the client speaks "
        f"v{client[1][0]}-v{client[1][1]}"
    ]
    assert missing_apis(without_join, client, needed_apis(SASL)) == [
        "JoinGroup (API key 11) is not offered by the broker"
    ]


def test_sasl_apis_are_needed_only_with_sasl():
    assert {17, 36} <= set(needed_apis(SASL))
    assert not {17, 36} & set(needed_apis(Settings(kafka_security_protocol="SSL")))
    no_sasl = {k: v for k, v in KAFKA_4_4.items() if k not in (17, 36)}
    assert missing_apis(no_sasl, client_api_versions(), needed_apis(Settings())) == []
    assert len(missing_apis(no_sasl, client_api_versions(), needed_apis(SASL))) == 2


def test_the_protocol_level_of_kafka_4_and_of_tansu():
    assert protocol_release(KAFKA_4_4) == "4.0"  # Fetch below v4 is gone (KIP-896)
    assert protocol_release(TANSU_0_6) == "2.8"  # DescribeCluster, old Fetch versions kept
    assert protocol_release({18: (0, 0)}) == "0.10"
    assert protocol_release({}) is None
    assert (
        protocol_summary(KAFKA_4_4)
        == "protocol of Apache Kafka 4.0 or later (77 APIs; Produce v0-v13, Fetch v4-v18)"
    )


def test_the_worker_needs_read_on_its_inputs_and_group_and_write_on_its_outputs_only():
    settings = Settings(
        input_topic="in", labels_topic="lab", alert_topic="al", dlq_topic="dl", group_id="g"
    )
    assert [(p.resource, p.name, p.operation) for p in required_permissions(settings)] == [
        ("topic", "in", "READ"), ("topic", "lab", "READ"),
        ("topic", "al", "WRITE"), ("topic", "dl", "WRITE"),
        ("group", "g", "READ"),
    ]  # fmt: skip


def test_the_mapped_input_topics_need_read_too():
    settings = Settings(input_topic="in", labels_topic="lab", alert_topic="al", dlq_topic="dl")
    reads = [
        (p.name, p.setting)
        for p in required_permissions(settings, ["kserve-logs"])
        if p.operation == "READ" and p.resource == "topic"
    ]
    assert reads == [
        ("in", "STREAMDRIFT_INPUT_TOPIC"),
        ("lab", "STREAMDRIFT_LABELS_TOPIC"),
        ("kserve-logs", "inputs in STREAMDRIFT_CONFIG"),
    ]


def test_missing_permissions_counts_only_what_the_broker_said():
    need = required_permissions(
        Settings(
            input_topic="in", labels_topic="lab", alert_topic="al", dlq_topic="dl", group_id="g"
        )
    )
    granted = {
        ("topic", "in"): frozenset({"READ", "DESCRIBE"}),
        ("topic", "lab"): frozenset({"DESCRIBE"}),  # visible, not readable
        ("topic", "al"): frozenset({"ALL"}),
        ("topic", "dl"): None,  # the broker did not say (Tansu)
        ("group", "g"): frozenset(),  # refused to describe: no ACL at all
    }
    assert [(p.name, p.operation) for p in missing_permissions(need, granted)] == [
        ("lab", "READ"),
        ("g", "READ"),
    ]
    assert missing_permissions(need, {}) == []  # nothing answered: nothing missing


def test_the_error_names_each_permission_and_the_command_that_grants_it():
    missing = [Permission("topic", "predictions", "READ", "STREAMDRIFT_INPUT_TOPIC"),
               Permission("group", "streamdrift", "READ", "STREAMDRIFT_GROUP_ID")]  # fmt: skip
    problem = permission_problem(missing, "User:sd", "k1:9093")
    assert problem.message == (
        "Kafka at k1:9093 does not allow User:sd READ on topic 'predictions' "
        "(STREAMDRIFT_INPUT_TOPIC); READ on group 'streamdrift' (STREAMDRIFT_GROUP_ID)"
    )
    assert grant_commands(missing, "User:sd", "k1:9093")[1] == (
        "kafka-acls.sh --bootstrap-server k1:9093 --add --allow-principal User:sd --operation "
        "Read --group streamdrift"
    )
    assert all(command in problem.hint for command in grant_commands(missing, "User:sd", "k1:9093"))
    assert "\n" not in problem.message + problem.hint and problem.code == 1


def test_the_principal_in_hints(tmp_path):
    assert principal(SASL) == "User:sd-worker"
    assert principal(Settings()) == "User:ANONYMOUS"
    missing_file = Settings.model_construct(
        kafka_security_protocol="SSL", kafka_ssl_certfile=tmp_path / "none.pem"
    )
    assert principal(missing_file) == "User:<principal of STREAMDRIFT_KAFKA_SSL_CERTFILE>"


def test_the_principal_of_a_client_certificate_is_its_cn(tmp_path):
    from servers.kafka_tls import CertificateAuthority

    client = CertificateAuthority(tmp_path).issue("tls-worker")
    settings = Settings.model_construct(
        kafka_security_protocol="SSL", kafka_ssl_certfile=client.cert
    )
    assert principal(settings) == "User:tls-worker"


def test_aiokafka_options_carry_the_login_and_the_tls_context():
    options = aiokafka_options(SASL)
    assert options["security_protocol"] == "SASL_SSL" and options["ssl_context"] is not None
    assert (
        options["sasl_mechanism"],
        options["sasl_plain_username"],
        options["sasl_plain_password"],
    ) == ("PLAIN", "sd-worker", "pa55-word")


@pytest.mark.parametrize(
    ("ssl_error", "reason", "refused"),
    [
        (
            True,
            "SSL handshake failed: error:0A000086:SSL routines::certificate verify failed",
            True,
        ),
        (
            False,
            "Receive failed: error:0A000412:SSL routines::ssl/tls alert bad certificate: SSL "
            "alert number 42",
            True,
        ),
        (
            False,
            "Receive failed: error:0A00045C:SSL routines::tlsv13 alert certificate required",
            True,
        ),
        (
            False,
            "Connect to ipv4#127.0.0.1:9092 failed: Connection refused (after 0ms in state "
            "CONNECT)",
            False,
        ),
        (False, "Disconnected (after 5035ms in state UP)", False),
    ],
)
def test_tls_refusals_are_told_apart_from_a_broker_that_is_down(ssl_error, reason, refused):
    assert tls_refused(ssl_error, reason) is refused


def test_each_tls_refusal_gets_its_own_hint(tmp_path):
    cert = tmp_path / "c.pem"
    with_cert = Settings.model_construct(
        kafka_security_protocol="SSL", kafka_ssl_certfile=cert, kafka_ssl_keyfile=cert
    )
    without = Settings.model_construct(kafka_security_protocol="SSL", kafka_ssl_certfile=None)
    assert "STREAMDRIFT_KAFKA_SSL_CAFILE" in tls_hint("certificate verify failed", with_cert)
    assert tls_hint("alert bad certificate", without).startswith(
        "the brokers require a client certificate"
    )
    assert tls_hint("alert bad certificate", with_cert).startswith(
        "the brokers refused the client certificate"
    )


# --- the I/O parts against stand-in admin clients (what confluent-kafka returns) --------------


class Future:
    def __init__(self, value=None, error: int | None = None) -> None:
        self.value, self.error = value, error

    def result(self, timeout=None):
        if self.error is not None:
            raise KafkaException(KafkaError(self.error))
        return self.value


def ops(*names: str) -> list[SimpleNamespace]:
    return [SimpleNamespace(name=name) for name in names]


class Admin:
    """Answers describe_topics / describe_consumer_groups / list_consumer_group_offsets as told."""

    def __init__(
        self, topics: dict[str, Future], groups: list[Future], offsets: Future | None = None
    ) -> None:
        self.topics, self.groups, self.offsets = topics, list(groups), offsets or Future(value=None)

    def describe_topics(self, collection, **_):
        return {name: self.topics[name] for name in collection.topic_names}

    def describe_consumer_groups(self, groups, **_):
        return {groups[0]: self.groups.pop(0) if len(self.groups) > 1 else self.groups[0]}

    def list_consumer_group_offsets(self, requests, **_):
        return {requests[0].group_id: self.offsets}


def test_topic_access_tells_denied_missing_unknown_and_operations_apart():
    admin = Admin({
        "a": Future(SimpleNamespace(authorized_operations=ops("READ", "DESCRIBE"))),
        "b": Future(error=KafkaError.TOPIC_AUTHORIZATION_FAILED),
        "c": Future(error=KafkaError.UNKNOWN_TOPIC_OR_PART),
        "d": Future(SimpleNamespace(authorized_operations=None)),  # not reported
        # a broker that leaves the field empty
        "e": Future(SimpleNamespace(authorized_operations=[])),
    }, [])  # fmt: skip
    assert preflight.topic_access(admin, list("abcde"), 1.0) == {
        "a": frozenset({"READ", "DESCRIBE"}), "b": "denied", "c": "missing", "d": None, "e": None,
    }  # fmt: skip


def test_group_access_retries_a_loading_coordinator_and_falls_back_to_offsets():
    loading = Future(error=KafkaError.COORDINATOR_LOAD_IN_PROGRESS)
    described = Future(SimpleNamespace(authorized_operations=ops("READ", "DESCRIBE")))
    assert preflight.group_access(Admin({}, [loading, described]), "g", 5.0) == frozenset(
        {"READ", "DESCRIBE"}
    )
    denied = Future(error=KafkaError.GROUP_AUTHORIZATION_FAILED)
    assert preflight.group_access(Admin({}, [denied]), "g", 5.0) == frozenset()
    unsupported = Future(error=KafkaError.UNSUPPORTED_VERSION)
    assert preflight.group_access(Admin({}, [unsupported], offsets=denied), "g", 5.0) == frozenset()
    # offsets listed: DESCRIBE, READ unknown
    assert preflight.group_access(Admin({}, [unsupported]), "g", 5.0) is None


def test_check_permissions_raises_for_what_the_broker_refuses_and_reports_the_unchecked():
    settings = Settings(
        input_topic="in",
        labels_topic="lab",
        alert_topic="al",
        dlq_topic="dl",
        group_id="g",
        kafka_bootstrap="k:9092",
    )
    everything = {
        name: Future(SimpleNamespace(authorized_operations=ops("READ", "WRITE", "DESCRIBE")))
        for name in ("in", "lab", "al", "dl")
    }
    group = Future(SimpleNamespace(authorized_operations=ops("READ", "DESCRIBE")))
    assert preflight.check_permissions(settings, Admin(everything, [group]), 1.0) == []
    hidden = everything | {"al": Future(error=KafkaError.TOPIC_AUTHORIZATION_FAILED)}
    with pytest.raises(
        PreflightError,
        match=r"does not allow User:ANONYMOUS WRITE on topic 'al' \(STREAMDRIFT_ALERT_TOPIC\)$",
    ):
        preflight.check_permissions(settings, Admin(hidden, [group]), 1.0)
    unknown = {name: Future(SimpleNamespace(authorized_operations=None)) for name in everything}
    unchecked = preflight.check_permissions(
        settings, Admin(unknown, [Future(error=KafkaError.UNSUPPORTED_VERSION)]), 1.0
    )
    assert [(p.resource, p.name) for p in unchecked] == [
        ("topic", "in"),
        ("topic", "lab"),
        ("topic", "al"),
        ("topic", "dl"),
        ("group", "g"),
    ]


# --- on Tansu, the embedded development broker ------------------------------------------------


@pytest.mark.e2e
def test_on_tansu_the_check_passes_logs_the_protocol_and_creates_no_topic(broker, topics):
    from streamdrift.streams.kafka.admin import admin_client

    absent = f"{topics.dlq}-absent"
    settings = Settings(
        kafka_bootstrap=broker.bootstrap,
        input_topic=topics.input,
        labels_topic=topics.labels,
        alert_topic=topics.alerts,
        dlq_topic=absent,
        group_id=topics.group_id,
    )
    admin = admin_client(broker.bootstrap)
    lines = preflight.run(settings, admin, timeout=10.0)
    assert lines[0].startswith(
        f"Kafka at {broker.bootstrap}: protocol of Apache Kafka 2.8 or later ("
    )
    assert lines[1].startswith(
        "permissions not checked (the broker does not report authorized operations)"
    )
    # describing a missing topic did not create it
    assert absent not in admin.list_topics(timeout=10).topics
