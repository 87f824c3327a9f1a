"""Decode and validate input messages: Kafka bytes in, valid events and rejections out.

The fast path decodes straight into typed structs with msgspec (~0.5 µs per event); only a
message that fails it is decoded again generically, to name the exact reason for the
dead-letter topic. Every rejection carries the bytes to dead-letter: the original message
value, or for one bad element of a JSON array that element alone, re-encoded.
"""

from __future__ import annotations

import math
import re
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from enum import StrEnum
from typing import Any, cast

import msgspec
import numpy as np

PREDICTION = "prediction"
"""The prediction is monitored like a feature of this name."""


class Reason(StrEnum):
    """Why a message or event went to the dead-letter topic (a low-cardinality metric label)."""

    MALFORMED_JSON = "malformed_json"
    OVERSIZE_MESSAGE = "oversize_message"
    TOO_MANY_EVENTS = "too_many_events"
    NOT_AN_OBJECT = "not_an_object"
    MISSING_MODEL = "missing_model"
    INVALID_MODEL = "invalid_model"
    INVALID_MODEL_VERSION = "invalid_model_version"
    INVALID_EVENT_ID = "invalid_event_id"
    MISSING_FEATURES = "missing_features"
    INVALID_FEATURES = "invalid_features"
    INVALID_FEATURE_NAME = "invalid_feature_name"
    INVALID_FEATURE_VALUE = "invalid_feature_value"
    NON_FINITE_VALUE = "non_finite_value"
    INVALID_TIMESTAMP = "invalid_timestamp"
    INVALID_PREDICTION = "invalid_prediction"
    CATEGORY_TOO_LONG = "category_too_long"
    TOO_MANY_FEATURES = "too_many_features"
    TOO_MANY_FEATURES_FOR_MODEL = "too_many_features_for_model"
    TOO_MANY_MODELS = "too_many_models"
    TOO_MANY_CATEGORIES = "too_many_categories"
    FEATURE_TYPE_CHANGED = "feature_type_changed"
    INVALID_LABEL = "invalid_label"
    LABEL_UNMATCHED = "label_unmatched"
    LABEL_BUFFER_FULL = "label_buffer_full"
    TOO_DEEP = "too_deep"
    VALUE_OUT_OF_RANGE = "value_out_of_range"
    TIMESTAMP_SKEW = "timestamp_skew"
    MODEL_NOT_ALLOWED = "model_not_allowed"
    TOO_MANY_NEW_SERIES = "too_many_new_series"
    DUPLICATE_LABEL = "duplicate_label"
    MAPPING_FAILED = "mapping_failed"  # an input topic's mapping could not read the message
    TENSOR_SHAPE_MISMATCH = "tensor_shape_mismatch"  # a tensor's data does not fit its shape
    UNSUPPORTED_EVENT_TYPE = "unsupported_event_type"  # a CloudEvent type an input cannot read
    UNPAIRED_REQUEST = "unpaired_request"  # no response within the pairing window (if asked)
    UNPAIRED_RESPONSE = "unpaired_response"  # no request within the pairing window (if asked)
    DUPLICATE_PAIR_ID = "duplicate_pair_id"  # a second request (or response) with one id
    MISSING_SCHEMA_ID = "missing_schema_id"  # not in the Schema Registry wire format
    SCHEMA_NOT_FOUND = "schema_not_found"  # the registry does not know the message's schema id
    SCHEMA_UNUSABLE = "schema_unusable"  # the registry's schema cannot read messages
    SCHEMA_MISMATCH = "schema_mismatch"  # the payload is not what its schema says
    INTERNAL_ERROR = "internal_error"


Scalar = float | str | bool | None


class RawEvent(msgspec.Struct, gc=False):
    """An event as the typed decoder reads it, before validation.

    ``gc=False``: it holds only strings and scalars, so it is in no reference cycle, and the
    thousands of a batch do not set off garbage collections.
    """

    model: str
    features: dict[str, Scalar]
    model_version: str | None = None
    event_id: str | None = None
    timestamp: float | str | None = None
    prediction: Scalar = None


class _RawLabel(msgspec.Struct):
    model: str
    event_id: str
    label: float | str | bool
    timestamp: float | str | None = None


