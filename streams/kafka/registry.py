"""The Schema Registry the wire-format inputs' schemas come from (Confluent's REST API, through
confluent-kafka's client): look-ups cached, and an outage waited out — never a dead letter.

Before a batch of such an input is read, the runtime asks :meth:`SchemaCache.ensure` for the
schema ids its records name. Known ids are answered from memory (a schema id is immutable: the
cache keeps at most ``capacity``, the least recently used dropped first). An id the registry
says it does not know (HTTP 404) is remembered as missing for ``missing_ttl_s``, then asked
again, so a message can only be dead-lettered ``schema_not_found`` for an id the registry
itself denies. A registry that does not answer (refused, timed out, 5xx, 429) makes the batch
wait: ``ensure`` retries with backoff (0.5 s doubling to 10 s) until it answers, the records stay
unread and uncommitted, and ``streamdrift_schema_registry_up`` is 0 meanwhile.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import OrderedDict
from collections.abc import Callable, Iterable
from typing import Any

from streamdrift.streams.pipeline.inputs import WIRE_FORMATS, InputSpec
from streamdrift.streams.pipeline.wire import MISSING, Entry, Schema, SchemaUnusable, Unusable, load
from streamdrift.streams.settings import Settings

log = logging.getLogger("streamdrift")

_MAX_REFERENCES = 32


class SchemaCache:
    def __init__(
        self,
        client: Any,
        redacted_url: str,
        on_state: Callable[[bool], None] = lambda up: None,
        capacity: int = 1_000,
        missing_ttl_s: float = 30.0,
    ) -> None:
        self.client = client  # confluent_kafka.schema_registry.AsyncSchemaRegistryClient
        self.url = redacted_url
        self.on_state = on_state
        self.capacity = capacity
        self.missing_ttl_s = missing_ttl_s
        self._known: OrderedDict[int, Schema | Unusable] = OrderedDict()
        self._missing: dict[int, float] = {}  # id -> monotonic time it was found missing

    def get(self, schema_id: int) -> Entry | None:
        """The entry of a schema id :meth:`ensure` looked up (None: never asked)."""
        if schema_id in self._missing:
            return MISSING
        found = self._known.get(schema_id)
        if found is not None:
            self._known.move_to_end(schema_id)
        return found

    async def ensure(self, ids: Iterable[int], kind: str) -> None:
        """Look up the ids not in memory (``kind``: the input's format); returns once the
        registry answered for each — waiting, however long, while it does not answer."""
        now = time.monotonic()
        for schema_id, since in list(self._missing.items()):
            if now - since > self.missing_ttl_s:
                del self._missing[schema_id]
        wanted = [i for i in dict.fromkeys(ids) if i not in self._known and i not in self._missing]
        delay = 0.5
        while wanted:
            try:
                for schema_id in list(wanted):
                    self._store(schema_id, await self._fetch(schema_id, kind))
                    wanted.remove(schema_id)
                self.on_state(True)
            except _Unreachable as exc:
                self.on_state(False)
                log.error(
                    "Schema Registry at %s unavailable (%s); %d schema(s) awaited, retrying in "
                    "%.1f s",
                    self.url,
                    exc,
                    len(wanted),
                    delay,
                )
                await asyncio.sleep(delay)
                delay = min(delay * 2, 10.0)

    def _store(self, schema_id: int, entry: Entry) -> None:
        if entry == MISSING:
            self._missing[schema_id] = time.monotonic()
            return
        assert not isinstance(entry, str)
        self._known[schema_id] = entry
        while len(self._known) > self.capacity:
            self._known.popitem(last=False)

    async def _fetch(self, schema_id: int, kind: str) -> Entry:
        from confluent_kafka.schema_registry.error import SchemaRegistryError

        try:
            schema = await self.client.get_schema(schema_id)
            references = await self._references(schema, kind, 0)
        except SchemaRegistryError as exc:
            if exc.http_status_code == 404:
                return MISSING
            if exc.http_status_code in (408, 429) or exc.http_status_code >= 500:
                raise _Unreachable(f"HTTP {exc.http_status_code}") from None
            return Unusable(f"the registry refused it: HTTP {exc.http_status_code}")
        except SchemaUnusable as exc:
            return Unusable(str(exc))
        except Exception as exc:  # connection refused, timeouts, TLS: the transport's own types
            raise _Unreachable(type(exc).__name__) from None
        if (schema.schema_type or "AVRO").lower() != _REGISTRY_TYPE[kind]:
            return Unusable(f"a {schema.schema_type} schema, not {kind}")
        try:
            return load(kind, schema.schema_str, references)
        except SchemaUnusable as exc:
            return Unusable(str(exc))
        except Exception as exc:  # whatever the schema's text makes a parser raise: unusable
            log.warning("schema id %d cannot be loaded: %r", schema_id, exc)
            return Unusable(f"{type(exc).__name__}: {str(exc)[:200]}")

    async def _references(self, schema: Any, kind: str, depth: int) -> dict[str, str]:
        """The texts a schema references, by the names it imports them as (recursively)."""
        out: dict[str, str] = {}
        for reference in schema.references or []:
            if depth > 4 or len(out) >= _MAX_REFERENCES:
                raise SchemaUnusable(
                    f"more than {_MAX_REFERENCES} references, or nested deeper than 4"
                )
            found = await self.client.get_version(reference.subject, reference.version)
            out[reference.name] = found.schema.schema_str
            out.update(await self._references(found.schema, kind, depth + 1))
        return out


_REGISTRY_TYPE = {"avro": "avro", "protobuf": "protobuf", "jsonschema": "json"}


class _Unreachable(Exception):
    pass


def check_wire_inputs(settings: Settings, specs: list[InputSpec]) -> list[str]:
    """The inputs in the registry's wire format; ``ValueError`` if there are some but no
    registry is set or its client is not installed."""
    wired = [spec.topic for spec in specs if spec.format in WIRE_FORMATS]
    if wired and settings.schema_registry_url is None:
        raise ValueError(
            f"invalid config at inputs: {wired[0]} is in the Schema Registry wire format; set "
            "STREAMDRIFT_SCHEMA_REGISTRY_URL to the registry's URL"
        )
    if wired:
        try:
            import fastavro  # noqa: F401
            from confluent_kafka.schema_registry import AsyncSchemaRegistryClient  # noqa: F401
        except ImportError:  # httpx, fastavro: the registry extra
            raise ValueError(
                f"input {wired[0]} needs the Schema Registry client: pip install "
                "'streamdrift[registry]'"
            ) from None
    return wired


def schema_cache(
    settings: Settings, specs: list[InputSpec], on_state: Callable[[bool], None]
) -> SchemaCache | None:
    """The Schema Registry's cache if an input is in its wire format (None otherwise); see
    :func:`check_wire_inputs` for what it refuses."""
    if not check_wire_inputs(settings, specs):
        return None
    from confluent_kafka.schema_registry import AsyncSchemaRegistryClient

    assert settings.schema_registry_url is not None
    url = settings.schema_registry_url.get_secret_value()
    client = AsyncSchemaRegistryClient({"url": url, "timeout": 10, "max.retries": 0})
    return SchemaCache(client, settings.schema_registry_url_redacted, on_state)
