"""What interrupted test sessions leave on a long-lived local stack, and its
removal at the start of the next session.

A session killed before its teardown (Ctrl-C twice, a timeout) leaves its
pipelines' connectors and replication slots behind. Each slot nobody reads
makes PostgreSQL keep every byte of WAL written after it (on one
development machine, four such slots held 24 GB), a connector whose task
failed stays registered for good, and the pipeline's topics stay on the
broker (thousands of partitions after a few such sessions, which slow every
start of the broker). Only what is plainly abandoned goes, so that a session
running beside this one loses nothing: a test pipeline's slot that no
connector reads and that holds more WAL than any test writes, a test
pipeline's connector whose task failed and whose slot is gone, and a test
pipeline's topics whose database is gone.
"""

from __future__ import annotations

import re
import sys

import psycopg
from confluent_kafka import KafkaException
from confluent_kafka.admin import AdminClient  # type: ignore[attr-defined]  # no __all__
from psycopg.conninfo import conninfo_to_dict, make_conninfo

from connectors.debezium import ConnectClient

#: the connectors and slots of test pipelines (harness.build_config)
_CONNECTOR = re.compile(r"it[0-9a-f]+-pg")
#: the topics of test pipelines (harness.build_config: prefix ``it`` and the
#: ten hex digits of the database ``rs_it_…``), and their heartbeat topic
_TOPIC = re.compile(r"it([0-9a-f]{10})\..+|__debezium-heartbeat\.it([0-9a-f]{10})")
#: an abandoned slot holds more WAL than a test session writes
ABANDONED_BYTES = 256 * 2**20


def sweep(admin_dsn: str, client: ConnectClient, admin: AdminClient) -> list[str]:
    """Drop abandoned test slots, delete failed test connectors whose slot is
    gone, and the topics of test pipelines whose database is gone; what was
    removed, for the session's log."""
    removed = _abandoned_topics(admin_dsn, admin)
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


def _abandoned_topics(admin_dsn: str, admin: AdminClient) -> list[str]:
    """Delete the test pipelines' topics whose database is gone.

    A pipeline's database is made before any of its topics, and its teardown
    deletes the topics before it drops the database: topics without their
    database belong to no running session. Another session's sweep may
    delete the same topics meanwhile; that is no error."""
    owner: dict[str, str] = {}
    for topic in admin.list_topics(timeout=10).topics:
        if m := _TOPIC.fullmatch(topic):
            owner[topic] = f"rs_it_{m[1] or m[2]}"
    if not owner:
        return []
    with psycopg.connect(admin_dsn) as conn:
        rows = conn.execute(
            "SELECT datname FROM pg_database WHERE datname = ANY(%s)",
            (sorted(set(owner.values())),),
        ).fetchall()
    alive = {r[0] for r in rows}
    doomed = sorted(t for t, db in owner.items() if db not in alive)
    if not doomed:
        return []
    gone = 0
    for topic, fut in admin.delete_topics(doomed, operation_timeout=30).items():
        try:
            fut.result()
            gone += 1
        except KafkaException as exc:  # deleted by another session's sweep
            print(f"topic {topic} not deleted: {exc}", file=sys.stderr)
    databases = len({owner[t] for t in doomed})
    return [f"{gone} topics of {databases} test databases gone"]
