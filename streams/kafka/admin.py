"""Topic administration with confluent-kafka's admin client: create the topics streamdrift
needs (``streamdrift worker --create-topics``, the demo, the tests) and wait until every
partition has a leader."""

from __future__ import annotations

import time
from collections.abc import Mapping
from typing import Any

from confluent_kafka import KafkaError, KafkaException
from confluent_kafka.admin import AdminClient, NewTopic

_POLL_S = 0.05


class TopicAdminError(RuntimeError):
    """A topic could not be created or did not come up as asked."""


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


# --- worker processes on the embedded servers ---------------------------------------------

#: Worker settings for a local group on the embedded broker: seconds-scale group timing (Tansu
#: holds every join for session_timeout / 2; production defaults are 30 s) on loopback.
