"""The configuration's ``inputs``: the topics in the users' own shapes the workers consume beside
the native input, each with its format and how its messages map to native events
(:mod:`streams.pipeline.mapping` reads them), checked at start-up with errors naming the field.

Each input::

    inputs:
      - topic: fraud-inference-log
        format: json                     # json | kserve | seldon | seldon2
        topic_pattern: fraud-{env}-log   # optional: parts of the topic's name, read as topic:env
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
        pairing: {window_s: 30}          # kserve, seldon, seldon2: requests with their responses
"""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import jmespath
from jmespath.exceptions import JMESPathError
from jmespath.parser import ParsedResult

from streamdrift.streams.pipeline.outcome import Record
from streamdrift.streams.pipeline.pairing import REQUEST, RESPONSE, UNPAIRED, PairingSpec

WIRE_FORMATS = ("avro", "protobuf", "jsonschema")  # Schema Registry wire format, then as json
FORMATS = ("json", "kserve", "seldon", "seldon2", *WIRE_FORMATS)
MAX_INPUTS = 32
FIELDS = ("model", "model_version", "event_id", "timestamp", "prediction")
_MAPPING_KEYS = (*FIELDS, "rows", "features", "include", "exclude")
# KServe: the model defaults to the CloudEvent's inferenceservicename; names: a V1 instance's
# (or a single V2 tensor's) columns
_KSERVE_KEYS = ("model", "model_version", "names", "include", "exclude")
_SELDON2_KEYS = (*_KSERVE_KEYS, "half")  # half: request | response (default: from the topic)
_PAIRING_KEYS = ("window_s", "unpaired", "max_pending", "max_pending_bytes")
_INPUT_KEYS = ("topic", "format", "mapping", "pairing", "topic_pattern")
_SERVING_FORMATS = ("kserve", "seldon", "seldon2")
_PAIRED_FORMATS = _SERVING_FORMATS  # whose requests and responses share an id
# Seldon Core 2's topic names: seldon.<namespace>.model.<model>.inputs (or pipeline, outputs)
_SELDON2_TOPIC = re.compile(
    r"seldon\.(?P<namespace>[^.]+)\.(?P<kind>model|pipeline)\.(?P<model>[^.]+)"
    r"\.(?P<direction>inputs|outputs)"
)
_HALF_OF_DIRECTION = {"inputs": REQUEST, "outputs": RESPONSE}
_CAPTURE = re.compile(r"\{([A-Za-z_][A-Za-z0-9_]*)\}")
_MAX_PATH = 1_024


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
            return text_of(record.key)
        if self.kind == "header":
            for name, value in record.headers or ():
                if name == self.name:
                    return text_of(value)
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
    half: str | None = None  # seldon2: REQUEST or RESPONSE (the topic says which)
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
        captures = _captures(topic, entry.get("topic_pattern"), form, where)
        if form in _SERVING_FORMATS:
            spec = _serving_spec(topic, form, {} if mapping is None else mapping, at, captures)
        else:
            spec = _spec(topic, form, mapping, at)
        spec = _with_captures(spec, captures, at)
        if form in _PAIRED_FORMATS:
            pairing = _pairing(entry.get("pairing"), f"{where}.pairing")
            spec = dataclasses.replace(spec, pairing=pairing)
        elif "pairing" in entry:
            raise ValueError(
                f"invalid config at {where}.pairing: only inputs of format "
                f"{', '.join(_PAIRED_FORMATS)} pair requests with responses"
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
        for name in FIELDS
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


def _captures(topic: str, pattern: Any, form: str, where: str) -> dict[str, str]:
    """The values a ``topic_pattern`` (``seldon.{namespace}.model.{model}.inputs``) captures
    from the topic's name; for seldon2 without one, those of Seldon Core 2's naming."""
    if pattern is None:
        found = _SELDON2_TOPIC.fullmatch(topic) if form == "seldon2" else None
        return found.groupdict() if found else {}
    if not isinstance(pattern, str) or not _CAPTURE.search(pattern):
        raise ValueError(
            f"invalid config at {where}.topic_pattern: expected the topic's name with "
            f"{{name}} captures, e.g. seldon.{{namespace}}.model.{{model}}.inputs"
        )
    parts = _CAPTURE.split(pattern)  # literal, name, literal, name, ..., literal
    regex = "".join(
        re.escape(part) if i % 2 == 0 else f"(?P<{part}>.+?)" for i, part in enumerate(parts)
    )
    try:
        found = re.fullmatch(regex, topic)
    except re.error:
        raise ValueError(
            f"invalid config at {where}.topic_pattern: a name captured twice"
        ) from None
    if found is None:
        raise ValueError(
            f"invalid config at {where}.topic_pattern: {topic!r} does not match {pattern!r}"
        )
    return found.groupdict()


def _with_captures(spec: InputSpec, captures: dict[str, str], where: str) -> InputSpec:
    """``spec`` with its ``topic:<name>`` sources made the constants the topic's name gives."""

    def resolved(source: Source | None, field: str) -> Source | None:
        if source is None or source.kind != "topic":
            return source
        if source.name not in captures:
            known = ", ".join(sorted(captures)) or "none: set topic_pattern"
            raise ValueError(
                f"invalid config at {where}.{field}: the topic name captures no "
                f"{source.name!r} (captured: {known})"
            )
        return Source("const", name=captures[source.name])

    changes: dict[str, Any] = {
        name: resolved(getattr(spec, name), name) for name in (*FIELDS, "rows")
    }
    if isinstance(spec.features, dict):
        changes["features"] = {
            name: resolved(source, f"features.{name}") for name, source in spec.features.items()
        }
    else:
        changes["features"] = resolved(spec.features, "features")
    return dataclasses.replace(spec, **changes)


def _serving_spec(
    topic: str, form: str, mapping: Any, where: str, captures: dict[str, str]
) -> InputSpec:
    _keys(mapping, _SELDON2_KEYS if form == "seldon2" else _KSERVE_KEYS, where)
    include, names = mapping.get("include"), mapping.get("names")
    model = mapping.get("model")
    if model is None and form == "seldon2" and "model" in captures:
        model = "topic:model"  # the model's name in the topic's
    return InputSpec(
        topic=topic,
        format=form,
        half=_half(mapping.get("half"), captures, where) if form == "seldon2" else None,
        model=_source(model, f"{where}.model") if model is not None else None,
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
            f"invalid config at {where}: expected a JMESPath or const:, message:, header:, "
            f"topic:, key "
            f"(1..{_MAX_PATH} characters), got {spec!r}"
        )
    if spec == "key":
        return Source("key")
    prefix, _, rest = spec.partition(":")
    if prefix == "const" and rest:
        return Source("const", name=rest)
    if prefix == "header" and rest:
        return Source("header", name=rest)
    if prefix == "topic" and rest:
        return Source("topic", name=rest)  # resolved at start-up (_with_captures)
    kind, path = ("message", rest) if prefix == "message" and rest else ("row", spec)
    try:
        return Source(kind, jmespath.compile(path))
    except JMESPathError as exc:
        problem = str(exc).splitlines()[0]
        raise ValueError(
            f"invalid config at {where}: not a JMESPath expression ({problem})"
        ) from None


def _half(half: Any, captures: dict[str, str], where: str) -> str:
    if half is None and captures.get("direction") in _HALF_OF_DIRECTION:
        return _HALF_OF_DIRECTION[captures["direction"]]
    if half not in (REQUEST, RESPONSE):
        raise ValueError(
            f"invalid config at {where}.half: expected request or response (the topic's name "
            f"does not end in .inputs or .outputs), got {half!r}"
        )
    return str(half)


def _pairing(section: Any, where: str) -> PairingSpec | None:
    """``false``: no pairing; ``true`` or absent keys: the defaults; ``ValueError`` naming the
    bad key otherwise."""
    if section is False:
        return None
    if section is None or section is True:
        return PairingSpec()
    _keys(section, _PAIRING_KEYS, where, "true, false or a mapping")
    defaults = PairingSpec()
    window = section.get("window_s", defaults.window_s)
    if isinstance(window, bool) or not isinstance(window, (int, float)):
        raise ValueError(f"invalid config at {where}.window_s: expected seconds")
    if not 0.5 <= window <= 3_600:
        raise ValueError(f"invalid config at {where}.window_s: expected 0.5 to 3600 seconds")
    unpaired = section.get("unpaired", defaults.unpaired)
    if unpaired not in UNPAIRED:
        raise ValueError(
            f"invalid config at {where}.unpaired: expected one of {', '.join(UNPAIRED)}, "
            f"got {unpaired!r}"
        )
    bounds = {}
    for name, low in (("max_pending", 1), ("max_pending_bytes", 1024)):
        value = section.get(name, getattr(defaults, name))
        if isinstance(value, bool) or not isinstance(value, int) or value < low:
            raise ValueError(f"invalid config at {where}.{name}: expected an integer ≥ {low}")
        bounds[name] = value
    return PairingSpec(float(window), unpaired, **bounds)


def _keys(section: Any, known: Sequence[str], where: str, expected: str = "a mapping") -> None:
    if not isinstance(section, dict):
        raise ValueError(f"invalid config at {where}: expected {expected}")
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


def header_of(record: Record, name: str) -> str | None:
    """The text of the record's header ``name`` (None if absent)."""
    for key, value in record.headers or ():
        if key == name:
            return text_of(value)
    return None


def text_of(raw: bytes | str | None) -> str | None:
    """A header's or key's bytes as text; ``MappingError`` if not UTF-8."""
    if raw is None or isinstance(raw, str):
        return raw
    try:
        return raw.decode()
    except UnicodeDecodeError:
        raise MappingError("not UTF-8") from None
