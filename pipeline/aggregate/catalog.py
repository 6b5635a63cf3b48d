"""What an aggregate view needs to know of its tables: columns, types, keys.

Read from ``pg_catalog`` when a view is prepared. A migration later (a
column added, dropped, renamed, retyped) is seen by :func:`table_columns`,
which a worker asks before each read of the view: it prepares the view
again (:meth:`pipeline.aggregate.AggregateView.columns_moved`).
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

import psycopg
from psycopg.rows import tuple_row

from pipeline.errors import ConfigError
from pipeline.fieldtypes import FieldType, column_type

#: Per column: name, the type psycopg loads (a domain's base type), the SQL
#: type, its name, then what the stores' native types are derived from
#: (:mod:`pipeline.fieldtypes`): the scalar type's name (an array's element,
#: a domain's base), whether it is an enum, whether an array, and the typmod
#: (numeric's precision and scale).
_COLUMNS = """
SELECT a.attname,
       b.oid,
       format_type(a.atttypid, a.atttypmod),
       t.typname,
       coalesce(e.typname, b.typname),
       coalesce(e.typtype, b.typtype) = 'e',
       e.oid IS NOT NULL,
       CASE WHEN t.typtype = 'd' THEN t.typtypmod ELSE a.atttypmod END
FROM pg_attribute a
JOIN pg_type t ON t.oid = a.atttypid
JOIN pg_type b ON b.oid = CASE WHEN t.typtype = 'd' THEN t.typbasetype ELSE t.oid END
LEFT JOIN pg_type e ON e.oid = b.typelem AND b.typcategory = 'A'
WHERE a.attrelid = %s::regclass AND a.attnum > 0 AND NOT a.attisdropped
ORDER BY a.attnum
"""

_PRIMARY_KEY = """
SELECT a.attname, format_type(a.atttypid, a.atttypmod)
FROM pg_index i
JOIN pg_attribute a ON a.attrelid = i.indrelid AND a.attnum = ANY (i.indkey)
WHERE i.indrelid = %s::regclass AND i.indisprimary
ORDER BY array_position(i.indkey::int2[], a.attnum)
"""

#: A change is logged with the replica identity of the leaf partition that
#: holds the row, so a partitioned table counts as FULL only if every leaf is.
_REPLICA_IDENTITY = """
SELECT coalesce(
    (SELECT c.relreplident FROM pg_partition_tree(%(t)s::regclass) AS t
     JOIN pg_class c ON c.oid = t.relid
     WHERE t.isleaf AND c.relreplident <> 'f' LIMIT 1),
    (SELECT relreplident FROM pg_class WHERE oid = %(t)s::regclass))
"""


#: Every column of the tables, as much of each as a compiled statement
#: depends on: its name and type (as :data:`_COLUMNS` reads it).
_TABLE_COLUMNS = """
SELECT c.relation, a.attname, format_type(a.atttypid, a.atttypmod)
FROM unnest(%s::text[]) AS c(relation)
JOIN pg_attribute a ON a.attrelid = c.relation::regclass
WHERE a.attnum > 0 AND NOT a.attisdropped
"""

#: (table, column, type) of each column of some tables
Columns = frozenset[tuple[str, str, str]]


def table_columns(conn: psycopg.Connection[Any], tables: Sequence[str]) -> Columns:
    """The columns of ``tables`` now, as :func:`columns_of` gives them.

    Raises:
        psycopg.errors.UndefinedTable: a table is gone.
    """
    rows = conn.execute(_TABLE_COLUMNS, (list(tables),)).fetchall()
    return frozenset((str(t), str(c), str(ty)) for t, c, ty in rows)


def columns_of(tables: Iterable[TableInfo]) -> Columns:
    """The columns of ``tables`` as they were read (what a view was
    compiled against), comparable with :func:`table_columns`."""
    return frozenset(
        (t.name, c.name, c.sql_type) for t in tables for c in t.columns.values()
    )


@dataclass(frozen=True)
class Column:
    """One column: its name, the type OID psycopg loads its text with, its SQL type."""

    name: str
    oid: int  # a domain's base type
    sql_type: str  # as format_type() prints it, for casts of key values
    type_name: str
    #: the scalar type's name: an array's element, a domain's base type
    scalar: str = ""
    enum: bool = False
    array: bool = False
    typmod: int = -1

    @property
    def field_type(self) -> FieldType:
        """What the column's values are, for the stores' native types."""
        return column_type(
            self.scalar or self.type_name, self.array, self.enum, self.typmod
        )

    @property
    def is_money(self) -> bool:
        return self.type_name == "money"


@dataclass(frozen=True)
class TableInfo:
    """Columns (in table order) and primary key of one table."""

    name: str
    columns: dict[str, Column]
    primary_key: list[str]
    replica_identity: str  # d(efault), f(ull), i(ndex), n(othing)

    def column(self, name: str, where: str) -> Column:
        try:
            return self.columns[name]
        except KeyError:
            raise ConfigError(
                f"{where}: table {self.name} has no column {name!r} "
                f"(columns: {', '.join(self.columns)})"
            ) from None


def read_table(conn: psycopg.Connection[Any], table: str, where: str) -> TableInfo:
    """Introspect ``schema.table``; a missing table is a config error at ``where``."""
    try:
        rows = conn.execute(_COLUMNS, (table,)).fetchall()
    except psycopg.errors.UndefinedTable:
        conn.rollback()
        raise ConfigError(f"{where}: table {table} does not exist") from None
    columns = {
        str(r[0]): Column(
            str(r[0]),
            int(r[1]),
            str(r[2]),
            str(r[3]),
            str(r[4]),
            bool(r[5]),
            bool(r[6]),
            int(r[7]),
        )
        for r in rows
    }
    pk = primary_key(conn, table)
    ident = conn.execute(_REPLICA_IDENTITY, {"t": table}).fetchone()
    return TableInfo(table, columns, pk, str(ident[0]) if ident else "d")


def primary_key(conn: psycopg.Connection[Any], table: str) -> list[str]:
    """The primary-key columns of ``schema.table`` in key order ([] if none)."""
    with conn.cursor(row_factory=tuple_row) as cur:
        return [str(r[0]) for r in cur.execute(_PRIMARY_KEY, (table,)).fetchall()]


def primary_key_types(conn: psycopg.Connection[Any], table: str) -> dict[str, str]:
    """The primary-key columns of ``schema.table`` in key order, each with its
    SQL type as ``format_type`` writes it ({} if none)."""
    with conn.cursor(row_factory=tuple_row) as cur:
        rows = cur.execute(_PRIMARY_KEY, (table,)).fetchall()
    return {str(name): str(kind) for name, kind in rows}


class Catalog:
    """Reads each table once per connection."""

    def __init__(self, conn: psycopg.Connection[Any]) -> None:
        self.conn = conn
        self._tables: dict[str, TableInfo] = {}

    def table(self, name: str, where: str) -> TableInfo:
        if name not in self._tables:
            self._tables[name] = read_table(self.conn, name, where)
        return self._tables[name]