_EVENTS = msgspec.json.Decoder(RawEvent | list[RawEvent])
_LABELS = msgspec.json.Decoder(_RawLabel | list[_RawLabel])
_GENERIC = msgspec.json.Decoder()
_ENCODE = msgspec.json.Encoder().encode


@dataclass(frozen=True, slots=True)
class Limits:
    """Bounds on what one message may hold (``Settings`` maps ``STREAMDRIFT_*`` onto them).

    The timestamp skews default to unbounded here (a pure decoder has no clock to trust); the
    worker bounds them from its settings.
    """

    max_message_bytes: int = 1_048_576
    max_events_per_message: int = 10_000
    max_features_per_event: int = 500
    max_name_length: int = 128
    max_category_length: int = 256
    max_json_depth: int = 64
    max_event_id_length: int = 256
    max_abs_value: float = 1e15
    max_future_skew_s: float = math.inf
    max_past_skew_s: float = math.inf


@dataclass(slots=True)
class Event:
    """A valid prediction event, its features split by kind (the prediction included)."""

    model: str
    model_version: str | None
    event_id: str | None
    timestamp: float
    numeric: dict[str, float]
    categorical: dict[str, str]
    missing: list[str]
    prediction: float | str | None
    index: int | None = None  # position in a JSON array message; None for a single-event message


@dataclass(frozen=True, slots=True)
class Label:
    model: str
    event_id: str
    label: float | str
    timestamp: float
    index: int | None = None


@dataclass(frozen=True, slots=True)
class Rejection:
    reason: Reason
    detail: str
    payload: bytes
    index: int | None = None  # position in a JSON array; None for a whole message


class Invalid(Exception):
    def __init__(self, reason: Reason, detail: str) -> None:
        super().__init__(detail)
        self.reason = reason
        self.detail = detail


def decode_events(
    value: bytes | None, kafka_ts: float, limits: Limits
) -> tuple[list[Event], list[Rejection]]:
    """Decode one input message into valid events and rejections.

    >>> events, rejected = decode_events(
    ...     b'{"model": "m", "features": {"x": 1, "c": "DE", "z": null}}', 1.0, Limits()
    ... )
    >>> events[0].numeric, events[0].categorical, events[0].missing, rejected
    ({'x': 1.0}, {'c': 'DE'}, ['z'], [])
    >>> events, rejected = decode_events(
    ...     b'[{"model": "m", "features": {}}, {"model": 7, "features": {}}]', 1.0, Limits()
    ... )
    >>> len(events), rejected[0].reason.value, rejected[0].index, rejected[0].payload
    (1, 'invalid_model', 1, b'{"model":7,"features":{}}')
    """
    return _decode(value, kafka_ts, limits, _EVENTS, _validate_event, _diagnose_event)


def decode_labels(
    value: bytes | None, kafka_ts: float, limits: Limits
) -> tuple[list[Label], list[Rejection]]:
    """Decode one labels message (an object or an array of objects).

    >>> labels, _ = decode_labels(b'{"model": "m", "event_id": "e1", "label": true}', 5.0, Limits())
    >>> labels[0]
    Label(model='m', event_id='e1', label=1.0, timestamp=5.0, index=None)
    """
    return _decode(value, kafka_ts, limits, _LABELS, _validate_label, _diagnose_label)


def typed_events(value: bytes | None, limits: Limits) -> list[tuple[int | None, RawEvent]] | None:
    """The message's events as typed structs, each with its position in a JSON array (None for a
    single-event message), not validated yet; None when the message needs ``decode_events``'
    full handling (empty, oversize, not of the typed shape, too many events).

    >>> typed_events(  # doctest: +NORMALIZE_WHITESPACE
    ...     b'[{"model": "m", "features": {"x": 1}}]', Limits()
    ... )
    [(0, RawEvent(model='m', features={'x': 1.0}, model_version=None, event_id=None, timestamp=None,
    prediction=None))]
    >>> typed_events(b'{"model": 7, "features": {}}', Limits()) is None
    True
    """
    if value is None or len(value) > limits.max_message_bytes:
        return None
    try:
        raw = _EVENTS.decode(value)
    except (msgspec.ValidationError, msgspec.DecodeError, RecursionError):
        return None
    if not isinstance(raw, list):
        return [(None, raw)]
    return list(enumerate(raw)) if len(raw) <= limits.max_events_per_message else None


