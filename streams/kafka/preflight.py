"""The worker's start-up check of its Kafka cluster: protocol and permissions, before Faust starts.

``streamdrift worker`` first proves that the cluster answers and accepts the login
(``streams.kafka.admin.cluster_topics``, through ``streams.ops.cli.check_kafka``); then
:func:`run` here:

1. asks a broker for its API versions (ApiVersions, exactly as the worker's client, aiokafka,
   connects: same TLS context, same SASL login) and logs the protocol level and cluster
   (DescribeCluster, when the broker answers it). If an API the worker needs is missing, or
   none of its versions is one the client speaks, it fails with one line naming the API — a
   broker too old (or too new) for this client, instead of errors deep inside the consumer;
2. checks, without side effects, what the worker's principal may do: each of the four topics
   (Metadata with the topic's authorized operations) and the consumer group (DescribeGroups with
   the group's authorized operations, else its committed offsets). A permission the worker
   needs and lacks ends the start with the permission, the principal and the ``kafka-acls.sh``
   command that grants it — instead of the consumer's retry loop.

Checks the broker cannot answer (Tansu, the embedded development broker, omits some admin
APIs and authorized operations) are skipped: only an answer that says "missing" fails the start.

The pure parts (:func:`missing_apis`, :func:`protocol_release`, :func:`required_permissions`,
:func:`missing_permissions`, :func:`grant_commands`, :func:`permission_problem`) take plain
values; the I/O parts take the settings and a confluent-kafka ``AdminClient``. No Faust import.
"""

from __future__ import annotations

import asyncio
import re
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from streamdrift.streams.security import aiokafka_options, principal
from streamdrift.streams.settings import Settings

__all__ = [
    "Permission",
    "PreflightError",
    "broker_api_versions",
    "client_api_versions",
    "grant_commands",
    "missing_apis",
    "missing_permissions",
    "needed_apis",
    "permission_problem",
    "protocol_release",
    "required_permissions",
    "run",
    "tls_hint",
    "tls_refused",
]


class PreflightError(Exception):
    """The worker cannot work with this cluster: ``message`` (what is wrong, one line), ``hint``
    (what to do, one line) and the exit code."""

    def __init__(self, message: str, hint: str, code: int = 1) -> None:
        super().__init__(message)
        self.message, self.hint, self.code = message, hint, code


# --- protocol ------------------------------------------------------------------------------

#: Kafka API keys the worker uses (aiokafka consumer and producer, confluent-kafka admin calls).
API_NAMES = {
    0: "Produce", 1: "Fetch", 2: "ListOffsets", 3: "Metadata", 8: "OffsetCommit", 9: "OffsetFetch",
    10: "FindCoordinator", 11: "JoinGroup", 12: "Heartbeat", 13: "LeaveGroup", 14: "SyncGroup",
    17: "SaslHandshake", 18: "ApiVersions", 36: "SaslAuthenticate",
}  # fmt: skip
_WORKER_APIS = (0, 1, 2, 3, 8, 9, 10, 11, 12, 13, 14, 18)
_SASL_APIS = (17, 36)

#: What a broker's API versions say of its release: the first rule that holds names the
#: oldest Apache Kafka release that answers so. Fetch below v4 was removed in 4.0 (KIP-896);
#: DescribeCluster (60) came in 2.8 (KIP-700), DescribeUserScramCredentials (50) in 2.7,
#: DeleteGroups (42) in 1.1, SaslAuthenticate (36) in 1.0, ApiVersions (18) in 0.10.
_RELEASE_MARKERS: tuple[tuple[str, Callable[[Mapping[int, tuple[int, int]]], bool]], ...] = (
    ("4.0", lambda v: 1 in v and v[1][0] >= 4),
    ("2.8", lambda v: 60 in v),
    ("2.7", lambda v: 50 in v),
    ("1.1", lambda v: 42 in v),
    ("1.0", lambda v: 36 in v),
    ("0.10", lambda v: 18 in v),
)


def needed_apis(settings: Settings) -> tuple[int, ...]:
    """API keys the worker needs with these settings (SASL adds the handshake and login)."""
    return _WORKER_APIS + (
        _SASL_APIS if settings.kafka_security_protocol.startswith("SASL") else ()
    )


