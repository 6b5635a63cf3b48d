"""An aggregate view's ``where`` that reads more than its root row.

A root enters or leaves an aggregate view only when the worker reads it
again, which a change to a row of the view's tables makes it do. A ``where``
on the clock (``placed > now() - interval '1 hour'``), on other rows (a
subquery, a function reading tables) or on chance moves its answer with no
such change: the documents it should drop stay, those it should take never
come, with the lag at zero. Such a ``where`` must be refused at start, by
``config check`` and by the worker, naming the field and what it reads; a
``where`` on the root's own columns is taken as before
(pipeline.aggregate.rootfilter).
"""

from __future__ import annotations

from typing import Any

import pytest
from harness import wait_for

pytestmark = pytest.mark.integration

SCHEMA = """
CREATE TABLE orders (
    id integer PRIMARY KEY,
    status text NOT NULL,
    placed timestamptz NOT NULL DEFAULT now(),
    due date NOT NULL DEFAULT '2030-01-01'
);
CREATE TABLE holds (order_id integer PRIMARY KEY);
CREATE FUNCTION held(i integer) RETURNS boolean STABLE LANGUAGE sql
    AS 'SELECT EXISTS (SELECT 1 FROM public.holds WHERE order_id = i)';
CREATE FUNCTION even(i integer) RETURNS boolean IMMUTABLE LANGUAGE sql
    AS 'SELECT i % 2 = 0';
INSERT INTO orders (id, status) SELECT i, 'open' FROM generate_series(1, 10) AS i;
"""
VIEWS = {"recent": {"kind": "aggregate", "table": "public.orders", "sinks": ["redis"]}}

#: where -> what the refusal must say it reads
REFUSED = {
    "placed > now() - interval '1 hour'": "reads the clock (now())",
    "due >= CURRENT_DATE": "reads the clock (CURRENT_DATE)",
    "due > 'today'": "reads the clock (the literal 'today', a time)",
    "NOT EXISTS (SELECT 1 FROM public.holds h WHERE h.order_id = id)": (
        "reads other rows (public.holds, in a subquery)"
    ),
    "NOT held(id)": "calls held(), declared STABLE",
    "random() < 0.5": "calls random(), which is VOLATILE",
}
TAKEN = [
    "status <> 'cancelled' AND placed > '2020-01-01' AND due > '2029-01-01'",
    "status <> 'today'",  # a text that reads like the clock stays a text
    "even(id)",
]


def _set_where(p: Any, where: str) -> None:
    def edit(data: dict[str, Any]) -> None:
        data["views"]["recent"]["where"] = where

    p.rewrite(edit)


def test_a_where_that_reads_more_than_its_root_row_is_refused_at_start(
    make_pipeline,
):
    p = make_pipeline(SCHEMA, ["public.orders", "public.holds"], VIEWS)
    for where, reads in REFUSED.items():
        _set_where(p, where)
        run = p.run_cli("config", "check", ok=False, timeout=120)
        said = run.stdout + run.stderr
        assert run.returncode != 0, said
        assert f"views.recent.where: {where!r} {reads}" in said, said
        assert "only when a row of its tables changes" in said, said
    for where in TAKEN:
        _set_where(p, where)
        p.run_cli("config", "check", timeout=120)

    # the worker refuses it too, before it reads a record
    _set_where(p, "placed > now() - interval '1 hour'")
    p.apply_connector()
    worker = p.start_worker()
    wait_for(lambda: not worker.alive(), 60, "the worker to refuse the view")
    assert worker.proc.returncode != 0, worker.tail()
    assert "views.recent.where: " in worker.log_text(), worker.tail()
    assert "reads the clock (now())" in worker.log_text(), worker.tail()

    # a where on the root's own columns converges as always
    _set_where(p, TAKEN[0])
    worker = p.start_worker()
    p.sql("UPDATE orders SET status = 'cancelled' WHERE id = 3")
    p.wait_drained(timeout=120)
    p.assert_converged()
    assert worker.alive(), worker.tail()