Typed = RawEvent | list[RawEvent]
"""A message as the typed decoder reads it: one event, or an array of events."""


def typed_messages(values: Sequence[bytes | None], limits: Limits) -> list[Typed | None]:
    """``typed_events`` of many messages at once, without its per-message list: each message's
    struct, or its list of structs for an array; None where ``typed_events`` gives None.

    >>> [type(t).__name__ for t in typed_messages(
    ...     [b'{"model": "m", "features": {}}', b'{"model": 7}', None, b'[]'], Limits()
    ... )]
    ['RawEvent', 'NoneType', 'NoneType', 'list']
    """
    decode = _EVENTS.decode
    if None in values or max(map(len, cast("list[bytes]", values)), default=0) > (
        limits.max_message_bytes
    ):
        fits: Sequence[bytes | None] = [
            None if value is None or len(value) > limits.max_message_bytes else value
            for value in values
        ]
    else:
        fits = values
    typed: list[Typed | None] = []
    rest = iter(cast("list[bytes]", fits))  # None: a TypeError below
    while True:  # one pass: a message that fails leaves None and the next ones go on
        try:
            typed.extend(map(decode, rest))
            break
        except (msgspec.ValidationError, msgspec.DecodeError, RecursionError, TypeError):
            typed.append(None)
    if list in set(map(type, typed)):
        limit = limits.max_events_per_message
        typed = [None if t.__class__ is list and len(t) > limit else t for t in typed]
    return typed


def validate_events(
    value: bytes, items: list[tuple[int | None, RawEvent]], kafka_ts: float, limits: Limits
) -> tuple[list[Event], list[Rejection]]:
    """Validate typed events of the message ``value`` (see ``typed_events``), as ``decode_events``
    does."""
    return _validate_items(value, items, kafka_ts, limits, _validate_event)


def _decode(value, kafka_ts, limits, decoder, validate, diagnose):
    if value is None:
        return [], [Rejection(Reason.MALFORMED_JSON, "empty message (null value)", b"")]
    if len(value) > limits.max_message_bytes:
        detail = f"{len(value)} bytes > max_message_bytes={limits.max_message_bytes}"
        return [], [Rejection(Reason.OVERSIZE_MESSAGE, detail, value)]
    try:
        raw = decoder.decode(value)
    except RecursionError:
        return [], [Rejection(Reason.TOO_DEEP, _TOO_DEEP_FOR_DECODER, value)]
    except (msgspec.ValidationError, msgspec.DecodeError):
        return _decode_slowly(value, kafka_ts, limits, validate, diagnose)
    items = list(enumerate(raw)) if isinstance(raw, list) else [(None, raw)]
    if len(items) > limits.max_events_per_message:
        detail = f"{len(items)} events > max_events_per_message={limits.max_events_per_message}"
        return [], [Rejection(Reason.TOO_MANY_EVENTS, detail, value)]
    return _validate_items(value, items, kafka_ts, limits, validate)


def _validate_items(value, items, kafka_ts, limits, validate):
    """Typed items (position in the array or None, struct) into valid ones and rejections."""
    good, bad = [], []
    elements = Elements(value)
    for index, item in items:
        try:
            good.append(validate(item, kafka_ts, limits, index))
        except Invalid as exc:
            bad.append(Rejection(exc.reason, exc.detail, elements.payload(index), index))
    return good, bad


_TOO_DEEP_FOR_DECODER = "JSON nested deeper than the decoder's recursion limit"


