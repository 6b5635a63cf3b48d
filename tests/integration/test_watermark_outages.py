"""The read-your-writes watermark outlives outages of what it samples.

A server's tracker (:class:`query.watermark.WatermarkTracker`) lives as long
as the server. In a fault run it sampled through a restart of the Kafka
broker and a kill of Kafka Connect, then failed every sample after them for
ten minutes (a timeout on the consumer groups' offsets), while a new
process asked the same broker in milliseconds: every read with ``min_lsn``
would have answered 412 until the server was restarted.
"""

from __future__ import annotations

import time
from typing import Any

import psycopg
import pytest
from harness import stack_config, wait_for

from pipeline.stack import runner
from query import commit_lsn
from query.watermark import WatermarkTracker

# exclusive: stops the stack's Kafka broker
pytestmark = [pytest.mark.integration, pytest.mark.exclusive]

SCHEMA = """
CREATE TABLE marks (id integer PRIMARY KEY, val integer NOT NULL);
INSERT INTO marks SELECT i, 0 FROM generate_series(1, 10) AS i;
"""
VIEWS: dict[str, Any] = {"marks": {"table": "public.marks", "sinks": ["redis"]}}


def _write(dsn: str) -> int:
    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute("UPDATE marks SET val = val + 1 WHERE id = 1")
        return commit_lsn(conn)


def test_the_watermark_passes_writes_again_after_the_broker_restarted(make_pipeline):
    p = make_pipeline(SCHEMA, ["public.marks"], VIEWS)
    p.apply_connector()
    p.start_worker()
    p.wait_drained(timeout=120)
    tracker = WatermarkTracker(p.config, min_interval_s=0.05, timeout_s=5.0)
    try:
        tracker.wait("marks", _write(p.dsn), timeout_s=60)
        stack = stack_config()
        runner.stop_service(stack, "kafka")
        try:
            lsn = _write(p.dsn)
            down = time.monotonic() + 10
            while time.monotonic() < down:  # samples fail while it is down
                tracker.refresh()
                time.sleep(0.2)
            assert tracker.failures.count > 0
        finally:
            runner.start_service(stack, "kafka")
        wait_for(
            lambda: tracker.refresh() or (tracker.watermark("marks") or 0) >= lsn,
            120,
            "the watermark to pass the write made while the broker was down",
        )
        tracker.wait("marks", _write(p.dsn), timeout_s=60)
    finally:
        tracker.close()
