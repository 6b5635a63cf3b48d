"""TRUNCATE of a source table empties its table views (issue 9, hole 11).

The connector skips Debezium's truncate events (keyless, refused by the
compacted topics); the trigger of :mod:`connectors.truncate` turns a
TRUNCATE into row deletes in the same transaction. The stores must then end
equal to the table, whether the worker ran through the truncate, was stopped
and resumed after it, or the view is replayed from the topic after
compaction left only the deletes' tombstones.
"""

from __future__ import annotations

import psycopg
import pytest
from shop_model import SCHEMA as SHOP_SCHEMA
from shop_model import TABLES as SHOP_TABLES
from shop_model import VIEW as SHOP_VIEW
from shop_model import ShopLoad, expected_documents
from test_tombstones import compact_until_only_tombstones

from connectors import truncate

pytestmark = pytest.mark.integration

SCHEMA = "CREATE TABLE notes (id integer PRIMARY KEY, body text NOT NULL);"
VIEWS = {"notes": {"table": "public.notes"}}
FILL = (
    "INSERT INTO notes SELECT g, 'note ' || g FROM generate_series(%s::int, %s::int) g"
)


@pytest.mark.parametrize("reader", ["live", "stopped", "compacted-replay"])
def test_truncate_empties_table_view_then_later_rows_converge(make_pipeline, reader):
    p = make_pipeline(SCHEMA, ["public.notes"], VIEWS)
    topic = p.config.source.topic("public.notes")
    p.apply_connector()
    worker = p.start_worker()
    p.sql(FILL, (1, 40))
    p.wait_drained(timeout=180)
    p.assert_converged()
    if reader != "live":
        assert worker.terminate() == 0, worker.tail()
    p.sql("TRUNCATE notes")
    p.sql(FILL, (100, 129))
    assert p.sql("SELECT count(*) FROM notes") == [(30,)]
    if reader == "compacted-replay":
        compact_until_only_tombstones(p, topic, set(range(1, 41)), [*range(100, 130)])
        p.run_cli("snapshot", "notes")
    else:
        if reader == "stopped":
            p.start_worker()
        p.wait_drained(timeout=180)
    p.assert_converged()


FK_SCHEMA = """
CREATE TABLE parent (id integer PRIMARY KEY, name text NOT NULL);
CREATE TABLE child (
    id integer PRIMARY KEY,
    parent_id integer NOT NULL REFERENCES parent (id),
    note text
);
"""
FK_VIEWS = {"parent": {"table": "public.parent"}, "child": {"table": "public.child"}}


def test_truncate_cascade_through_foreign_key_empties_both_views(make_pipeline):
    p = make_pipeline(FK_SCHEMA, ["public.parent", "public.child"], FK_VIEWS)
    p.apply_connector()
    p.start_worker()
    p.sql("INSERT INTO parent SELECT g, 'p' || g FROM generate_series(1, 20) g")
    p.sql("INSERT INTO child SELECT g, 1 + g % 20, 'c' FROM generate_series(1, 50) g")
    p.wait_drained(timeout=180)
    p.assert_converged()
    # A truncate rolled back changes nothing; a plain TRUNCATE of the
    # referenced table still fails as PostgreSQL decides.
    with p.connect() as conn:
        conn.autocommit = False
        conn.execute("TRUNCATE parent CASCADE")
        conn.rollback()
    with pytest.raises(Exception, match="foreign key"):
        p.sql("TRUNCATE parent")
    p.sql("TRUNCATE parent CASCADE")
    p.sql("INSERT INTO parent VALUES (7, 'again')")
    p.sql("INSERT INTO child VALUES (3, 7, 'again')")
    p.wait_drained(timeout=180)
    assert p.sql("SELECT count(*) FROM child") == [(1,)]
    p.assert_converged()


def test_truncate_of_child_tables_rereads_aggregate_roots(make_pipeline):
    """Aggregate views see the truncated rows' deletes and re-read their
    roots: the customers lose their orders (and items) and their tags."""
    p = make_pipeline(SHOP_SCHEMA, SHOP_TABLES, {"customers": SHOP_VIEW})
    load = ShopLoad(seed=5)
    with psycopg.connect(p.dsn, autocommit=True) as conn:
        load.seed(conn, customers=30)
    p.apply_connector()
    p.start_worker()
    with psycopg.connect(p.dsn, autocommit=True) as conn:
        for _ in range(60):
            load.step(conn, load.rng)
    p.wait_drained(timeout=180)
    p.assert_converged()
    p.sql("TRUNCATE orders CASCADE")
    p.sql("TRUNCATE tags CASCADE")
    p.wait_drained(timeout=180)
    docs = expected_documents(p.dsn)
    assert docs
    assert all('"orders":[]' in d and '"tags":[]' in d for d in docs.values())
    p.assert_converged()


def test_truncate_install_twice_skips_absent_table(make_pipeline):
    p = make_pipeline(SCHEMA, ["public.notes"], VIEWS)
    with p.connect() as conn:
        for _ in range(2):
            got = truncate.install(conn, ["public.notes", "public.absent"])
            assert got == ["public.notes"]
    triggers = p.sql(
        "SELECT tgrelid::regclass::text FROM pg_trigger WHERE tgname = %s",
        (truncate.TRIGGER,),
    )
    assert triggers == [("notes",)]
