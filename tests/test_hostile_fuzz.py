"""Worker-level fuzzing with hostile input (issue 11).

Hypothesis builds hostile Kafka messages *as bytes* (never through ``json.dumps`` of a nested
structure, which would recurse) — deep nesting anywhere, huge strings in every field, floods of
names, extreme and unrepresentable numbers, odd timestamps, random bytes, invalid UTF-8 — mixes
them with valid events into batches, and drives the worker's pure logic the way the runtime does:
``PredictionProcessor.process`` (columnar and per-event), ``LabelProcessor.decode`` + ``apply``
on a ``PartitionState``, and ``Runtime._publish`` (through ``Runtime.handle``).

Properties (one test each):

1. no exception escapes, and no hostile input is dead-lettered as ``internal_error``;
2. accounting: every event of every fresh record is accounted for exactly once (admitted, or one
   dead letter); a message rejected as a whole yields exactly one dead letter (index None);
   the expected counts come from how the message was *built*, never from decoding it;
3. linear cost: the bytes fed to msgspec decoders stay O(message size) whatever the number of
   invalid elements (counted by wrapping the decoders, not timed);
4. a flood of made-up names leaves the partition state within the admission bounds;
5. a label flood leaves pending labels within their bounds, and a duplicated label joins once;
6. the runtime's dead-letter publishing truncates oversize payloads with their length and
   SHA-256 in headers, and survives a publisher whose send fails.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import json
import math
import re
import uuid
from collections import Counter, defaultdict
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from typing import Any

import msgspec
import pytest
from conftest import RecordingPublisher
from hypothesis import HealthCheck, example, given, note, settings
from hypothesis import strategies as st

import streamdrift.streams.pipeline.processor as processor_module
from streamdrift.detectors import CategoricalMonitor
from streamdrift.streams.pipeline import codec
from streamdrift.streams.pipeline.codec import Reason
from streamdrift.streams.pipeline.outcome import DeadLetter, Outcome, Record
from streamdrift.streams.runtime import Runtime, prediction_processor, with_setting_defaults
from streamdrift.streams.settings import Settings
from streamdrift.streams.state.keys import parse_series
from streamdrift.streams.state.partition import PartitionState

TOPIC = "predictions"
LABELS_TOPIC = "labels"
T0 = 1_700_000_000.0  # Kafka time of offset 0 ("2023-11-14T22:13:20Z")
NO_REDIS = "redis://127.0.0.1:9/0"  # never connected to by the pure tests

# Small limits so that every bound is reachable with small inputs; the message size stays at
# the worker's scale so that ~200 KB strings fit (and sometimes overflow it).
FUZZ = Settings(
    redis_url=NO_REDIS,
    input_topic=TOPIC,
    labels_topic=LABELS_TOPIC,
    max_message_bytes=600_000,
    max_events_per_message=200,
    max_features_per_event=8,
    max_name_length=24,
    max_category_length=32,
    max_event_id_length=40,
    max_models=4,
    max_probation_models=3,
    probation_events=5,
    max_features_per_model=6,
    max_new_series_per_message=12,
    max_categories_per_feature=6,
    max_versions_per_model=2,
    max_pending_labels=60,
    max_pending_labels_per_model=6,
    multivariate=True,
)

fuzz = settings(
    max_examples=60,
    deadline=None,
    suppress_health_check=[
        HealthCheck.too_slow,
        HealthCheck.data_too_large,
        HealthCheck.large_base_example,
        HealthCheck.filter_too_much,
    ],
)


# --- building JSON as bytes ------------------------------------------------------------------


def jstr(text: str) -> bytes:
    """A JSON string literal (a str has no depth: json.dumps does not recurse here)."""
    return json.dumps(text, ensure_ascii=False).encode()


@dataclass(frozen=True)
class Frag:
    """A raw JSON fragment; ``bad``: it holds something no JSON decoder can represent
    (NaN/Infinity, a float beyond the double range, invalid UTF-8), so the whole message may
    be refused."""

    raw: bytes
    bad: bool = False

    def __repr__(self) -> str:
        shown = (
            self.raw if len(self.raw) <= 80 else self.raw[:60] + b"...<%d bytes>" % len(self.raw)
        )
        return f"Frag({shown!r}{', bad' if self.bad else ''})"


def deep(depth: int, kind: str, leaf: bytes = b"1") -> bytes:
    """``depth`` nested containers around ``leaf``, built without recursion."""
    if kind == "array":
        return b"[" * depth + leaf + b"]" * depth
    if kind == "object":
        return b'{"a":' * depth + leaf + b"}" * depth
    opening = b"".join(b"[" if i % 2 else b'{"k":' for i in range(depth))
    closing = b"".join(b"]" if i % 2 else b"}" for i in reversed(range(depth)))
    return opening + leaf + closing


def nesting_depth(value: bytes) -> int:
    """The deepest container nesting of JSON text (brackets inside strings do not count)."""
    depth = deepest = 0
    in_string = escaped = False
    for byte in value:
        if in_string:
            if escaped:
                escaped = False
            elif byte == 0x5C:  # backslash
                escaped = True
            elif byte == 0x22:
                in_string = False
        elif byte == 0x22:
            in_string = True
        elif byte in (0x5B, 0x7B):
            depth += 1
            deepest = max(deepest, depth)
        elif byte in (0x5D, 0x7D):
            depth -= 1
    return deepest


SPECIAL_NAMES = [
    "",
    " ",
    "\x1f",
    "a\x1fb",
    "\x00",
    "a\x00b",
    "a\nb",
    "\r\n",
    "\t",
    "\x7f",
    "[bold red]boom[/]",
    "[link=https://evil.example]x[/link]",
    "[/]",
    "\u202eevil",
    "\ufeff",
    "\x1b[31mred",
    "%s%n",
    "../../etc/passwd",
    "prediction",
    "é" * 25,
    "m" * 24,
    "m" * 25,
    "m" * 129,
]

huge_text = st.builds(
    lambda unit, size: (unit * (size // len(unit) + 1))[:size],
    st.text(min_size=1, max_size=3),
    st.sampled_from([25, 33, 41, 129, 257, 1_000, 65_537, 200_000]) | st.integers(0, 200_000),
)
hostile_text = st.sampled_from(SPECIAL_NAMES) | st.text(max_size=12) | huge_text
valid_number = st.one_of(
    st.integers(-1_000, 1_000).map(lambda i: str(i).encode()),
    st.floats(-1e6, 1e6, allow_nan=False).map(lambda f: repr(f).encode()),
)
EXTREME = [
    b"1.7976931348623157e308",
    b"-1.7976931348623157e308",
    b"5e-324",
    b"-5e-324",
    b"-0.0",
    b"0",
    b"1e16",
    b"-1e16",
    b"1e15",
    b"-1e15",
    b"1000000000000001",
    b"0.1e-400",
    b"1e-400",
    b"9" * 400,
    b"-" + b"9" * 400,
    b"123456789012345678901234567890",
]
UNREPRESENTABLE = [b"1e400", b"-1e400", b"1E309", b"NaN", b"Infinity", b"-Infinity", b"nan", b"+1"]
INVALID_UTF8 = [b'"\xff\xfe"', b'"\xc3"', b'"\xed\xa0\x80"', b'"ok\x80"', b'"\xf4\x90\x80\x80"']

depths = st.sampled_from([1, 2, 63, 64, 65, 66, 200, 899, 900, 1000, 3000]) | st.integers(1, 3000)
deep_frag = st.builds(
    lambda d, kind: Frag(deep(d, kind)), depths, st.sampled_from(["array", "object", "mixed"])
)
extreme_frag = st.sampled_from(EXTREME).map(Frag) | st.sampled_from(UNREPRESENTABLE).map(
    lambda b: Frag(b, bad=True)
)
invalid_utf8_frag = st.sampled_from(INVALID_UTF8).map(lambda b: Frag(b, bad=True))
odd_json = st.sampled_from([b"[]", b"{}", b"[1,2]", b'{"a":1}', b"null", b"true", b"false", b'""'])

valid_category = st.sampled_from(["DE", "FR", "US", "card", "cash", "a", "b", "c"])
valid_value = st.one_of(
    valid_number.map(Frag),
    valid_category.map(lambda s: Frag(jstr(s))),
    st.sampled_from([b"true", b"false", b"null"]).map(Frag),
)
hostile_value = st.one_of(
    extreme_frag,
    hostile_text.map(lambda s: Frag(jstr(s))),
    deep_frag,
    invalid_utf8_frag,
    odd_json.map(Frag),
    st.text(max_size=5).map(lambda s: Frag(jstr(s))),
)
any_value = valid_value | hostile_value

VALID_MODELS = ["m", "n", "fraud"]
VALID_FEATURES = ["x", "y", "c", "d"]
valid_timestamp = st.sampled_from(
    [b'"2023-11-14T22:13:20Z"', b"1700000000", b"1699999999.5", b'"2023-11-14T22:13:20+00:00"']
)
odd_timestamp = st.one_of(
    st.sampled_from(
        [
            b"1e18",
            b"-1",
            b"0",
            b"-0.0",
            b"1e16",
            b"5e-324",
            b"1.7976931348623157e308",
            b'"2023-11-14T22:13:20"',
            b'"1700000000"',
            b'""',
            b'"9999-12-31T23:59:59+00:00"',
            b'"0001-01-01T00:00:00+00:00"',
            b'"0001-01-01T00:00:00+14:00"',
            b'"2023-11-14T22:13:20+25:00"',
            b'"2023-02-30T00:00:00Z"',
            b'"yesterday"',
            b"true",
            b"[]",
            b"{}",
            b'"2033-11-14T22:13:20Z"',
            b'"1923-11-14T22:13:20Z"',
        ]
    ).map(Frag),
    st.sampled_from(UNREPRESENTABLE).map(lambda b: Frag(b, bad=True)),
    st.integers(1, 200_000).map(lambda n: Frag(b'"2023-11-14T22:13:20' + b"0" * n + b'Z"')),
    st.integers(1, 200_000).map(lambda n: Frag(b'"2023-11-14T22:13:20Z' + b" " * n + b'"')),
    deep_frag,
)


def obj(fields: Iterable[tuple[bytes, Frag]]) -> Frag:
    fields = list(fields)
    return Frag(
        b"{" + b",".join(k + b":" + v.raw for k, v in fields) + b"}", any(v.bad for _, v in fields)
    )


@st.composite
def features(draw) -> Frag:
    how = draw(
        st.sampled_from(["valid", "valid", "mixed", "hostile", "many", "not_an_object", "deep"])
    )
    if how == "not_an_object":
        return draw(st.one_of(odd_json.map(Frag), hostile_value))
    if how == "deep":
        return draw(deep_frag)
    if how == "many":
        count = draw(st.sampled_from([9, 50, 600]))
        return obj((jstr(f"f{i}"), Frag(b"1")) for i in range(count))
    names = (
        st.sampled_from(VALID_FEATURES)
        if how == "valid"
        else st.sampled_from(VALID_FEATURES) | hostile_text
    )
    values = valid_value if how == "valid" else any_value
    pairs = draw(st.lists(st.tuples(names, values), max_size=6))
    return obj((jstr(name), value) for name, value in pairs)


@dataclass(frozen=True)
class Element:
    """One event (an object) of a message, or any other JSON value (``raw``).

    Unless it brings its own ``event_id``, an object gets a unique tag as event_id at render
    time and, unless it brings its own, the prediction 0.5: if such an event is admitted, it
    must show up as exactly one join (model, tag) in the outcome.
    """

    fields: tuple[tuple[bytes, Frag], ...] = ()
    raw: Frag | None = None

    @property
    def own(self) -> set[bytes]:
        return {key for key, _ in self.fields}

    @property
    def tagged(self) -> bool:
        if self.raw is not None or b'"event_id"' in self.own:
            return False
        return dict(self.fields).get(b'"prediction"', Frag(b"0.5")).raw != b"null"

    def render(self, tag: str | None) -> Frag:
        if self.raw is not None:
            return self.raw
        fields = list(self.fields)
        if tag is not None and b'"event_id"' not in self.own:
            fields.append((b'"event_id"', Frag(jstr(tag))))
        if b'"prediction"' not in self.own:
            fields.append((b'"prediction"', Frag(b"0.5")))
        return obj(fields)


@st.composite
def events(draw, valid: bool = False) -> Element:
    """A prediction event: valid, or with any of its fields hostile (or missing)."""
    if valid:
        pairs = draw(st.lists(st.tuples(st.sampled_from(VALID_FEATURES), valid_value), max_size=4))
        fields = [
            (b'"model"', Frag(jstr(draw(st.sampled_from(VALID_MODELS))))),
            (b'"features"', obj((jstr(n), v) for n, v in pairs)),
        ]
        if draw(st.booleans()):
            fields.append((b'"timestamp"', Frag(draw(valid_timestamp))))
        return Element(tuple(fields))
    if draw(st.integers(0, 9)) == 0:  # not an object at all
        return Element(raw=draw(st.one_of(odd_json.map(Frag), hostile_value, deep_frag)))
    fields: list[tuple[bytes, Frag]] = []
    model = draw(
        st.one_of(
            st.sampled_from(VALID_MODELS).map(lambda s: Frag(jstr(s))),
            hostile_text.map(lambda s: Frag(jstr(s))),
            hostile_value,
            st.none(),
        )
    )
    if model is not None:
        fields.append((b'"model"', model))
    feats = draw(st.one_of(features(), st.none()))
    if feats is not None:
        fields.append((b'"features"', feats))
    optional = {
        b'"model_version"': st.one_of(
            st.sampled_from(["1", "2", "3"]).map(lambda s: Frag(jstr(s))),
            hostile_text.map(lambda s: Frag(jstr(s))),
            hostile_value,
        ),
        b'"timestamp"': st.one_of(valid_timestamp.map(Frag), odd_timestamp),
        b'"prediction"': st.one_of(valid_value, hostile_value),
        b'"event_id"': st.one_of(hostile_text.map(lambda s: Frag(jstr(s))), hostile_value),
        b'"extra"': st.one_of(deep_frag, hostile_value),
    }
    for key, strategy in optional.items():
        if draw(st.integers(0, 3)) == 0:
            fields.append((key, draw(strategy)))
    return Element(tuple(draw(st.permutations(fields))))


# --- messages: what was built, and what that means for accounting -----------------------------


@dataclass(frozen=True)
class Spec:
    """A message to build: one event (``single``), a JSON array of ``elements``, or raw bytes."""

    single: Element | None = None
    elements: tuple[Element, ...] | None = None
    raw: bytes | None = None
    raw_is_none: bool = False

    def __repr__(self) -> str:
        if self.single is not None:
            return f"Spec(single={self.single!r})"
        if self.elements is not None:
            return f"Spec(elements={list(self.elements)!r})"
        raw = (
            self.raw
            if self.raw is None or len(self.raw) <= 80
            else self.raw[:60] + b"...<%d bytes>" % len(self.raw)
        )
        return f"Spec(raw={raw!r})"


@dataclass
class Built:
    value: bytes | None
    array: bool  # a JSON array as built: per-element accounting applies (unless rejected whole)
    n: int  # events the message holds: the array's length, else 1
    whole_ok: bool  # may legitimately be rejected as a whole (one dead letter, index None)
    # position -> tag of the tagged events
    tags: dict[int | None, str] = field(default_factory=dict)
    elements: dict[int, bytes] = field(default_factory=dict)  # position -> the element's bytes


def _refuse_constant(name: str) -> Any:
    raise ValueError(name)


def oracle_count(value: bytes | None) -> tuple[bool, int]:
    """(is a JSON array, events) of raw bytes, decided by Python's json (never the code under
    test). Unparseable: (False, 1)."""
    if value is None:
        return False, 1
    try:
        parsed = json.loads(value.decode("utf-8"), parse_constant=_refuse_constant)
    except (ValueError, RecursionError):
        return False, 1
    return (True, len(parsed)) if isinstance(parsed, list) else (False, 1)


def build(spec: Spec, next_tag: Iterable[str], limits: Settings) -> Built:
    tags = iter(next_tag)
    if spec.raw_is_none or spec.raw is not None:
        value = None if spec.raw_is_none else spec.raw
        array, n = oracle_count(value)
        return Built(value, array, n, whole_ok=True)
    if (
        spec.single is not None and spec.single.raw is not None
    ):  # any JSON value as the whole message
        array, n = oracle_count(spec.single.raw.raw)
        return Built(spec.single.raw.raw, array, n, whole_ok=True)
    if spec.single is not None:
        tag = next(tags) if spec.single.tagged else None
        frag = spec.single.render(tag)
        built = Built(frag.raw, False, 1, whole_ok=True, tags={None: tag} if tag else {})
        return built
    assert spec.elements is not None
    frags, built_tags = [], {}
    for index, element in enumerate(spec.elements):
        tag = next(tags) if element.tagged else None
        if tag:
            built_tags[index] = tag
        frags.append(element.render(tag))
    value = b"[" + b",".join(f.raw for f in frags) + b"]"
    whole_ok = (
        any(f.bad for f in frags)
        or len(value) > limits.max_message_bytes
        or len(frags) > limits.max_events_per_message
        or nesting_depth(value) > limits.max_json_depth
    )
    return Built(
        value, True, len(frags), whole_ok, built_tags, {i: f.raw for i, f in enumerate(frags)}
    )


RAW_MESSAGES = st.one_of(
    st.binary(max_size=300).map(lambda b: Spec(raw=b)),
    st.sampled_from(
        [
            b"",
            b" ",
            b"null",
            b"[]",
            b"{}",
            b"[[]]",
            b"[",
            b"]",
            b"{",
            b'{"model":',
            b"[" * 5,
            b"NaN",
            b"Infinity",
            b"1e400",
            b'"\xff"',
            b"\xff\xfe",
            b"\xef\xbb\xbf" + b'{"model":"m","features":{}}',
            b'{"model":"m","features":{}}{"model":"m","features":{}}',
            b'{"model":"m","features":{}} x',
            b'[{"model":"m","features":{}}] ]',
            b" " * 10_000,
            b"\x00" * 100,
            b'{"model":"m","features":{}}\x00',
        ]
    ).map(lambda b: Spec(raw=b)),
    deep_frag.map(lambda f: Spec(raw=f.raw)),
    st.just(Spec(raw_is_none=True)),
    st.integers(1, 200_000).map(lambda n: Spec(raw=b'{"model":"' + b"m" * n + b'","features":{}}')),
)


def arrays(element: st.SearchStrategy[Element], max_size: int) -> st.SearchStrategy[Spec]:
    return st.lists(element, max_size=max_size).map(lambda items: Spec(elements=tuple(items)))


@st.composite
def steady(draw) -> Spec:
    """8..20 valid events of one shape: the columnar path takes these once the model is known."""
    model = draw(st.sampled_from(VALID_MODELS))
    count = draw(st.integers(8, 20))
    values = draw(st.lists(valid_number, min_size=count, max_size=count))
    category = draw(valid_category)
    return Spec(
        elements=tuple(
            Element(
                (
                    (b'"model"', Frag(jstr(model))),
                    (b'"features"', obj([(b'"x"', Frag(v)), (b'"c"', Frag(jstr(category)))])),
                )
            )
            for v in values
        )
    )


@st.composite
def many_invalid(draw) -> Spec:
    """An array of many events, most of them invalid (sometimes more than
    max_events_per_message)."""
    count = draw(st.sampled_from([50, 199, 200, 201, 500]))
    kinds = [
        Element(((b'"model"', Frag(b"7")), (b'"features"', Frag(b"{}")))),
        Element(((b'"model"', Frag(jstr("bad\x00name"))), (b'"features"', Frag(b"{}")))),
        Element(((b'"model"', Frag(b'"m"')), (b'"features"', Frag(b'{"x":1e16}')))),
        Element(
            (
                (b'"model"', Frag(b'"m"')),
                (b'"features"', Frag(b'{"x":1}')),
                (b'"timestamp"', Frag(b"1e18")),
            )
        ),
        Element(raw=Frag(b"1")),
        Element(
            ((b'"model"', Frag(b'"m"')), (b'"features"', Frag(b'{"x":1}')))
        ),  # a valid one among them
    ]
    picks = draw(st.lists(st.integers(0, len(kinds) - 1), min_size=count, max_size=count))
    return Spec(elements=tuple(kinds[i] for i in picks))


messages = st.one_of(
    events().map(lambda e: Spec(single=e)),
    events(valid=True).map(lambda e: Spec(single=e)),
    arrays(st.one_of(events(), events(valid=True)), 12),
    steady(),
    many_invalid(),
    RAW_MESSAGES,
)


@dataclass
class Batch:
    records: list[Record]
    built: dict[int, Built]  # fresh offset -> built message
    replays: int  # records at the head that are redeliveries of earlier offsets


@st.composite
def batches(draw, message: st.SearchStrategy[Spec] = messages, max_batches: int = 3) -> list[Batch]:
    """1..3 consecutive batches of one partition; a later one may start with redeliveries of
    the previous batch's last records (as after a rebalance): those are duplicates."""
    serial = iter(f"t{i}" for i in range(10**9))
    out: list[Batch] = []
    offset = draw(st.integers(0, 5))
    for _ in range(draw(st.integers(1, max_batches))):
        specs = draw(st.lists(message, min_size=1, max_size=6))
        replay = draw(st.integers(0, 2)) if out else 0
        previous = [r for r in out[-1].records if r.offset in out[-1].built] if out else []
        replayed = previous[len(previous) - replay :] if replay else []
        records, built = list(replayed), {}
        for spec in specs:
            b = build(spec, serial, FUZZ)
            built[offset] = b
            records.append(Record(offset, T0 + offset, b.value))
            offset += draw(st.integers(1, 3))  # gaps: compacted or transactional offsets
        out.append(Batch(records, built, len(replayed)))
    return out


