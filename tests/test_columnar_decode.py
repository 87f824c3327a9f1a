"""The compiled columnar decoder (``decode_prediction_columns``, native/src/decode.rs) against the
codec's typed decoder (msgspec), and the processor with it against the processor without it.

Whatever the decoder takes it must read exactly as msgspec does (the same events, names in the
same order, the same floats bit for bit, the same strings); whatever msgspec refuses it must
refuse; it may refuse more (the codec then handles that message as it always did). The processor
must give the same outcome and state with the decoder, with today's columnar path and with the
per-event path, on streams with duplicate keys, escapes, huge and tiny numbers, integers beyond
2^53 and beyond the float range, negative zeros, invalid UTF-8, unknown fields, wrong types and
timestamps of every kind.
"""

from __future__ import annotations

import json
import math
import random
import struct
import time
from typing import Any
from unittest import mock

import numpy as np
import pytest
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st

from streamdrift.detectors import kernels
from streamdrift.streams.pipeline import native_decode
from streamdrift.streams.pipeline import processor as processor_module
from streamdrift.streams.pipeline.codec import Limits, RawEvent, typed_events
from streamdrift.streams.pipeline.outcome import Record
from streamdrift.streams.pipeline.processor import PredictionProcessor
from streamdrift.streams.state.partition import PartitionState
from tests.test_processor_fastpath import (
    ADMISSION,
    CONFIG,
    LIMITS,
    MULTIVARIATE,
    PROBATION,
    SKEWED,
    Stream,
    snapshot,
)

pytestmark = pytest.mark.skipif(
    kernels.unavailable() is not None, reason="the compiled kernels are not installed"
)

WIDE = Limits(max_message_bytes=4_000_000, max_events_per_message=10_000)


def decode(values: list[bytes | None], limits: Limits = WIDE) -> tuple[list[Any], list[int]]:
    decoder = native_decode.decoder()
    assert decoder is not None
    return native_decode.decode(decoder, values, limits)


# --- JSON text with everything msgspec and a JSON parser may disagree on ---------------------

NUMBERS = [
    "0",
    "-0",
    "-0.0",
    "0.0",
    "0e5",
    "-0e5",
    "1e-400",
    "-1e-400",
    "1e400",
    "-1e400",
    "1E309",
    "9" * 400,
    "-" + "9" * 400,
    "2.4703282292062328e-324",
    "2.4703282292062327e-324",
    "4.9e-324",
    "1.7976931348623157e308",
    "1.7976931348623158e308",
    "1.7976931348623159e308",
    "9007199254740993",
    "9007199254740995",
    "-9007199254740993",
    "18446744073709551615",
    "18446744073709551616",
    "18446744073709551617",
    "-9223372036854775808",
    "-9223372036854775809",
    "123456789012345678901234567890",
    "1E5",
    "1e+5",
    "0.1e1",
    "1.0",
    "1e16",
    "1e15",
    "01",
    "+1",
    "1.",
    ".5",
    "NaN",
    "Infinity",
    "-",
    "1e",
]


@st.composite
def decimal_texts(draw: st.DrawFn) -> str:
    """Decimal numbers of up to 30 digits and any exponent: the correctly rounded parse."""
    digits = draw(st.text("0123456789", min_size=1, max_size=30)).lstrip("0") or "0"
    dot = draw(st.integers(0, len(digits)))
    mantissa = digits if dot in (0, len(digits)) else f"{digits[:dot]}.{digits[dot:]}"
    exponent = draw(st.none() | st.integers(-360, 330))
    sign = draw(st.sampled_from(["", "-"]))
    return f"{sign}{mantissa}" + ("" if exponent is None else f"e{exponent}")


numbers = st.one_of(
    st.sampled_from(NUMBERS),
    st.integers(-(2**70), 2**70).map(str),
    st.floats(allow_nan=False, allow_infinity=False).map(repr),
    decimal_texts(),
)

TEXTS = ["", "x", "y", "DE", "é", "\u2028", "\x00", "a\tb", "\ud83d\ude00", "x" * 300, "true"]


