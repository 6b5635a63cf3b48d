"""Views, the one interface the engine and the operations call, and table views.

A view turns source changes into documents. Both kinds offer :class:`View`;
they differ in where a document comes from, which every caller learns by
asking the view rather than its class:

* a **table view** (:class:`TableView`, here) builds each document from its
  event alone, at the event's stream position;
* an **aggregate view** (:class:`pipeline.aggregate.AggregateView`) names
  the roots a change may touch and reads them back from the source after
  the batch, at the version of that read's snapshot; it can also be read
  straight from the source (:class:`SourceRead`: snapshot loads, repair,
  focus purges).

The version of every document op of a table view is the event's position in
its partition, ``table_version(epoch, offset)`` (docs/design.md: why not the
LSN). After a rebuild on a new topic layout the view's epoch starts at a
per-partition offset (:mod:`pipeline.layout`): events below it belong to the
older epoch, whose generation the rebuild replaced, and are not applied. A
row that leaves the view's focus filter, or that a transform drops, becomes
a delete at that version, so the stores forget it.

A tombstone (a record with a key and no value) deletes its key at its own
offset. Debezium writes one right after each delete; once compaction has
run it is the only trace of that delete, so a worker that was behind or a
replay of the compacted topic must not skip it. Its offset is a sound
version: every event of the key before it precedes the delete, and every
later one (the row inserted again) comes after it in the same partition.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any, Protocol

import psycopg
from psycopg import sql
from psycopg.pq import Format
from psycopg.rows import dict_row
from psycopg.types import TypeInfo
from psycopg.types.hstore import register_hstore

from pipeline.aggregate import catalog
from pipeline.aggregate.documents import TEXT_ARRAY_OID
from pipeline.aggregate.fromsource import Chunk
from pipeline.aggregate.pending import Pending
from pipeline.aggregate.reader import Reader
from pipeline.aggregate.view import AggregateView
from pipeline.config import Config
from pipeline.errors import BadRecord, ConfigError
from pipeline.events import (
    ChangeEvent,
    Delete,
    Document,
    DocumentOp,
    Op,
    Upsert,
    doc_id,
    table_version,
)
from pipeline.expr import compile_expression
from pipeline.types import pg_row_to_json
from pipeline.viewconfig import AggregateViewConfig, TableViewConfig
from transforms.chain import build_chain

__all__ = [
    "RowFilter",
    "SourceRead",
    "TableView",
    "Transform",
    "View",
    "build_views",
    "doc_id",
    "table_documents",
]

RowFilter = Callable[[Document], bool]
Transform = Callable[[Document], Document | None]
#: (topic, partition) -> first offset of a view's epoch
Starts = Mapping[tuple[str, int], int]


class SourceRead(Protocol):
    """A view whose documents can be read straight from the source by SQL,
    each read at the version of its own snapshot (an aggregate view)."""

    @property
    def name(self) -> str: ...

    def definition(self) -> sql.Composed:
        """The SQL that defines every document of the view (to run by hand)."""

    def ids(self, reader: Reader) -> set[str]:
        """The id of every document the view defines now (one snapshot)."""

    def reread_ids(self, reader: Reader, ids: Iterable[str]) -> list[DocumentOp]:
        """Fresh ops for documents ``ids``, read now: an upsert each, or a
        delete for an id the view no longer defines. Their version is newer
        than any stored one, so they replace whatever a store holds.

        Raises:
            TransientError: the source is unreachable (retry later).
        """

    def count(self, reader: Reader, where: str | None, after: Any = None) -> int:
        """How many documents the view defines (with an extra SQL condition),
        all or (``after``) those after that key, in one snapshot."""

    def load_chunk(
        self, reader: Reader, after: list[str] | None, where: str | None, size: int
    ) -> Chunk | None:
        """Up to ``size`` documents after key ``after`` in key order, read in
        one snapshot at its version; ``None`` past the last one."""


class View(Protocol):
    """A view as the engine and the operations use it, whatever its kind.

    The engine routes every decoded event of the view's topics to
    :meth:`route`, then (once per batch) re-reads what the events named with
    :meth:`reread_chunks`. A view that :attr:`rereads` builds no document from
    an event's row image: the unchanged TOAST values of such an image need
    not be read from the source for it.
    """

    @property
    def name(self) -> str: ...

    @property
    def cfg(self) -> TableViewConfig | AggregateViewConfig: ...

    #: bumped when the view must be rebuilt (docs/design.md: view epochs)
    epoch: int

    @property
    def rereads(self) -> bool:
        """Whether its documents are read back from the source after each
        batch, versioned by that read's snapshot, rather than built from each
        event at its stream position."""

    @property
    def starts(self) -> Starts:
        """Where its epoch starts in each partition of its topic (empty: at
        every offset; always empty for a view that :attr:`rereads`)."""

    def prepare(self, conn: psycopg.Connection[Any], strict: bool = True) -> None:
        """Check the view against the source's catalog before first use.

        Raises:
            ConfigError: the view does not fit the source's tables.
        """

    def route(
        self, event: ChangeEvent, pending: dict[str, Pending]
    ) -> list[DocumentOp]:
        """The ops ``event`` makes now; a view that :attr:`rereads` makes none
        but notes the roots to read back in ``pending`` (by view name).

        Raises:
            BadRecord: the event breaks the view's contract or a transform
                refused its document (dead-letter the record).
        """

    def blind_to_tombstones(self, table: str) -> bool:
        """Whether a tombstone of ``table`` can leave roots unnamed: a child
        whose link to its owner is outside its key names the owner only in
        its delete record's before image."""

    def read_every_root(self, event: ChangeEvent, pending: dict[str, Pending]) -> None:
        """Read every root again after this batch: ``event`` is a tombstone
        whose delete record compaction removed before it was read."""

    def columns_moved(self, reader: Reader) -> bool:
        """Whether a migration changed the columns of the tables it reads
        since it was prepared (prepare it again before reading)."""

    def reread_chunks(
        self, reader: Reader, pending: Pending, chunk_roots: int
    ) -> Iterator[list[DocumentOp]]:
        """The ops of the roots ``pending`` names, one snapshot per chunk
        (see :meth:`pipeline.aggregate.AggregateView.reread_chunks`).

        Raises:
            TransientError: the source is unreachable or lags (retry later).
        """

    def use_epoch(self, epoch: int, starts: Starts) -> None:
        """Use the epoch (and its start offsets) the workers recorded."""

    def from_source(self) -> SourceRead | None:
        """How to read its documents straight from the source, or ``None``:
        a view versioned by stream positions loads only through its topic
        (docs/design.md: two kinds of view, two kinds of version)."""

    def source_documents(
        self, conn: psycopg.Connection[Any], reader: Reader
    ) -> dict[str, Document]:
        """Every document the source defines now, as the worker would build
        it (the convergence oracle of ``readside verify``).

        Raises:
            BadRecord: a row breaks the view's contract (a transform raised).
        """


