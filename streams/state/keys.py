"""Every name streamdrift gives in Redis: series fields, per-partition keys, the group's keys and
the baseline store. Pure naming (no Redis client), so the pure processor can use it too.

Key layout (``G`` = group id, ``T`` = topic, ``P`` = partition, ``M`` = model; the ``{...}`` hash
tag keeps every key of one checkpoint in one Redis Cluster slot):

========================== ====== ===========================================================
key                        type   contents
========================== ====== ===========================================================
``sd:{G:T:P}:ckpt``        hash   ``epoch`` (fencing token), ``offset`` (next offset to read),
                                  ``worker``, ``updated_at`` / ``claimed_at`` (epoch ms),
                                  ``events`` (events applied, for status)
``sd:{G:T:P}:outbox``      list   alerts checkpointed with the state that produced them, not
                                  yet confirmed published (msgpack entries)
``sd:{G:T:P}:state``       hash   one field per monitored series (:class:`SeriesKey`) holding
                                  msgpack bytes of its monitor, plus ``\\x00``-prefixed
                                  partition-level fields (pending labels, model versions)
``sd:{G}:join:M:B``        hash   ``event_id`` -> prediction for model ``M`` in time bucket ``B``
                                  (expires after the label TTL)
``sd:{G}:pair:M:I``        hash   the halves of model ``M``'s inference ``I`` (request,
                                  response) and the claim settling them
                                  (:mod:`streams.state.pairs`; expires)
``sd:{G}:history:M``       stream the drift scores of model ``M``'s series over time
``sd:{G}:incidents:M``     hash   model ``M``'s incidents and the answer given for each alert
                                  (:mod:`streams.state.incidents`)
``sd:{G}:partitions``      set    ``T:P`` of every partition ever checkpointed (for status)
``sd:{baselines}:*``       —      stored baselines (index, meta, revision, one blob each),
                                  shared by every group
========================== ====== ===========================================================
"""

from __future__ import annotations

from typing import NamedTuple

#: Separates the parts of a series field (names are printable, so it never occurs in them).
SEP = "\x1f"
#: Starts every partition-level field of a state hash (never a series).
META_PREFIX = "\x00"


class SeriesKey(NamedTuple):
    """One monitored series: a model's (version's) feature, its prediction or its error rate.

    Its state field is ``model SEP feature`` for events without a model version, ``model SEP
    version SEP feature`` otherwise.

    >>> key = SeriesKey("fraud", "v3", "amount")
    >>> SeriesKey.parse(key.field) == key, SeriesKey.parse(SeriesKey("m", None, "x").field)
    (True, SeriesKey(model='m', version=None, feature='x'))
    """

    model: str
    version: str | None
    feature: str

    @property
    def field(self) -> str:
        """The series' field in its partition's state hash."""
        if self.version is None:
            return f"{self.model}{SEP}{self.feature}"
        return f"{self.model}{SEP}{self.version}{SEP}{self.feature}"

    @classmethod
    def parse(cls, field: str) -> SeriesKey:
        """The series of a state field written by :attr:`field`."""
        model, _, rest = field.partition(SEP)
        version, sep, feature = rest.partition(SEP)
        return cls(model, version, feature) if sep else cls(model, None, rest)


def series_name(model: str, version: str | None, feature: str) -> str:
    """The state field of a series (``SeriesKey(model, version, feature).field``)."""
    return SeriesKey(model, version, feature).field


def parse_series(name: str) -> SeriesKey:
    """The series of a state field (``SeriesKey.parse``)."""
    return SeriesKey.parse(name)


def is_series(field: str) -> bool:
    """True for a series field of a state hash, False for a partition-level one."""
    return not field.startswith(META_PREFIX)


class KeyLayout:
    """Names of one consumer group's Redis keys (the table above)."""

    def __init__(self, group_id: str) -> None:
        self.group_id = group_id

    def _partition_tag(self, topic: str, partition: int) -> str:
        return f"sd:{{{self.group_id}:{topic}:{partition}}}"

    def keys(self, topic: str, partition: int) -> tuple[str, str]:
        """The partition's checkpoint and state keys."""
        tag = self._partition_tag(topic, partition)
        return f"{tag}:ckpt", f"{tag}:state"

    def outbox_key(self, topic: str, partition: int) -> str:
        return f"{self._partition_tag(topic, partition)}:outbox"

    @property
    def partitions_key(self) -> str:
        return f"sd:{{{self.group_id}}}:partitions"

    def join_key(self, model: str, bucket: int) -> str:
        """The model's predictions awaiting labels in one time bucket."""
        return f"sd:{{{self.group_id}}}:join:{model}:{bucket}"

    def pair_key(self, model: str, pair_id: str) -> str:
        """The halves of one inference (:mod:`streams.state.pairs`)."""
        return f"sd:{{{self.group_id}}}:pair:{model}:{pair_id}"

    def incidents_key(self, model: str) -> str:
        """The model's incidents (:mod:`streams.state.incidents`)."""
        return f"sd:{{{self.group_id}}}:incidents:{model}"

    def history_key(self, model: str) -> str:
        """The model's drift-score stream; the group's hash tag keeps one checkpoint's entries in
        one slot, so they go in one pipeline on Redis Cluster too."""
        return f"sd:{{{self.group_id}}}:history:{model}"


#: The stored baselines' keys (shared by every group: one hash tag, one slot).
BASELINES_TAG = "sd:{baselines}"
#: The version field of a baseline for events without a model version (versions are non-empty).
_NO_VERSION = ""


def baseline_field(model: str, version: str | None) -> str:
    """A baseline's field in the index and meta hashes."""
    return f"{model}{SEP}{_NO_VERSION if version is None else version}"


def parse_baseline_field(field: str) -> tuple[str, str | None]:
    """(model, version) of a :func:`baseline_field`."""
    model, _, version = field.partition(SEP)
    return model, version or None


def baseline_blob_key(model: str, version: str | None) -> str:
    return f"{BASELINES_TAG}:blob:{baseline_field(model, version)}"
