"""Unchanged TOAST values of table-view events, read from the source row.

With REPLICA IDENTITY DEFAULT, PostgreSQL does not log a TOASTed value an
update left unchanged; Debezium sends a placeholder
(:data:`~pipeline.events.UNCHANGED` once decoded). Filling it from the
stored document is right only while the store holds the state just before
the event: once compaction removed the record that set the value (a worker
stopped meanwhile, a topic replay), the stored value is older, and stays so
for good. The source row holds the value; this module reads it.

The value read is the row's *current* one, possibly newer than the event:
the document may run ahead of its version for a while, never behind, and
every later change of the row has a later record that rewrites it, so the
view converges to the source. A row gone from the source is reported as
such: a later record (its delete, or the tombstone compaction left) removes
the document, so the event is skipped rather than written without the value
(a rebuild's catch-up then goes on until that later record: see
:mod:`pipeline.snapshot.rebuild`).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from psycopg import sql

from pipeline.aggregate.catalog import Catalog, TableInfo
from pipeline.aggregate.documents import Values
from pipeline.aggregate.plan import from_text, ident, table_ref, unnest_keys, value_text
from pipeline.aggregate.reader import Reader, key_text
from pipeline.events import UNCHANGED, ChangeEvent, Document, Position


def needs_source(event: ChangeEvent) -> bool:
    """Whether ``event``'s row image holds a value the log left out."""
    after = event.after
    return after is not None and UNCHANGED in after.values()


class SourceRows:
    """Reads the values an event's row image lacks, from the source row.

    Args:
        reader: the worker's source connection (``source.lookup_dsn`` when
            set; a read waits until the events' transactions are visible).
    """

    def __init__(self, reader: Reader) -> None:
        self.reader = reader
        self._conn: Any = None
        self._catalog: Catalog | None = None
        self._values: Values | None = None

    def _tables(self) -> tuple[Catalog, Values]:
        conn = self.reader.connection()
        if conn is not self._conn or self._catalog is None or self._values is None:
            self._conn = conn
            self._catalog = Catalog(conn)
            self._values = Values(conn)
        return self._catalog, self._values

    def fill(self, events: Sequence[ChangeEvent]) -> dict[Position, Document | None]:
        """Per event, its row image with every unchanged value read from the
        source; ``None`` where the row is gone from the source.

        Raises:
            TransientError: the source is unreachable (nothing is filled).
        """
        if not events:
            return {}
        by_table: dict[str, list[ChangeEvent]] = {}
        for ev in events:
            by_table.setdefault(ev.table, []).append(ev)
        self.reader.begin(ev.txid for ev in events if ev.txid is not None)
        try:
            catalog, values = self._tables()
            out: dict[Position, Document | None] = {}
            for table, evs in by_table.items():
                info = catalog.table(table, f"TOAST values of {table}")
                out.update(self._fill_table(info, values, evs))
        finally:
            self.reader.end()
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