@dataclass
class TableView:
    """Turns change events of one table into document ops of one view."""

    name: str
    cfg: TableViewConfig
    epoch: int
    row_filter: RowFilter | None
    transform: Transform | None
    #: (topic, partition) -> first offset of ``epoch`` (none: every offset)
    starts: dict[tuple[str, int], int] = field(default_factory=dict)

    @property
    def rereads(self) -> bool:
        return False

    def prepare(self, conn: psycopg.Connection[Any], strict: bool = True) -> None:
        """Nothing to check: a table view reads no table of the source."""

    def route(
        self, event: ChangeEvent, pending: dict[str, Pending]
    ) -> list[DocumentOp]:
        return self.ops_for(event)

    def blind_to_tombstones(self, table: str) -> bool:
        return False  # a tombstone deletes its own document

    def read_every_root(self, event: ChangeEvent, pending: dict[str, Pending]) -> None:
        """Nothing to read: a table view reads no root."""

    def columns_moved(self, reader: Reader) -> bool:
        return False  # it reads no table

    def reread_chunks(
        self, reader: Reader, pending: Pending, chunk_roots: int
    ) -> Iterator[list[DocumentOp]]:
        return iter(())

    def use_epoch(self, epoch: int, starts: Starts) -> None:
        self.epoch = epoch
        self.starts = dict(starts)

    def from_source(self) -> None:
        return None

    def source_documents(
        self, conn: psycopg.Connection[Any], reader: Reader
    ) -> dict[str, Document]:
        return table_documents(conn, self)

    def shape(self, row: Document) -> Document:
        if self.cfg.fields is not None:
            row = {k: row[k] for k in self.cfg.fields if k in row}
        if self.cfg.exclude:
            row = {k: v for k, v in row.items() if k not in self.cfg.exclude}
        return row

    def ops_for(self, event: ChangeEvent) -> list[DocumentOp]:
        """Document ops for one event; raises :class:`BadRecord` for a bad one."""
        pos = event.position
        if pos.offset < self.starts.get((pos.topic, pos.partition), 0):
            return []  # an older epoch's event (pipeline.layout)
        if event.op is Op.TRUNCATE:
            # readside's connector skips truncate events and its trigger turns
            # a TRUNCATE into row deletes (connectors/truncate.py); a truncate
            # event here comes from another setup and would empty nothing.
            raise BadRecord(
                "contract",
                f"truncate event of {event.table}: a table view needs the "
                "rows' deletes (install the trigger with `connector apply`)",
            )
        version = table_version(self.epoch, event.position.offset)
        lsn, ts, pos = event.lsn, event.commit_ts_ms, event.position
        if event.op in (Op.DELETE, Op.TOMBSTONE):
            return [Delete(self.name, doc_id(event.key), version, lsn, ts, pos)]
        if event.after is None:
            raise BadRecord("contract", f"{event.op.value} event without 'after' image")
        ident = doc_id(event.key)
        row = self.shape(event.after)
        if self.row_filter is not None and not self.row_filter(row):
            return [Delete(self.name, ident, version, lsn, ts, pos)]
        doc = self.transform(row) if self.transform is not None else row
        if doc is None:
            return [Delete(self.name, ident, version, lsn, ts, pos)]
        return [Upsert(self.name, ident, version, doc, lsn, ts, pos)]