def client_api_versions() -> dict[int, tuple[int, int]]:
    """``{api key: (lowest, highest version)}`` the worker's Kafka client (aiokafka) speaks.

    aiokafka negotiates each request's version from its request classes' version list, which
    it keeps in the private ``Request._CLASSES`` (aiokafka >= 0.13); there is no public
    accessor, so it is read only here. Keys it cannot tell are left out (not checked).
    """
    from aiokafka.protocol import (
        admin,
        commit,
        coordination,
        fetch,
        group,
        metadata,
        offset,
        produce,
    )
    from aiokafka.protocol.api import Request

    versions: dict[int, tuple[int, int]] = {}
    for module in (admin, commit, coordination, fetch, group, metadata, offset, produce):
        for value in vars(module).values():
            if isinstance(value, type) and issubclass(value, Request) and value is not Request:
                request: Any = value  # an aiokafka request class (untyped): API_KEY, _CLASSES
                numbers = [c.API_VERSION for c in getattr(request, "_CLASSES", ())]
                if numbers and request.API_KEY in API_NAMES:
                    versions[request.API_KEY] = (min(numbers), max(numbers))
    return versions


def missing_apis(
    broker: Mapping[int, tuple[int, int]],
    client: Mapping[int, tuple[int, int]],
    needed: Iterable[int],
) -> list[str]:
    """One phrase per needed API the broker lacks or offers in no version the client speaks.

    >>> missing_apis({1: (4, 18), 3: (0, 13)}, {1: (1, 11), 3: (0, 5), 11: (0, 5)}, [1, 3, 11])
    ['JoinGroup (API key 11) is not offered by the broker']
    >>> missing_apis({1: (12, 18)}, {1: (1, 11)}, [1])
    ['Fetch (API key 1): the broker answers v12-v18, the client speaks v1-v11']
    """
    problems = []
    for key in needed:
        name = API_NAMES.get(key, f"API {key}")
        if key not in broker:
            problems.append(f"{name} (API key {key}) is not offered by the broker")
            continue
        if key not in client:
            continue
        (b_low, b_high), (c_low, c_high) = broker[key], client[key]
        if b_high < c_low or c_high < b_low:
            problems.append(
                f"{name} (API key {key}): the broker answers v{b_low}-v{b_high}, the client "
                f"speaks v{c_low}-v{c_high}"
            )
    return problems


def protocol_release(broker: Mapping[int, tuple[int, int]]) -> str | None:
    """The oldest Apache Kafka release whose API versions match ``broker`` (Kafka does not
    report its version: ApiVersions is what it answers), or None.

    >>> protocol_release({1: (4, 18), 60: (0, 2)}), protocol_release({1: (0, 13), 60: (0, 1)})
    ('4.0', '2.8')
    """
    return next((release for release, holds in _RELEASE_MARKERS if holds(broker)), None)


def protocol_summary(broker: Mapping[int, tuple[int, int]]) -> str:
    """What the log says of the broker's protocol.

    >>> protocol_summary({1: (4, 18), 0: (0, 13), 60: (0, 2)})
    'protocol of Apache Kafka 4.0 or later (3 APIs; Produce v0-v13, Fetch v4-v18)'
    """
    release = protocol_release(broker)
    level = (
        f"protocol of Apache Kafka {release} or later"
        if release
        else "protocol older than Apache Kafka 0.10"
    )
    shown = ", ".join(
        f"{API_NAMES[k]} v{broker[k][0]}-v{broker[k][1]}" for k in (0, 1) if k in broker
    )
    return f"{level} ({len(broker)} APIs{'; ' + shown if shown else ''})"


# --- TLS ----------------------------------------------------------------------------------

#: An alert the server sent during or right after the handshake (TLS 1.3 checks the client's
#: certificate after the client considers the handshake done: librdkafka then reports a
#: transport error "ssl/tls alert bad certificate" instead of an SSL error).
_TLS_ALERT = re.compile(r"(ssl|tls)[^:]*alert|alert (bad|unknown|certificate)", re.IGNORECASE)


def tls_refused(ssl_error: bool, reason: str) -> bool:
    """Whether a client error is a failed TLS handshake (not a broker that is down): an SSL
    error, or a transport error carrying a TLS alert.

    >>> tls_refused(
    ...     False, "Receive failed: error:0A000412:SSL routines::ssl/tls alert bad certificate"
    ... )
    True
    >>> tls_refused(False, "Connect to ipv4#127.0.0.1:9092 failed: Connection refused")
    False
    """
    return ssl_error or bool(_TLS_ALERT.search(reason))


