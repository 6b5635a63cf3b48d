"""Records read ahead (pipeline.readahead) and a rebalance that takes their
partitions: given back, not applied, and every row still reaches every store.

On the real broker: the worker's Redis write of its first batch is held (a
slow store), so the worker holds that batch in flight and the next one read
ahead and decoded. A second member joins the group meanwhile: the eager
rebalance takes every partition from the worker while it waits for the
write, and gives half of them back. The write is let go; the records read
ahead are given back instead of applied, each partition the worker holds
goes on from where its new assignment starts, and once the second member
left (it commits nothing), every document equals its row.
"""

from __future__ import annotations

import logging
import threading
import time
from typing import Any

import pytest
from harness import wait_for

from connectors.base import Sink, WriteResult
from pipeline.worker import build_sinks

pytestmark = pytest.mark.integration

SCHEMA = "CREATE TABLE items (id integer PRIMARY KEY, name text NOT NULL);"
VIEWS = {"items": {"table": "public.items"}}


class Held:
    """A real sink whose writes wait while ``hold`` is set."""

    def __init__(self, sink: Sink) -> None:
        self.sink = sink
        self.hold = threading.Event()
        self.entered = threading.Event()

    def write(self, ops: Any) -> WriteResult:
        self.entered.set()
        while self.hold.is_set():
            time.sleep(0.05)
        return self.sink.write(ops)

    def __getattr__(self, name: str) -> Any:
        return getattr(self.sink, name)


def test_a_rebalance_while_records_are_read_ahead_gives_them_back(
    make_pipeline, caplog
):
    caplog.set_level(logging.INFO, logger="pipeline.readahead")
    p = make_pipeline(SCHEMA, ["public.items"], VIEWS, worker={"batch_size": 40})
    p.sql("INSERT INTO items SELECT i, 'item ' || i FROM generate_series(1, 600) i")
    p.apply_connector()
    redis = Held(build_sinks(p.config, ["redis"])["redis"])
    redis.hold.set()
    worker = p.start_in_process({"redis": redis})
    wait_for(
        lambda: redis.entered.is_set() and worker.ahead.pending,
        120,
        "a batch in flight and the next one read ahead",
    )
    other = p.second_member(worker)
    redis.hold.clear()

    def given_back() -> bool:
        other.poll(0.2)
        return "records read ahead given back" in caplog.text

    wait_for(given_back, 60, "the records read ahead to be given back")
    p.sql("UPDATE items SET name = name || ' again' WHERE id % 3 = 0")
    p.sql("DELETE FROM items WHERE id % 7 = 0")
    p.wait_own_applied(worker, other, timeout=120)
    other.close()  # leaves the group; it committed nothing
    p.wait_drained(timeout=120)
    p.assert_converged()
