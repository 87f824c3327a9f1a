"""Messages of the configured input topics (:mod:`streams.pipeline.inputs`) read into events of
the native contract, which then take the native path — the same validation, admission, bounds
and dead letters: the users' own JSON through its mapping (JMESPath over the body, headers, key,
constants, one event per row), KServe's payload logs (:mod:`streams.pipeline.kserve`), Seldon
Core 1's request logs (:mod:`streams.pipeline.seldon`) and Seldon Core 2's protobuf messages
(:mod:`streams.pipeline.oip`); requests and responses become halves to pair
(:mod:`streams.pipeline.pairing`).

A message the mapping cannot read (not JSON, too big or deep, no model, features that are not an
object, more rows than a message may hold) is dead-lettered whole with reason
``mapping_failed`` (or the native reason for size and depth) and a detail naming the input and
the field; the events it yields are validated as native events (a bad value: the native reason,
the event as mapped in the dead letter).
"""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import msgspec
from jmespath.exceptions import JMESPathError

from streamdrift.streams.pipeline import kserve, oip, seldon, wire
from streamdrift.streams.pipeline.codec import Invalid, Limits, Reason, deeper_than
from streamdrift.streams.pipeline.inputs import (
    FIELDS,
    WIRE_FORMATS,
    InputSpec,
    MappingError,
    header_of,
    text_of,
)
from streamdrift.streams.pipeline.outcome import DeadLetter, Outcome, Record
from streamdrift.streams.pipeline.pairing import REQUEST, RESPONSE, Half, Pairing
from streamdrift.streams.pipeline.processor import PredictionProcessor
from streamdrift.streams.state.partition import PartitionState

log = logging.getLogger("streamdrift")
_ENCODE = msgspec.json.Encoder().encode


# -- messages -----------------------------------------------------------------------------------


@dataclass
class Taken:
    """What :meth:`Mapper.take` made of a partition's records."""

    records: list[Record] = dataclasses.field(default_factory=list)  # native messages
    halves: list[Half] = dataclasses.field(default_factory=list)  # to pair
    unkeyed: list[Half] = dataclasses.field(default_factory=list)  # halves without a usable id
    dead_letters: list[DeadLetter] = dataclasses.field(default_factory=list)
    duplicates: int = 0