def processor_for(s: Settings):
    return prediction_processor(s, with_setting_defaults({}, s))


def run(
    batch_list: list[Batch], columnar: bool, s: Settings = FUZZ
) -> tuple[PartitionState, list[Outcome]]:
    proc = processor_for(s)
    state = PartitionState(TOPIC, 0, 1, None)
    return state, [proc.process(state, b.records, columnar=columnar) for b in batch_list]


def describe(letters: Iterable[DeadLetter]) -> list[tuple[int, int | None, str, str]]:
    return [(d.offset, d.index, d.reason.value, d.detail[:120]) for d in letters]


# --- 1. nothing escapes ---------------------------------------------------------------------------


def _example_batch(*values: bytes) -> list[Batch]:
    """A batch of these messages (built as raw: counted by the oracle) for ``@example``."""
    built = {
        offset: Built(value, *oracle_count(value), whole_ok=True)
        for offset, value in enumerate(values)
    }
    return [
        Batch([Record(offset, T0 + offset, value) for offset, value in enumerate(values)], built, 0)
    ]


# The typed decoder skips an unknown field holding 1e400; the generic re-decode for the element's
# dead-letter payload then raises (found by this fuzzer).
UNDECODABLE_EXTRA = b'[{"model":"m","features":{},"event_id":"","extra":1e400}]'