def _decode_slowly(value, kafka_ts, limits, validate, diagnose):
    """Re-decode generically to name the reason; salvage the valid elements of an array."""
    if deeper_than(value, limits.max_json_depth):
        return [], [
            Rejection(
                Reason.TOO_DEEP,
                f"JSON nested deeper than max_json_depth={limits.max_json_depth}",
                value,
            )
        ]
    try:
        raw = _GENERIC.decode(value)
    except RecursionError:
        return [], [Rejection(Reason.TOO_DEEP, _TOO_DEEP_FOR_DECODER, value)]
    except msgspec.DecodeError as exc:
        return [], [Rejection(_refused(exc), str(exc), value)]
    if isinstance(raw, list) and len(raw) > limits.max_events_per_message:
        detail = f"{len(raw)} events > max_events_per_message={limits.max_events_per_message}"
        return [], [Rejection(Reason.TOO_MANY_EVENTS, detail, value)]
    good, bad = [], []
    for index, item in enumerate(raw) if isinstance(raw, list) else [(None, raw)]:
        payload = value if index is None else _ENCODE(item)
        reason, detail = diagnose(item, limits)
        if reason is None:
            try:
                typed: Any = msgspec.json.decode(payload, type=_raw_type(validate))
                good.append(validate(typed, kafka_ts, limits, index))
                continue
            except Invalid as exc:
                reason, detail = exc.reason, exc.detail
            except (
                msgspec.ValidationError
            ) as exc:  # what the diagnosis cannot see: an integer beyond the float range
                reason, detail = _refused(exc), str(exc)
        bad.append(Rejection(reason, detail, payload, index))
    return good, bad


def _refused(exc: msgspec.DecodeError) -> Reason:
    return Reason.NON_FINITE_VALUE if "out of range" in str(exc) else Reason.MALFORMED_JSON


def _raw_type(validate) -> type:
    return RawEvent if validate is _validate_event else _RawLabel


class Elements:
    """The bytes to dead-letter for events of one message: the whole message, or one array
    element alone, re-encoded. The message is decoded generically at most once, however many of
    its elements are refused (decoding it per element made an array of n bad events cost n²)."""

    __slots__ = ("_items", "value")

    def __init__(self, value: bytes | None) -> None:
        self.value = value or b""
        self._items: list[Any] | None = None

    def payload(self, index: int | None) -> bytes:
        """Never raises. When the message does not decode generically (a number beyond the
        float range or bytes that are not UTF-8 in a field the typed decoder skipped, nesting
        beyond the encoder's reach), the element's own bytes are cut out of the array as they
        came (:func:`array_elements`); only if even that fails is the whole message the
        payload (the dead letter's batch-index header still names the event)."""
        if index is None:
            return self.value
        try:
            if self._items is None:
                self._items = _GENERIC.decode(self.value)
            item = self._items[index]
            return item if isinstance(item, bytes) else _ENCODE(item)
        except Exception:
            # Not decoded again for the next element: the raw elements, or none (whole message).
            self._items = list(array_elements(self.value) or ())
            return self._items[index] if index < len(self._items) else self.value


_TOKENS = re.compile(rb'"(?:[^"\\]|\\.)*"|[\[\]{}]')
_ARRAY_TOKENS = re.compile(rb'"(?:[^"\\]|\\.)*"|[\[\]{},]')


def array_elements(value: bytes) -> list[bytes] | None:
    """The raw bytes of each element of a top-level JSON array, as they came (strings and
    nesting skipped by a token scan, so bytes that do not decode stay as they are); None when
    ``value`` is not an array that closes.

    >>> array_elements(b' [ {"a": "x,]"}, 1e400 , [2,3]] ')
    [b'{"a": "x,]"}', b'1e400', b'[2,3]']
    >>> array_elements(b'[]'), array_elements(b'{"a": 1}'), array_elements(b'[1, 2')
    ([], None, None)
    """
    text = value.strip()
    if not text.startswith(b"["):
        return None
    elements: list[bytes] = []
    depth, start = 0, 1
    for token in _ARRAY_TOKENS.finditer(text):
        char = token.group()
        if char in (b"[", b"{"):
            depth += 1
        elif char in (b"]", b"}"):
            depth -= 1
            if depth == 0:
                last = text[start : token.start()].strip()
                if last or elements:
                    elements.append(last)
                return elements if token.end() == len(text) else None
        elif char == b"," and depth == 1:
            elements.append(text[start : token.start()].strip())
            start = token.end()
    return None


def deeper_than(value: bytes, limit: int) -> bool:
    """Whether the JSON in ``value`` nests deeper than ``limit`` (brackets inside strings do
    not count). A count of openers first; then one vectorised pass (numpy) over the bytes, or
    a token scan when the message holds backslashes (escaped quotes)."""
    if value.count(b"[") + value.count(b"{") <= limit:
        return False
    if b"\\" in value:
        return _deeper_by_tokens(value, limit)
    codes = np.frombuffer(value, dtype=np.uint8)
    # a closing quote itself reads as inside: no bracket
    in_string = np.cumsum(codes == _QUOTE) % 2 == 1
    steps = np.zeros(len(codes), dtype=np.int32)
    steps[(codes == _OPEN_ARRAY) | (codes == _OPEN_OBJECT)] = 1
    steps[(codes == _CLOSE_ARRAY) | (codes == _CLOSE_OBJECT)] = -1
    steps[in_string] = 0
    return bool(np.cumsum(steps).max() > limit)


