"""A slow store never costs a worker its place in the consumer group.

Every write to MongoDB is made to take 8 s (fault injection: the write still
happens, later) while the group's patience between polls,
``max.poll.interval.ms``, is 6 s. A worker that waited for the store inside
its poll loop would be evicted at every batch ("Application maximum poll
interval exceeded", "leaving group"), its commits refused, and the batch
redone forever. The worker waits for a slow write on a helper thread and
keeps polling meanwhile (its partitions paused), so it keeps its partitions,
commits, and every store converges.
"""

from __future__ import annotations

import pytest

pytestmark = pytest.mark.integration

SCHEMA = "CREATE TABLE items (id integer PRIMARY KEY, name text NOT NULL);"
VIEWS = {"items": {"table": "public.items"}}


def test_worker_with_a_store_slower_than_the_poll_interval_keeps_its_group(
    make_pipeline,
):
    p = make_pipeline(
        SCHEMA, ["public.items"], VIEWS, worker={"max_poll_interval_ms": 6_000}
    )
    p.apply_connector()
    worker = p.start_worker(env={"READSIDE_FAULT_SLOW_SINK": "mongodb:8000"})
    for first in (1, 101, 201):
        p.sql(
            "INSERT INTO items SELECT i, 'item ' || i "
            "FROM generate_series(%s::int, %s::int) i",
            (first, first + 99),
        )
        p.wait_drained(timeout=180)
    p.assert_converged()
    log = worker.log_text()
    assert "maximum poll interval" not in log.lower(), worker.tail()
    assert "commit failed" not in log.lower(), worker.tail()
    assert worker.alive()
