"""The read-your-writes watermark follows the stream, not Connect's offset
flush: from the last-commit LSNs the worker commits with its offsets alone,
it passes every commit of a write load, and every write it claims is in the
store.

The slot's ``confirmed_flush_lsn`` would pass them too (it moves at each of
Connect's offset commits, every 100 ms in the local stack), so the tracker
here keeps the slot as it was before the first write: a stale fact is still
true, and every write the watermark passes was passed by the stream."""

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


class FrozenSlot(WatermarkTracker):
    """A tracker that sees the slot's first confirmed LSN for ever after."""

    frozen: int | None = None

    def _slot_lsn(self) -> int | None:
        if self.frozen is None:
            self.frozen = super()._slot_lsn()
        return self.frozen


def test_watermark_passes_every_commit_from_the_stream_and_never_early(
    make_pipeline,
):
    p = make_pipeline(SCHEMA, ["public.marks"], VIEWS)
    p.apply_connector()
    p.start_worker()
    p.wait_drained(timeout=120)
    tracker = FrozenSlot(p.config, min_interval_s=0.01)
    tracker.refresh()
    client = ReadClient(p.config)
    wrong: list[str] = []
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
                assert tracker.frozen is not None
                assert tracker.frozen < lsn  # so only the stream can pass it
                deadline = time.monotonic() + 30
                while True:
                    tracker.refresh()
                    mark = tracker.watermark("marks")
                    if mark is not None and mark >= lsn:
                        break
                    assert time.monotonic() < deadline, f"write {n} never reached"
                    time.sleep(0.005)
                got = (client.get("marks", str(ident)).doc or {}).get("val")
                if got != n:
                    wrong.append(f"write {n} to {ident}: store holds {got}")
            assert load.ops > 200
    finally:
        client.close()
        tracker.close()
    assert not wrong, wrong[:10]
