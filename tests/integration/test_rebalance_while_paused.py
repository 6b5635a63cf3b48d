"""A rebalance while a store is down leaves no partition paused for good.

While a store is down the worker polls with its partitions paused, so that
the group keeps it. librdkafka keeps a partition's pause flag in the
process, across revocations: a partition paused, then taken by another
member, comes back still paused when it is assigned to this worker again.
Resuming only "the current assignment" at the end of the wait misses it, and
the worker then idles in ``consume()`` forever while that partition has lag
(no loss, nothing is committed, but the view goes stale until a restart).

Here, on the real broker: the worker's Redis is down, so it pauses all its
partitions; a second member joins and takes half of them (the worker gives
its batch up); Redis comes back and the worker applies its half; the second
member leaves without committing. Every row must still reach every store.
"""

from __future__ import annotations

import threading
from typing import Any

import pytest
from harness import wait_for

from connectors.base import Sink, WriteResult
from pipeline.errors import TransientError
from pipeline.worker import build_sinks

pytestmark = pytest.mark.integration

SCHEMA = "CREATE TABLE items (id integer PRIMARY KEY, name text NOT NULL);"
VIEWS = {"items": {"table": "public.items"}}


class Outage:
    """A real sink behind a switch: while ``down``, every write fails as a
    store outage does (a transient error), before reaching the store."""

    def __init__(self, sink: Sink) -> None:
        self.sink = sink
        self.down = threading.Event()
        self.failed = 0

    def write(self, ops: Any) -> WriteResult:
        if self.down.is_set():
            self.failed += 1
            raise TransientError("store down (test outage)")
        return self.sink.write(ops)

    def __getattr__(self, name: str) -> Any:
        return getattr(self.sink, name)


def test_partitions_paused_during_an_outage_are_consumed_after_they_return(
    make_pipeline,
):
    p = make_pipeline(SCHEMA, ["public.items"], VIEWS)
    p.sql("INSERT INTO items SELECT i, 'item ' || i FROM generate_series(1, 60) i")
    p.apply_connector()
    redis = Outage(build_sinks(p.config, ["redis"])["redis"])
    redis.down.set()
    worker = p.start_in_process({"redis": redis})
    wait_for(lambda: redis.failed > 0, 120, "the worker to meet the outage")
    other = p.second_member(worker)
    redis.down.clear()
    p.wait_own_applied(worker, other)
    other.close()  # leaves the group; it committed nothing
    p.wait_drained(timeout=60)
    p.assert_converged()
