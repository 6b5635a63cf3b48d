"""Values a table-view event's row image lacks, read from the source row.

A row image lacks values in two cases:

- **Unchanged TOAST values.** With REPLICA IDENTITY DEFAULT, PostgreSQL does
  not log a TOASTed value an update left unchanged; Debezium sends a
  placeholder (:data:`~pipeline.events.UNCHANGED` once decoded). Filling it
  from the stored document is right only while the store holds the state
  just before the event: once compaction removed the record that set the
  value (a worker stopped meanwhile, a topic replay), the stored value is
  older, and stays so for good.
- **Generated columns** (``GENERATED ALWAYS AS (...) STORED``). pgoutput
  leaves them out of every change it streams, while Debezium's initial
  snapshot reads them with the row: without this, the document of a row
  changed after the snapshot would lose the column. A table's generated
  columns are read from the catalog when its first event comes and again
  after :data:`GENERATED_TTL_S` (a migration may add or drop one).

The source row holds the values; this module reads them. The value read is
the row's *current* one, possibly newer than the event: the document may
run ahead of its version for a while, never behind, and every later change
of the row has a later record that rewrites it, so the view converges to
the source. A row gone from the source is reported as such: a later record
(its delete, or the tombstone compaction left) removes the document, so the
event is skipped rather than written without the value (a rebuild's
catch-up then goes on until that later record: see
:mod:`pipeline.snapshot.rebuild`).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import replace
from typing import Any

import psycopg
from psycopg import sql

from connectors import rowsecurity
from connectors.postgres import GENERATED
from pipeline.aggregate.catalog import Catalog, TableInfo
from pipeline.aggregate.documents import Values
from pipeline.aggregate.plan import from_text, ident, table_ref, unnest_keys, value_text
from pipeline.aggregate.reader import Reader, key_text
from pipeline.errors import ConfigError, TransientError
from pipeline.events import UNCHANGED, ChangeEvent, Document, Position

logger = logging.getLogger(__name__)

#: Seconds a table's generated columns, once read, are used before they are
#: read again.
GENERATED_TTL_S = 60.0

#: The generated columns of the tables named, as (table, column).
_GENERATED = sql.SQL(GENERATED)


class SourceRows:
    """Reads the values an event's row image lacks, from the source row.

    Args:
        reader: the worker's source connection (``source.lookup_dsn`` when
            set; a read waits until the events' transactions are visible).
    """

    def __init__(
        self, reader: Reader, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self.reader = reader
        self.clock = clock
        self._conn: Any = None
        self._catalog: Catalog | None = None
        self._values: Values | None = None
        #: table -> its generated columns and when they were read
        self._generated: dict[str, tuple[frozenset[str], float]] = {}

    def generated(self, tables: Iterable[str]) -> dict[str, frozenset[str]]:
        """The generated columns of each of ``tables``, read from the catalog
        when not known or older than :data:`GENERATED_TTL_S`. While the
        source cannot be read, the columns read before are kept.

        Raises:
            TransientError: the source is unreachable and a table's columns
                were never read.
            ConfigError: a row-level security policy may hide rows of a
                table from the reader, whose reads would take them for gone
                (:mod:`connectors.rowsecurity`); looked at with the columns.
        """
        now, known = self.clock(), self._generated
        stale = sorted(t for t in set(tables) if self._known(t, now) is None)
        if stale:
            try:
                with self.reader.read():
                    rows = self.reader.query(_GENERATED, {"tables": stale})
                    hidden = self._hidden(stale)
                if hidden is not None:
                    raise ConfigError(hidden)
            except TransientError as exc:
                if any(t not in known for t in stale):
                    raise
                logger.warning(
                    "generated columns not read again, the former ones kept "
                    "tables=%s error=%s",
                    ",".join(stale),
                    exc,
                )
                rows = None
            for table in stale:
                cols = (
                    known[table][0]
                    if rows is None
                    else frozenset(str(c) for t, c in rows if t == table)
                )
                known[table] = (cols, now)
        return {t: known[t][0] for t in tables}

    def _known(self, table: str, now: float) -> frozenset[str] | None:
        """``table``'s generated columns, if read less than
        :data:`GENERATED_TTL_S` before ``now``."""
        have = self._generated.get(table)
        if have is None or have[1] < now - GENERATED_TTL_S:
            return None
        return have[0]

    def _hidden(self, tables: list[str]) -> str | None:
        """:func:`connectors.rowsecurity.reader_problem` of ``tables``."""
        try:
            return rowsecurity.reader_problem(self.reader.connection(), tables)
        except psycopg.OperationalError as exc:
            self.reader.close()
            raise TransientError(f"source read failed: {exc}") from exc

    def whole(self, events: Sequence[ChangeEvent]) -> bool:
        """Whether no event of ``events`` lacks a value, as far as known
        without the source: False when a table's generated columns are to be
        read (again), so that the caller reads only when :meth:`fill` may."""
        now = self.clock()
        columns: dict[str, frozenset[str]] = {}  # per table, checked fresh
        for ev in events:
            after = ev.after
            if not after:
                continue
            generated = columns.get(ev.table)
            if generated is None:
                generated = self._known(ev.table, now)
                if generated is None:
                    return False
                columns[ev.table] = generated
            if generated and not generated <= after.keys():
                return False
            if UNCHANGED in after.values():
                return False
        return True

    def lacking(self, events: Sequence[ChangeEvent]) -> list[ChangeEvent]:
        """The events of ``events`` whose row image lacks values, each with
        :data:`~pipeline.events.UNCHANGED` for every value it lacks."""
        generated = self.generated({ev.table for ev in events if ev.after})
        out = []
        for ev in events:
            after = ev.after
            if not after:
                continue
            gaps = [c for c in generated[ev.table] if c not in after]
            if gaps:
                ev = replace(ev, after={**after, **dict.fromkeys(gaps, UNCHANGED)})
            elif UNCHANGED not in after.values():
                continue
            out.append(ev)
        return out

    def _tables(self) -> tuple[Catalog, Values]:
        conn = self.reader.connection()
        if conn is not self._conn or self._catalog is None or self._values is None:
            self._conn = conn
            self._catalog = Catalog(conn)
            self._values = Values(conn)
        return self._catalog, self._values

    def fill(self, events: Sequence[ChangeEvent]) -> dict[Position, Document | None]:
        """Per event of ``events`` whose row image lacks values
        (:meth:`lacking`), its image with them read from the source;
        ``None`` where the row is gone from the source. Events whose image
        is whole are not in the result.

        Raises:
            TransientError: the source is unreachable (nothing is filled).
        """
        events = self.lacking(events)
        if not events:
            return {}
        by_table: dict[str, list[ChangeEvent]] = {}
        for ev in events:
            by_table.setdefault(ev.table, []).append(ev)
        txids = (ev.txid for ev in events if ev.txid is not None)
        with self.reader.read(txids, by_table):
            catalog, values = self._tables()
            out: dict[Position, Document | None] = {}
            for table, evs in by_table.items():
                info = catalog.table(table, f"TOAST values of {table}")
                out.update(self._fill_table(info, values, evs))
        return out

    def _fill_table(
        self, info: TableInfo, values: Values, events: list[ChangeEvent]
    ) -> dict[Position, Document | None]:
        keys = [info.columns[k] for k in info.primary_key]
        wanted = sorted(
            {c for ev in events for c, v in (ev.after or {}).items() if v is UNCHANGED}
        )
        columns = [info.column(c, f"TOAST values of {info.name}") for c in wanted]
        params = {
            f"p{i}": [key_text(ev.key[k.name]) for ev in events]
            for i, k in enumerate(keys)
        }
        picked = [sql.SQL("u.{}").format(ident(f"k{i}")) for i in range(len(keys))]
        picked += [
            sql.SQL("to_jsonb({}) #>> '{{}}'").format(
                value_text(sql.SQL("t.{}").format(ident(c.name)), c)
            )
            for c in columns
        ]
        joins = [
            sql.SQL("t.{} = {}").format(
                ident(k.name), from_text(sql.SQL("u.{}").format(ident(f"k{i}")), k)
            )
            for i, k in enumerate(keys)
        ]
        statement = sql.SQL("SELECT {} FROM {} JOIN {} t ON {}").format(
            sql.SQL(", ").join(picked),
            unnest_keys(keys, list(params)),
            table_ref(info.name),
            sql.SQL(" AND ").join(joins),
        )
        found = {
            tuple(row[: len(keys)]): row[len(keys) :]
            for row in self.reader.query(statement, params)
        }
        out: dict[Position, Document | None] = {}
        for ev in events:
            got = found.get(tuple(key_text(ev.key[k.name]) for k in keys))
            if got is None:
                out[ev.position] = None
                continue
            after = dict(ev.after or {})
            for column, text in zip(columns, got, strict=True):
                if after.get(column.name) is UNCHANGED:
                    after[column.name] = values.value(column, text)
            out[ev.position] = after
        return out