def string_literal(text: str, how: str) -> bytes:
    """A JSON string: plain UTF-8, all escaped, or broken."""
    if how == "escaped":
        return json.dumps(text, ensure_ascii=True).encode()
    if how == "slash":
        return (
            json.dumps(text, ensure_ascii=False).replace("/", "\\/").encode(errors="surrogatepass")
        )
    if how == "lone_surrogate":
        return b'"\\ud800' + text.encode(errors="surrogatepass") + b'"'
    if how == "invalid_utf8":
        return b'"' + text.encode(errors="surrogatepass") + b'\xff"'
    if how == "raw_control":
        return b'"' + text.encode(errors="surrogatepass") + b'\x01"'
    return json.dumps(text, ensure_ascii=False).encode("utf-8", "surrogatepass")


string_hows = st.sampled_from(["plain"] * 6 + ["escaped", "slash", "lone_surrogate"] * 1)
hostile_hows = st.sampled_from(["invalid_utf8", "raw_control"])


@st.composite
def strings(draw: st.DrawFn, pool: list[str] = TEXTS) -> bytes:
    text = draw(st.sampled_from(pool) | st.text(max_size=8))
    how = draw(string_hows | hostile_hows) if draw(st.integers(0, 9)) == 0 else draw(string_hows)
    return string_literal(text, how)


values = st.one_of(
    numbers.map(str.encode),
    strings(),
    st.sampled_from([b"true", b"false", b"null", b"[1]", b"{}", b"[]", b'{"a":1}', b"[" * 70]),
)
plain_values = st.one_of(
    st.integers(-(2**60), 2**60).map(lambda i: str(i).encode()),
    st.floats(allow_nan=False, allow_infinity=False).map(lambda f: repr(f).encode()),
    decimal_texts().map(str.encode),
    st.sampled_from([b"true", b"false", b"null", b'"x"', b'"DE"']),
)
NAMES = ["a", "b", "c", "d", "prediction", "é", "a b", "", "\x07", "n" * 130]


@st.composite
def features(draw: st.DrawFn) -> bytes:
    names = draw(st.lists(st.sampled_from(NAMES[:4]) | st.sampled_from(NAMES), max_size=6))
    pairs = [
        draw(strings(pool=[name])) + b":" + draw(mostly(plain_values, values)) for name in names
    ]
    return b"{" + b",".join(pairs) + b"}"


def mostly(
    valid: st.SearchStrategy[bytes], odd: st.SearchStrategy[bytes]
) -> st.SearchStrategy[bytes]:
    """``odd`` one time in ten, else ``valid``: events valid often enough to be taken."""
    return st.integers(0, 9).flatmap(lambda n: odd if n == 0 else valid)


FIELDS: dict[str, Any] = {
    "model": mostly(
        st.sampled_from([b'"m"', b'"n"', b'"\\u006d"']),
        st.sampled_from([b"7", b"null", b'""']) | strings(),
    ),
    "features": mostly(features(), st.sampled_from([b"[]", b"null", b'"x"'])),
    "model_version": mostly(
        st.sampled_from([b'"1"', b'"2"', b"null"]), st.sampled_from([b"1", b"true"]) | strings()
    ),
    "event_id": mostly(st.sampled_from([b'"e1"', b'""', b"null"]), st.just(b"5") | strings()),
    "timestamp": numbers.map(str.encode)
    | st.sampled_from(
        [b'"2025-11-21T10:00:00Z"', b'"2025-11-21T10:00:00"', b'"nope"', b"true", b"null", b"[]"]
    ),
    "prediction": mostly(plain_values, values),
    "extra": values,
}


@st.composite
def events(draw: st.DrawFn) -> bytes:
    fields = [b'"model"', b'"features"']
    fields += [
        json.dumps(name).encode()
        for name, odds in (
            ("model_version", 2),
            ("event_id", 2),
            ("timestamp", 2),
            ("prediction", 2),
            ("extra", 12),
        )
        if draw(st.integers(0, odds)) == 0
    ]
    if draw(st.integers(0, 9)) == 0:
        fields.remove(draw(st.sampled_from(fields)))  # missing
    if draw(st.integers(0, 14)) == 0:
        fields.append(draw(st.sampled_from(fields)))  # twice
    if draw(st.integers(0, 14)) == 0:
        fields = [f.replace(b"model", b"\\u006dodel") for f in fields]  # escaped key
    pairs = [
        field + b":" + draw(FIELDS[json.loads(field).replace("\\u006d", "m")])
        for field in draw(st.permutations(fields))
    ]
    space = draw(st.sampled_from([b"", b" ", b"\n\t "]))
    return b"{" + space + (b"," + space).join(pairs) + space + b"}"


