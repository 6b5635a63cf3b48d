"""Workers that serve different views never share a consumer group.

Two views of one table, two workers: one started with ``--views a``, the other
with ``--views b``. Had they shared one group, each would own some partitions
of the table's topic, apply only its own view to them and commit them for the
group: each view would silently miss the rows of the other worker's
partitions. And the read-your-writes watermark of a view that no worker
serves must not advance on another view's commits.
"""

from __future__ import annotations

import pytest
from harness import wait_for

from pipeline.groups import Scope, worker_group
from query.lsn import parse as parse_lsn
from query.watermark import WatermarkTracker

pytestmark = pytest.mark.integration

SCHEMA = "CREATE TABLE items (id integer PRIMARY KEY, name text NOT NULL);"
VIEWS = {
    "a": {"table": "public.items", "sinks": ["redis", "mongodb"]},
    "b": {"table": "public.items", "sinks": ["redis", "elasticsearch"]},
}


def _insert(p, first: int, count: int) -> str:
    with p.connect() as conn:
        conn.execute(
            "INSERT INTO items SELECT i, 'item ' || i "
            "FROM generate_series(%s::int, %s::int) i",
            (first, first + count - 1),
        )
        return str(conn.execute("SELECT pg_current_wal_lsn()::text").fetchone()[0])


def _converged(p) -> bool:
    return all(d.ok for d in p.verify())


def test_workers_with_disjoint_views_each_apply_every_row(make_pipeline):
    p = make_pipeline(SCHEMA, ["public.items"], VIEWS)
    _insert(p, 1, 60)
    p.apply_connector()
    p.start_worker(views=["a"])
    p.start_worker(views=["b"])
    _insert(p, 61, 60)
    wait_for(lambda: _converged(p), 120, "both views to hold every row")
    p.assert_converged()
    group_a = worker_group(p.config, Scope.of(p.config, ["a"]))
    assert group_a != worker_group(p.config, Scope.of(p.config, ["b"]))


def test_watermark_of_a_view_no_worker_serves_stays_behind(make_pipeline):
    p = make_pipeline(SCHEMA, ["public.items"], VIEWS)
    p.apply_connector()
    p.start_worker(views=["a"])
    lsn = parse_lsn(_insert(p, 1, 30))
    tracker = WatermarkTracker(p.config)
    try:
        tracker.wait("a", lsn, timeout_s=60)
        tracker.refresh(max_age_s=0)
        mark_b = tracker.watermark("b")
        assert mark_b is None or mark_b < lsn, "view b is served by no worker"
        # Once a worker serves b, its watermark follows.
        p.start_worker(views=["b"])
        tracker.wait("b", lsn, timeout_s=60)
    finally:
        tracker.close()


def test_worker_refuses_a_group_whose_members_serve_other_views(make_pipeline):
    # Two deployments under one group_id: the running one serves a and b;
    # the new config dropped b, so its worker would skip b's records of the
    # partitions it is given, and commit them for the group.
    p = make_pipeline(SCHEMA, ["public.items"], VIEWS)
    p.apply_connector()
    first = p.start_worker()
    _insert(p, 1, 20)
    p.wait_drained()

    saved = {}

    def drop_b(data):
        saved["b"] = data["views"].pop("b")

    p.rewrite(drop_b)
    newcomer = p.start_worker()
    assert newcomer.proc.wait(90) != 0
    assert "has members serving other views" in newcomer.log_text()
    assert first.alive()
    # The running deployment goes on applying both views.
    p.rewrite(lambda data: data["views"].update(saved))
    _insert(p, 21, 20)
    p.wait_drained()
    p.assert_converged()
