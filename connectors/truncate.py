"""A TRUNCATE of a captured table reaches the read models as row deletes.

``readside connector apply`` gives every captured table a statement-level
``BEFORE TRUNCATE`` trigger that deletes the table's rows (and first the rows
of the tables that reference it, which the TRUNCATE must empty too) inside
the truncating transaction. Debezium then streams one delete and one
tombstone per row, and the TRUNCATE itself finds an empty table.

Why rows and not Debezium's truncate event:

* The event cannot be delivered. It has no key, and the broker refuses
  keyless records in the compacted table topics ("Compacted topic cannot
  accept message without key"), which fails the connector's task; hence
  ``skipped.operations`` stays ``t`` (:mod:`connectors.debezium`).
* Even delivered, it would carry no per-key position. Table-view versions
  are offsets of one partition, and a truncate on partition p cannot be
  ordered against documents of other partitions. Its LSN could be (under its
  ACCESS EXCLUSIVE lock every change of the table before it has a lower
  change LSN, every change after it a higher one), but the compacted topic
  keeps the truncated rows: every reader of the topic (workers, ``snapshot``
  replays, ``--rebuild`` catch-ups, new consumer groups) would have to apply
  that fence, stores would have to keep each document's LSN or let a delete
  win a tie at equal version, and a worker learning the fence late would
  need a replay to purge what it already wrote.

Row deletes need none of that. Each delete lands on its key's partition,
after every earlier change of the row and before every later one (the lock
orders them; statements of the truncating transaction itself stay in
statement order), so it is applied at its own offset like any delete, under
replays, rebalances and concurrent workers. Its tombstone survives
compaction (a replay of the topic leaves the row out), and aggregate views
re-read the roots the deleted rows touched, as for any delete.

The cost is the TRUNCATE's: it becomes as slow as a ``DELETE`` of every row
(one WAL record per row; the lock is held meanwhile), the tables' own
``ON DELETE`` row triggers and rules run for each row (a trigger that keeps a
row, e.g. a soft delete, keeps it in the read models while TRUNCATE empties
the table), and the truncating role needs ``DELETE`` on the tables (the
function runs with the caller's rights). Nothing fires under
``session_replication_role = replica``.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable
from typing import Any

import psycopg
from psycopg import errors, sql

logger = logging.getLogger(__name__)

TRIGGER = "readside_truncate_as_delete"

#: How long CREATE TRIGGER may wait for the table's lock.
LOCK_TIMEOUT_MS = 5000

#: Deletes the rows of ``rel``, after those of the tables that reference it
#: (a TRUNCATE must empty those too, or it fails before its triggers run).
_DELETE_ROWS = """
CREATE OR REPLACE FUNCTION {schema}.readside_delete_rows(rel regclass, seen oid[])
RETURNS void LANGUAGE plpgsql SET search_path = pg_catalog AS $fn$
DECLARE
  referencing oid;
BEGIN
  IF rel = ANY (seen) THEN
    RETURN;
  END IF;
  FOR referencing IN
    SELECT DISTINCT c.conrelid FROM pg_constraint c
    WHERE c.contype = 'f' AND c.confrelid = rel AND c.conrelid <> rel
  LOOP
    PERFORM {schema}.readside_delete_rows(referencing, seen || rel::oid);
  END LOOP;
  -- A partitioned table's rows are its partitions'; another table's own.
  IF (SELECT relkind FROM pg_class WHERE oid = rel) = 'p' THEN
    EXECUTE format('DELETE FROM %s', rel);
  ELSE
    EXECUTE format('DELETE FROM ONLY %s', rel);
  END IF;
END
$fn$
"""

_TRIGGER_FUNCTION = """
CREATE OR REPLACE FUNCTION {schema}.readside_truncate_as_delete()
RETURNS trigger LANGUAGE plpgsql SET search_path = pg_catalog AS $fn$
BEGIN
  PERFORM {schema}.readside_delete_rows(TG_RELID, ARRAY[]::oid[]);
  RETURN NULL;
END
$fn$
"""


def install(
    conn: psycopg.Connection[Any], tables: Iterable[str], schema: str = "public"
) -> list[str]:
    """Create the functions in ``schema`` and the trigger on every table.

    Idempotent; ``conn`` must be in autocommit mode. A table that has the
    trigger is left alone (no lock taken). A table that does not exist yet,
    on which the role may not create a trigger, or whose lock is not granted
    within :data:`LOCK_TIMEOUT_MS`, is skipped with a warning (its TRUNCATE
    would not reach the read models; run ``connector apply`` again). A
    table dropped from the config keeps its trigger (another pipeline may
    capture it); ``DROP TRIGGER readside_truncate_as_delete ON <table>``
    removes it.

    Returns:
        The tables that have the trigger.
    """
    name = sql.Identifier(schema)
    try:
        conn.execute(sql.SQL(_DELETE_ROWS).format(schema=name))
        conn.execute(sql.SQL(_TRIGGER_FUNCTION).format(schema=name))
    except errors.InsufficientPrivilege as exc:
        logger.warning("truncate triggers skipped schema=%s error=%s", schema, exc)
        return []
    done = []
    for table in tables:
        table_schema, _, table_name = table.rpartition(".")
        ident = sql.Identifier(table_schema or "public", table_name)
        row = conn.execute(
            "SELECT c.oid IS NOT NULL, EXISTS (SELECT FROM pg_trigger t "
            "WHERE t.tgrelid = c.oid AND t.tgname = %s) "
            "FROM (SELECT to_regclass(%s) AS oid) c",
            (TRIGGER, ident.as_string(conn)),
        ).fetchone()
        if row is None or not row[0]:
            logger.warning("truncate trigger skipped table=%s reason=absent", table)
            continue
        if not row[1] and not _create_trigger(conn, ident, name, table):
            continue
        done.append(table)
    return done


def _create_trigger(
    conn: psycopg.Connection[Any],
    table: sql.Identifier,
    schema: sql.Identifier,
    name: str,
) -> bool:
    """Create the trigger on ``table``; False (and a warning) if not allowed.

    CREATE TRIGGER waits for the table's open write transactions while
    queueing every new one behind it, so it gives up after a few seconds
    rather than stall the application.
    """
    try:
        with conn.transaction():
            conn.execute(f"SET LOCAL lock_timeout = '{LOCK_TIMEOUT_MS}ms'")
            conn.execute(
                sql.SQL(
                    "CREATE OR REPLACE TRIGGER {trigger} BEFORE TRUNCATE ON {table} "
                    "FOR EACH STATEMENT EXECUTE FUNCTION "
                    "{schema}.readside_truncate_as_delete()"
                ).format(trigger=sql.Identifier(TRIGGER), table=table, schema=schema)
            )
    except (errors.InsufficientPrivilege, errors.LockNotAvailable) as exc:
        logger.warning(
            "truncate trigger skipped table=%s error=%s: run `connector apply` "
            "again (as the table's owner, or when it is less busy)",
            name,
            exc,
        )
        return False
    return True