@st.composite
def messages(draw: st.DrawFn) -> bytes | None:
    kind = draw(st.integers(0, 9))
    if kind < 6:
        return draw(events())
    if kind < 9:
        return b"[" + b",".join(draw(st.lists(events(), max_size=5))) + b"]"
    return draw(st.none() | st.binary(max_size=40) | st.just(b'{"model":"m","features":{}} x'))


# --- the decoder against msgspec ------------------------------------------------------------


def bits(value: float) -> bytes:
    return struct.pack("<d", value)


MIXED = object()  # a cell of a column that mixes numbers and categories


def rebuilt(shapes: list[Any]) -> dict[tuple[int, int], tuple[Any, ...]]:
    """Each decoded event by (message, index), as the decoder gave it."""
    out = {}
    for model, version, names, with_prediction, at, indexes, columns, ids, stamps, *_ in shapes:
        for k, (position, index) in enumerate(zip(at.tolist(), indexes.tolist(), strict=True)):
            cells = [MIXED if column is None else column[k] for column in columns]
            out[position, index] = (
                model,
                version,
                names,
                with_prediction,
                cells,
                ids[k],
                stamps[k],
            )
    return out


def kind(raw: list[Any]) -> str:
    """What ``classify_column`` makes of typed values: the decoder's column kinds."""
    types = set(map(type, raw)) - {type(None)}
    if not types:
        return "nulls"
    if types == {float}:
        return "numbers"
    return "categories" if float not in types else "mixed"


def check_shape(shape: Any, typed: dict[tuple[int, int], RawEvent]) -> None:
    """A shape's columns, and its largest number and longest category, against the structs."""
    _, _, names, with_prediction, at, indexes, columns, _, _, largest, longest = shape
    raws = [typed[p, i] for p, i in zip(at.tolist(), indexes.tolist(), strict=True)]
    values = [list(r.features.values()) for r in raws]  # once: a megabyte event has 100k
    expected_largest, expected_longest = 0.0, 0
    for j, column in enumerate(columns):
        raw = [
            r.prediction if j == len(names) else row[j] for r, row in zip(raws, values, strict=True)
        ]
        got = {"nulls": list, "numbers": np.ndarray, "categories": list, "mixed": type(None)}
        assert isinstance(column, got[kind(raw)])
        if kind(raw) == "numbers":
            assert column.dtype == np.float64
            expected_largest = max(expected_largest, *(abs(v) for v in raw if v is not None))
        if kind(raw) == "categories":
            categories = [("true" if v else "false") if isinstance(v, bool) else v for v in raw]
            expected_longest = max(expected_longest, *(len(v) for v in categories if v is not None))
    assert bits(largest) == bits(expected_largest)
    assert longest == expected_longest
    assert len(columns) == len(names) + with_prediction


def check_event(decoded: tuple[Any, ...], raw: RawEvent) -> None:
    model, version, names, with_prediction, cells, event_id, stamp = decoded
    assert (model, version, event_id) == (raw.model, raw.model_version, raw.event_id)
    assert names == tuple(raw.features) and with_prediction == (raw.prediction is not None)
    assert isinstance(raw.timestamp, float | None)  # a string: refused
    assert math.isnan(stamp) if raw.timestamp is None else bits(stamp) == bits(raw.timestamp)
    expected = [*raw.features.values(), *([raw.prediction] if with_prediction else [])]
    for cell, value in zip(cells, expected, strict=True):
        if cell is MIXED:
            continue  # checked per shape
        if isinstance(cell, float) and math.isnan(cell):
            assert value is None
        elif isinstance(cell, float):
            assert isinstance(value, float) and bits(cell) == bits(value)
        elif isinstance(value, bool):
            assert cell == ("true" if value else "false")
        else:
            assert cell == value and isinstance(value, str | None)


