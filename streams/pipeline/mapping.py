"""Topics in the users' own JSON shapes: a declarative mapping from each message (its body, key
and headers) to events of the native contract, which then take the native path — the same
validation, admission, bounds and dead letters.

The configuration's ``inputs`` section lists the extra topics the workers consume, each with its
format (``json``: any JSON body) and mapping::

    inputs:
      - topic: fraud-inference-log
        format: json
        mapping:
          rows: records                  # optional: one event per element of this list
          model: const:fraud             # every field: a JMESPath over the row (or the body)
          model_version: message:meta.version   # message:<path> reads the whole body
          event_id: header:x-request-id  # a Kafka header (UTF-8); `key`: the record's key
          timestamp: ts                  # epoch seconds or RFC 3339 (absent: the Kafka time)
          features: inputs               # a path to an object of name -> value, or
          # features: {amount: payload.amount, country: payload.geo.country}
          prediction: output.score
          include: [amount, country]     # optional: only these features
          exclude: [user_id]             # optional: never these

A message the mapping cannot read (not JSON, too big or deep, no model, features that are not an
object, more rows than a message may hold) is dead-lettered whole with reason
``mapping_failed`` (or the native reason for size and depth) and a detail naming the input and
the field; the events it yields are validated as native events (a bad value: the native reason,
the event as mapped in the dead letter).
"""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import jmespath
import msgspec
from jmespath.exceptions import JMESPathError
from jmespath.parser import ParsedResult

from streamdrift.streams.pipeline import kserve, seldon
from streamdrift.streams.pipeline.codec import Invalid, Limits, Reason, deeper_than
from streamdrift.streams.pipeline.outcome import DeadLetter, Outcome, Record
from streamdrift.streams.pipeline.pairing import REQUEST, RESPONSE, Half, Pairing, PairingSpec
from streamdrift.streams.pipeline.processor import PredictionProcessor
from streamdrift.streams.state.partition import PartitionState

log = logging.getLogger("streamdrift")

FORMATS = ("json", "kserve", "seldon")
MAX_INPUTS = 32
_FIELDS = ("model", "model_version", "event_id", "timestamp", "prediction")
_MAPPING_KEYS = (*_FIELDS, "rows", "features", "include", "exclude")
# KServe: the model defaults to the CloudEvent's inferenceservicename; names: a V1 instance's
# (or a single V2 tensor's) columns
_KSERVE_KEYS = ("model", "model_version", "names", "include", "exclude")
_INPUT_KEYS = ("topic", "format", "mapping", "pairing")
_PAIRED_FORMATS = ("kserve", "seldon")  # whose requests and responses share an id
_MAX_PATH = 1_024
_ENCODE = msgspec.json.Encoder().encode


class MappingError(Exception):
    """A message the mapping cannot read; ``str()`` says which field and why."""


@dataclass(frozen=True, slots=True)
class Source:
    """Where one field comes from: a JMESPath over the row or the whole message, a header, the
    record key, or a constant."""

    kind: str  # "row" | "message" | "header" | "key" | "const"
    path: ParsedResult | None = None
    name: str = ""  # the header's name, or the constant

    def read(self, row: Any, message: Any, record: Record) -> Any:
        if self.kind == "const":
            return self.name
        if self.kind == "key":
            return _text(record.key)
        if self.kind == "header":
            for name, value in record.headers or ():
                if name == self.name:
                    return _text(value)
            return None
        assert self.path is not None
        return self.path.search(row if self.kind == "row" else message)


@dataclass(frozen=True, slots=True)
class InputSpec:
    """One input topic and how its messages become events (see the module)."""

    topic: str
    format: str
    model: Source | None  # kserve: None for the CloudEvent's inferenceservicename
    features: Source | dict[str, Source] | None  # kserve: None (the body's tensors)
    rows: Source | None = None
    model_version: Source | None = None
    event_id: Source | None = None
    timestamp: Source | None = None
    prediction: Source | None = None
    include: frozenset[str] | None = None
    exclude: frozenset[str] = frozenset()
    names: tuple[str, ...] | None = None  # kserve: column names
    pairing: PairingSpec | None = None  # requests paired with their responses (see pairing)