@fuzz
@example(_example_batch(UNDECODABLE_EXTRA))
@given(batches())
def test_no_exception_escapes_the_prediction_processor(batch_list):
    for columnar in (True, False):
        state, outcomes = run(batch_list, columnar)  # raises: the property fails with the traceback
        for outcome in outcomes:
            internal = [d for d in outcome.dead_letters if d.reason is Reason.INTERNAL_ERROR]
            assert not internal, (
                f"columnar={columnar}: hostile input hit a bug: {describe(internal)}"
            )
            assert not outcome.failed_series, (
                f"columnar={columnar}: monitors failed: {outcome.failed_series}"
            )
        for name in state.checkpoint_fields():  # the state must still serialise
            assert isinstance(name, str)


# --- 2. accounting ----------------------------------------------------------------------------


def check_accounting(batch: Batch, outcome: Outcome, columnar: bool) -> None:
    where = f"columnar={columnar}"
    assert outcome.duplicates == batch.replays, (
        f"{where}: {outcome.duplicates} duplicates, {batch.replays} redelivered"
    )
    letters: dict[int, list[DeadLetter]] = defaultdict(list)
    for letter in outcome.dead_letters:
        letters[letter.offset].append(letter)
    assert set(letters) <= set(batch.built), (
        f"{where}: dead letters of unknown/duplicate offsets "
        f"{sorted(set(letters) - set(batch.built))}"
    )
    joined = Counter(event_id for _, event_id, _ in outcome.joins)
    twice = [tag for tag, count in joined.items() if count > 1]
    assert not twice, f"{where}: events joined twice: {twice}"
    expected = 0
    for offset, built in batch.built.items():
        mine = letters.get(offset, [])
        keys = [d.index for d in mine]
        assert len(keys) == len(set(keys)), (
            f"{where}: offset {offset}: a dead letter twice for one event: {describe(mine)}"
        )
        size = len(built.value or b"")
        for d in mine:
            assert len(d.payload) <= max(size, 0), (
                f"{where}: offset {offset}: dead letter of {len(d.payload)} bytes > message of "
                f"{size}"
            )
        whole = [d for d in mine if d.index is None]
        if whole:
            assert len(mine) == 1, (
                f"{where}: offset {offset}: rejected whole and per event: {describe(mine)}"
            )
            assert not built.array or built.whole_ok, (
                f"{where}: offset {offset}: an array of {built.n} ordinary events rejected as a "
                f"whole: {describe(mine)}"
            )
            assert whole[0].payload == (built.value or b""), (
                f"{where}: offset {offset}: whole-message dead letter is not the message"
            )
            leaked = [tag for tag in built.tags.values() if tag in joined]
            assert not leaked, (
                f"{where}: offset {offset}: rejected whole, yet events joined: {leaked}"
            )
            continue
        assert built.array or not mine, (
            f"{where}: offset {offset}: a single-event message got indexed dead letters "
            f"{describe(mine)}"
        )
        assert all(0 <= i < built.n for i in keys), (
            f"{where}: offset {offset}: indices {keys} outside 0..{built.n - 1}"
        )
        expected += built.n - len(mine)
        for index, tag in built.tags.items():
            assert (tag in joined) != (index in keys), (
                f"{where}: offset {offset} event {index}: joined={tag in joined}, "
                f"dead-lettered={index in keys} (exactly one expected) {describe(mine)}"
            )
        for d in mine:
            if d.index is not None and d.index in built.elements:
                try:
                    want = json.loads(built.elements[d.index])
                except (ValueError, RecursionError):
                    continue
                assert json.loads(d.payload) == want, (
                    f"{where}: offset {offset} event {d.index}: payload is not the element"
                )
    assert outcome.events == expected, (
        f"{where}: outcome.events={outcome.events}, but built events minus dead letters = "
        f"{expected} (letters {describe(outcome.dead_letters)[:20]})"
    )


