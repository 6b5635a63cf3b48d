"""A view's definition edited in the config, the workers restarted with it:
every change from then on follows the new definition, the document of every
row that did not change keeps the former one, and the lag reads zero. The
worker (at its start) and ``readside status`` must name the view, the
settings that changed and the load that rewrites it; once loaded, the
warning ends and every document follows the config (pipeline.definitions).
"""

from __future__ import annotations

from typing import Any

import pytest
from harness import wait_for
from items_model import BOTH_VIEWS, started, status_warnings

from pipeline.aggregate import AggregateView
from pipeline.snapshot import Loader, Options

pytestmark = pytest.mark.integration


def _warnings(p: Any) -> list[str]:
    return status_warnings(p, "definition_warnings")


def test_a_changed_definition_is_said_until_its_documents_are_rewritten(
    make_pipeline,
):
    p, worker = started(make_pipeline, BOTH_VIEWS)
    assert worker.terminate() == 0
    # a worker that starts again with the same definitions says nothing
    worker = p.start_worker()
    p.wait_log(worker, "worker started", timeout=60)
    assert _warnings(p) == []
    assert worker.terminate() == 0

    def edit(data: dict[str, Any]) -> None:
        data["views"]["items"]["exclude"] = ["price"]
        data["views"]["shelf"]["rename"] = {"name": "title"}

    p.rewrite(edit)
    worker = p.start_worker()
    said = {
        "items": "view items in sink redis: its definition changed (exclude) since "
        "its documents were written whole",
        "shelf": "view shelf in sink redis: its definition changed (rename)",
    }
    for text in said.values():
        p.wait_log(worker, f"ERROR pipeline.definitions {text}", timeout=60)
    p.sql("UPDATE items SET name = 'changed' WHERE id = 1")
    p.wait_drained(timeout=120)
    for drift in p.verify():  # rows 2..20 keep the former definition
        assert sorted(drift.differing, key=int) == [str(i) for i in range(2, 21)]
    table_view, aggregate = _warnings(p)
    assert table_view.startswith(said["items"]), table_view
    assert table_view.endswith("readside snapshot items --rebuild --sink redis")
    assert aggregate.startswith(said["shelf"]), aggregate
    assert aggregate.endswith("readside snapshot shelf --sink redis")

    p.run_cli("snapshot", "items", "--rebuild", "--sink", "redis")
    p.run_cli("snapshot", "shelf", "--sink", "redis")
    assert _warnings(p) == []
    wait_for(lambda: all(d.ok for d in p.verify()), 120, "every document rewritten")
    assert worker.alive(), worker.tail()


def test_a_migration_of_the_source_is_said_until_its_documents_are_rewritten(
    make_pipeline,
):
    """A column added with a default (PostgreSQL fills it in for every row
    without changing one) and a column dropped, while the worker runs: no
    record of the rows the migration did not touch goes through the stream,
    so their documents keep the former columns. ``readside status`` and the
    worker name the tables' columns and the load; once loaded, the warning
    ends and every document follows the source."""
    p, worker = started(make_pipeline, BOTH_VIEWS)
    assert _warnings(p) == []
    p.sql("ALTER TABLE items ADD COLUMN note text NOT NULL DEFAULT 'new'")
    p.sql("ALTER TABLE items DROP COLUMN price")
    p.sql("UPDATE items SET name = 'changed' WHERE id = 1")
    # The columns of the aggregate view's table are not those it was compiled
    # against (its statement names the dropped one): compiled again.
    p.wait_log(
        worker,
        "view shelf: a migration changed the columns of its tables; compiling "
        "it again from the catalog",
    )
    wait_for(
        lambda: (
            [sorted(d.differing, key=int) for d in p.verify()]
            == [list(map(str, range(2, 21)))] * 2
        ),
        120,
        "row 1 of both views to follow the migration",
    )
    assert worker.alive(), worker.tail()
    columns = "columns of public.items (note added; price dropped)"
    table_view, aggregate = _warnings(p)
    assert table_view == (
        f"view items in sink redis: the source's columns changed ({columns}) "
        "since its documents were written whole; the document of every row that "
        "has not changed since follows the former one. Rewrite them: "
        "readside snapshot items --from-source"
    )
    assert aggregate.startswith(
        f"view shelf in sink redis: the source's columns changed ({columns})"
    )
    assert aggregate.endswith("Rewrite them: readside snapshot shelf --sink redis")
    assert worker.terminate() == 0
    worker = p.start_worker()
    p.wait_log(
        worker,
        "ERROR pipeline.definitions view items in sink redis: the source's "
        f"columns changed ({columns})",
        timeout=60,
    )
    p.run_cli("snapshot", "items", "--from-source")
    p.run_cli("snapshot", "shelf", "--sink", "redis")
    assert _warnings(p) == []
    wait_for(lambda: all(d.ok for d in p.verify()), 180, "every document rewritten")
    assert worker.alive(), worker.tail()


