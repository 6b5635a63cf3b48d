"""Aggregate views against the real stack: a three-level document with a
many-to-one lookup and a many-to-many list stays equal to the source under a
random workload on every level, with two workers."""

from __future__ import annotations

from typing import Any

import psycopg
import pytest
from shop_model import SCHEMA, TABLES, VIEW, ShopLoad, expected_documents

from pipeline.aggregate import AggregateView, prepare_views
from pipeline.aggregate.reader import Reader
from pipeline.verify import canonical
from pipeline.views import build_views

pytestmark = pytest.mark.integration


def _view_sql_documents(p: Any) -> dict[str, str]:
    views = build_views(p.config, only=["customers"])
    prepare_views(views, p.dsn)
    view = views["customers"]
    assert isinstance(view, AggregateView)
    reader = Reader(p.dsn)
    try:
        return {k: canonical(v) for k, v in view.documents(reader).items()}
    finally:
        reader.close()


def test_aggregate_random_workload_two_workers_converges(make_pipeline):
    p = make_pipeline(SCHEMA, TABLES, {"customers": VIEW})
    load = ShopLoad(seed=7)
    with psycopg.connect(p.dsn, autocommit=True) as conn:
        load.seed(conn)
    p.apply_connector()
    p.start_worker()
    p.start_worker()
    with psycopg.connect(p.dsn, autocommit=True) as conn:
        for _ in range(400):
            load.step(conn, load.rng)
    p.wait_drained(timeout=180)
    oracle = expected_documents(p.dsn)
    assert len(oracle) > 10
    # The view's SQL defines the same documents as plain reads assembled by hand...
    assert _view_sql_documents(p) == oracle
    # ...and every sink holds exactly those.
    p.assert_converged()
    assert not p.dead_letters()
