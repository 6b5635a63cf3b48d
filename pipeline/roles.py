"""Least-privilege PostgreSQL roles for readside (``readside connector roles``).

readside needs four kinds of access to the source, and only one of them
needs to own anything:

* **owner** (``source.dsn``, used by ``connector apply``): creates the
  publication, the signal and heartbeat tables and the truncate triggers. It
  must own the captured tables (PostgreSQL's rule for publications and
  triggers); it is the operator's role, used for set-up only.
* **capture** (Debezium, through ``connect.user_ref``/``password_ref``):
  ``LOGIN REPLICATION``, ``SELECT`` on the captured tables (snapshots), and
  ``INSERT``/``UPDATE`` on the heartbeat table (its action query), and
  ``INSERT`` on the signal table (the windows of an incremental snapshot,
  ``readside snapshot`` of a table view).
* **reader** (``source.lookup_dsn``): ``SELECT`` on the captured tables;
  the workers' aggregate re-reads and TOAST reads, ``snapshot`` and
  ``verify`` use it.
* **watermark** (the API and the workers' slot checks): only ``LOGIN``:
  ``pg_replication_slots`` and ``pg_current_wal_lsn()`` are readable by
  every role.

None of them is a superuser; ``config check`` warns when a configured DSN
logs in as one.
"""

from __future__ import annotations

from typing import Any

import psycopg
from psycopg import sql

from connectors.postgres import captured_tables
from pipeline.config import Config


def _ident(name: str) -> str:
    return sql.Identifier(name).as_string(None)


def _table(qualified: str) -> str:
    schema, _, table = qualified.rpartition(".")
    return f"{_ident(schema or 'public')}.{_ident(table)}"


def role_names(prefix: str) -> dict[str, str]:
    return {kind: f"{prefix}_{kind}" for kind in ("capture", "reader", "watermark")}


def roles_sql(cfg: Config, prefix: str = "readside") -> str:
    """The SQL that creates the capture, reader and watermark roles for the
    config's tables (run it as the tables' owner; then give each role a
    password with ``ALTER ROLE ... PASSWORD`` or ``\\password``)."""
    names = {k: _ident(v) for k, v in role_names(prefix).items()}
    tables = [_table(t) for t in captured_tables(cfg)]
    schemas = sorted(
        {_ident(t.rpartition(".")[0] or "public") for t in captured_tables(cfg)}
    )
    listed = ", ".join(tables)
    heartbeat = _table(cfg.source.heartbeat_table)
    lines = [
        "-- readside's least-privilege roles: run as the owner of the tables.",
        f"CREATE ROLE {names['capture']} LOGIN REPLICATION;  -- Debezium",
        f"CREATE ROLE {names['reader']} LOGIN;  -- source.lookup_dsn",
        f"CREATE ROLE {names['watermark']} LOGIN;  -- the API's watermark",
    ]
    for role in (names["capture"], names["reader"]):
        lines.append(f"GRANT USAGE ON SCHEMA {', '.join(schemas)} TO {role};")
        lines.append(f"GRANT SELECT ON {listed} TO {role};")
    lines.append(f"GRANT INSERT, UPDATE ON {heartbeat} TO {names['capture']};")
    # Debezium writes an incremental snapshot's window marks there.
    signal = _table(cfg.source.signal_table)
    lines.append(f"GRANT INSERT ON {signal} TO {names['capture']};")
    # Snapshots and re-reads run through row-level security policies, while
    # the stream carries every row (connectors/rowsecurity.py).
    lines.append(
        "-- A table with row-level security on: let both read every row (as its owner):"
    )
    lines.append(
        f"-- CREATE POLICY readside_reads ON <table> FOR SELECT "
        f"TO {names['capture']}, {names['reader']} USING (true);"
    )
    return "\n".join(lines) + "\n"


def superuser_dsns(cfg: Config) -> list[str]:
    """Which of the config's DSNs log in as a superuser (those reachable)."""
    found = []
    for field, secret in (
        ("source.dsn", cfg.source.dsn),
        ("source.lookup_dsn", cfg.source.lookup_dsn),
        ("api.watermark_dsn", cfg.api.watermark_dsn),
    ):
        if secret is None:
            continue
        try:
            with psycopg.connect(secret.get_secret_value(), connect_timeout=10) as conn:
                row: Any = conn.execute(
                    "SELECT rolsuper FROM pg_roles WHERE rolname = current_user"
                ).fetchone()
        except psycopg.OperationalError:
            continue
        if row and row[0]:
            found.append(field)
    return found
