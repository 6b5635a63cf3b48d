"""The read-your-writes watermark follows the stream, not Connect's offset
flush: under a write load it passes a commit's LSN before the replication
slot's confirmed LSN does (the slot moves only when Connect commits its
source offsets, once a second here), from the last-commit LSNs the worker
commits with its offsets; and every write it claims is in the store."""

from __future__ import annotations

import random
import time
from typing import Any

import psycopg
import pytest
from harness import BackgroundLoad

from query import ReadClient, commit_lsn
from query.watermark import WatermarkTracker

pytestmark = pytest.mark.integration

SCHEMA = """
CREATE TABLE marks (id integer PRIMARY KEY, val integer NOT NULL);
INSERT INTO marks SELECT i, 0 FROM generate_series(1, 600) AS i;
"""
VIEWS: dict[str, Any] = {"marks": {"table": "public.marks", "sinks": ["redis"]}}
LOAD_IDS = range(101, 601)  # the background load writes only these rows
WRITES = 60


def _load_step(conn: psycopg.Connection[Any], rng: random.Random) -> None:
    conn.execute(
        "UPDATE marks SET val = val + 1 WHERE id = %s", (rng.choice(LOAD_IDS),)
    )


def test_watermark_passes_a_commit_before_the_slot_and_never_early(make_pipeline):
    p = make_pipeline(SCHEMA, ["public.marks"], VIEWS)
    p.apply_connector()
    p.start_worker()
    p.wait_drained(timeout=120)
    tracker = WatermarkTracker(p.config, min_interval_s=0.01)
    client = ReadClient(p.config)
    ahead, wrong = 0, []
    try:
        with (
            BackgroundLoad(p.dsn, _load_step, seed=7, pause_s=0.001) as load,
            psycopg.connect(p.dsn, autocommit=True) as conn,
        ):
            load.wait_ops(50)
            for n in range(WRITES):
                ident = n % 100 + 1
                conn.execute("UPDATE marks SET val = %s WHERE id = %s", (n, ident))
                lsn = commit_lsn(conn)
                deadline = time.monotonic() + 30
                while True:
                    tracker.refresh()
                    mark = tracker.watermark("marks")
                    if mark is not None and mark >= lsn:
                        break
                    assert time.monotonic() < deadline, f"write {n} never reached"
                    time.sleep(0.005)
                # the slot had not confirmed this commit when the mark passed it
                if tracker.slot_lsn is not None and tracker.slot_lsn < lsn:
                    ahead += 1
                got = (client.get("marks", str(ident)).doc or {}).get("val")
                if got != n:
                    wrong.append(f"write {n} to {ident}: store holds {got}")
            assert load.ops > 200
    finally:
        client.close()
        tracker.close()
    assert not wrong, wrong[:10]
    assert ahead > WRITES // 2, f"only {ahead} of {WRITES} passed before the slot"