def input_specs(config: Mapping[str, Any] | None, reserved: Sequence[str] = ()) -> list[InputSpec]:
    """The configuration's ``inputs``, checked; ``ValueError`` naming the bad key otherwise.
    ``reserved``: topics that cannot be an input (the native input, labels, alerts, ...).

    >>> [spec.topic for spec in input_specs({"inputs": [{"topic": "logs", "format": "json",
    ...     "mapping": {"model": "const:fraud", "features": "inputs"}}]})]
    ['logs']
    >>> input_specs({"inputs": [{"topic": "logs", "format": "json",
    ...     "mapping": {"model": "name[", "features": "inputs"}}]})  # doctest: +ELLIPSIS
    Traceback (most recent call last):
    ...
    ValueError: invalid config at inputs[0].mapping.model: not a JMESPath expression ...
    """
    inputs = (config or {}).get("inputs")
    if inputs is None:
        return []
    if not isinstance(inputs, list) or len(inputs) > MAX_INPUTS:
        raise ValueError(f"invalid config at inputs: expected a list of at most {MAX_INPUTS}")
    specs, seen = [], set(reserved)
    for i, entry in enumerate(inputs):
        where = f"inputs[{i}]"
        _keys(entry, _INPUT_KEYS, where)
        topic = entry.get("topic")
        if not isinstance(topic, str) or not topic or len(topic) > 249:
            raise ValueError(f"invalid config at {where}.topic: expected a topic name")
        if topic in seen:
            raise ValueError(f"invalid config at {where}.topic: {topic!r} is already consumed")
        seen.add(topic)
        form = entry.get("format", "json")
        if form not in FORMATS:
            raise ValueError(
                f"invalid config at {where}.format: expected one of {', '.join(FORMATS)}, "
                f"got {form!r}"
            )
        mapping, at = entry.get("mapping"), f"{where}.mapping"
        if form in ("kserve", "seldon"):
            spec = _serving_spec(topic, form, {} if mapping is None else mapping, at)
        else:
            spec = _spec(topic, form, mapping, at)
        if form in _PAIRED_FORMATS:
            pairing = PairingSpec.parse(entry.get("pairing"), f"{where}.pairing")
            spec = dataclasses.replace(spec, pairing=pairing)
        elif "pairing" in entry:
            raise ValueError(
                f"invalid config at {where}.pairing: only inputs of format "
                f"{' or '.join(_PAIRED_FORMATS)} pair requests with responses"
            )
        specs.append(spec)
    return specs


def _spec(topic: str, form: str, mapping: Any, where: str) -> InputSpec:
    _keys(mapping, _MAPPING_KEYS, where)
    for required in ("model", "features"):
        if required not in mapping:
            raise ValueError(f"invalid config at {where}: {required} is required")
    features = mapping["features"]
    if isinstance(features, dict):
        if not features:
            raise ValueError(f"invalid config at {where}.features: no feature listed")
        named = {
            _name(name, f"{where}.features"): _source(path, f"{where}.features.{name}")
            for name, path in features.items()
        }
        feature_source: Source | dict[str, Source] = named
    else:
        feature_source = _source(features, f"{where}.features")
    fields = {
        name: _source(mapping[name], f"{where}.{name}") if name in mapping else None
        for name in _FIELDS
    }
    rows = mapping.get("rows")
    include = mapping.get("include")
    return InputSpec(
        topic=topic,
        format=form,
        model=fields["model"],
        features=feature_source,
        rows=None if rows is None else _source(rows, f"{where}.rows"),
        model_version=fields["model_version"],
        event_id=fields["event_id"],
        timestamp=fields["timestamp"],
        prediction=fields["prediction"],
        include=None if include is None else _names(include, f"{where}.include"),
        exclude=_names(mapping.get("exclude", []), f"{where}.exclude"),
    )


