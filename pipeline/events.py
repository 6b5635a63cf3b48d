"""The records that flow through a worker.

A :class:`ChangeEvent` is one decoded Debezium event. Views turn events into
:class:`DocumentOp` values (an upsert or a delete of one document) that carry
the version every sink uses to guard its write (docs/design.md: the version rule).
"""

from __future__ import annotations

import enum
from dataclasses import dataclass, field
from typing import Any, TypeVar, dataclass_transform

from pipeline.errors import BadRecord

Document = dict[str, Any]

_R = TypeVar("_R")


@dataclass_transform(frozen_default=True, field_specifiers=(field,))
def record(cls: type[_R]) -> type[_R]:
    """A dataclass with slots that the type checker holds frozen (assigning a
    field is a mypy error), hashable like a frozen one, and built without
    ``frozen=True``'s cost at run time: its ``__init__`` sets each field
    through ``object.__setattr__``, which made a :class:`ChangeEvent` take
    2.5 µs to build instead of 0.6. A worker builds a :class:`Position`, a
    :class:`ChangeEvent` and an :class:`Upsert` or :class:`Delete` per
    record."""
    return dataclass(slots=True, unsafe_hash=True)(cls)


#: Versions are non-negative integers below 10**19 (they fit an Elasticsearch
#: external version and a MongoDB int64). Redis compares them as strings of
#: this fixed width, because Lua numbers are doubles.
VERSION_WIDTH = 19

#: A table-view version is ``epoch * EPOCH_FACTOR + offset``: the view epoch
#: first, then the event's partition offset.
EPOCH_FACTOR = 10**13


def table_version(epoch: int, offset: int) -> int:
    """Version of a table-view document written from the event at ``offset``."""
    if not 0 <= offset < EPOCH_FACTOR:
        raise ValueError(f"offset {offset} out of range for a table-view version")
    if not 0 <= epoch < 10**19 // EPOCH_FACTOR:
        raise ValueError(f"view epoch {epoch} out of range")
    return epoch * EPOCH_FACTOR + offset


def version_key(version: int) -> str:
    """Fixed-width decimal form of a version, ordered like the number."""
    return str(version).zfill(VERSION_WIDTH)


def format_lsn(lsn: int) -> str:
    """``0x16B374D848`` -> ``'16/B374D848'`` (PostgreSQL's text form)."""
    return f"{lsn >> 32:X}/{lsn & 0xFFFFFFFF:X}"


def doc_id(key: dict[str, Any]) -> str:
    """The document id of a primary key (table and aggregate views alike).

    A single-column key gives its value as text; a composite key joins its
    values with ``:``, escaping ``%`` and ``:`` inside values.
    """
    if not key:
        raise BadRecord("contract", "event has no primary key (table without PK?)")
    values = list(key.values())
    if len(values) == 1:
        return str(values[0])
    return ":".join(str(v).replace("%", "%25").replace(":", "%3A") for v in values)


class SourceDocuments(dict[str, Document]):
    """A view's documents by id as the source defines them (the oracle's
    answer), with :attr:`duplicates`: each id that more than one source row
    gives, and why (only the first row in key order is in the mapping)."""

    def __init__(self, *args: Any) -> None:
        super().__init__(*args)
        self.duplicates: dict[str, str] = {}


class Op(enum.Enum):
    """Debezium operation codes, plus the kinds of record that carry no row."""

    CREATE = "c"
    UPDATE = "u"
    DELETE = "d"
    READ = "r"  # a snapshot row
    TRUNCATE = "t"
    TOMBSTONE = "tombstone"  # Kafka compaction marker after a delete


class Unchanged:
    """Stands for an unchanged TOASTed column whose value the event lacks.

    Documents may carry it between decoding and the sink; the sink replaces
    it with the stored value before writing, so it never reaches a store.
    """

    _instance: Unchanged | None = None

    def __new__(cls) -> Unchanged:
        if cls._instance is None:
            cls._instance = super().__new__(cls)
        return cls._instance

    def __repr__(self) -> str:
        return "UNCHANGED"

    def __reduce__(self) -> str:
        return "UNCHANGED"


UNCHANGED = Unchanged()


@record
class Position:
    """Where a record sits in Kafka."""

    topic: str
    partition: int
    offset: int


@record
class ChangeEvent:
    """One decoded row change (or a snapshot read) of one table."""

    table: str  # schema-qualified, e.g. "public.orders"
    op: Op
    key: dict[str, Any]
    before: Document | None
    after: Document | None
    lsn: int | None
    commit_ts_ms: int | None
    txid: int | None
    position: Position
    snapshot: bool = False
    #: Debezium's ``source.sequence`` (the last commit LSN before the change,
    #: the change's LSN): grows along a partition's stream, except where
    #: Debezium sends changes again (:mod:`pipeline.redelivery`); None for
    #: snapshot rows and records without it
    stream_pos: tuple[int, int] | None = None
    #: a row of Debezium's initial or blocking snapshot (``source.snapshot``
    #: true, first, last, ...): its table read whole at one LSN, ahead of the
    #: stream that follows it; not an incremental snapshot's row
    #: (:mod:`pipeline.retaken`)
    whole_read: bool = False


@record
class Upsert:
    """Write ``doc`` as document ``doc_id`` of ``view`` if ``version`` is newer.

    ``doc`` may hold :data:`UNCHANGED` values; the sink fills them from the
    stored document (see :func:`connectors.base.fill_unchanged`).
    """

    view: str
    doc_id: str
    version: int
    doc: Document
    lsn: int | None = None
    commit_ts_ms: int | None = None
    position: Position | None = field(default=None, compare=False)

    @property
    def has_unchanged(self) -> bool:
        """Whether some field is :data:`UNCHANGED` (cheap: no list built)."""
        return UNCHANGED in self.doc.values()

    @property
    def unchanged_fields(self) -> list[str]:
        return [k for k, v in self.doc.items() if v is UNCHANGED]


@record
class Delete:
    """Delete document ``doc_id`` and leave a tombstone at ``version``."""

    view: str
    doc_id: str
    version: int
    lsn: int | None = None
    commit_ts_ms: int | None = None
    position: Position | None = field(default=None, compare=False)


DocumentOp = Upsert | Delete