def check_against_msgspec(values: list[bytes | None], limits: Limits = WIDE) -> int:
    """The decoder's reading of ``values`` against msgspec's; the messages it took."""
    shapes, refused = decode(values, limits)
    assert refused == sorted(set(refused))
    events = rebuilt(shapes)
    typed_all: dict[tuple[int, int], RawEvent] = {}
    for position, value in enumerate(values):
        typed = typed_events(value, limits)
        if position in refused:
            assert not any(p == position for p, _ in events)
            continue
        assert typed is not None, value  # taken by the decoder: msgspec takes it too
        assert len(typed) == sum(1 for p, _ in events if p == position)
        for index, raw in typed:
            typed_all[position, index or 0] = raw
            check_event(events[position, index or 0], raw)
    for shape in shapes:
        check_shape(shape, typed_all)
    return len(values) - len(refused)


@settings(max_examples=1_500, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(messages(), min_size=1, max_size=8))
def test_the_decoder_reads_what_it_takes_exactly_as_msgspec(values):
    taken = check_against_msgspec(values)
    event(f"messages taken: {'some' if taken else 'none'}")


@settings(max_examples=500, deadline=None)
@given(st.lists(numbers, min_size=1, max_size=20))
def test_numbers_are_the_floats_msgspec_reads(texts):
    """Correctly rounded, integers to the nearest float, beyond the range refused, -0 refused."""
    body = ",".join(f'"f{i}":{text}' for i, text in enumerate(texts))
    value = f'{{"model":"m","features":{{{body}}}}}'.encode()
    taken = check_against_msgspec([value])
    if any(t in ("-0", "-0.0", "-0e5", "-1e-400") for t in texts):
        assert not taken


def test_what_the_decoder_refuses():
    refused = [
        None,
        b"",
        b"[]",
        b'{"model":"m","features":{},"extra":1}',  # msgspec skips unknown fields unchecked
        b'{"model":"m","model":"n","features":{}}',  # msgspec: the last one
        b'{"model":"m","features":{"a":1,"a":2}}',  # msgspec: the last, at the first's place
        b'{"model":"m","features":{"a":-0}}',
        b'{"model":"m","features":{},"timestamp":"2025-11-21T10:00:00Z"}',
        b'{"model":"m","features":{"a":1e400}}',
        b'{"model":"m","features":{"a":"\xff"}}',
        b'[{"model":"m","features":{}},{"model":7,"features":{}}]',
        b'[{"model":"m","features":{}},{"model":"m","features":{}},{"model":"m","features":{}}]',
        b'{"model":"m","features":{}}' + b" " * 200,
    ]
    limits = Limits(max_message_bytes=100, max_events_per_message=2)
    shapes, refused_at = decode(refused, limits)
    assert shapes == [] and refused_at == list(range(len(refused)))


def test_the_columns_of_a_shape():
    values = [
        json.dumps(
            {
                "model": "m",
                "model_version": "1",
                "features": {"x": i, "c": ["DE", True, None][i % 3], "n": None, "mix": [1, "a"][i]},
                "prediction": 0.5,
                "event_id": f"e{i}",
                "timestamp": 1e9 + i,
            }
        ).encode()
        for i in range(2)
    ]
    [shape], refused = decode(values)
    model, version, names, with_prediction, at, indexes, columns, ids, stamps, largest, longest = (
        shape
    )
    assert (model, version, names, with_prediction, refused) == (
        "m",
        "1",
        ("x", "c", "n", "mix"),
        True,
        [],
    )
    assert at.tolist() == [0, 1] and indexes.tolist() == [0, 0]
    x, c, n, mix, prediction = columns
    assert x.tolist() == [0.0, 1.0] and c == ["DE", "true"] and n == [None, None] and mix is None
    assert prediction.tolist() == [0.5, 0.5] and ids == ["e0", "e1"]
    assert stamps.tolist() == [1e9, 1e9 + 1] and (largest, longest) == (1.0, 4)


# --- garbage never crashes the process ------------------------------------------------------


@settings(max_examples=300, deadline=None)
@given(st.lists(st.binary(max_size=200) | st.none(), min_size=1, max_size=10))
def test_random_bytes_are_refused_or_read_as_msgspec_reads_them(values):
    check_against_msgspec(values)


