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

from collections.abc import Iterable
from typing import Any

import psycopg
from psycopg import sql

TRIGGER = "readside_truncate_as_delete"

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
) -> None:
    """Create the functions in ``schema`` and the trigger on every table.

    Idempotent. A table dropped from the config keeps its trigger (another
    pipeline may capture it); ``DROP TRIGGER readside_truncate_as_delete``
    removes it.
    """
    name = sql.Identifier(schema)
    conn.execute(sql.SQL(_DELETE_ROWS).format(schema=name))
    conn.execute(sql.SQL(_TRIGGER_FUNCTION).format(schema=name))
    for table in tables:
        table_schema, _, table_name = table.rpartition(".")
        conn.execute(
            sql.SQL(
                "CREATE OR REPLACE TRIGGER {trigger} BEFORE TRUNCATE ON {table} "
                "FOR EACH STATEMENT EXECUTE FUNCTION "
                "{schema}.readside_truncate_as_delete()"
            ).format(
                trigger=sql.Identifier(TRIGGER),
                table=sql.Identifier(table_schema or "public", table_name),
                schema=name,
            )
        )