def tls_hint(reason: str, settings: Settings) -> str:
    """What to do about a failed TLS handshake, from the reason the client gives.

    >>> tls_hint("certificate verify failed", Settings(kafka_security_protocol="SSL")).split(":")[0]
    "the brokers' certificate is not signed by a CA this client trusts"
    """
    if "verify failed" in reason or "unable to get local issuer" in reason:
        return (
            "the brokers' certificate is not signed by a CA this client trusts: set "
            "STREAMDRIFT_KAFKA_SSL_CAFILE to the CA bundle that signed them (and check the "
            "brokers' certificates name the bootstrap host)"
        )
    if not settings.kafka_ssl_certfile:
        return (
            "the brokers require a client certificate (mutual TLS): set "
            "STREAMDRIFT_KAFKA_SSL_CERTFILE and STREAMDRIFT_KAFKA_SSL_KEYFILE to one signed by a "
            "CA in their truststore"
        )
    return (
        "the brokers refused the client certificate STREAMDRIFT_KAFKA_SSL_CERTFILE: use one "
        "signed by a CA in their truststore (ssl.truststore.*), not expired, with its key in "
        "STREAMDRIFT_KAFKA_SSL_KEYFILE"
    )


# --- authorization -------------------------------------------------------------------------


@dataclass(frozen=True)
class Permission:
    """An ACL operation the worker needs on one resource; ``setting`` names where it comes from."""

    resource: str  # "topic" or "group"
    name: str
    operation: str  # "READ", "WRITE" (each implies DESCRIBE)
    setting: str

    def __str__(self) -> str:
        return f"{self.operation} on {self.resource} {self.name!r} ({self.setting})"


def required_permissions(settings: Settings, mapped: Sequence[str] = ()) -> list[Permission]:
    """Everything the worker needs and nothing else (docs/own-kafka.md, "ACLs the worker needs").

    READ on the input and labels topics (fetch, list and commit offsets) and on the mapped input
    topics ``mapped`` (the configuration's ``inputs``), WRITE on the alert and dead-letter topics
    (produce), READ on the consumer group (join, heartbeat, commit, fetch committed offsets).
    READ and WRITE imply DESCRIBE (metadata, list offsets).
    """
    s = settings
    return [
        Permission("topic", s.input_topic, "READ", "STREAMDRIFT_INPUT_TOPIC"),
        Permission("topic", s.labels_topic, "READ", "STREAMDRIFT_LABELS_TOPIC"),
        *(Permission("topic", topic, "READ", "inputs in STREAMDRIFT_CONFIG") for topic in mapped),
        Permission("topic", s.alert_topic, "WRITE", "STREAMDRIFT_ALERT_TOPIC"),
        Permission("topic", s.dlq_topic, "WRITE", "STREAMDRIFT_DLQ_TOPIC"),
        Permission("group", s.group_id, "READ", "STREAMDRIFT_GROUP_ID"),
    ]


def missing_permissions(
    required: Sequence[Permission], granted: Mapping[tuple[str, str], frozenset[str] | None]
) -> list[Permission]:
    """The ``required`` permissions that ``granted`` (``{(resource, name): operations}``) lacks.

    An absent resource or None means "unknown" (the broker did not say): not counted as missing.
    ``ALL`` grants everything.

    >>> need = [Permission("topic", "in", "READ", "X"), Permission("group", "g", "READ", "Y")]
    >>> granted = {("topic", "in"): frozenset({"DESCRIBE"}), ("group", "g"): None}
    >>> [str(p) for p in missing_permissions(need, granted)]
    ["READ on topic 'in' (X)"]
    """
    missing = []
    for permission in required:
        operations = granted.get((permission.resource, permission.name))
        if operations is not None and not {permission.operation, "ALL"} & operations:
            missing.append(permission)
    return missing


def grant_commands(missing: Sequence[Permission], who: str, bootstrap: str) -> list[str]:
    """``kafka-acls.sh`` commands granting ``missing`` to the principal ``who``.

    >>> missing = [Permission("group", "sd", "READ", "STREAMDRIFT_GROUP_ID")]
    >>> grant_commands(missing, "User:w", "k:9092")  # doctest: +NORMALIZE_WHITESPACE
    ['kafka-acls.sh --bootstrap-server k:9092 --add --allow-principal User:w --operation Read
    --group sd']
    """
    return [
        f"kafka-acls.sh --bootstrap-server {bootstrap} --add --allow-principal {who} "
        f"--operation {p.operation.capitalize()} --{p.resource} {p.name}"
        for p in missing
    ]


def permission_problem(missing: Sequence[Permission], who: str, bootstrap: str) -> PreflightError:
    """The error of missing permissions: which, for whom, and the commands that grant them."""
    listed = "; ".join(map(str, missing))
    return PreflightError(
        f"Kafka at {bootstrap} does not allow {who} {listed}",
        'grant it to the worker\'s principal (docs/own-kafka.md, "ACLs the worker needs"), e.g. '
        + " ; ".join(grant_commands(missing, who, bootstrap)),
    )