_QUOTE, _OPEN_ARRAY, _OPEN_OBJECT, _CLOSE_ARRAY, _CLOSE_OBJECT = b'"[{]}'


def _deeper_by_tokens(value: bytes, limit: int) -> bool:
    """``deeper_than`` for messages with escapes: strings are matched whole and skipped.

    >>> (_deeper_by_tokens(b'{"a": [1, {"b": "\\\\"[[[[[["}]}', 3),
    ...  _deeper_by_tokens(b'[[[[[]]]]]', 4))
    (False, True)
    """
    depth = 0
    for token in _TOKENS.finditer(value):
        char = token.group()
        if char == b"[" or char == b"{":
            depth += 1
            if depth > limit:
                return True
        elif char == b"]" or char == b"}":
            depth -= 1
    return False


# --- validation of typed events ------------------------------------------------------------


def _validate_event(raw: RawEvent, kafka_ts: float, limits: Limits, index: int | None) -> Event:
    _check_name(raw.model, "model", Reason.INVALID_MODEL, limits)
    if len(raw.features) > limits.max_features_per_event:
        detail = (
            f"{len(raw.features)} features > max_features_per_event={limits.max_features_per_event}"
        )
        raise Invalid(Reason.TOO_MANY_FEATURES, detail)
    numeric: dict[str, float] = {}
    categorical: dict[str, str] = {}
    missing: list[str] = []
    for name, value in raw.features.items():
        _check_name(name, "feature name", Reason.INVALID_FEATURE_NAME, limits)
        _classify(name, value, numeric, categorical, missing, limits, Reason.INVALID_FEATURE_VALUE)
    if raw.prediction is not None:
        if PREDICTION in raw.features:
            raise Invalid(
                Reason.INVALID_FEATURES,
                "feature name 'prediction' is reserved for the event's prediction",
            )
        _classify(
            PREDICTION,
            raw.prediction,
            numeric,
            categorical,
            missing,
            limits,
            Reason.INVALID_PREDICTION,
        )
    prediction = numeric.get(PREDICTION, categorical.get(PREDICTION))
    check_ids(raw.model_version, raw.event_id, limits)
    return Event(
        model=raw.model,
        model_version=raw.model_version,
        event_id=raw.event_id,
        timestamp=event_time(raw.timestamp, kafka_ts, limits),
        numeric=numeric,
        categorical=categorical,
        missing=missing,
        prediction=prediction,
        index=index,
    )


def _validate_label(raw: _RawLabel, kafka_ts: float, limits: Limits, index: int | None) -> Label:
    _check_name(raw.model, "model", Reason.INVALID_MODEL, limits)
    _check_event_id(raw.event_id, limits)
    label = raw.label
    if isinstance(label, bool):
        label = float(label)
    elif isinstance(label, float):
        _check_number("label", label, limits)
    elif isinstance(label, str) and len(label) > limits.max_category_length:
        raise Invalid(Reason.CATEGORY_TOO_LONG, f"label longer than {limits.max_category_length}")
    return Label(raw.model, raw.event_id, label, event_time(raw.timestamp, kafka_ts, limits), index)


def check_ids(model_version: str | None, event_id: str | None, limits: Limits) -> None:
    """``model_version`` is a name (it is part of series keys); ``event_id``, when given, a
    non-empty string of bounded length (it is a Redis field of the labels join)."""
    if model_version is not None:
        _check_name(model_version, "model_version", Reason.INVALID_MODEL_VERSION, limits)
    if event_id is not None:
        _check_event_id(event_id, limits)


def _check_event_id(event_id: str, limits: Limits) -> None:
    if not event_id or len(event_id) > limits.max_event_id_length:
        raise Invalid(
            Reason.INVALID_EVENT_ID, f"event_id must be 1..{limits.max_event_id_length} characters"
        )


