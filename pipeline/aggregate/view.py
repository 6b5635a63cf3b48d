"""Aggregate views: from changes of any participating table to whole documents.

Per batch, each change names the roots it may affect (:meth:`AggregateView.
collect`): a root row names itself; a related row names the rows it links
to, from its ``before`` and ``after`` images, so a foreign key that moved
names both the old and the new owner. When the link reaches the root's key
directly no query is needed; deeper chains are resolved by SQL in the same
snapshot as the first re-read that needs them. The roots of a batch are then
re-read in chunks of at most ``chunk_roots`` (:meth:`AggregateView.
reread_chunks`), each chunk in its own snapshot that sees every transaction
of the batch, so a change that fans out to every root neither holds one
snapshot nor one batch of writes for the whole fan-out; roots that vanished
(or left the view's ``where``) become deletes. Every op of one chunk carries
that chunk's snapshot version, and the position of a change that named its
root.

The view is also read straight from the source, without a change to start
from (:class:`pipeline.views.SourceRead`): a snapshot load in key order, one
chunk per snapshot (:meth:`AggregateView.load_chunk`), and the re-read of
given document ids for ``verify --repair`` and a focus's purge.
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import psycopg
from psycopg.sql import Composed

from connectors import rowsecurity
from pipeline.aggregate import fromsource, rootfilter
from pipeline.aggregate.catalog import Catalog, Columns, columns_of, table_columns
from pipeline.aggregate.documents import Converter
from pipeline.aggregate.fromsource import Chunk
from pipeline.aggregate.ids import IdRule
from pipeline.aggregate.pending import Pending
from pipeline.aggregate.plan import ViewSQL
from pipeline.aggregate.reader import Reader
from pipeline.aggregate.roots import Key, Links, RootKeys, row_key
from pipeline.aggregate.tree import Node, build_tree, named_by_image_only
from pipeline.errors import BadRecord, ConfigError, TransientError
from pipeline.events import (
    ChangeEvent,
    Delete,
    Document,
    DocumentOp,
    Op,
    Position,
    SourceDocuments,
    Upsert,
)
from pipeline.types import pg_value_to_json
from pipeline.viewconfig import AggregateViewConfig

logger = logging.getLogger(__name__)

Transform = Callable[[Document], Document | None]

#: Test hook: hold every re-read this long between reading and returning, so
#: a test can make an older read reach the sinks after a newer one.
_REREAD_DELAY_S = float(os.environ.get("READSIDE_FAULT_REREAD_DELAY_MS", "0")) / 1000
#: Roots per re-read snapshot unless the caller says (``worker.reread_chunk_roots``).
CHUNK_ROOTS = 2000


@dataclass
class AggregateView:
    """An aggregate view; :meth:`prepare` it against the source before use."""

    name: str
    cfg: AggregateViewConfig
    epoch: int
    transform: Transform | None
    root: Node | None = None
    sql: ViewSQL | None = None
    _by_table: dict[str, list[Node]] = field(default_factory=dict)
    _nodes: dict[str, Node] = field(default_factory=dict)
    _converter: Converter | None = None
    ids_rule: IdRule | None = None
    reads: int = 0  # statements that re-read roots (the coalescing figure)
    #: the columns of its tables it was compiled against (:meth:`columns_moved`)
    _columns: Columns = frozenset()

    def tables(self) -> list[str]:
        """The tables its documents read (``schema.table``)."""
        return self.cfg.tables()

    # ------------------------------------------------------------ setup
    def prepare(self, conn: psycopg.Connection[Any], strict: bool = True) -> None:
        """Check the view against the catalog and compile its statements.

        Raises:
            ConfigError: a table or column the config names is missing, a
                table has no primary key, or (``strict``) a related table
                whose link is not in its key lacks REPLICA IDENTITY FULL.
        """
        root = build_tree(Catalog(conn), self.name, self.cfg)
        rowsecurity.require_readable(conn, self.cfg.tables())
        rule = IdRule.of(
            self.name, root.table.name, root.table.primary_key, self.cfg.id
        )
        self.root, self.ids_rule = root, rule
        if self.cfg.where:
            where = self.cfg.where
            rootfilter.check(conn, self.name, root.table.name, root.alias, where)
        self.sql = ViewSQL(
            root, self.cfg.where, list(rule.columns) if rule.custom else None
        )
        self._by_table = {}
        for node in root.walk():
            self._by_table.setdefault(node.table.name, []).append(node)
            self._nodes[node.alias] = node
            if (
                strict
                and node.needs_full_identity()
                and node.table.replica_identity != "f"
            ):
                raise ConfigError(
                    f"{node.where}: table {node.table.name} needs "
                    "REPLICA IDENTITY FULL "
                    f"(its link column(s) {', '.join(node.on)} are not in its primary "
                    "key, so a change that moves the row would lose its old owner): "
                    f"ALTER TABLE {node.table.name} REPLICA IDENTITY FULL"
                )
        # what was compiled: the columns as the tree read them
        self._columns = columns_of(n[0].table for n in self._by_table.values())

    def columns_moved(self, reader: Reader) -> bool:
        """Whether the columns of its tables are no longer those it was
        compiled against (a migration added, dropped, renamed or retyped
        one, or dropped a table): compile it again before reading.

        A column added makes no statement fail: without this look the
        worker went on writing documents without it, after the load that
        the migration's warning names had rewritten them all.

        Raises:
            TransientError: the source is unreachable.
        """
        if self.root is None:
            return False
        conn = reader.connection()
        try:
            return table_columns(conn, sorted(self._by_table)) != self._columns
        except psycopg.errors.UndefinedTable:
            return True
        except psycopg.OperationalError as exc:
            reader.close()
            raise TransientError(f"source read failed: {exc}") from exc
        finally:
            if not conn.closed:
                conn.rollback()

    def tree(self) -> Node:
        if self.root is None or self.sql is None:
            raise RuntimeError(f"aggregate view {self.name} used before prepare()")
        return self.root

    def id_rule(self) -> IdRule:
        self.tree()
        assert self.ids_rule is not None
        return self.ids_rule

    def view_sql(self) -> ViewSQL:
        self.tree()
        assert self.sql is not None
        return self.sql

    # ------------------------------------------------------------ as a View
    @property
    def rereads(self) -> bool:
        return True

    @property
    def starts(self) -> Mapping[tuple[str, int], int]:
        return {}  # snapshot versions: every change of the stream counts

    def use_epoch(self, epoch: int, starts: Mapping[tuple[str, int], int]) -> None:
        self.epoch = epoch

    def route(
        self, event: ChangeEvent, pending: dict[str, Pending]
    ) -> list[DocumentOp]:
        """No op yet: note the roots ``event`` may change (:meth:`collect`) in
        this view's entry of ``pending``, to re-read after the batch."""
        self.collect(event, pending.setdefault(self.name, Pending()))
        return []

    def blind_to_tombstones(self, table: str) -> bool:
        self.tree()
        return any(named_by_image_only(n) for n in self._by_table.get(table, ()))

    def read_every_root(self, event: ChangeEvent, pending: dict[str, Pending]) -> None:
        """A tombstone whose delete compaction removed: its row's roots are
        not known, so every root is read again."""
        mine = pending.setdefault(self.name, Pending())
        if mine.every_root is None:
            logger.warning(
                "tombstone of %s without its delete (behind more than "
                "kafka.delete_window_ms): every root of %s is read again",
                event.table,
                self.name,
            )
        mine.every_root = event.position

    def from_source(self) -> AggregateView:
        return self

    def source_documents(
        self, conn: psycopg.Connection[Any], reader: Reader
    ) -> dict[str, Document]:
        return self.documents(reader)

    # ------------------------------------------------------------ per event
    def collect(self, event: ChangeEvent, pending: Pending) -> None:
        """Note which roots ``event`` may change.

        A tombstone has only its key: after compaction it is all that is left
        of a delete, so it names the roots its key can name (a root's own
        key, a child whose link columns are in its key).
        """
        self.tree()
        nodes = self._by_table.get(event.table, ())
        if event.op is Op.TRUNCATE:
            self._truncated(event, nodes, pending)
        else:
            for node in nodes:
                pending.note(event, node)
        if not nodes:
            return
        pending.changes += 1
        if event.txid is not None and not event.snapshot:
            pending.txids.add(event.txid)
        if event.lsn is not None:
            pending.lsn = max(pending.lsn or 0, event.lsn)
        if event.commit_ts_ms is not None:
            pending.commit_ts_ms = max(pending.commit_ts_ms or 0, event.commit_ts_ms)
        pending.position = event.position

    def _truncated(
        self, event: ChangeEvent, nodes: Sequence[Node], pending: Pending
    ) -> None:
        """A truncate of a table of the view: re-read every root it defines.

        Rows of a related table are gone, so no image names the roots they
        were part of; every root is read again (in chunks). A truncated root
        table leaves no root to read: the documents the stores hold for them
        are deleted only by a rebuild (the view does not know their ids).
        """
        if not nodes:
            return
        pending.every_root = event.position
        if any(n.kind == "root" for n in nodes):
            logger.warning(
                "truncate of root table %s: documents of its removed rows stay "
                "until `readside snapshot %s --rebuild`",
                event.table,
                self.name,
            )

    # ------------------------------------------------------------ per batch
    def converter(self, reader: Reader) -> Converter:
        conn = reader.connection()
        if self._converter is None or self._converter.conn is not conn:
            self._converter = Converter(conn, self.tree())
        return self._converter

    def reread(self, reader: Reader, pending: Pending) -> list[DocumentOp]:
        """Every op of :meth:`reread_chunks` (one snapshot for up to
        :data:`CHUNK_ROOTS` roots), for callers that write them all at once.

        Raises:
            TransientError: the source is unreachable or lags (retry later).
        """
        return [op for ops in self.reread_chunks(reader, pending) for op in ops]

    def reread_chunks(
        self, reader: Reader, pending: Pending, chunk_roots: int = CHUNK_ROOTS
    ) -> Iterator[list[DocumentOp]]:
        """Re-read every root ``pending`` names, ``chunk_roots`` at most per read.

        Each chunk is read in its own snapshot, which sees every transaction
        of ``pending`` (:meth:`Reader.begin`), so its ops are right on their
        own and carry its own snapshot version: a caller may write them (and
        keep polling) before asking for the next chunk. Roots named directly
        come first; roots reached by SQL are streamed from a cursor declared
        in the first snapshot that needs them. Each root is in one chunk.

        The iterator cannot resume after an error: start a new one (the ops
        written meanwhile are harmless under the version rule). Roots a
        transform refused are in ``pending.failures`` (cleared when a new
        iterator starts), the change to blame in :meth:`Pending.blamed`.

        Raises:
            TransientError: the source is unreachable or lags (retry later).
            FatalError: the cursor vanished between chunks (a pooler in
                transaction mode on the lookup DSN).
        """
        if not pending:
            return
        self.tree()
        pending.failures.clear()  # a new iterator after an error reports anew
        named = {k: pending.named_by.get(k) for k in pending.root_keys}
        links = Links(
            reader,
            self.view_sql(),
            [(self._nodes[a], values) for a, values in pending.links.items()],
            pending.every_root,
        )
        roots = RootKeys(named, chunk_roots, links.fetch if links.parts else None)
        try:
            first = True
            while first or not roots.done:
                with reader.read(pending.txids, self.tables()) as snap:
                    chunk = roots.next_chunk()
                    keys = sorted(chunk)
                    rows = self._rows(reader, keys)
                    converter = self.converter(reader)
                if not chunk and not first:
                    return  # the cursor ran out exactly at a chunk's end
                first = False
                self.reads += 1
                if _REREAD_DELAY_S:
                    time.sleep(_REREAD_DELAY_S)
                version = snap.version(self.epoch)
                yield self.ops_from_rows(converter, rows, chunk, version, pending)
        finally:
            links.close()

    def _rows(self, reader: Reader, keys: list[Key]) -> list[Any]:
        """The rows of roots ``keys`` (with a custom id: of their ids)."""
        rule = self.id_rule()
        wanted = rule.project(keys) if rule.custom else keys
        return reader.rows_by_keys(self.view_sql(), wanted) if wanted else []

    def ops_from_rows(
        self,
        converter: Converter,
        rows: list[Any],
        asked: Mapping[Key, Position | None] | set[Key] | None,
        version: int,
        meta: Pending,
    ) -> list[DocumentOp]:
        """Upserts for ``rows``; deletes for keys ``asked`` that no row answered.

        An op carries the position ``asked`` gives its root (a change that
        named it), else the batch's last one; a root the transform refuses is
        noted in ``meta.failures`` with that position in ``meta.refused_by``.
        """
        root, rule = self.tree(), self.id_rule()
        pk = root.table.primary_key
        ops: list[DocumentOp] = []
        found: dict[str, Key] = {}
        lsn, ts = meta.lsn, meta.commit_ts_ms
        blame = asked if isinstance(asked, Mapping) else {}
        for row in rows:
            ident = rule.ident_of([pg_value_to_json(v) for v in row[: len(pk)]])
            rkey = row_key(row[: len(pk)])
            pos = blame.get(rkey) or meta.position
            if ident in found:  # a duplicate id: reported, never merged
                meta.failures.append((ident, rule.duplicate(ident, found[ident], rkey)))
                meta.refused_by.setdefault(ident, pos)
                continue
            found[ident] = rkey
            doc: Document | None = converter.document(root, row[len(pk)])
            if doc is not None and self.transform is not None:
                try:
                    doc = self.transform(doc)
                except BadRecord as exc:  # nothing written; the caller reports
                    meta.failures.append((ident, exc))
                    meta.refused_by[ident] = pos
                    continue
            if doc is None:
                ops.append(Delete(self.name, ident, version, lsn, ts, pos))
            else:
                ops.append(Upsert(self.name, ident, version, doc, lsn, ts, pos))
        for key_values, named in (blame or dict.fromkeys(asked or ())).items():
            ident = rule.ident_of(key_values)
            if ident not in found:
                pos = named or meta.position
                ops.append(Delete(self.name, ident, version, lsn, ts, pos))
        return ops

    def documents(self, reader: Reader) -> SourceDocuments:
        """Every document the view's SQL defines now (one snapshot), with the
        ids two roots share."""
        return fromsource.documents(self, reader)

    # ------------------------------------------------------------ from the source
    def definition(self) -> Composed:
        return self.view_sql().definition()

    def ids(self, reader: Reader) -> set[str]:
        return fromsource.ids(self, reader)

    def reread_ids(self, reader: Reader, ids: Iterable[str]) -> list[DocumentOp]:
        return fromsource.reread_ids(self, reader, ids)

    def count(self, reader: Reader, where: str | None, after: Any = None) -> int:
        return fromsource.count(self, reader, where, after)

    def load_chunk(
        self, reader: Reader, after: list[str] | None, where: str | None, size: int
    ) -> Chunk | None:
        return fromsource.load_chunk(self, reader, after, where, size)