def test_a_column_added_reaches_an_aggregate_views_documents_without_a_restart(
    make_pipeline,
):
    """A column added changes no statement the source would refuse: the
    running worker went on with the columns it read at its start. The load
    the warning names then rewrote every document and ended the warning,
    and every root changed after it lost the column again, with no word.
    The worker compiles a view again once its tables' columns changed."""
    p, worker = started(make_pipeline, BOTH_VIEWS)
    p.sql("UPDATE items SET price = price + 1 WHERE id = 20")
    p.wait_drained()
    # no migration yet: the columns it compiled against are the catalog's
    assert "compiling it again" not in worker.log_text(), worker.tail()
    p.sql("ALTER TABLE items ADD COLUMN note text NOT NULL DEFAULT 'new'")
    wait_for(lambda: len(_warnings(p)) == 2, 90, "the migration to be said")
    p.run_cli("snapshot", "items", "--from-source")
    p.run_cli("snapshot", "shelf", "--sink", "redis")
    assert _warnings(p) == []
    p.sql("UPDATE items SET name = name || ' again' WHERE id <= 5")
    p.sql("INSERT INTO items (id, name, price) VALUES (100, 'late', 1)")
    p.wait_drained()
    p.assert_converged()
    assert worker.alive(), worker.tail()


def test_a_column_added_during_an_aggregate_load_is_said_after_it(
    make_pipeline, monkeypatch
):
    """The load reads every chunk with the statement it compiled at its
    start; it recorded the columns it found at its end. A column added
    while it ran was in the record and in no document it wrote: the
    warning ended with every document short of the column. The load now
    records the columns it compiled against, so the migration is said."""
    p, _worker = started(make_pipeline, BOTH_VIEWS)
    real = AggregateView.load_chunk
    migrated: list[bool] = []

    def load_chunk(self, reader, after, where, size):  # type: ignore[no-untyped-def]
        chunk = real(self, reader, after, where, size)
        if not migrated:  # after the first chunk is read
            p.sql("ALTER TABLE items ADD COLUMN note text NOT NULL DEFAULT 'new'")
            migrated.append(True)
        return chunk

    monkeypatch.setattr(AggregateView, "load_chunk", load_chunk)
    opts = Options("shelf", sinks=["redis"], chunk_size=5, writers=1)
    assert Loader(p.config, opts, lambda _st: None).run().state == "done"
    assert migrated
    said = [w for w in _warnings(p) if w.startswith("view shelf")]
    assert len(said) == 1, _warnings(p)
    assert "(columns of public.items (note added))" in said[0], said
    p.run_cli("snapshot", "shelf", "--sink", "redis")
    p.run_cli("snapshot", "items", "--from-source")
    assert _warnings(p) == []
    wait_for(lambda: all(d.ok for d in p.verify()), 120, "every document rewritten")


ENUM_SCHEMA = """
CREATE TYPE ticket_state AS ENUM ('open', 'closed');
CREATE TABLE tickets (id integer PRIMARY KEY, state ticket_state NOT NULL);
INSERT INTO tickets SELECT i, CASE WHEN i % 2 = 0 THEN 'open' ELSE 'closed'
    END::ticket_state FROM generate_series(1, 10) AS i;
"""


def test_an_enum_label_renamed_is_said_until_its_documents_are_rewritten(
    make_pipeline,
):
    """``ALTER TYPE ... RENAME VALUE`` changes what every row of the label
    reads, with no change of any row: their documents kept the former label
    for good, and nothing said so. A label added changes no row: nothing to
    say."""
    views = {
        "tickets": {"table": "public.tickets", "sinks": ["redis"]},
        "ticket_docs": {
            "kind": "aggregate",
            "table": "public.tickets",
            "sinks": ["redis"],
        },
    }
    p = make_pipeline(ENUM_SCHEMA, ["public.tickets"], views)
    p.apply_connector()
    worker = p.start_worker()
    p.wait_drained(timeout=120)
    p.assert_converged()
    p.sql("ALTER TYPE ticket_state ADD VALUE 'held'")
    assert _warnings(p) == []
    p.sql("ALTER TYPE ticket_state RENAME VALUE 'open' TO 'active'")
    for drift in p.verify():  # rows 2, 4, ..., 10 read 'active' now
        assert sorted(drift.differing, key=int) == ["2", "4", "6", "8", "10"]
    said = "columns of public.tickets (state enum label(s) open renamed or dropped)"
    aggregate, table_view = _warnings(p)  # in the views' order
    assert f"view tickets in sink redis: the source's columns changed ({said})" in (
        table_view
    )
    assert table_view.endswith("readside snapshot tickets --from-source")
    assert f"({said})" in aggregate
    p.run_cli("snapshot", "tickets", "--from-source")
    p.run_cli("snapshot", "ticket_docs", "--sink", "redis")
    assert _warnings(p) == []
    wait_for(lambda: all(d.ok for d in p.verify()), 180, "every document rewritten")
    assert worker.alive(), worker.tail()