def _check_number(name: str, value: float, limits: Limits) -> None:
    if not math.isfinite(value):
        raise Invalid(Reason.NON_FINITE_VALUE, f"{name!r} is not finite")
    if abs(value) > limits.max_abs_value:
        raise Invalid(
            Reason.VALUE_OUT_OF_RANGE, f"{name!r} beyond max_abs_value={limits.max_abs_value:g}"
        )


def _classify(name, value, numeric, categorical, missing, limits, reason) -> None:
    if value is None:
        missing.append(name)
    elif isinstance(value, bool):
        categorical[name] = "true" if value else "false"
    elif isinstance(value, float):
        _check_number(name, value, limits)
        numeric[name] = value
    elif isinstance(value, str):
        if len(value) > limits.max_category_length:
            raise Invalid(
                Reason.CATEGORY_TOO_LONG, f"{name!r} value longer than {limits.max_category_length}"
            )
        categorical[name] = value
    else:  # unreachable through the typed decoder; kept as a guard for direct callers
        raise Invalid(reason, f"{name!r} has unsupported type {type(value).__name__}")


# --- whole columns of values (the processor's columnar path) --------------------------------

_NULL = {type(None)}
_NUMBERS = {float, type(None)}
_CATEGORIES = {str, bool, type(None)}


def names_pass(model: str, names: Sequence[str], with_prediction: bool, limits: Limits) -> bool:
    """Whether events of ``model`` with these feature names pass every check of
    ``_validate_event`` that does not look at the values."""
    if len(names) > limits.max_features_per_event or (with_prediction and PREDICTION in names):
        return False
    try:
        _check_name(model, "model", Reason.INVALID_MODEL, limits)
        for name in names:
            _check_name(name, "feature name", Reason.INVALID_FEATURE_NAME, limits)
    except Invalid:
        return False
    return True


def classify_column(
    values: Sequence[Scalar], limits: Limits
) -> np.ndarray | list[str | None] | None:
    """One feature's typed values from many events, classified at once as ``_classify`` does
    each: a float array (NaN: null) for numbers, a list of categories (None: null; booleans
    "true"/"false") for strings and booleans, a list of None if all are null; None if the
    column mixes numbers and categories or holds a value ``_classify`` refuses."""
    types = set(map(type, values))
    if types == _NULL:
        return cast("list[str | None]", list(values))
    if types <= _NUMBERS:  # finite: the typed decoder refuses numbers beyond the float range
        column = np.array(values, dtype=np.float64)
        # NaN (null) compares False
        return None if np.any(np.abs(column) > limits.max_abs_value) else column
    if not types <= _CATEGORIES:
        return None
    # the types are strings, booleans and None here
    categories = cast(
        "list[str | None]",
        [("true" if v else "false") if v.__class__ is bool else v for v in values]
        if bool in types
        else list(values),
    )
    present = set(categories)
    present.discard(None)
    longest = max(map(len, cast("set[str]", present)))  # None discarded
    return categories if longest <= limits.max_category_length else None


def _check_name(name: str, what: str, reason: Reason, limits: Limits) -> None:
    if not name or len(name) > limits.max_name_length or not name.isprintable():
        raise Invalid(reason, f"{what} must be 1..{limits.max_name_length} printable characters")


def event_time(value: float | str | None, kafka_ts: float, limits: Limits) -> float:
    """An event's time in epoch seconds: its ``timestamp`` field, else the Kafka timestamp;
    ``Invalid`` if the field is not a valid time or lies further from the Kafka timestamp than
    the limits' skews (one outlier must not move event-time windows).

    >>> event_time("2026-01-01T00:00:00Z", 0.0, Limits()), event_time(None, 5.0, Limits())
    (1767225600.0, 5.0)
    >>> event_time(7200.0, 0.0, Limits(max_future_skew_s=3600))  # doctest: +NORMALIZE_WHITESPACE
    Traceback (most recent call last):
    ...
    streamdrift.streams.pipeline.codec.Invalid: timestamp 7200s ahead of the Kafka timestamp >
    max_future_skew_s=3600
    """
    if value is None:
        return kafka_ts
    if isinstance(value, float):
        if not math.isfinite(value) or value < 0:
            raise Invalid(Reason.INVALID_TIMESTAMP, "timestamp must be finite epoch seconds >= 0")
        seconds = value
    else:
        seconds = _rfc3339(value)
    if seconds - kafka_ts > limits.max_future_skew_s:
        detail = (
            f"timestamp {seconds - kafka_ts:.0f}s ahead of the Kafka timestamp > "
            f"max_future_skew_s={limits.max_future_skew_s:g}"
        )
        raise Invalid(Reason.TIMESTAMP_SKEW, detail)
    if kafka_ts - seconds > limits.max_past_skew_s:
        detail = (
            f"timestamp {kafka_ts - seconds:.0f}s behind the Kafka timestamp > "
            f"max_past_skew_s={limits.max_past_skew_s:g}"
        )
        raise Invalid(Reason.TIMESTAMP_SKEW, detail)
    return seconds


