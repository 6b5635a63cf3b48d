"""A slow store never costs a worker its place in the consumer group.

Every write to MongoDB is made to take 12 s (fault injection: the write still
happens, later) while the group's patience between polls,
``max.poll.interval.ms``, is 10 s (the least the config takes: the session
timeout). A worker that waited for the store inside
its poll loop would be evicted at every batch ("Application maximum poll
interval exceeded", "leaving group"), its commits refused, and the batch
redone forever. The worker waits for a slow write on a helper thread and
keeps polling meanwhile (its partitions paused), so it keeps its partitions,
commits, and every store converges.
"""

from __future__ import annotations

import pytest
from apiserver import free_port
from harness import time_lag_ms, wait_for

pytestmark = pytest.mark.integration

SCHEMA = "CREATE TABLE items (id integer PRIMARY KEY, name text NOT NULL);"
VIEWS = {"items": {"table": "public.items"}}


def test_worker_with_a_store_slower_than_the_poll_interval_keeps_its_group(
    make_pipeline,
):
    p = make_pipeline(
        SCHEMA, ["public.items"], VIEWS, worker={"max_poll_interval_ms": 10_000}
    )
    p.apply_connector()
    worker = p.start_worker(env={"READSIDE_FAULT_SLOW_SINK": "mongodb:12000"})
    for first in (1, 101):
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


def test_workers_per_sink_a_slow_store_does_not_hold_back_the_others(make_pipeline):
    # One worker set per sink (--sinks): each sink's consumer group goes at
    # its own store's pace. MongoDB takes 30 s per write; Redis and
    # Elasticsearch hold every row long before it. Each worker's time lag
    # says so while the write is in flight: the slow one's grows with the
    # clock (it commits nothing), the others' stays small.
    p = make_pipeline(SCHEMA, ["public.items"], VIEWS)
    p.apply_connector()
    fast, slow_port = free_port(), free_port()
    p.start_worker(sinks=["redis", "elasticsearch"], metrics_port=fast)
    p.start_worker(
        sinks=["mongodb"],
        env={"READSIDE_FAULT_SLOW_SINK": "mongodb:30000"},
        metrics_port=slow_port,
    )
    wait_for(
        lambda: (
            set(time_lag_ms(fast, "items")) == {"redis", "elasticsearch"}
            and set(time_lag_ms(slow_port, "items")) == {"mongodb"}
        ),
        90,
        "both workers to report the view's time lag (the heartbeats, idle)",
    )
    p.sql("INSERT INTO items SELECT i, 'item ' || i FROM generate_series(1, 100) i")

    def fast_ones_done() -> list:
        drifts = p.verify()
        if all(d.ok for d in drifts if d.sink != "mongodb"):
            return drifts
        return []

    drifts = wait_for(fast_ones_done, 25, "redis and elasticsearch to hold every row")
    (slow,) = [d for d in drifts if d.sink == "mongodb"]
    assert not slow.ok, "mongodb could not have been written yet"
    wait_for(
        lambda: time_lag_ms(slow_port, "items")["mongodb"] >= 10_000,
        25,
        "the slow worker's time lag to pass 10 s while its write is in flight",
    )
    lags = time_lag_ms(fast, "items")
    assert max(lags.values()) < 3000, lags
    (slow,) = [d for d in p.verify() if d.sink == "mongodb"]
    assert not slow.ok, "the figure grew while the write was still in flight"
    p.wait_drained(timeout=180)
    p.assert_converged()


def test_sigterm_while_a_store_is_slow_leaves_promptly_and_loses_nothing(
    make_pipeline,
):
    # MongoDB takes 40 s per write; the worker's shutdown timeout is 20 s.
    # A worker that waited for the write would be killed by its own timeout
    # (exit 1); it gives the batch up instead, leaves the group, exits 0, and
    # the next worker redoes the batch.
    p = make_pipeline(SCHEMA, ["public.items"], VIEWS)
    p.apply_connector()
    slow = p.start_worker(env={"READSIDE_FAULT_SLOW_SINK": "mongodb:40000"})
    p.sql("INSERT INTO items SELECT i, 'item ' || i FROM generate_series(1, 50) i")

    def elasticsearch_holds_them() -> bool:
        return any(d.sink == "elasticsearch" and d.ok for d in p.verify())

    # Sinks are written in name order: once Elasticsearch holds the rows, the
    # MongoDB write of the batch is in flight.
    wait_for(elasticsearch_holds_them, 60, "elasticsearch to hold the rows")
    assert slow.terminate(timeout=30) == 0, slow.tail()
    assert "exiting with a store write in flight" in slow.log_text()
    p.start_worker()
    p.wait_drained(timeout=120)
    p.assert_converged()
