"""The compiled columnar decoder: a batch's messages into events grouped by shape, as columns.

The processor's columnar path used to decode every message into msgspec structs and build each
shape's columns from them in Python. Where the compiled kernels are in use (the same choice as
the detectors', :mod:`streamdrift.detectors.kernels`), the extension's
``decode_prediction_columns`` does that in one call instead: per shape (model, version, feature
names in order, presence of a prediction), the events' positions, each column as a float array
or a list of categories, event ids and timestamps. It takes only what it decodes exactly as the
codec's typed decoder does and refuses the rest (see ``native/src/decode.rs``); the codec
handles the refused messages as before. The checks that need the limits and the state stay in
Python (``PredictionProcessor._take_decoded``).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, NamedTuple

import numpy as np

from streamdrift.detectors import kernels
from streamdrift.streams.pipeline.codec import Limits

Column = np.ndarray | list[str | None] | None
"""A shape's column as the decoder gives it: numbers and nulls as floats (NaN: null), strings,
booleans ("true", "false") and nulls, or nulls only, as a list; None where they mix."""


class DecodedShape(NamedTuple):
    """The events of one shape, as the decoder gives them."""

    model: str
    version: str | None
    names: tuple[str, ...]  # the feature names, in order
    with_prediction: bool
    messages: np.ndarray  # each event's message: its place in the values (int64)
    indexes: np.ndarray  # each event's place in its message's array, 0 for a single event
    columns: list[Column]  # per feature, then the prediction's if it has one
    event_ids: list[str | None]
    timestamps: np.ndarray  # epoch seconds, NaN: none
    largest: float  # the largest magnitude of a number in a numeric column
    longest: int  # the longest category, in characters


Shapes = list[tuple[Any, ...]]  # the decoder's tuples, each a ``DecodedShape``'s fields

Decoder = Callable[[list[bytes | None], int, int], tuple[Shapes, list[int]]]


def decoder() -> Decoder | None:
    """The compiled decoder if the compiled kernels are in use in this process, else None."""
    if not kernels.compiled():
        return None
    import streamdrift_kernels  # the extension: unavailable() found it of this API_VERSION

    return streamdrift_kernels.decode_prediction_columns


def decode(
    decode_columns: Decoder, values: list[bytes | None], limits: Limits
) -> tuple[list[DecodedShape], list[int]]:
    """``values`` decoded by ``decode_columns``: the shapes, and the positions of the messages it
    left to the codec."""
    shapes, refused = decode_columns(
        values, limits.max_message_bytes, limits.max_events_per_message
    )
    return list(map(DecodedShape._make, shapes)), refused


def stamped_times(stamps: np.ndarray, kafka_times: np.ndarray, limits: Limits) -> np.ndarray | None:
    """Event times as ``codec.event_time`` reads each (NaN: no timestamp, the Kafka one), or None
    if one is invalid. The decoder gives only finite numbers (epoch seconds); RFC 3339 strings
    it leaves to the codec."""
    given = ~np.isnan(stamps)
    if not given.any():
        return kafka_times
    seconds = np.where(given, stamps, kafka_times)
    valid = ~given | (
        (seconds >= 0)
        & ~(seconds - kafka_times > limits.max_future_skew_s)
        & ~(kafka_times - seconds > limits.max_past_skew_s)
    )
    return seconds if valid.all() else None
