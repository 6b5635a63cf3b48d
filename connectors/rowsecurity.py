"""Whether readside's roles may read every row of the tables they read.

Logical decoding streams every row's changes whatever a table's row-level
security says, but every read by SQL runs through its policies: Debezium's
snapshots (as the capture role), the workers' aggregate re-reads and TOAST
and generated-column reads, ``snapshot`` and ``verify`` (as the reader,
``source.lookup_dsn``). A policy that hides rows from them leaves those rows
out of every snapshot, and makes a re-read find its root gone and delete its
document, with nothing said. The least-privilege roles of ``readside
connector roles`` bypass no policy.

A role reads every row of a table when row-level security is off for it
(the table does not enable it; the role is a superuser, has ``BYPASSRLS``,
or owns the table, which does not ``FORCE`` it), or when a permissive
policy for SELECT applies to it with ``USING (true)`` and no restrictive
one does. Any other policy is taken to hide rows: what it lets through is
not known before it runs.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import psycopg

from connectors.postgres import reloads
from pipeline.config import Config
from pipeline.errors import ConfigError

#: The tables of ``tables`` with policies that may hide rows from ``role``.
_HIDING = """
SELECT t.name
FROM unnest(%(tables)s::text[]) AS t(name)
JOIN pg_class c ON c.oid = to_regclass(t.name)
JOIN pg_roles r ON r.rolname = %(role)s
WHERE c.relrowsecurity
  AND NOT r.rolsuper AND NOT r.rolbypassrls
  AND NOT (pg_has_role(r.oid, c.relowner, 'USAGE') AND NOT c.relforcerowsecurity)
  AND (
    NOT EXISTS (
      SELECT 1 FROM pg_policy p
      WHERE p.polrelid = c.oid AND p.polpermissive AND p.polcmd IN ('r', '*')
        AND pg_get_expr(p.polqual, p.polrelid) = 'true'
        AND EXISTS (SELECT 1 FROM unnest(p.polroles) AS pr(oid)
                    WHERE pr.oid = 0 OR pg_has_role(r.oid, pr.oid, 'USAGE')))
    OR EXISTS (
      SELECT 1 FROM pg_policy p
      WHERE p.polrelid = c.oid AND NOT p.polpermissive AND p.polcmd IN ('r', '*')
        AND EXISTS (SELECT 1 FROM unnest(p.polroles) AS pr(oid)
                    WHERE pr.oid = 0 OR pg_has_role(r.oid, pr.oid, 'USAGE'))))
ORDER BY 1
"""

#: The role of the connector's replication session on ``slot`` (none while
#: it is not connected).
_CAPTURE_ROLE = """
SELECT a.usename FROM pg_replication_slots s
JOIN pg_stat_activity a ON a.pid = s.active_pid
WHERE s.slot_name = %s
"""


def hiding(
    conn: psycopg.Connection[Any], role: str, tables: Sequence[str]
) -> list[str]:
    """The tables of ``tables`` whose policies may hide rows from ``role``."""
    rows = conn.execute(_HIDING, {"tables": list(tables), "role": role}).fetchall()
    return [str(r[0]) for r in rows]


def current_role(conn: psycopg.Connection[Any]) -> str:
    row = conn.execute("SELECT current_user").fetchone()
    return str(row[0]) if row else ""


def capture_role(conn: psycopg.Connection[Any], slot: str) -> str | None:
    """The role the connector streams as, while it is connected to ``slot``."""
    row = conn.execute(_CAPTURE_ROLE, (slot,)).fetchone()
    return str(row[0]) if row and row[0] else None


def way_out(role: str, table: str) -> str:
    """The statements that let ``role`` read every row of ``table``."""
    return (
        f"ALTER ROLE {role} BYPASSRLS (as a superuser), or CREATE POLICY "
        f"readside_reads ON {table} FOR SELECT TO {role} USING (true) (as its owner)"
    )


def reader_problem(conn: psycopg.Connection[Any], tables: Sequence[str]) -> str | None:
    """What to say when ``conn``'s role (the reader) may not read every row
    of ``tables``; None when it may."""
    role = current_role(conn)
    hidden = hiding(conn, role, tables)
    if not hidden:
        return None
    return (
        f"source.lookup_dsn (source.dsn without it): role {role} cannot read "
        f"every row of {', '.join(hidden)} (row-level security; a policy may "
        "hide rows from it): the workers' re-reads, TOAST and generated-column "
        "reads, snapshots and verify would miss those rows, and delete the "
        f"documents of the roots they read again; {way_out(role, hidden[0])}"
    )


def require_readable(conn: psycopg.Connection[Any], tables: Sequence[str]) -> None:
    """Refuse a reader that may not read every row of ``tables``.

    Raises:
        ConfigError: naming the role, the tables and the way out.
    """
    problem = reader_problem(conn, tables)
    if problem is not None:
        raise ConfigError(problem)


def capture_problems(conn: psycopg.Connection[Any], cfg: Config) -> list[str]:
    """What to say when the connector's role may not read every row of a
    captured table: Debezium's snapshots of it (the initial one, an
    incremental one) leave out the rows its policies hide."""
    role = capture_role(conn, cfg.source.slot)
    if role is None:
        return []
    hidden = hiding(conn, role, list(cfg.source.tables))
    return [
        f"role {role} (the connector's) cannot read every row of {table} "
        "(row-level security; a policy may hide rows from it): Debezium's "
        "snapshots of it leave out the rows its policies hide; "
        f"{way_out(role, table)}, then {'; '.join(reloads(cfg, [table]))}"
        for table in hidden
    ]