def _serving_spec(topic: str, form: str, mapping: Any, where: str) -> InputSpec:
    _keys(mapping, _KSERVE_KEYS, where)
    include, names = mapping.get("include"), mapping.get("names")
    return InputSpec(
        topic=topic,
        format=form,
        model=_source(mapping["model"], f"{where}.model") if "model" in mapping else None,
        features=None,
        model_version=(
            _source(mapping["model_version"], f"{where}.model_version")
            if "model_version" in mapping
            else None
        ),
        include=None if include is None else _names(include, f"{where}.include"),
        exclude=_names(mapping.get("exclude", []), f"{where}.exclude"),
        names=None
        if names is None
        else tuple(sorted(_names(names, f"{where}.names"), key=names.index)),
    )


def _source(spec: Any, where: str) -> Source:
    if not isinstance(spec, str) or not spec or len(spec) > _MAX_PATH:
        raise ValueError(
            f"invalid config at {where}: expected a JMESPath or const:, message:, header:, key "
            f"(1..{_MAX_PATH} characters), got {spec!r}"
        )
    if spec == "key":
        return Source("key")
    prefix, _, rest = spec.partition(":")
    if prefix == "const" and rest:
        return Source("const", name=rest)
    if prefix == "header" and rest:
        return Source("header", name=rest)
    kind, path = ("message", rest) if prefix == "message" and rest else ("row", spec)
    try:
        return Source(kind, jmespath.compile(path))
    except JMESPathError as exc:
        problem = str(exc).splitlines()[0]
        raise ValueError(
            f"invalid config at {where}: not a JMESPath expression ({problem})"
        ) from None


def _keys(section: Any, known: Sequence[str], where: str) -> None:
    if not isinstance(section, dict):
        raise ValueError(f"invalid config at {where}: expected a mapping")
    unknown = sorted(set(map(str, section)) - set(known))
    if unknown:
        raise ValueError(
            f"invalid config at {where}: unknown key {unknown[0]!r}; valid keys are: "
            f"{', '.join(known)}"
        )


def _name(name: Any, where: str) -> str:
    if not isinstance(name, str) or not name:
        raise ValueError(f"invalid config at {where}: feature names are non-empty strings")
    return name


def _names(names: Any, where: str) -> frozenset[str]:
    if not isinstance(names, list) or not all(isinstance(n, str) and n for n in names):
        raise ValueError(f"invalid config at {where}: expected a list of feature names")
    return frozenset(names)


def _ordered(names: Any, where: str) -> tuple[str, ...]:
    if len(_names(names, where)) != len(names):
        raise ValueError(f"invalid config at {where}: a name listed twice")
    return tuple(names)


def _text(raw: bytes | str | None) -> str | None:
    if raw is None or isinstance(raw, str):
        return raw
    try:
        return raw.decode()
    except UnicodeDecodeError:
        raise MappingError("not UTF-8") from None


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

    def __init__(self, spec: InputSpec, limits: Limits) -> None:
        self.spec = spec
        self.limits = limits
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
        if deeper_than(value, limits.max_json_depth):
            raise Invalid(Reason.TOO_DEEP, f"nested deeper than {limits.max_json_depth}")
        try:
            message = msgspec.json.decode(value)
        except (msgspec.DecodeError, RecursionError) as exc:
            raise Invalid(Reason.MALFORMED_JSON, str(exc)[:200]) from None
        try:
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

    def _served(
        self,
        rows: list[kserve.Row],
        body: Any,
        record: Record,
        default_model: str | None,
        attributes: dict[str, str],
    ) -> list[dict[str, Any]]:
        """Native events of a serving platform's rows: the model (the platform's name unless
        mapped), the version if mapped, the request id as event id, the event time."""
        spec = self.spec
        model = default_model if spec.model is None else spec.model.read(body, body, record)
        if model is None:
            raise MappingError(f"model: no {kserve.MODEL_ATTRIBUTE} attribute or header")
        version = (
            None if spec.model_version is None else spec.model_version.read(body, body, record)
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
        for name in _FIELDS[1:]:
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
