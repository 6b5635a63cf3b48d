"""The View interface: what the engine and the operations ask of each kind."""

from __future__ import annotations

from typing import Any

import pytest

from pipeline.aggregate import AggregateView, Pending, prepare_views
from pipeline.events import ChangeEvent, Op, Position, Upsert
from pipeline.viewconfig import AggregateViewConfig, TableViewConfig
from pipeline.views import TableView, View

pytestmark = pytest.mark.unit

UNREACHABLE = "postgresql://nobody@127.0.0.1:1/none"


def table_view() -> TableView:
    cfg = TableViewConfig(table="public.docs", sinks=["m"])
    return TableView("docs", cfg, 0, None, None)


def aggregate_view() -> AggregateView:
    cfg = AggregateViewConfig(kind="aggregate", table="public.customers", sinks=["m"])
    return AggregateView("customers", cfg, 0, None)


def change(table: str, offset: int = 4) -> ChangeEvent:
    return ChangeEvent(
        table=table,
        op=Op.CREATE,
        key={"id": 1},
        before=None,
        after={"id": 1, "title": "a"},
        lsn=None,
        commit_ts_ms=None,
        txid=None,
        position=Position("app." + table, 0, offset),
    )


def test_table_view_route_builds_ops_now_and_names_no_roots():
    view: View = table_view()
    pending: dict[str, Pending] = {}
    (op,) = view.route(change("public.docs"), pending)
    assert isinstance(op, Upsert)
    assert op.doc == {"id": 1, "title": "a"}
    assert pending == {}
    assert not view.rereads
    assert view.from_source() is None


def test_table_view_use_epoch_takes_epoch_and_starts():
    view: View = table_view()
    view.use_epoch(3, {("t", 0): 7})
    assert (view.epoch, dict(view.starts)) == (3, {("t", 0): 7})


def test_aggregate_view_use_epoch_keeps_no_starts():
    view: View = aggregate_view()
    view.use_epoch(2, {("t", 0): 7})
    assert (view.epoch, dict(view.starts)) == (2, {})
    assert view.rereads
    assert view.from_source() is view


def test_prepare_views_without_a_view_that_rereads_connects_to_nothing():
    views: dict[str, Any] = {"docs": table_view()}
    prepare_views(views, UNREACHABLE)  # would raise TransientError if it connected