class Mapper:
    """Turns one input topic's records into records of native events (see the module)."""

    def __init__(
        self, spec: InputSpec, limits: Limits, schemas: wire.Lookup = lambda schema_id: None
    ) -> None:
        self.spec = spec
        self.limits = limits
        self.schemas = schemas  # the registry's answers, for the wire formats
        self.pairing = None if spec.pairing is None else Pairing(spec.pairing, spec.topic)

    def process(
        self,
        processor: PredictionProcessor,
        state: PartitionState,
        records: Sequence[Record],
        now: float | None = None,
    ) -> Outcome:
        """Apply one partition's records (in offset order) through ``processor`` — an input
        without pairing (with pairing, the runtime settles the halves of :meth:`take` first)."""
        if self.pairing is not None:
            raise ValueError(f"input {self.spec.topic} pairs its halves: take() them")
        taken = self.take(state, records)
        outcome = processor.process(state, taken.records, now=now, fresh=True)
        outcome.duplicates += taken.duplicates
        outcome.dead_letters[:0] = taken.dead_letters
        return outcome

    def take(self, state: PartitionState, records: Sequence[Record]) -> Taken:
        """Read one partition's records (in offset order): those below the state's next offset
        are duplicates; the others become native messages (same offsets and times; several
        rows: an array), halves waiting for their partners (inputs with pairing), or dead
        letters. The next offset moves past them all, so a message refused here is never
        dead-lettered twice and a half is offered once."""
        first = state.next_offset
        fresh = [r for r in records if first is None or r.offset >= first]
        taken = Taken(duplicates=len(records) - len(fresh))
        for record in fresh:
            self._take(record, state.partition, taken)
        if fresh:
            state.next_offset = max(state.next_offset or 0, fresh[-1].offset + 1)
        return taken

    def convert(self, records: Sequence[Record]) -> tuple[list[Record], list[DeadLetter]]:
        """The records as native messages (halves too: no pairing here), and the dead letters
        of those the mapping cannot read."""
        taken = Taken()
        for record in records:
            self._take(record, None, taken)
        return taken.records, taken.dead_letters

    def schema_ids(self, state: PartitionState, records: Sequence[Record]) -> set[int]:
        """The schema ids the fresh records of a wire-format input name (to look up first)."""
        if self.spec.format not in WIRE_FORMATS:
            return set()
        first = state.next_offset
        found = (wire.schema_id(r.value) for r in records if first is None or r.offset >= first)
        return {i for i in found if i is not None}

    def _take(self, record: Record, partition: int | None, taken: Taken) -> None:
        try:
            events, kind = self._events(record)
        except Invalid as refused:
            payload = record.value or b""
            taken.dead_letters.append(
                DeadLetter(payload, refused.reason, refused.detail, record.offset)
            )
            return
        except Exception as exc:  # a bug must not turn one message into a crash loop
            log.exception("mapping %s@%d failed", self.spec.topic, record.offset)
            detail = f"input {self.spec.topic}: {type(exc).__name__}"
            taken.dead_letters.append(
                DeadLetter(record.value or b"", Reason.INTERNAL_ERROR, detail, record.offset)
            )
            return
        if kind is None or partition is None or self.spec.pairing is None:
            body = _ENCODE(events[0] if len(events) == 1 else events)
            taken.records.append(Record(record.offset, record.timestamp, body))
            return
        prefix = f"{self.spec.topic}:{partition}:{record.offset}:"
        for row, event in enumerate(events):
            half = Half(
                model=event["model"] if isinstance(event["model"], str) else "",
                pair_id=event.get("event_id", ""),
                kind=kind,
                identity=f"{prefix}{row}",
                offset=record.offset,
                timestamp=record.timestamp,
                event=_ENCODE(event),
            )
            keyed = (
                0 < len(half.model) <= self.limits.max_name_length
                and 0 < len(half.pair_id) <= self.limits.max_event_id_length
            )
            (taken.halves if keyed else taken.unkeyed).append(half)

    def _events(self, record: Record) -> tuple[list[dict[str, Any]], str | None]:
        """The native events of a record, and whether they are a request's or a response's
        (None: not a half of an inference)."""
        limits, value = self.limits, record.value
        if value is None or not value:
            raise Invalid(Reason.MALFORMED_JSON, "an empty message")
        if len(value) > limits.max_message_bytes:
            raise Invalid(Reason.OVERSIZE_MESSAGE, f"{len(value)} bytes")
        message: Any = None
        if self.spec.format in WIRE_FORMATS:
            message = wire.decode(value, self.spec.format, self.schemas)
        elif self.spec.format != "seldon2":  # protobuf
            if deeper_than(value, limits.max_json_depth):
                raise Invalid(Reason.TOO_DEEP, f"nested deeper than {limits.max_json_depth}")
            try:
                message = msgspec.json.decode(value)
            except (msgspec.DecodeError, RecursionError) as exc:
                raise Invalid(Reason.MALFORMED_JSON, str(exc)[:200]) from None
        try:
            if self.spec.format == "seldon2":
                return self._oip_events(value, record)
            if self.spec.format == "kserve":
                return self._kserve_events(message, record)
            if self.spec.format == "seldon":
                return self._seldon_events(message, record)
            rows = self._rows(message, record)
            return [self._event(row, message, record) for row in rows], None
        except MappingError as exc:
            raise Invalid(Reason.MAPPING_FAILED, f"input {self.spec.topic}: {exc}") from None
        except (JMESPathError, TypeError, ValueError, RecursionError) as exc:  # hostile shapes
            detail = f"input {self.spec.topic}: {type(exc).__name__}: {str(exc)[:200]}"
            raise Invalid(Reason.MAPPING_FAILED, detail) from None

    def _kserve_events(self, message: Any, record: Record) -> tuple[list[dict[str, Any]], str]:
        event = kserve.cloud_event(record, message)
        rows = kserve.rows_of(event, self.spec.names, self.limits)
        attributes = event.attributes
        kind = REQUEST if attributes.get("type") == kserve.REQUEST else RESPONSE
        model = attributes.get(kserve.MODEL_ATTRIBUTE)
        return self._served(rows, event.data, record, model, attributes), kind

    def _seldon_events(self, message: Any, record: Record) -> tuple[list[dict[str, Any]], str]:
        headers = seldon.headers_of(record.headers)
        rows = seldon.rows_of(headers, message, self.spec.names, self.limits)
        attributes = {"id": headers["requestid"]} if "requestid" in headers else {}
        kind = REQUEST if headers.get("type") == seldon.REQUEST else RESPONSE
        model = headers.get(kserve.MODEL_ATTRIBUTE)
        return self._served(rows, message, record, model, attributes), kind

    def _oip_events(self, value: bytes, record: Record) -> tuple[list[dict[str, Any]], str]:
        half = self.spec.half or REQUEST
        inference = oip.decode(value, half == REQUEST, self.limits)
        ident = text_of(record.key) or header_of(record, "x-request-id") or inference.id
        attributes = {"id": ident} if ident else {}
        events = self._served(
            inference.rows,
            {},
            record,
            inference.model_name or None,
            attributes,
            inference.model_version or None,
        )
        return events, half

    def _served(
        self,
        rows: list[kserve.Row],
        body: Any,
        record: Record,
        default_model: str | None,
        attributes: dict[str, str],
        default_version: str | None = None,
    ) -> list[dict[str, Any]]:
        """Native events of a serving platform's rows: the model (the platform's name unless
        mapped), the version (mapped, else the platform's if any), the request id as event id,
        the event time."""
        spec = self.spec
        model = default_model if spec.model is None else spec.model.read(body, body, record)
        if model is None:
            raise MappingError("model: no model name in the message, its headers or its topic")
        version = (
            default_version
            if spec.model_version is None
            else spec.model_version.read(body, body, record)
        )
        ident = attributes.get("id")
        out = []
        for i, row in enumerate(rows):
            native: dict[str, Any] = {"model": model, "features": self._kept(row.features)}
            if row.prediction is not None:
                native["prediction"] = row.prediction
            if version is not None:
                native["model_version"] = version
            if ident is not None:
                native["event_id"] = ident if len(rows) == 1 else f"{ident}/{i}"
            if "time" in attributes:
                native["timestamp"] = attributes["time"]
            out.append(native)
        return out

    def _kept(self, features: dict[str, Any]) -> dict[str, Any]:
        spec = self.spec
        if len(features) > self.limits.max_features_per_event * 4:  # before filtering: bounded
            raise MappingError(f"features: {len(features)} names")
        return {
            name: value
            for name, value in features.items()
            if (spec.include is None or name in spec.include) and name not in spec.exclude
        }

    def _rows(self, message: Any, record: Record) -> list[Any]:
        if self.spec.rows is None:
            return [message]
        rows = self.spec.rows.read(message, message, record)
        if not isinstance(rows, list) or not rows:
            raise MappingError("rows: expected a non-empty list")
        if len(rows) > self.limits.max_events_per_message:
            raise Invalid(
                Reason.TOO_MANY_EVENTS,
                f"{len(rows)} rows, more than {self.limits.max_events_per_message}",
            )
        return rows

    def _event(self, row: Any, message: Any, record: Record) -> dict[str, Any]:
        spec = self.spec
        assert spec.model is not None  # required for json, checked at start-up
        model = spec.model.read(row, message, record)
        if model is None:
            raise MappingError("model: no value")
        event: dict[str, Any] = {"model": model, "features": self._features(row, message, record)}
        for name in FIELDS[1:]:
            source = getattr(spec, name)
            if source is not None:
                found = source.read(row, message, record)
                if found is not None:
                    event[name] = found
        return event

    def _features(self, row: Any, message: Any, record: Record) -> dict[str, Any]:
        spec = self.spec
        if isinstance(spec.features, dict):
            features = {name: s.read(row, message, record) for name, s in spec.features.items()}
        else:
            assert spec.features is not None  # required for json, checked at start-up
            features = spec.features.read(row, message, record)
            if not isinstance(features, dict):
                raise MappingError(f"features: expected an object, got {type(features).__name__}")
        return self._kept(features)
