"""A store that loses a view's documents while the consumer group keeps its
offsets (a Redis emptied or restarted without its data, an Elasticsearch index
deleted, a MongoDB collection dropped), and a sink added to a view the group
already read.

The worker goes on from its committed offsets and writes only what changes
from then on, so every other document stays missing. It must say so, by view
and sink, with the way out (``readside snapshot VIEW --sink NAME``), at once
while it runs and again when it starts; the snapshot must make the store
whole and end the error (:mod:`pipeline.loaded`).
"""

from __future__ import annotations

import json

import pytest
from harness import Pipeline, wait_for

from connectors.base import LoadMarks
from pipeline.worker import build_sinks
from query import ReadClient

pytestmark = pytest.mark.integration

SCHEMA = """
CREATE TABLE items (id integer PRIMARY KEY, name text NOT NULL);
INSERT INTO items SELECT i, 'item ' || i FROM generate_series(1, 20) AS i;
"""


def _unloaded(sink: str) -> str:
    return f"view items is not whole in sink {sink}: its load mark is missing"


def _loaded(p: Pipeline, sink: str) -> bool:
    store = build_sinks(p.config, [sink])[sink]
    store.open()
    try:
        assert isinstance(store, LoadMarks)
        return store.loaded("items")
    finally:
        store.close()


def _unloaded_in_status(p: Pipeline, sink: str) -> bool:
    """Whether ``readside status`` (text and JSON) says ``sink`` does not hold
    ``items`` whole; both must agree."""
    rows = json.loads(p.run_cli("status", "--json").stdout)["views"]
    (row,) = [r for r in rows if r["view"] == "items" and r["sink"] == sink]
    text = p.run_cli("status").stdout
    said = f"warning: items in {sink}: not whole since" in text
    assert said == (row["unloaded_since_ms"] is not None), text
    if said:
        assert f"readside snapshot items --sink {sink}" in text, text
    return said


def _lose(p: Pipeline, sink: str) -> None:
    """Take every document of ``items`` away from ``sink``'s store."""
    store = build_sinks(p.config, [sink])[sink]
    store.open()
    store.drop("items")  # type: ignore[attr-defined]
    store.close()


@pytest.mark.parametrize("sink", ["redis", "elasticsearch", "mongodb"])
def test_a_store_that_lost_a_view_is_reported_until_a_snapshot_refills_it(
    make_pipeline, sink
):
    p = make_pipeline(
        SCHEMA, ["public.items"], {"items": {"table": "public.items", "sinks": [sink]}}
    )
    p.apply_connector()
    worker = p.start_worker()
    p.wait_drained(timeout=120)
    p.assert_converged()
    assert f"load mark set view=items sink={sink} (first start)" in worker.log_text()
    assert _loaded(p, sink)
    assert not _unloaded_in_status(p, sink)

    _lose(p, sink)
    p.sql("UPDATE items SET name = name || ' (new)' WHERE id <= 3")
    p.wait_log(worker, _unloaded(sink), timeout=60)
    assert "the store lost them" in worker.log_text()
    assert f"readside snapshot items --sink {sink}" in worker.log_text()
    p.wait_drained(timeout=120)
    (drift,) = p.verify()  # what was reported: 17 documents gone for good
    assert len(drift.missing) == 17, drift
    wait_for(lambda: _unloaded_in_status(p, sink), 30, "status to warn")

    assert worker.terminate() == 0
    again = p.start_worker()
    p.wait_log(again, _unloaded(sink), timeout=60)  # said again at the start

    done = p.run_cli("snapshot", "items", "--sink", sink)
    assert f"load mark set view=items sink={sink}" in done.stderr, done.stderr
    p.wait_log(again, f"view items is whole again in sink {sink}", timeout=60)
    p.wait_drained(timeout=120)
    p.assert_converged()
    assert again.alive(), again.tail()
    wait_for(lambda: not _unloaded_in_status(p, sink), 30, "status to stop warning")


def test_reads_go_to_a_whole_store_while_another_has_lost_the_view(make_pipeline):
    """A view in Redis and Elasticsearch: Redis, first in the read order,
    loses it. Until it is loaded again, reads by id go to Elasticsearch,
    which holds every document, not to Redis, which would answer "missing"
    for every row that did not change (query.client.ordered_sinks)."""
    p = make_pipeline(
        SCHEMA,
        ["public.items"],
        {"items": {"table": "public.items", "sinks": ["redis", "elasticsearch"]}},
    )
    p.apply_connector()
    worker = p.start_worker()
    p.wait_drained(timeout=120)
    with ReadClient(p.config) as reads:
        answer = reads.get("items", "10")
        assert (answer.store, answer.doc is not None) == ("redis", True), answer
        _lose(p, "redis")
        p.wait_log(worker, _unloaded("redis"), timeout=60)
        wait_for(
            lambda: reads.get("items", "10").store == "elasticsearch",
            30,
            "reads to leave the store that lost the view",
        )
        answer = reads.get("items", "10")
        assert answer.doc is not None, answer
        assert answer.doc["name"] == "item 10", answer
        assert set(reads.get_many("items", ["1", "10", "20"]).docs) == {"1", "10", "20"}
        p.run_cli("snapshot", "items", "--sink", "redis")
        p.wait_log(worker, "view items is whole again in sink redis", timeout=60)
        wait_for(
            lambda: reads.get("items", "10").store == "redis", 30, "reads back in Redis"
        )
    assert worker.alive(), worker.tail()


def test_a_sink_added_to_a_view_the_group_read_is_reported(make_pipeline):
    p = make_pipeline(
        SCHEMA,
        ["public.items"],
        {"items": {"table": "public.items", "sinks": ["redis"]}},
    )
    p.apply_connector()
    worker = p.start_worker()
    p.wait_drained(timeout=120)
    assert worker.terminate() == 0

    def add(d: dict) -> None:
        d["views"]["items"]["sinks"] = ["redis", "elasticsearch"]

    p.rewrite(add)
    again = p.start_worker()
    p.wait_log(again, _unloaded("elasticsearch"), timeout=60)
    assert "the sink was added to the view after" in again.log_text()
    assert _unloaded("redis") not in again.log_text()
    assert _loaded(p, "redis")
    p.run_cli("snapshot", "items", "--sink", "elasticsearch")
    p.wait_log(again, "view items is whole again in sink elasticsearch", timeout=60)
    p.wait_drained(timeout=120)
    p.assert_converged()
