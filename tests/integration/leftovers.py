"""What interrupted test sessions leave on a long-lived local stack, and its
removal at the start of the next session.

A session killed before its teardown (Ctrl-C twice, a timeout) leaves its
pipelines' connectors and replication slots behind. Each slot nobody reads
makes PostgreSQL keep every byte of WAL written after it (on one
development machine, four such slots held 24 GB), and a connector whose task
failed stays registered for good. Only what is plainly abandoned goes, so
that a session running beside this one loses nothing: a test pipeline's slot
that no connector reads and that holds more WAL than any test writes, and a
test pipeline's connector whose task failed and whose slot is gone.
"""

from __future__ import annotations

import re
import sys

import psycopg
from psycopg.conninfo import conninfo_to_dict, make_conninfo

from connectors.debezium import ConnectClient

#: the connectors and slots of test pipelines (harness.build_config)
_CONNECTOR = re.compile(r"it[0-9a-f]+-pg")
#: an abandoned slot holds more WAL than a test session writes
ABANDONED_BYTES = 256 * 2**20


def sweep(admin_dsn: str, client: ConnectClient) -> list[str]:
    """Drop abandoned test slots, then delete failed test connectors whose
    slot is gone; what was removed, for the session's log."""
    removed = []
    with psycopg.connect(admin_dsn, autocommit=True) as conn:
        rows = conn.execute(
            "SELECT slot_name, database FROM pg_replication_slots "
            "WHERE NOT active AND slot_name LIKE 'rs\\_it%%' "
            "AND pg_wal_lsn_diff(pg_current_wal_lsn(), restart_lsn) > %s",
            (ABANDONED_BYTES,),
        ).fetchall()
    for slot, database in rows:
        dsn = make_conninfo(**{**conninfo_to_dict(admin_dsn), "dbname": database})
        try:
            with psycopg.connect(dsn, autocommit=True) as conn:
                conn.execute("SELECT pg_drop_replication_slot(%s)", (slot,))
            removed.append(f"slot {slot}")
        except psycopg.Error as exc:  # taken again meanwhile, or gone
            print(f"slot {slot} kept: {exc}", file=sys.stderr)
    with psycopg.connect(admin_dsn) as conn:
        rows = conn.execute("SELECT slot_name FROM pg_replication_slots").fetchall()
    slots = {r[0] for r in rows}
    for name in client.request("GET", "/connectors") or []:
        if not _CONNECTOR.fullmatch(name) or f"rs_{name[:-3]}" in slots:
            continue
        st = client.request("GET", f"/connectors/{name}/status") or {}
        if any(t.get("state") == "FAILED" for t in st.get("tasks", [])):
            client.request("DELETE", f"/connectors/{name}")
            removed.append(f"connector {name}")
    return removed