def test_deep_nesting_and_megabyte_messages_are_refused_or_read_exactly():
    depth = 200_000
    deep = [
        b"[" * depth + b"]" * depth,
        b'{"a":' * depth + b"1" + b"}" * depth,
        b'{"model":"m","features":{"a":' + b"[" * depth + b"]" * depth + b"}}",
        b'[{"model":"m","features":{}},' + b"[" * depth,
    ]
    _, refused = decode(deep)
    assert refused == [0, 1, 2, 3]
    megabyte = 1 << 20
    many = {f"f{i}": i * 0.5 for i in range(megabyte // 10)}
    big = [
        b'{"model":"' + b"m" * megabyte + b'","features":{}}',
        json.dumps({"model": "m", "features": many}).encode(),
        json.dumps([{"model": "m", "features": {"a": i}} for i in range(40_000)]).encode(),
        b'{"model":"m","features":{"a":"' + b"\\u00e9" * (megabyte // 6) + b'"}}',
        b'{"model":"m","features":{"a":' + b"1" * megabyte + b"}}",
        b"\x00" * megabyte,
        b'"' + b"x" * megabyte,
    ]
    assert all(len(value) >= megabyte for value in big)
    assert (
        check_against_msgspec(big, Limits(max_message_bytes=4 << 20, max_events_per_message=50_000))
        == 4
    )
    assert decode(big, Limits(max_message_bytes=megabyte))[1] == list(range(len(big)))


def test_wrong_argument_types_raise_rather_than_crash():
    decoder = native_decode.decoder()
    assert decoder is not None
    with pytest.raises(TypeError):
        decoder((b"{}",), 10, 10)  # type: ignore[arg-type]
    with pytest.raises(OverflowError):
        decoder([b"{}"], -1, 10)
    shapes, refused = decoder([1, "x", b"{}", bytearray(b"{}")], 10, 10)  # type: ignore[list-item]
    assert (shapes, refused) == ([], [0, 1, 2, 3])


# --- the processor: with the decoder, without it, and event by event -------------------------


def mutate(value: bytes | None, rng: random.Random) -> bytes | None:
    """A message of the fast-path streams with something the decoder must refuse or read exactly."""
    if value is None or rng.random() < 0.6:
        return value
    cut = value.find(b'"features": {') + len(b'"features": {')
    choices = [
        lambda v: v.replace(b'"model"', b'"\\u006dodel"', 1),
        lambda v: v.replace(b'"a"', b'"\\u0061"'),
        lambda v: v.replace(b'"x"', b'"\\u0078"'),
        lambda v: v.replace(b'"model": "m"', b'"model": "m", "extra": [1e999]', 1),
        lambda v: v.replace(b'"model": ', b'"model": "m", "model": ', 1),
        lambda v: v[:cut] + b'"b": 1, ' + v[cut:] if cut > 20 else v,
        lambda v: v[:cut] + b'"a": -0, ' + v[cut:] if cut > 20 else v,
        lambda v: v[:cut] + b'"a": 9007199254740993, ' + v[cut:] if cut > 20 else v,
        lambda v: v[:cut] + b'"a": 1' + b"0" * 400 + b", " + v[cut:] if cut > 20 else v,
        lambda v: v[:cut] + b'"a": "\xff", ' + v[cut:] if cut > 20 else v,
        lambda v: v.replace(b'"y"', b'"\\u0079"'),
        lambda v: v.replace(b'"timestamp": ', b'"timestamp": "2025-11-21T10:00:00Z", "t": ', 1),
        lambda v: v.replace(b"}", b', "timestamp": 1e18}', 1),
        lambda v: v.replace(b"}", b', "event_id": ""}', 1),
        lambda v: v.replace(b"}", b', "event_id": null}', 1),
    ]
    return rng.choice(choices)(value)


@st.composite
def hostile_streams(draw: st.DrawFn) -> list[list[Record]]:
    """The fast-path tests' streams (``tests/test_processor_fastpath.py``), mutated."""
    steady = draw(st.integers(0, 3)) > 0
    rng = random.Random(draw(st.integers(0, 2**32)))
    stream = Stream(rng, steady)
    batches, offset = [], 0
    for batch in range(rng.randint(2 if steady else 1, 5)):
        if batch and rng.random() < 0.3:
            stream.shapes.append(stream.shape())
        offset -= rng.choice([0, 0, 0, 2])
        size = rng.randint(40, 80) if steady and not batch else rng.randint(1, 40)
        values = [mutate(stream.message(), rng) for _ in range(size)]
        records = [Record(offset + i, 1000.0 + offset + i, value) for i, value in enumerate(values)]
        batches.append(records)
        offset += len(values)
    return batches


def processor(
    min_columnar_events: int, admission: Any, limits: Limits, compiled: bool
) -> PredictionProcessor:
    return PredictionProcessor(
        CONFIG,
        limits,
        admission,
        multivariate=MULTIVARIATE,
        min_columnar_events=min_columnar_events,
        compiled_decoding=compiled,
    )


def compare_three(
    batches: list[list[Record]], min_columnar_events: int, admission: Any, limits: Limits
) -> int:
    """Process ``batches`` with the compiled decoder, with today's columnar path and event by
    event; outcomes and states must be identical after each batch. The events the decoder's
    shapes gave the batch."""
    ways = [
        (processor(min_columnar_events, admission, limits, True), True),
        (processor(min_columnar_events, admission, limits, False), True),
        (processor(min_columnar_events, admission, limits, False), False),
    ]
    assert ways[0][0]._decode_columns is not None and ways[1][0]._decode_columns is None
    states = [PartitionState("in", 0, 1, None) for _ in ways]
    decoded = 0
    take = PredictionProcessor._take_decoded

    def counted(self: PredictionProcessor, state: PartitionState, shape: Any, *args: Any) -> bool:
        nonlocal decoded
        went = take(self, state, shape, *args)
        decoded += len(shape[4]) if went else 0
        return went

    for records in batches:
        outcomes = []
        for (proc, columnar), state in zip(ways, states, strict=True):
            with (
                mock.patch.object(processor_module, "log", wraps=processor_module.log) as log,
                mock.patch.object(PredictionProcessor, "_take_decoded", counted),
            ):
                outcomes.append(proc.process(state, records, columnar=columnar))
            assert not log.exception.called
        assert repr(outcomes[0]) == repr(outcomes[2])
        assert repr(outcomes[1]) == repr(outcomes[2])
        assert snapshot(states[0]) == snapshot(states[2]) == snapshot(states[1])
    return decoded


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    hostile_streams(),
    st.sampled_from([1, 1, 2, 8]),
    st.sampled_from([ADMISSION, ADMISSION, PROBATION]),
    st.sampled_from([LIMITS, LIMITS, SKEWED]),
)
def test_the_decoder_changes_no_outcome_and_no_state(batches, min_columnar, admission, limits):
    decoded = compare_three(batches, min_columnar, admission, limits)
    event(f"events through the decoder's columns: {'some' if decoded else 'none'}")


def test_the_common_case_skips_the_typed_decoder():
    """Once a shape is known, its messages never reach msgspec."""
    proc = processor(8, ADMISSION, LIMITS, True)
    state = PartitionState("in", 0, 1, None)

    def batch(first: int) -> list[Record]:
        bodies = [
            {
                "model": "m",
                "model_version": "1",
                "event_id": f"e{i}",
                "prediction": 0.5 + i % 3,
                "timestamp": 990.0 + i,
                "features": {"a": float(i % 7), "b": "xyz"[i % 3], "c": i % 2 == 0, "i": "id"},
            }
            for i in range(first, first + 40)
        ]
        return [
            Record(i, 1000.0 + i, json.dumps(body).encode()) for i, body in enumerate(bodies, first)
        ]

    proc.process(state, batch(0))
    with (
        mock.patch.object(processor_module, "typed_messages", autospec=True) as typed,
        mock.patch.object(PredictionProcessor, "_admit", autospec=True) as admit,
    ):
        out = proc.process(state, batch(40))
    assert typed.call_count == 0 and admit.call_count == 0
    assert out.events == 40 and len(out.joins) == 40 and out.dead_letters == []


def test_the_reference_kernels_keep_the_typed_decoder():
    before = kernels.active()
    try:
        kernels.use("reference")
        assert native_decode.decoder() is None
        proc = processor(8, ADMISSION, LIMITS, True)
        assert proc._decode_columns is None
    finally:
        kernels.use(before)


def test_many_made_up_shapes_cost_linear_time():
    """Shapes are looked up by a keyed hash of all their names: 10,000 events of one model, each
    with a feature of its own, do not crowd one bucket."""
    events = [{"model": "m", "features": {f"f{i}": 1.0, "x": 2.0}} for i in range(10_000)]
    value = json.dumps(events).encode()
    began = time.perf_counter()
    shapes, refused = decode([value])
    assert time.perf_counter() - began < 2.0
    assert len(shapes) == 10_000 and refused == []