# --- I/O -----------------------------------------------------------------------------------


def broker_api_versions(settings: Settings, timeout: float = 10.0) -> dict[int, tuple[int, int]]:
    """``{api key: (min, max)}`` a bootstrap broker answers to ApiVersions, connecting as the
    worker's client does (aiokafka, same TLS context and SASL login).

    aiokafka has no public call that returns a broker's API versions (its connections keep them
    in a private attribute): this opens one connection with ``aiokafka.conn.create_conn`` and
    sends an ``ApiVersionRequest`` itself. Raises ``OSError`` / aiokafka's errors / TimeoutError.
    """
    from aiokafka.conn import create_conn
    from aiokafka.protocol.admin import ApiVersionRequest

    async def ask(host: str, port: int) -> dict[int, tuple[int, int]]:
        async with asyncio.timeout(timeout):
            conn = await create_conn(
                host, port, request_timeout_ms=int(timeout * 1000), **aiokafka_options(settings)
            )
            try:
                response = await conn.send(ApiVersionRequest())
            finally:
                conn.close()
        return {int(key): (int(low), int(high)) for key, low, high in response.api_versions}

    error: BaseException | None = None
    for address in settings.kafka_bootstrap.split(","):
        host, _, port = address.strip().rpartition(":")
        try:
            return asyncio.run(ask(host.strip("[]"), int(port)))
        except Exception as exc:  # OSError, ssl.SSLError, TimeoutError, aiokafka's KafkaError
            error = exc
    assert error is not None
    raise error


def _operations(listed: Iterable[Any] | None) -> frozenset[str] | None:
    """Authorized operations as names; None when the broker did not say. A resource one can
    see always allows DESCRIBE: a list without it is a broker that does not fill the field."""
    if listed is None:
        return None
    names = frozenset(getattr(op, "name", str(op)) for op in listed)
    return names if "DESCRIBE" in names or "ALL" in names else None


def topic_access(
    admin: Any, topics: Sequence[str], timeout: float
) -> dict[str, frozenset[str] | str | None]:
    """Per topic: its authorized operations (None: unknown), ``"denied"`` (Kafka refuses to
    describe it: no ACL allows the principal anything on it — or it does not exist), or
    ``"missing"`` (it does not exist). Unanswered: every topic None."""
    from confluent_kafka import KafkaError, KafkaException, TopicCollection

    try:
        futures = admin.describe_topics(
            TopicCollection(list(topics)),
            include_authorized_operations=True,
            request_timeout=timeout,
        )
    except (KafkaException, TypeError, ValueError, NotImplementedError):
        return dict.fromkeys(topics)
    access: dict[str, frozenset[str] | str | None] = {}
    for name, future in futures.items():
        try:
            access[name] = _operations(future.result(timeout=timeout).authorized_operations)
        except KafkaException as exc:
            code = exc.args[0].code() if exc.args and isinstance(exc.args[0], KafkaError) else None
            told = {
                KafkaError.TOPIC_AUTHORIZATION_FAILED: "denied",
                KafkaError.UNKNOWN_TOPIC_OR_PART: "missing",
            }
            access[name] = told.get(code) if code is not None else None
        except Exception:  # an unanswered optional check (timeout, unsupported request)
            access[name] = None
    return access


def group_access(admin: Any, group: str, timeout: float) -> frozenset[str] | None:
    """The consumer group's authorized operations for the principal, an empty set if Kafka
    refuses to describe the group (no ACL), None when the broker does not say.

    Kafka may answer "coordinator loading" for a while after the offsets topic is created:
    retried within ``timeout``. Without authorized operations, listing the group's committed
    offsets (OffsetFetch, needs DESCRIBE) at least tells a group with no ACL at all.
    """
    from confluent_kafka import ConsumerGroupTopicPartitions, KafkaError, KafkaException

    retry = {KafkaError.COORDINATOR_LOAD_IN_PROGRESS, KafkaError.COORDINATOR_NOT_AVAILABLE,
             KafkaError.NOT_COORDINATOR, KafkaError._TIMED_OUT}  # fmt: skip
    deadline = time.monotonic() + timeout
    described: frozenset[str] | None = None
    while True:
        left = max(deadline - time.monotonic(), 0.5)
        try:
            (future,) = admin.describe_consumer_groups(
                [group], include_authorized_operations=True, request_timeout=left
            ).values()
            described = _operations(future.result(timeout=left).authorized_operations)
            break
        except KafkaException as exc:
            code = exc.args[0].code() if exc.args and isinstance(exc.args[0], KafkaError) else None
            if code == KafkaError.GROUP_AUTHORIZATION_FAILED:
                return frozenset()
            if code in retry and time.monotonic() < deadline:
                time.sleep(0.2)
                continue
            break
        except Exception:  # unsupported, unanswered: try the next way
            break
    if described is not None:
        return described
    try:
        (future,) = admin.list_consumer_group_offsets(
            [ConsumerGroupTopicPartitions(group)],
            request_timeout=max(deadline - time.monotonic(), 1.0),
        ).values()
        future.result(timeout=max(deadline - time.monotonic(), 1.0))
    except KafkaException as exc:
        code = exc.args[0].code() if exc.args and isinstance(exc.args[0], KafkaError) else None
        if code == KafkaError.GROUP_AUTHORIZATION_FAILED:
            return frozenset()
    except Exception:
        pass
    return None


