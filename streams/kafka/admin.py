"""The cluster as the command line and the dev tooling see it, through confluent-kafka's admin
client: create the topics streamdrift needs (``streamdrift worker --create-topics``, the demo,
the tests) and wait until every partition has a leader; list the topics, telling a refused login
or TLS handshake at once (:func:`cluster_topics`, before every command that uses Kafka); probe a
broker just started (:func:`broker_answers`)."""

from __future__ import annotations

import logging
import time
from collections.abc import Mapping
from typing import Any, Literal

from confluent_kafka import KafkaError, KafkaException
from confluent_kafka.admin import AdminClient, NewTopic

from streamdrift.streams.kafka.preflight import tls_refused

_POLL_S = 0.05


class TopicAdminError(RuntimeError):
    """A topic could not be created or did not come up as asked."""


class ClientConfigError(Exception):
    """librdkafka refused a client's configuration (e.g. an unreadable key file): its reason."""


class KafkaUnreachable(Exception):
    """The cluster did not list its topics; the message is librdkafka's reason, ``why`` its kind:
    ``"login"`` (the brokers refused the SASL login), ``"tls"`` (the TLS handshake failed) or
    ``"connect"`` (no answer in time)."""

    def __init__(self, why: Literal["login", "tls", "connect"], reason: str) -> None:
        super().__init__(reason)
        self.why = why


def admin_client(bootstrap: str, config: Mapping[str, Any] | None = None) -> AdminClient:
    """An admin client (``config``: more librdkafka properties, e.g. security).
    Without auto-creation, a metadata request naming a missing topic cannot create it."""
    return AdminClient(
        {**(config or {}), "bootstrap.servers": bootstrap, "allow.auto.create.topics": False}
    )


def create_topics(
    bootstrap: str,
    topics: Mapping[str, int],
    *,
    replication_factor: int = 1,
    timeout: float = 30.0,
    config: Mapping[str, Any] | None = None,
) -> None:
    """Create ``{name: partitions}`` topics replicated ``replication_factor`` times (-1: the
    cluster's default) and wait until metadata shows every partition with a leader.

    Idempotent: a topic that already exists with the requested partition count is fine; one with
    a different count raises (Tansu cannot add partitions, so pick another name or delete it).
    ``config``: more librdkafka properties of the admin client (e.g. ``security.confluent_config``).
    """
    if not topics:
        return
    admin = admin_client(bootstrap, config)
    deadline = time.monotonic() + timeout
    futures = admin.create_topics(
        [
            NewTopic(name, num_partitions=count, replication_factor=replication_factor)
            for name, count in topics.items()
        ],
        request_timeout=timeout,
        operation_timeout=timeout,
    )
    preexisting: set[str] = set()
    for name, future in futures.items():
        try:
            future.result(timeout=max(deadline - time.monotonic(), 0.1))
        except KafkaException as exc:
            error: KafkaError = exc.args[0]
            if error.code() != KafkaError.TOPIC_ALREADY_EXISTS:
                raise TopicAdminError(
                    f"Creating topic {name!r} ({topics[name]} partitions) on {bootstrap} failed: "
                    f"{error.str()}. Is a Kafka broker running there?"
                ) from exc
            preexisting.add(name)
        except TimeoutError as exc:
            raise TopicAdminError(
                f"Creating topic {name!r} on {bootstrap} got no answer within {timeout:g} s; "
                "is a Kafka broker running there?"
            ) from exc

    while True:
        remaining = deadline - time.monotonic()
        try:
            listed = admin.list_topics(timeout=max(min(remaining, 5.0), 0.1)).topics
        except KafkaException as exc:
            raise TopicAdminError(f"Kafka at {bootstrap} did not answer metadata: {exc}") from exc
        counts = {
            name: len(listed[name].partitions)
            for name in topics
            if name in listed and listed[name].error is None
            and all(p.leader >= 0 for p in listed[name].partitions.values())
        }  # fmt: skip
        for name in preexisting & counts.keys():
            if counts[name] != topics[name]:
                raise TopicAdminError(
                    f"Topic {name!r} already exists on {bootstrap} with {counts[name]} partitions, "
                    f"not {topics[name]}. Delete it or use another topic name."
                )
        missing = sorted(name for name, count in topics.items() if counts.get(name) != count)
        if not missing:
            return
        if remaining <= 0:
            raise TopicAdminError(
                f"Topics {missing} were created on {bootstrap} but did not appear in metadata with "
                f"the requested partitions within {timeout:g} s (seen: {counts})."
            )
        time.sleep(_POLL_S)


def checking_client(
    config: Mapping[str, Any], timeout: float, errors: list[KafkaError] | None = None
) -> AdminClient:
    """An admin client for checks (``config``: librdkafka properties, bootstrap and security
    included) whose librdkafka log is quiet: librdkafka retries loudly while a broker is down, and
    the check's caller says what is wrong in one line. librdkafka's errors go to ``errors`` if
    given. ``ClientConfigError`` if librdkafka refuses the configuration."""
    quiet = logging.getLogger("streamdrift.kafka-check")
    quiet.setLevel(logging.CRITICAL)
    properties: dict[str, Any] = {
        **config,
        "socket.timeout.ms": int(timeout * 1000),
        "logger": quiet,
        "allow.auto.create.topics": False,
    }
    if errors is not None:
        properties["error_cb"] = errors.append
    try:
        return AdminClient(properties)
    except Exception as exc:  # librdkafka checks its configuration (e.g. reads the key) here
        raise ClientConfigError(str(exc)) from exc


def cluster_topics(config: Mapping[str, Any], timeout: float) -> set[str]:
    """The names of the cluster's topics, asked for up to ``timeout`` seconds (``config`` as for
    :func:`checking_client`, whose ``ClientConfigError`` it raises).

    ``KafkaUnreachable`` after ``timeout``, or at once for a refused login or TLS handshake:
    librdkafka retries those forever, as if the broker were down, but waiting cannot help.
    """
    errors: list[KafkaError] = []
    admin = checking_client(config, timeout, errors)
    deadline = time.monotonic() + timeout
    while True:
        try:
            wait = min(1.0, max(deadline - time.monotonic(), 0.1))
            return set(admin.list_topics(timeout=wait).topics)
        except Exception as exc:  # confluent-kafka raises KafkaException with a transport error
            admin.poll(0.1)  # serves error_cb: librdkafka's own reason, e.g. a refused login
            _raise_refusal(errors)
            if time.monotonic() >= deadline:
                raise KafkaUnreachable("connect", str(exc)) from exc


def _raise_refusal(errors: list[KafkaError]) -> None:
    """``KafkaUnreachable`` for the first refused login among librdkafka's errors, else for the
    first failed TLS handshake; nothing if neither is there (the broker may still come up)."""
    refused = [error.str() for error in errors if error.code() == KafkaError._AUTHENTICATION]
    if refused:
        raise KafkaUnreachable("login", refused[0])
    handshake = [
        error.str() for error in errors if tls_refused(error.code() == KafkaError._SSL, error.str())
    ]
    if handshake:
        raise KafkaUnreachable("tls", handshake[0])


def broker_answers(bootstrap: str, timeout: float) -> bool:
    """Whether the broker at ``bootstrap`` answers a metadata request within ``timeout`` seconds:
    the readiness probe of a broker just started, whose port may accept connections before it
    can answer."""
    try:
        admin_client(bootstrap).list_topics(timeout=timeout)
    except KafkaException:
        return False
    return True