def _elements_example(extra: bytes) -> list[Batch]:
    """Found by this fuzzer: an array whose first element holds ``extra`` (bytes no decoder
    represents) and whose second is refused (a feature that changed type): the second's dead
    letter must be that element alone, not the whole message."""
    first = b'{"model":"m","features":{"x":0},"event_id":"t0","prediction":0.5}'
    elements = {
        0: b'{"model":"m","features":{},"model_version":"1","extra":'
        + extra
        + b',"event_id":"t1","prediction":0.5}',
        1: b'{"model":"m","features":{"x":"DE"},"event_id":"t2","prediction":0.5}',
    }
    array = b"[" + elements[0] + b"," + elements[1] + b"]"
    return [
        Batch(
            [Record(0, T0, b"[]"), Record(1, T0 + 1, first)],
            {
                0: Built(b"[]", True, 0, whole_ok=True),
                1: Built(first, False, 1, whole_ok=True, tags={None: "t0"}),
            },
            0,
        ),
        Batch(
            [Record(2, T0 + 2, array)],
            {2: Built(array, True, 2, whole_ok=True, tags={0: "t1", 1: "t2"}, elements=elements)},
            0,
        ),
    ]


@fuzz
@example(_elements_example(b'"\xff\xfe"'))  # not UTF-8
@example(_elements_example(b"1e400"))
@given(batches())
def test_every_event_of_every_fresh_record_is_accounted_for_once(batch_list):
    for columnar in (True, False):
        _, outcomes = run(batch_list, columnar)
        for batch, outcome in zip(batch_list, outcomes, strict=True):
            check_accounting(batch, outcome, columnar)


@fuzz
@given(batches())
def test_admitted_events_satisfy_the_input_limits(batch_list):
    """What gets in (seen through its join) is within every limit: names, event ids, times."""
    s = FUZZ
    for columnar in (True, False):
        _, outcomes = run(batch_list, columnar)
        for batch, outcome in zip(batch_list, outcomes, strict=True):
            kafka = {
                tag: T0 + offset for offset, b in batch.built.items() for tag in b.tags.values()
            }
            for model, event_id, packed in outcome.joins:
                prediction, version, time = msgspec.msgpack.decode(packed)
                assert 0 < len(model) <= s.max_name_length and model.isprintable(), (
                    f"model {model[:40]!r} admitted"
                )
                assert 0 < len(event_id) <= s.max_event_id_length, (
                    f"event_id of {len(event_id)} chars admitted"
                )
                assert version is None or (
                    0 < len(version) <= s.max_name_length and version.isprintable()
                ), f"model_version {version[:40]!r} admitted (\\x1f would corrupt series names)"
                if isinstance(prediction, float):
                    assert math.isfinite(prediction) and abs(prediction) <= s.max_abs_value, (
                        f"prediction {prediction!r} admitted"
                    )
                if event_id in kafka:
                    assert (
                        kafka[event_id] - s.max_past_skew_s
                        <= time
                        <= kafka[event_id] + s.max_future_skew_s
                    ), f"event time {time!r} admitted for Kafka time {kafka[event_id]}"
            if outcome.max_event_time is not None:
                latest = max(r.timestamp for r in batch.records)
                assert outcome.max_event_time <= latest + s.max_future_skew_s, (
                    f"event time {outcome.max_event_time!r} admitted"
                )


