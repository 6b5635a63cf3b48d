"""Reading aggregate documents back from PostgreSQL, versioned by snapshot.

Every read runs in one REPEATABLE READ, READ ONLY transaction. Its version
comes from that transaction's own snapshot (docs/design.md: two kinds of view): with
``xmax`` and ``nxip = count(xip)``, the pair ``(xmax, -nxip)`` grows with
snapshot time and is equal only for equal visible sets, so of two reads of
the same root the later one always carries the higher version and the sinks'
guard keeps it. The number written is::

    version = epoch * 10**17 + xmax * 10**6 + (10**6 - 1 - nxip)

(``xmax`` below 10**11 transactions, fewer than 10**6 transactions in
progress; both checked). Before a read is trusted, every transaction that
triggered it must be visible in the snapshot (``pg_visible_in_snapshot``);
on a replica that has not replayed it yet the read is retried shortly.

A migration that rewrites a table (``ALTER TABLE ... ALTER COLUMN ... TYPE``,
a column added with a volatile default) is not MVCC-safe: a transaction
whose snapshot was taken before the rewrite committed, and that reads the
table after it, finds it empty. A re-read would write every root it asked
for as deleted (or with no children), at a version newer than anything
stored, and a chunked load would end at that chunk, taking the view for
loaded. So a read names the tables it reads (:meth:`Reader.begin`), and
before it is trusted :meth:`Reader.end` asks whether one of them (or a
partition of one) has another file than the snapshot shows: the catalog row
the snapshot sees against the file the server opens now (none: the table was
dropped). If so the read is given up with a :class:`TransientError` and made
again in a new snapshot. A rewrite that came after the read, or one that
keeps the rows' visibility (``VACUUM FULL``, ``CLUSTER``), only costs that
read again. The fault suite's ``ddl`` kind found it (a customer written as
deleted while ``customers`` was rewritten).

Round trips: the session runs in autocommit and a read sends its own
``BEGIN`` with its snapshot query, and the rewrite check (a statement the
session prepared when it connected) with its ``COMMIT``: three round trips
for a read of one statement (a chunk of a load), where psycopg's own
transactions took five; four for a worker's re-read, which also asks whether
its batch's transactions are visible (six before).
"""

from __future__ import annotations

import itertools
import logging
import time
from collections.abc import Iterable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import psycopg
from psycopg import sql
from psycopg.pq import TransactionStatus

from pipeline.aggregate.documents import JSON_OID, DocumentLoader
from pipeline.aggregate.plan import ViewSQL
from pipeline.errors import FatalError, TransientError

logger = logging.getLogger(__name__)

XMAX_LIMIT = 10**11
XIP_FACTOR = 10**6
EPOCH_SPAN = XMAX_LIMIT * XIP_FACTOR  # 10**17
#: Keys per statement; a larger set is read in several statements of one snapshot.
KEYS_PER_QUERY = 5000

#: a read's transaction and its snapshot, in one round trip
_BEGIN = """
BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY;
SELECT pg_snapshot_xmax(s)::text::bigint,
       (SELECT count(*) FROM pg_snapshot_xip(s))
FROM (SELECT pg_current_snapshot() AS s) AS x
"""
_INVISIBLE = """
SELECT x FROM unnest(%s::bigint[]) AS x
WHERE NOT pg_visible_in_snapshot(x::text::xid8, pg_current_snapshot())
"""
#: leaves of the tables ``$1`` (schemas), ``$2`` (names) whose file is not
#: the one the snapshot's catalog shows, or that are gone; prepared once per
#: session, so that :meth:`Reader.end` sends it with its ``COMMIT``
_PREPARE_REWRITTEN = """
PREPARE readside_rewritten(text[], text[]) AS
WITH named AS (
    SELECT c.oid FROM pg_class c
    JOIN pg_namespace s ON s.oid = c.relnamespace
    JOIN unnest($1, $2) AS n(nsp, rel) ON s.nspname = n.nsp AND c.relname = n.rel
), leaves AS (
    SELECT oid FROM named
    UNION
    SELECT t.relid FROM named, pg_partition_tree(named.oid) AS t
)
SELECT format('%I.%I', s.nspname, c.relname)
FROM leaves AS l
JOIN pg_class AS c ON c.oid = l.oid
JOIN pg_namespace AS s ON s.oid = c.relnamespace
WHERE c.relkind IN ('r', 'm')
    AND c.relfilenode IS DISTINCT FROM pg_relation_filenode(l.oid)
"""
_END_CHECKED = "EXECUTE readside_rewritten({schemas}, {names}); COMMIT"
_CURSORS = itertools.count(1)
#: every statement outside a read's transaction runs in one of its own, read
#: only too
_SESSION = (
    "SET DateStyle = ISO; SET IntervalStyle = postgres; "
    "SET TimeZone = 'UTC'; SET extra_float_digits = 1; "
    "SET default_transaction_read_only = on; " + _PREPARE_REWRITTEN
)