def _rfc3339(value: str) -> float:
    if len(value) > 64:  # the longest RFC 3339 time is 35 characters: don't parse megabytes
        raise Invalid(Reason.INVALID_TIMESTAMP, "timestamp must be epoch seconds or RFC 3339")
    try:
        parsed = datetime.fromisoformat(value)
    except ValueError:
        raise Invalid(
            Reason.INVALID_TIMESTAMP, "timestamp must be epoch seconds or RFC 3339"
        ) from None
    if parsed.tzinfo is None:
        raise Invalid(Reason.INVALID_TIMESTAMP, "RFC 3339 timestamp needs a UTC offset")
    try:
        return parsed.timestamp()
    except (OverflowError, ValueError):
        raise Invalid(Reason.INVALID_TIMESTAMP, "timestamp out of range") from None


# --- diagnosis of messages the typed decoder refused ----------------------------------------

_SCALARS = (int, float, str, bool, type(None))


def _diagnose_event(item: Any, limits: Limits) -> tuple[Reason | None, str]:
    if not isinstance(item, dict):
        return Reason.NOT_AN_OBJECT, f"event must be a JSON object, got {type(item).__name__}"
    if "model" not in item:
        return Reason.MISSING_MODEL, "required field 'model' is missing"
    if not isinstance(item["model"], str):
        return Reason.INVALID_MODEL, f"'model' must be a string, got {type(item['model']).__name__}"
    if "features" not in item:
        return Reason.MISSING_FEATURES, "required field 'features' is missing"
    features = item["features"]
    if not isinstance(features, dict):
        return (
            Reason.INVALID_FEATURES,
            f"'features' must be an object, got {type(features).__name__}",
        )
    for name, value in features.items():
        if not isinstance(value, _SCALARS):
            return (
                Reason.INVALID_FEATURE_VALUE,
                f"feature {name!r} must be a number, string, boolean or null",
            )
    for field, reason in (
        ("model_version", Reason.INVALID_MODEL_VERSION),
        ("event_id", Reason.INVALID_EVENT_ID),
    ):
        if item.get(field) is not None and not isinstance(item[field], str):
            return reason, f"{field!r} must be a string"
    if not isinstance(item.get("timestamp"), (int, float, str, type(None))) or isinstance(
        item.get("timestamp"), bool
    ):
        return Reason.INVALID_TIMESTAMP, "timestamp must be epoch seconds or RFC 3339"
    if not isinstance(item.get("prediction"), _SCALARS):
        return Reason.INVALID_PREDICTION, "prediction must be a number, string or boolean"
    return None, ""


def _diagnose_label(item: Any, limits: Limits) -> tuple[Reason | None, str]:
    if not isinstance(item, dict):
        return Reason.NOT_AN_OBJECT, f"label must be a JSON object, got {type(item).__name__}"
    if not isinstance(item.get("model"), str):
        return Reason.INVALID_MODEL, "'model' must be a string"
    if not isinstance(item.get("event_id"), str):
        return Reason.INVALID_EVENT_ID, "'event_id' must be a string"
    if not isinstance(item.get("label"), (int, float, str, bool)):
        return Reason.INVALID_LABEL, "'label' must be a number, string or boolean"
    if not isinstance(item.get("timestamp"), (int, float, str, type(None))) or isinstance(
        item.get("timestamp"), bool
    ):
        return Reason.INVALID_TIMESTAMP, "timestamp must be epoch seconds or RFC 3339"
    return None, ""