@fuzz
@given(batches())
def test_the_columnar_and_per_event_paths_agree_on_hostile_input(batch_list):
    (_, fast), (_, slow) = run(batch_list, True), run(batch_list, False)
    for a, b in zip(fast, slow, strict=True):
        assert (a.events, a.duplicates) == (b.events, b.duplicates)
        assert sorted((d.offset, d.index or -1, d.reason.value) for d in a.dead_letters) == sorted(
            (d.offset, d.index or -1, d.reason.value) for d in b.dead_letters
        )
        assert a.joins == b.joins


# --- 3. linear cost -------------------------------------------------------------------------------


class CountingDecoder:
    """Wraps a msgspec decoder and records the size of every buffer it decodes."""

    def __init__(self, inner: Any, sizes: list[int]) -> None:
        self._inner, self._sizes = inner, sizes

    def decode(self, buf: Any, *args: Any, **kwargs: Any) -> Any:
        self._sizes.append(len(buf))
        return self._inner.decode(buf, *args, **kwargs)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._inner, name)


@contextlib.contextmanager
def counting_decodes() -> Iterator[list[int]]:
    """Sizes of every JSON buffer msgspec decodes for the codec and the processor meanwhile
    (their module-level decoders wrapped, and ``msgspec.json.decode``)."""
    sizes: list[int] = []
    real_decode = msgspec.json.decode

    def decode(buf: Any, *args: Any, **kwargs: Any) -> Any:
        sizes.append(len(buf))
        return real_decode(buf, *args, **kwargs)

    with pytest.MonkeyPatch.context() as patch:
        for module in (codec, processor_module):
            for name, value in list(vars(module).items()):
                if isinstance(value, msgspec.json.Decoder):
                    patch.setattr(module, name, CountingDecoder(value, sizes))
        patch.setattr(msgspec.json, "decode", decode)
        yield sizes


COST = Settings(
    redis_url=NO_REDIS,
    max_events_per_message=5_000,
    max_models=2,
    max_probation_models=1,
    max_new_series_per_message=1_000,
    multivariate=False,
)
INVALID_KINDS = {
    # accepted by the typed decoder, refused by validation
    "bad_name": lambda i: b'{"model":"bad\\u0000name","features":{}}',
    "out_of_range": lambda i: b'{"model":"m","features":{"x":1e16}}',
    "skewed": lambda i: b'{"model":"m","features":{"x":1},"timestamp":1e18}',
    # refused by the typed decoder: the diagnosis path
    "not_a_string": lambda i: b'{"model":7,"features":{}}',
    "not_an_object": lambda i: b"1",
    # valid, refused by admission: a flood of distinct models
    "new_model": lambda i: b'{"model":"flood%d","features":{"x":1}}' % i,
}


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    kinds=st.lists(st.sampled_from(sorted(INVALID_KINDS)), min_size=1, max_size=3),
    count=st.integers(100, 3_000),
    columnar=st.booleans(),
)
def test_a_message_of_many_invalid_events_is_decoded_a_constant_number_of_times(
    kinds, count, columnar
):
    value = b"[" + b",".join(INVALID_KINDS[kinds[i % len(kinds)]](i) for i in range(count)) + b"]"
    proc, state = processor_for(COST), PartitionState(TOPIC, 0, 1, None)
    with counting_decodes() as decoded_sizes:
        outcome = proc.process(state, [Record(0, T0, value)], columnar=columnar)
    whole = sum(1 for size in decoded_sizes if size >= len(value))
    note(
        f"{len(decoded_sizes)} decodes, {sum(decoded_sizes)} bytes for a message of {len(value)} "
        f"bytes, {whole} of it whole"
    )
    assert whole <= 4, (
        f"the whole message ({count} events, {len(value)} bytes) was decoded {whole} times"
    )
    assert sum(decoded_sizes) <= 8 * len(value) + 1_000, (
        f"{sum(decoded_sizes)} bytes decoded for a message of {len(value)} bytes ({count} "
        "events): not linear"
    )
    assert all(len(d.payload) <= len(value) for d in outcome.dead_letters)
    assert outcome.events + len(outcome.dead_letters) == count