def snapshot_version(epoch: int, xmax: int, nxip: int) -> int:
    """The version of every document read in one snapshot."""
    if not 0 <= xmax < XMAX_LIMIT or not 0 <= nxip < XIP_FACTOR:
        raise ValueError(f"snapshot out of range for a version: {xmax=} {nxip=}")
    return epoch * EPOCH_SPAN + xmax * XIP_FACTOR + (XIP_FACTOR - 1 - nxip)


def full_xid(xid32: int, xmax: int) -> int:
    """The 64-bit xid (with epoch) of a 32-bit xid seen before ``xmax``."""
    return xmax - ((xmax - xid32) % 2**32)


def key_text(value: Any) -> str:
    """Text of a key value that PostgreSQL casts back to the column's type."""
    return str(value)


@dataclass(frozen=True)
class Snapshot:
    xmax: int
    nxip: int

    def version(self, epoch: int) -> int:
        return snapshot_version(epoch, self.xmax, self.nxip)


class Reader:
    """One connection to the source (or its replica) for aggregate reads.

    Args:
        dsn: where to read (``source.lookup_dsn`` when set).
        visibility_timeout_s: how long a read waits for its triggering
            transactions to become visible before giving up (transient).
    """

    def __init__(self, dsn: str, visibility_timeout_s: float = 30.0) -> None:
        self.dsn = dsn
        self.visibility_timeout_s = visibility_timeout_s
        self._conn: psycopg.Connection[Any] | None = None
        #: the tables the open read reads (checked for a rewrite at its end)
        self._tables: tuple[str, ...] = ()

    def connection(self) -> psycopg.Connection[Any]:
        if self._conn is None or self._conn.closed:
            try:
                conn = psycopg.connect(self.dsn, autocommit=True, connect_timeout=10)
                conn.execute(_SESSION)
            except psycopg.OperationalError as exc:
                raise TransientError(f"source not reachable: {exc}") from exc
            self._conn = conn
        return self._conn

    def close(self) -> None:
        if self._conn is not None:
            self._conn.close()
            self._conn = None

    def begin(self, txids: Iterable[int] = (), tables: Iterable[str] = ()) -> Snapshot:
        """Open a read transaction whose snapshot sees every ``txids`` (32-bit)
        and reads ``tables`` (``schema.table``: :meth:`end` gives the read up
        if one of them was rewritten meanwhile).

        Raises:
            TransientError: the source is unreachable, or a transaction stays
                invisible for ``visibility_timeout_s`` (a lagging replica).
        """
        wanted = sorted(set(txids))
        self._tables = tuple(dict.fromkeys(tables))
        deadline = time.monotonic() + self.visibility_timeout_s
        delay = 0.01
        while True:
            conn = self.connection()
            try:
                cur = conn.execute(_BEGIN)
                cur.nextset()
                row = cur.fetchone()
                assert row is not None
                snap = Snapshot(int(row[0]), int(row[1]))
                if not wanted:
                    return snap
                full = [full_xid(x, snap.xmax) for x in wanted]
                hidden = conn.execute(_INVISIBLE, (full,)).fetchall()
            except psycopg.OperationalError as exc:
                self.close()
                raise TransientError(f"source read failed: {exc}") from exc
            except psycopg.Error:
                self._abandon()  # the session's next read starts clean
                raise
            if not hidden:
                return snap
            conn.rollback()
            if time.monotonic() > deadline:
                raise TransientError(
                    f"transactions {[int(r[0]) for r in hidden][:5]} not visible "
                    f"after {self.visibility_timeout_s}s (replica lagging?)"
                )
            time.sleep(delay)
            delay = min(delay * 2, 0.5)

    @contextmanager
    def read(
        self, txids: Iterable[int] = (), tables: Iterable[str] = ()
    ) -> Iterator[Snapshot]:
        """One read: :meth:`begin`, the body, :meth:`end`; a body that raised
        has its transaction rolled back, unchecked, and its own error goes
        on (a rewrite check would have stood in for it).

        Raises:
            TransientError: as :meth:`begin` and :meth:`end`.
        """
        snap = self.begin(txids, tables)
        try:
            yield snap
        except BaseException:
            self._abandon()
            raise
        self.end()

    def _abandon(self) -> None:
        """Roll the open read back, unchecked; a session that cannot even
        do that is closed (the next read connects again)."""
        self._tables = ()
        conn = self._conn
        if conn is None or conn.closed:
            return
        try:
            conn.rollback()
        except psycopg.Error:
            self.close()

    def query(
        self,
        statement: sql.SQL | sql.Composed,
        params: dict[str, Any],
        documents: bool = False,
    ) -> list[Any]:
        """The rows of ``statement``; with ``documents``, a view's statement
        whose ``json`` document column is parsed by :class:`DocumentLoader`."""
        try:
            cur = self.connection().cursor()
            if documents:
                cur.adapters.register_loader(JSON_OID, DocumentLoader)
            with cur:
                rows: list[Any] = cur.execute(statement, params).fetchall()
            return rows
        except psycopg.OperationalError as exc:
            self.close()
            raise TransientError(f"source read failed: {exc}") from exc

    def end(self) -> None:
        """End the read transaction.

        It is committed (a read-only transaction changes nothing), so that a
        cursor :meth:`declare` opened in it outlives it; one that failed is
        rolled back.

        Raises:
            TransientError: the source is unreachable, or a table the read
                read was rewritten after its snapshot (read again).
        """
        conn = self._conn
        tables, self._tables = self._tables, ()
        if conn is None or conn.closed:
            return
        rewritten: list[str] = []
        try:
            if conn.info.transaction_status != TransactionStatus.INTRANS:
                conn.rollback()
            elif tables:
                rewritten = self._end_checked(conn, tables)
            else:
                conn.commit()
        except psycopg.OperationalError as exc:
            self.close()
            raise TransientError(f"source read failed: {exc}") from exc
        if rewritten:
            raise TransientError(
                f"{', '.join(rewritten)} rewritten or dropped while read "
                "(ALTER TABLE ... TYPE, VACUUM FULL ...); a snapshot taken before "
                "such a rewrite may see the table empty: read again"
            )

    @staticmethod
    def _end_checked(conn: psycopg.Connection[Any], tables: Sequence[str]) -> list[str]:
        """Commit the read's transaction, with the rewrite check before it in
        the same round trip; the tables of ``tables`` that it names."""
        schemas, names = zip(*(t.split(".", 1) for t in tables), strict=True)
        statement = sql.SQL(_END_CHECKED).format(
            schemas=sql.Literal(list(schemas)), names=sql.Literal(list(names))
        )
        try:
            rows = conn.execute(statement).fetchall()
        except psycopg.Error:
            if not conn.closed:
                conn.rollback()  # the COMMIT after a failed check did not run
            raise
        return [str(r[0]) for r in rows]

    def declare(
        self, statement: sql.Composed, params: dict[str, Any]
    ) -> psycopg.ServerCursor[Any]:
        """A server-side cursor WITH HOLD over ``statement``, in this snapshot.

        Declared inside a transaction of :meth:`begin`; its rows are those of
        that snapshot, kept by the server after :meth:`end` (on disk when
        large), so a caller can fetch them a chunk at a time from later
        transactions without holding them all. Close it with
        :meth:`close_cursor`.
        """
        name = f"readside_roots_{next(_CURSORS)}"
        try:
            cur = self.connection().cursor(name, withhold=True)
            cur.execute(statement, params)
        except psycopg.OperationalError as exc:
            self.close()
            raise TransientError(f"source read failed: {exc}") from exc
        return cur

    def fetch(self, cursor: psycopg.ServerCursor[Any], size: int) -> list[Any]:
        """Up to ``size`` more rows of a :meth:`declare` cursor."""
        try:
            return cursor.fetchmany(size)
        except psycopg.errors.InvalidCursorName as exc:
            raise FatalError(
                "a cursor held across transactions vanished: source.lookup_dsn "
                "(or source.dsn) must keep its session between transactions "
                "(a pooler in session mode, not transaction mode)"
            ) from exc
        except psycopg.OperationalError as exc:
            self.close()
            raise TransientError(f"source read failed: {exc}") from exc

    def close_cursor(self, cursor: psycopg.ServerCursor[Any]) -> None:
        """Close a :meth:`declare` cursor; never raises (the connection may be
        gone, and the cursor with it). A transaction in progress is left open."""
        conn = self._conn
        if conn is None or conn.closed or cursor.connection is not conn:
            return
        idle = conn.info.transaction_status == TransactionStatus.IDLE
        try:
            cursor.close()
            if idle:
                conn.commit()
        except psycopg.Error as exc:
            logger.warning("closing a cursor failed error=%s", exc)

    def rows_by_keys(
        self, view_sql: ViewSQL, keys: Sequence[tuple[str, ...]]
    ) -> list[Any]:
        """Rows (key columns..., doc) of the roots with these keys (text forms)."""
        out: list[Any] = []
        statement = view_sql.by_keys()
        for start in range(0, len(keys), KEYS_PER_QUERY):
            part = keys[start : start + KEYS_PER_QUERY]
            params = {f"k{i}": [k[i] for k in part] for i in range(len(part[0]))}
            out.extend(self.query(statement, params, documents=True))
        return out