def cluster_summary(admin: Any, timeout: float) -> str | None:
    """``cluster <id>, N brokers, controller <id>`` from DescribeCluster, or None unanswered."""
    try:
        cluster = admin.describe_cluster(request_timeout=timeout).result(timeout=timeout)
    except Exception:  # Tansu and old brokers may not answer DescribeCluster: optional
        return None
    controller = getattr(cluster.controller, "id", None)
    return (
        f"cluster {cluster.cluster_id}, {len(cluster.nodes)} "
        f"broker{'s' if len(cluster.nodes) != 1 else ''}"
        + (f", controller {controller}" if controller is not None and controller >= 0 else "")
    )


def check_protocol(settings: Settings, timeout: float) -> dict[int, tuple[int, int]]:
    """The broker's API versions; raises :class:`PreflightError` if the worker cannot speak to
    it."""
    bootstrap = settings.kafka_bootstrap
    try:
        versions = broker_api_versions(settings, timeout)
    except Exception as exc:  # any failure of the worker's own client is fatal
        reason = str(exc) or type(exc).__name__
        raise PreflightError(
            f"the worker's Kafka client (aiokafka) cannot connect to {bootstrap}: {reason}",
            "the settings work for librdkafka but not for aiokafka: check "
            "STREAMDRIFT_KAFKA_SECURITY_PROTOCOL, STREAMDRIFT_KAFKA_SSL_CAFILE / _CERTFILE / "
            "_KEYFILE (PEM files) and the SASL settings",
        ) from exc
    problems = missing_apis(versions, client_api_versions(), needed_apis(settings))
    if problems:
        raise PreflightError(
            f"Kafka at {bootstrap} cannot serve the worker: {'; '.join(problems)} "
            f"({protocol_summary(versions)})",
            "streamdrift needs Apache Kafka 2.8 or later (4.x tested) or a broker with the same "
            "APIs; upgrade the brokers, or the client (pip install -U streamdrift) if the broker "
            "is newer",
        )
    return versions


def check_permissions(
    settings: Settings, admin: Any, timeout: float, mapped: Sequence[str] = ()
) -> list[Permission]:
    """Raise :class:`PreflightError` for the permissions the broker says the worker lacks
    (topics it may not see included); return those it could not check."""
    required = required_permissions(settings, mapped)
    topics = topic_access(admin, [p.name for p in required if p.resource == "topic"], timeout)
    granted: dict[tuple[str, str], frozenset[str] | None] = {}
    for name, access in topics.items():
        if access == "denied":
            granted["topic", name] = frozenset()
        elif isinstance(access, frozenset) or access is None:
            granted["topic", name] = access
        # "missing": the caller tells a missing topic (or creates it)
    granted["group", settings.group_id] = group_access(admin, settings.group_id, timeout)
    missing = missing_permissions(required, granted)
    if missing:
        raise permission_problem(missing, principal(settings), settings.kafka_bootstrap)
    return [
        p
        for p in required
        if granted.get((p.resource, p.name)) is None and topics.get(p.name) != "missing"
    ]


def run(
    settings: Settings, admin: Any, timeout: float = 10.0, mapped: Sequence[str] = ()
) -> list[str]:
    """The whole pre-flight: lines to log, or :class:`PreflightError`; ``mapped``: the mapped
    input topics."""
    versions = check_protocol(settings, timeout)
    cluster = cluster_summary(admin, timeout)
    lines = [
        f"Kafka at {settings.kafka_bootstrap}: {protocol_summary(versions)}"
        + (f"; {cluster}" if cluster else "")
    ]
    unchecked = check_permissions(settings, admin, timeout, mapped)
    if unchecked:
        lines.append(
            f"permissions not checked (the broker does not report authorized operations): "
            f"{', '.join(f'{p.operation} on {p.resource} {p.name!r}' for p in unchecked)}"
        )
    return lines
