"""Capture goes on by itself after the source refused the connector's start.

Kafka Connect starts a connector's task again after a restart of Connect, a
rebalance of its workers, or Debezium's own restart after a lost
connection. Debezium waits out a source that refuses the start's first
connection, but a later connection of the start that is refused or cut
fails the task, and Connect leaves it FAILED for good: no change of any
table reaches Kafka until someone restarts it, while the workers apply
nothing new and the read models age. A fault run met it (Connect killed,
then PostgreSQL restarted just as the task started again: "Failed to create
TypeRegistry"). Here the capture role has one connection slot, so the
start's second connection is refused ("too many connections for role").
The workers restart a task the source failed once it answers
(``pipeline.taskheal``).
"""

from __future__ import annotations

from typing import Any

import psycopg
import pytest
from harness import PG_ADMIN_DSN, wait_for

from connectors.debezium import ConnectClient, failed_on_source

pytestmark = pytest.mark.integration

SCHEMA = """
CREATE TABLE items (id integer PRIMARY KEY, name text NOT NULL);
INSERT INTO items SELECT i, 'item ' || i FROM generate_series(1, 20) AS i;
"""
VIEWS: dict[str, Any] = {"items": {"table": "public.items", "sinks": ["redis"]}}


def test_a_task_whose_start_the_source_refused_is_restarted_once_it_answers(
    make_pipeline,
):
    p = make_pipeline(SCHEMA, ["public.items"], VIEWS)
    p.apply_connector()
    worker = p.start_worker()
    p.wait_drained(timeout=120)
    connect = ConnectClient.of(p.config.connect)
    path = f"/connectors/{p.config.connect.connector}"
    with psycopg.connect(PG_ADMIN_DSN, autocommit=True) as admin:
        (role,) = admin.execute(
            "SELECT rolname FROM pg_roles WHERE rolname LIKE %s",
            (f"rs_{p.suffix}%capture",),
        ).fetchone() or (None,)
        assert role is not None
        admin.execute(f'ALTER ROLE "{role}" CONNECTION LIMIT 1')
        try:
            # Connect starts the task again (as after its own restart): the
            # start's second connection is refused, and the task stays FAILED.
            connect.request("POST", f"{path}/tasks/0/restart")
            wait_for(
                lambda: failed_on_source(
                    connect.request("GET", f"{path}/status") or {}
                ),
                90,
                "the connector's task to fail on the source",
            )
        finally:
            admin.execute(f'ALTER ROLE "{role}" CONNECTION LIMIT -1')
    p.sql("INSERT INTO items SELECT i, 'late ' || i FROM generate_series(21, 40) i")
    p.sql("UPDATE items SET name = 'changed' WHERE id <= 5")
    wait_for(
        lambda: all(d.ok for d in p.verify()),
        180,
        "the changes made after the refused start in the store",
    )
    assert (
        "had failed on the source database, which answers again: restarted"
        in worker.log_text()
    )
    assert worker.alive(), worker.tail()
    p.assert_converged()