@settings(max_examples=15, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(count=st.integers(100, 3_000))
def test_a_labels_message_of_many_invalid_labels_is_decoded_a_constant_number_of_times(count):
    bad = [
        b'{"model":"m","event_id":"","label":1}',
        b'{"model":7,"event_id":"e","label":1}',
        b'{"model":"m","event_id":"e","label":1e16}',
    ]
    value = b"[" + b",".join(bad[i % len(bad)] for i in range(count)) + b"]"
    lp, state = label_processor(COST), PartitionState(LABELS_TOPIC, 0, 1, None)
    with counting_decodes() as decoded_sizes:
        labels, outcome = lp.decode(state, [Record(0, T0, value)], T0)
    whole = sum(1 for size in decoded_sizes if size >= len(value))
    assert whole <= 4, f"the whole labels message ({count} labels) was decoded {whole} times"
    assert sum(decoded_sizes) <= 8 * len(value) + 1_000, (
        f"{sum(decoded_sizes)} bytes decoded for {len(value)}: not linear"
    )
    assert len(labels) + len(outcome.dead_letters) == count


# --- 4. a flood of names ------------------------------------------------------------------------

FLOOD = Settings(
    redis_url=NO_REDIS,
    max_models=6,
    max_probation_models=3,
    probation_events=5,
    max_features_per_model=4,
    max_new_series_per_message=8,
    max_new_series_per_s=40.0,
    max_versions_per_model=2,
    max_categories_per_feature=5,
    max_name_length=24,
    multivariate=False,
)
ESTABLISHED = ["est0", "est1"]


def series_of(state: PartitionState) -> set[str]:
    return set(state.monitors) | set(state.unknown_missing)


def held_models(state: PartitionState) -> set[str]:
    return (
        set(state.features_by_model)
        | set(state.versions)
        | {parse_series(s)[0] for s in series_of(state)}
    )


flood_names = st.one_of(
    st.integers(0, 10**6).map(lambda i: f"flood{i}"),
    st.sampled_from(
        ["[bold]x[/]", "[link=https://e.example]y[/link]", "é" * 24, "m" * 24, "a b", "%s"]
    ),
    st.text(
        alphabet=st.characters(min_codepoint=33, max_codepoint=0x2FFF), min_size=1, max_size=24
    ),
)


@st.composite
def flood_messages(draw) -> list[bytes]:
    """Messages that each invent models, versions, features and categories. A made-up name
    comes back at most ``probation_events - 1`` times: each stays on probation."""
    out: list[bytes] = []
    uses: Counter[str] = Counter()
    for _ in range(draw(st.integers(5, 30))):
        items = []
        for _ in range(draw(st.integers(1, 10))):
            model = draw(flood_names)
            if uses[model] >= FLOOD.probation_events - 1 or model in ESTABLISHED:
                model = f"uniq{sum(uses.values())}"
            uses[model] += 1
            version = draw(
                st.one_of(
                    st.none(),
                    st.integers(0, 9).map(str),
                    st.sampled_from(["a\x1fb", "v\x1f", "\x1f"]),
                )
            )
            names = draw(
                st.lists(
                    st.one_of(st.integers(0, 30).map(lambda i: f"f{i}"), st.just("x")),
                    min_size=1,
                    max_size=6,
                )
            )
            feats = {
                name: draw(
                    st.one_of(
                        st.floats(-10, 10), st.integers(0, 50).map(lambda i: f"cat{i}"), st.none()
                    )
                )
                for name in names
            }
            body: dict[str, Any] = {"model": model, "features": feats}
            if version is not None:
                body["model_version"] = version
            items.append(body)
        out.append(json.dumps(items if len(items) > 1 else items[0]).encode())
    return out


def check_bounds(state: PartitionState, s: Settings, where: str) -> None:
    models = held_models(state)
    assert len(models) <= s.max_models, (
        f"{where}: {len(models)} models held > max_models={s.max_models}"
    )
    flood = models - set(ESTABLISHED)
    assert len(flood) <= s.max_probation_models, (
        f"{where}: {len(flood)} made-up models held > "
        f"max_probation_models={s.max_probation_models}: {sorted(flood)[:8]}"
    )
    assert set(ESTABLISHED) <= models, (
        f"{where}: the flood evicted established models: {set(ESTABLISHED) - models}"
    )
    per_model: dict[str, set[str]] = defaultdict(set)
    versions: dict[str, set[str | None]] = defaultdict(set)
    for name in series_of(state):
        model, version, feature = parse_series(name)
        per_model[model].add(feature)
        versions[model].add(version)
        assert model in state.features_by_model and feature in state.features_by_model[model], (
            f"{where}: series {name!r} of no admitted model/feature"
        )
        assert version in state.versions.get(model, []), (
            f"{where}: series {name!r} parses to version {version!r}, not one of "
            f"{state.versions.get(model)} (a model_version with \\x1f corrupts series names)"
        )
    for model, names in state.features_by_model.items():
        assert len(names) <= s.max_features_per_model, (
            f"{where}: {model!r} holds {len(names)} features"
        )
    for model, names in per_model.items():
        assert len(names) <= s.max_features_per_model, (
            f"{where}: {model!r} has series of {len(names)} features"
        )
    for model, seen in state.versions.items():
        assert len(seen) <= s.max_versions_per_model, (
            f"{where}: {model!r} holds {len(seen)} versions"
        )
    for model, seen in versions.items():
        assert len(seen) <= s.max_versions_per_model, (
            f"{where}: {model!r} has series of {len(seen)} versions"
        )
    for name, monitor in state.monitors.items():
        if isinstance(monitor, CategoricalMonitor):
            assert monitor.distinct <= s.max_categories_per_feature, (
                f"{where}: {name!r} counts {monitor.distinct} categories"
            )


def _bodies(*bodies: Any) -> list[bytes]:
    return [json.dumps(body).encode() for body in bodies]


_F4 = {"f0": 1.0, "f1": 1.0, "f2": 1.0, "f3": 1.0}


# Found by this fuzzer. New versions of known models create series that no budget counts
# (9 new series from one message, max_new_series_per_message=8):
@example(
    flood=_bodies(
        {"model": "a", "features": _F4},
        {"model": "b", "features": _F4},
        {"model": "c", "features": {"f0": 1.0}},
        [
            {"model": "a", "model_version": "1", "features": _F4},
            {"model": "b", "model_version": "1", "features": _F4},
            {"model": "c", "model_version": "1", "features": {"f0": 1.0}},
        ],
    ),
    per_batch=1,
    columnar=False,
)
# A model evicted from probation and re-admitted within one batch keeps the series of its
# events before the eviction, but not their features in features_by_model:
@example(
    flood=_bodies(
        *({"model": m, "features": {"f0": 1.0}} for m in "abcd"),
        {"model": "a", "features": {"x": 1.0}},
    ),
    per_batch=5,
    columnar=False,
)
@settings(
    max_examples=40,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
@given(flood=flood_messages(), per_batch=st.integers(1, 4), columnar=st.booleans())
def test_a_flood_of_made_up_names_keeps_the_partition_state_bounded(flood, per_batch, columnar):
    s = FLOOD
    proc = processor_for(s)
    state = PartitionState(TOPIC, 0, 1, None)
    warm = [
        json.dumps({"model": m, "features": {"x": float(i), "c": "a"}}).encode()
        for i in range(s.probation_events + 1)
        for m in ESTABLISHED
    ]
    offset = 0
    first = proc.process(
        state, [Record(i, T0 + i * 0.01, v) for i, v in enumerate(warm)], columnar=columnar
    )
    assert first.events == len(warm) and not first.dead_letters, describe(first.dead_letters)
    offset = len(warm)
    start, created = T0 + offset * 0.01 + 10.0, 0
    clock = start
    for i in range(0, len(flood), per_batch):
        chunk = flood[i : i + per_batch]
        records = []
        for value in chunk:
            clock += 0.05
            records.append(Record(offset, clock, value))
            offset += 1
        before = series_of(state)
        proc.process(state, records, columnar=columnar)
        new = series_of(state) - before
        created += len(new)
        assert len(new) <= s.max_new_series_per_message * len(chunk), (
            f"{len(chunk)} messages created {len(new)} series > "
            f"max_new_series_per_message={s.max_new_series_per_message} each"
        )
        check_bounds(state, s, f"after offset {offset - 1}")
    # one second's worth, at least one message's
    burst = max(s.max_new_series_per_s, s.max_new_series_per_message)
    budget = s.max_new_series_per_s * (clock - start) + burst
    assert created <= budget, (
        f"{created} series created in {clock - start:.2f} s of Kafka time > rate budget "
        f"{budget:.0f}"
    )
    after = proc.process(
        state,
        [Record(offset, clock + 1, json.dumps({"model": "est0", "features": {"x": 1.0}}).encode())],
        columnar=columnar,
    )
    assert after.events == 1 and not after.dead_letters, (
        f"an established model is locked out: {describe(after.dead_letters)}"
    )


# --- 5. labels --------------------------------------------------------------------------------


def label_processor(s: Settings):
    """The runtime's label processor for these settings (however the runtime wires it)."""
    runtime = Runtime(s, {}, RecordingPublisher())
    return runtime.labels


@st.composite
def label_elements(draw) -> Element:
    if draw(st.integers(0, 9)) == 0:
        return Element(raw=draw(st.one_of(odd_json.map(Frag), hostile_value)))
    fields = []
    candidates = {
        b'"model"': st.one_of(
            st.sampled_from(VALID_MODELS).map(lambda s: Frag(jstr(s))),
            hostile_text.map(lambda s: Frag(jstr(s))),
            hostile_value,
        ),
        b'"event_id"': st.one_of(
            st.integers(0, 50).map(lambda i: Frag(jstr(f"e{i}"))),
            hostile_text.map(lambda s: Frag(jstr(s))),
            hostile_value,
        ),
        b'"label"': st.one_of(valid_value, hostile_value),
        b'"timestamp"': st.one_of(valid_timestamp.map(Frag), odd_timestamp),
        b'"extra"': st.one_of(deep_frag, hostile_value),
    }
    for key, strategy in candidates.items():
        if key in (b'"timestamp"', b'"extra"') and draw(st.booleans()):
            continue
        if draw(st.integers(0, 7)) > 0:
            fields.append((key, draw(strategy)))
    return Element(tuple(fields), raw=None)


def render_label(element: Element) -> Frag:
    return element.raw if element.raw is not None else obj(element.fields)


@st.composite
def label_batches(draw) -> list[tuple[list[Record], dict[int, Built]]]:
    out, offset = [], 0
    for _ in range(draw(st.integers(1, 3))):
        records, built = [], {}
        for _ in range(draw(st.integers(1, 6))):
            how = draw(st.sampled_from(["single", "array", "raw"]))
            if how == "raw":
                spec = draw(RAW_MESSAGES)
                value = None if spec.raw_is_none else spec.raw
                array, n = oracle_count(value)
                b = Built(value, array, n, True)
            elif how == "single":
                frag = render_label(draw(label_elements()))
                array, n = oracle_count(frag.raw)  # a non-object element may be an array
                b = Built(frag.raw, array, n, True)
            else:
                frags = [render_label(e) for e in draw(st.lists(label_elements(), max_size=12))]
                value = b"[" + b",".join(f.raw for f in frags) + b"]"
                whole_ok = (
                    any(f.bad for f in frags)
                    or len(value) > FUZZ.max_message_bytes
                    or nesting_depth(value) > FUZZ.max_json_depth
                )
                b = Built(value, True, len(frags), whole_ok)
            built[offset] = b
            records.append(Record(offset, T0 + offset, b.value))
            offset += 1
        out.append((records, built))
    return out


@fuzz
@example(
    [
        (
            [
                Record(
                    0,
                    T0,
                    b'[{"model":"m","event_id":"e","label":1,"extra":1e400},{"model":"m","event_id":"","label":1}]',
                )
            ],
            {
                0: Built(
                    b'[{"model":"m","event_id":"e","label":1,"extra":1e400},{"model":"m","event_id":"","label":1}]',
                    True,
                    2,
                    whole_ok=True,
                )
            },
        )
    ]
)
@given(label_batches())
def test_hostile_labels_never_raise_and_every_label_is_accounted_for(batches_):
    s = FUZZ
    lp = label_processor(s)
    state = PartitionState(LABELS_TOPIC, 0, 1, None)
    now = T0
    for records, built in batches_:
        now += 1.0
        labels, out = lp.decode(state, records, now)
        internal = [d for d in out.dead_letters if d.reason is Reason.INTERNAL_ERROR]
        assert not internal, describe(internal)
        per_offset = Counter(label.offset for label in labels)
        letters: dict[int, list[DeadLetter]] = defaultdict(list)
        for d in out.dead_letters:
            letters[d.offset].append(d)
        for offset, b in built.items():
            mine = letters.get(offset, [])
            keys = [d.index for d in mine]
            assert len(keys) == len(set(keys)), (
                f"offset {offset}: a dead letter twice: {describe(mine)}"
            )
            if None in keys:
                assert len(mine) == 1 and per_offset[offset] == 0, (
                    f"offset {offset}: rejected whole and per label"
                )
                assert not b.array or b.whole_ok, (
                    f"offset {offset}: an array of ordinary labels rejected whole: {describe(mine)}"
                )
                continue
            assert per_offset[offset] + len(mine) == b.n, (
                f"offset {offset}: {per_offset[offset]} labels + {len(mine)} dead letters != "
                f"{b.n} built {describe(mine)}"
            )
        for label in labels:
            assert 0 < len(label.model) <= s.max_name_length and label.model.isprintable()
            assert 0 < len(label.event_id) <= s.max_event_id_length, (
                f"event_id of {len(label.event_id)} chars accepted"
            )
            if isinstance(label.label, float):
                assert math.isfinite(label.label) and abs(label.label) <= s.max_abs_value, (
                    f"label {label.label!r} accepted"
                )
        waiting = state.pending + labels
        decoded_letters = len(out.dead_letters)
        lp.apply(state, waiting, {}, now, out)
        assert len(waiting) == out.events + (len(out.dead_letters) - decoded_letters) + len(
            state.pending
        ), "labels vanished"
        check_pending(state, s)


def check_pending(state: PartitionState, s: Settings) -> None:
    assert len(state.pending) <= s.max_pending_labels, (
        f"{len(state.pending)} labels pending > max_pending_labels"
    )
    per_model = Counter(label.model for label in state.pending)
    over = {m: c for m, c in per_model.items() if c > s.max_pending_labels_per_model}
    assert not over, (
        "pending labels per model over "
        f"max_pending_labels_per_model={s.max_pending_labels_per_model}: {over}"
    )


LABEL_FLOOD = Settings(
    redis_url=NO_REDIS, max_pending_labels=40, max_pending_labels_per_model=5, label_ttl_s=1e9
)


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    unknown=st.lists(st.tuples(st.integers(0, 9), st.integers(0, 200)), min_size=1, max_size=300),
    duplicates=st.integers(2, 30),
    batches_=st.integers(1, 4),
    seed=st.randoms(use_true_random=False),
)
def test_a_label_flood_keeps_pending_labels_bounded_and_joins_a_duplicate_once(
    unknown, duplicates, batches_, seed
):
    s = LABEL_FLOOD
    lp = label_processor(s)
    state = PartitionState(LABELS_TOPIC, 0, 1, None)
    bodies = [{"model": f"ghost{m}", "event_id": f"e{e}", "label": 1.0} for m, e in unknown]
    bodies += [{"model": "dup", "event_id": "e-dup", "label": 1.0}] * duplicates
    seed.shuffle(bodies)
    predictions = {("dup", "e-dup"): msgspec.msgpack.encode((0.9, None, T0))}
    joined = 0
    size = max(1, math.ceil(len(bodies) / batches_))
    offset, now = 0, T0
    for start in range(0, len(bodies), size):
        chunk = bodies[start : start + size]
        # some as arrays, some one per message
        values = [json.dumps(chunk[:3]).encode()] + [json.dumps(b).encode() for b in chunk[3:]]
        records = [Record(offset + i, T0 + offset + i, v) for i, v in enumerate(values)]
        offset += len(records)
        now += 1.0
        labels, out = lp.decode(state, records, now)
        assert len(labels) + len(out.dead_letters) == len(chunk)
        waiting = state.pending + labels
        letters_before = len(out.dead_letters)
        lp.apply(state, waiting, predictions, now, out)
        assert len(waiting) == out.events + len(out.dead_letters) - letters_before + len(
            state.pending
        ), "labels vanished"
        joined += out.events  # only the duplicated label has a prediction to join
        assert joined <= 1, f"a label duplicated {duplicates} times was joined {joined} times"
        check_pending(state, s)
    assert joined == 1, f"the duplicated label with a prediction was joined {joined} times"


# --- 6. the runtime's dead-letter publishing ------------------------------------------------------


def runtime_settings(redis_url: str, **overrides: Any) -> Settings:
    group = f"hostile-{uuid.uuid4().hex[:10]}"
    base: dict[str, Any] = {
        "redis_url": redis_url,
        "group_id": group,
        "input_topic": TOPIC,
        "labels_topic": LABELS_TOPIC,
        "dlq_topic": f"{group}.dlq",
        "alert_topic": f"{group}.alerts",
        "dlq_max_bytes": 2_048,
        "multivariate": False,
        "checkpoint_interval_s": 3_600,
        "max_message_bytes": 600_000,
        "max_name_length": 24,
    }
    return Settings(**{**base, **overrides})


def headers_of(headers: list[tuple[str, bytes]]) -> dict[str, bytes]:
    names = [name for name, _ in headers]
    assert len(names) == len(set(names)), f"a header twice: {names}"
    return dict(headers)


async def handle_all(runtime: Runtime, topic: str, records: list[Record]) -> None:
    await runtime.on_assigned([(topic, 0)])
    await runtime.handle(topic, {0: records})


def expected_letters(
    s: Settings, records: list[Record]
) -> dict[tuple[int, int | None], DeadLetter]:
    """The dead letters the runtime's processor makes of these records (a twin processor)."""
    outcome = prediction_processor(s, with_setting_defaults({}, s)).process(
        PartitionState(TOPIC, 0, 1, None), records
    )
    letters = {(d.offset, d.index): d for d in outcome.dead_letters}
    assert len(letters) == len(outcome.dead_letters)
    return letters


def check_sent(
    s: Settings, publisher: RecordingPublisher, letters: dict[tuple[int, int | None], DeadLetter]
) -> None:
    sent = [m for m in publisher.sent if m[0] == s.dlq_topic]
    seen = set()
    for _, _, value, raw_headers in sent:
        h = headers_of(raw_headers)
        for name in (
            "streamdrift-reason",
            "streamdrift-source-topic",
            "streamdrift-source-partition",
            "streamdrift-source-offset",
        ):
            assert name in h, f"dead letter without header {name}: {sorted(h)}"
        assert (
            h["streamdrift-source-topic"] == TOPIC.encode()
            and h["streamdrift-source-partition"] == b"0"
        )
        index = int(h["streamdrift-batch-index"]) if "streamdrift-batch-index" in h else None
        key = (int(h["streamdrift-source-offset"]), index)
        assert key not in seen, f"dead letter {key} sent twice"
        seen.add(key)
        assert key in letters, (
            f"dead letter {key} sent, but the processor made none: {h.get('streamdrift-reason')}"
        )
        original = letters[key].payload
        assert h["streamdrift-reason"] == letters[key].reason.value.encode()
        assert len(value) <= s.dlq_max_bytes, (
            f"dead letter of {len(value)} bytes sent > dlq_max_bytes={s.dlq_max_bytes}"
        )
        for name, header in h.items():
            assert len(header) <= 1_024, (
                f"header {name} of {len(header)} bytes (the record may exceed the broker's limit)"
            )
        if len(original) > s.dlq_max_bytes:
            assert h.get("streamdrift-truncated") == b"true", (
                f"{key}: {len(original)} bytes sent without streamdrift-truncated: true"
            )
            assert h.get("streamdrift-original-length") == str(len(original)).encode(), (
                f"{key}: original length header"
            )
            assert (
                h.get("streamdrift-original-sha256")
                == hashlib.sha256(original).hexdigest().encode()
            ), f"{key}: sha256 header"
            assert original.startswith(value), (
                f"{key}: the truncated value is not a prefix of the payload"
            )
        else:
            assert value == original, f"{key}: a dead letter within dlq_max_bytes was altered"
            assert h.get("streamdrift-truncated", b"false") != b"true", f"{key}: marked truncated"
    assert seen == set(letters), f"dead letters not sent: {sorted(set(letters) - seen)[:10]}"


OVERSIZE_RECORDS = [
    Record(
        0, T0, b'{"model":"' + b"m" * 5_000 + b'","features":{}}'
    ),  # invalid_model, whole message of ~5 KB
    Record(
        1,
        T0 + 1,
        b'[{"model":"m","features":{"x":1}},{"model":"'
        + b"q" * 3_000
        + b'","features":{}},{"model":7}]',
    ),
    Record(2, T0 + 2, b"x" * 700_000),  # oversize message
    Record(
        3, T0 + 3, b'{"model":"m","features":{"' + b"k" * 200_000 + b'":[1]}}'
    ),  # a 200 KB name in msgspec's error path
    Record(4, T0 + 4, b"[" * 3_000 + b"]" * 3_000),
    Record(5, T0 + 5, b'{"model":"ok","features":{"x":1e16}}'),  # small: sent as is
]


def run_runtime(s: Settings, publisher: RecordingPublisher, records: list[Record]) -> None:
    """Hand ``records`` to a fresh runtime (real Redis, recording publisher)."""

    async def scenario() -> None:
        runtime = Runtime(s, {}, publisher)
        try:
            await handle_all(runtime, TOPIC, records)
        finally:
            await runtime.redis.aclose()

    asyncio.run(scenario())


def test_oversize_dead_letters_are_sent_truncated_with_their_length_and_sha256(redis_server):
    s = runtime_settings(redis_server.url)
    publisher = RecordingPublisher()

    run_runtime(s, publisher, OVERSIZE_RECORDS)
    letters = expected_letters(s, OVERSIZE_RECORDS)
    assert any(len(d.payload) > s.dlq_max_bytes for d in letters.values())
    check_sent(s, publisher, letters)


@settings(
    max_examples=12,
    deadline=None,
    suppress_health_check=[
        HealthCheck.too_slow,
        HealthCheck.function_scoped_fixture,
        HealthCheck.data_too_large,
    ],
)
@given(batch_list=batches(max_batches=1))
def test_hostile_batches_publish_every_dead_letter_within_dlq_max_bytes(redis_server, batch_list):
    s = runtime_settings(redis_server.url)
    records = [r for r in batch_list[0].records]
    publisher = RecordingPublisher()

    run_runtime(s, publisher, records)
    check_sent(s, publisher, expected_letters(s, records))


def metric_samples(runtime: Runtime) -> dict[str, float]:
    return {
        sample.name + str(sorted(sample.labels.items())): sample.value
        for family in runtime.metrics.registry.collect()
        for sample in family.samples
        if not sample.name.endswith("_created")
    }


@pytest.mark.parametrize("error", [ConnectionError, TimeoutError, RuntimeError])
def test_a_failing_dead_letter_send_is_retried_counted_and_given_up_without_raising(
    redis_server, error
):
    s = runtime_settings(redis_server.url)
    publisher = RecordingPublisher(fail_dlq=-1, error=error)
    records = [Record(0, T0, b"not json"), Record(1, T0 + 1, b'{"model":"m","features":{"x":1}}')]
    samples: dict[str, float] = {}

    async def scenario() -> None:
        runtime = Runtime(s, {}, publisher)
        try:
            await handle_all(runtime, TOPIC, records)  # must not raise
            samples.update(metric_samples(runtime))
        finally:
            await runtime.redis.aclose()

    asyncio.run(scenario())
    assert publisher.attempts[s.dlq_topic] > 1, (
        f"the failed dead letter was tried {publisher.attempts[s.dlq_topic]} time(s)"
    )
    dlq = {
        name: value
        for name, value in samples.items()
        if re.search(r"dead_letter|dlq", name) and value > 0
    }
    retried = {name: v for name, v in dlq.items() if re.search(r"retr", name)}
    given_up = {
        name: v for name, v in dlq.items() if re.search(r"fail|drop|lost|give|unsent|error", name)
    }
    assert given_up, f"no given-up dead letter counted in metrics; dead-letter samples > 0: {dlq}"
    assert retried, f"no dead-letter retry counted in metrics; dead-letter samples > 0: {dlq}"


def test_a_flaky_dead_letter_send_is_retried_until_sent_once(redis_server):
    s = runtime_settings(redis_server.url)
    publisher = RecordingPublisher(fail_dlq=1)
    records = [
        Record(0, T0, b"not json"),
        Record(1, T0 + 1, b'[{"model":7},{"model":"m","features":{"x":1}}]'),
    ]

    run_runtime(s, publisher, records)
    check_sent(s, publisher, expected_letters(s, records))


def test_a_label_redelivered_in_a_later_batch_is_not_joined_again(redis_server):
    """Duplicates of an event_id are joined at most once, across batches too (runtime + Redis join
    store)."""
    s = runtime_settings(redis_server.url)
    publisher = RecordingPublisher()
    label = json.dumps({"model": "m", "event_id": "e1", "label": 1.0}).encode()
    joined: list[float] = []

    async def scenario() -> None:
        runtime = Runtime(s, {}, publisher)
        try:
            await runtime.on_assigned([(TOPIC, 0), (LABELS_TOPIC, 0)])
            prediction = json.dumps(
                {"model": "m", "features": {"x": 1.0}, "event_id": "e1", "prediction": 0.9}
            ).encode()
            await runtime.handle(TOPIC, {0: [Record(0, T0, prediction)]})
            await runtime.handle(
                LABELS_TOPIC, {0: [Record(0, T0 + 1, label), Record(1, T0 + 2, label)]}
            )
            await runtime.handle(LABELS_TOPIC, {0: [Record(2, T0 + 3, label)]})
            joined.append(
                runtime.metrics.registry.get_sample_value(
                    "streamdrift_labels_joined_total", {"model": "m"}
                )
                or 0.0
            )
        finally:
            await runtime.redis.aclose()

    asyncio.run(scenario())
    assert joined == [1.0], f"one prediction, its label sent 3 times: joined {joined[0]:g} times"