def build_views(
    cfg: Config,
    epochs: Mapping[str, int] | None = None,
    only: Iterable[str] | None = None,
    starts: Mapping[str, dict[tuple[str, int], int]] | None = None,
) -> dict[str, View]:
    """Compile every view of the config (filters and transform chains).

    ``epochs`` and ``starts`` (by view) are those recorded with the topic
    layouts (:func:`pipeline.layout.load`); by default epoch 0 from offset 0.

    Aggregate views come back unprepared: see
    :func:`pipeline.aggregate.prepare_views`.
    """
    epochs = epochs or {}
    defined = cfg.effective_views()
    wanted = set(only) if only else set(defined)
    unknown = wanted - set(defined)
    if unknown:
        raise ConfigError(f"unknown view(s): {', '.join(sorted(unknown))}")
    views: dict[str, View] = {}
    for name in sorted(wanted):
        vcfg = defined[name]
        chain = build_chain(list(vcfg.transforms)) if vcfg.transforms else None
        epoch = epochs.get(name, 0)
        if isinstance(vcfg, AggregateViewConfig):
            views[name] = AggregateView(name, vcfg, epoch, chain)
            continue
        row_filter: RowFilter | None = None
        if vcfg.filter:
            expr = compile_expression(vcfg.filter)
            row_filter = _as_predicate(expr.evaluate)
        first = dict((starts or {}).get(name, {}))
        views[name] = TableView(name, vcfg, epoch, row_filter, chain, first)
    return views


def _as_predicate(evaluate: Callable[[Document], Any]) -> RowFilter:
    def predicate(row: Document) -> bool:
        return bool(evaluate(row))

    return predicate


_BIT_OID = 1560


def primary_key(conn: psycopg.Connection[Any], table: str) -> list[str]:
    """The primary-key columns of ``schema.table``, in key order."""
    keys = catalog.primary_key(conn, table)
    if not keys:
        raise ValueError(f"table {table} has no primary key")
    return keys


def _register_types(conn: psycopg.Connection[Any], table: str) -> None:
    """Read hstore columns as dicts and the arrays psycopg has no loader for
    (an enum's) as lists of texts, as Debezium sends them."""
    info = TypeInfo.fetch(conn, "hstore")
    if info is not None:
        register_hstore(info, conn)
    texts = conn.adapters.get_loader(TEXT_ARRAY_OID, Format.TEXT)
    for column in catalog.read_table(conn, table, table).columns.values():
        if column.array and conn.adapters.get_loader(column.oid, Format.TEXT) is None:
            conn.adapters.register_loader(column.oid, texts)  # type: ignore[arg-type]


def table_documents(
    conn: psycopg.Connection[Any], view: TableView
) -> dict[str, Document]:
    """Documents of a table view as the source defines them now.

    Every row is read (``SELECT * FROM table``), mapped with
    :func:`~pipeline.types.pg_row_to_json` (the mapping decoded Debezium
    events give), keyed with :func:`~pipeline.events.doc_id` and run through
    the view as the worker runs it (shape, focus filter, transform chain).

    Raises:
        pipeline.errors.BadRecord: a row breaks the view's contract (a
            transform raised); the worker would have dead-lettered it.
    """
    table = view.cfg.table
    keys = primary_key(conn, table)
    schema, name = table.split(".", 1)
    query = sql.SQL("SELECT * FROM {}").format(sql.Identifier(schema, name))
    out: dict[str, Document] = {}
    _register_types(conn, table)
    with conn.cursor(row_factory=dict_row) as cur:
        cur.execute(query)
        # bit(1) is a boolean in Debezium's mapping; psycopg reads it as text.
        bits = [d.name for d in cur.description or () if d.type_code == _BIT_OID]
        for raw in cur:
            for col in bits:
                if raw[col] is not None and len(raw[col]) == 1:
                    raw[col] = raw[col] == "1"
            row = pg_row_to_json(raw)
            ident = doc_id({k: row[k] for k in keys})
            shaped = view.shape(row)
            if view.row_filter is not None and not view.row_filter(shaped):
                continue
            doc = view.transform(shaped) if view.transform is not None else shaped
            if doc is not None:
                out[ident] = doc
    return out
