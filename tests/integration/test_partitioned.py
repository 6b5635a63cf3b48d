"""A range-partitioned table (PostgreSQL declarative partitioning) on the real stack.

``payments`` is partitioned by ``paid_at``: a plain leaf for 2022 and a 2023
partition that is itself partitioned by half-year. Every change of any leaf
must reach the views under the root's name, key and topic: a table view in
every store, an aggregate view whose partitioned table is a child
(customers with their payments) and one whose root is partitioned (payments
with their customer). After the initial snapshot the test inserts into
several partitions, updates, moves rows to another partition (an update of
the partition key: a delete and an insert across partitions), deletes, then
attaches a partition (followed by ``readside snapshot`` of the views, as the
docs/views.md says: ATTACH carries no row changes) and detaches one the documented
way (its rows leave the root through the stream). Every view must then equal
its SQL definition on the root in every store: the detached rows are gone.
"""

from __future__ import annotations

import random
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any

import psycopg
import pytest
from harness import wait_for

pytestmark = pytest.mark.integration

SCHEMA = """
CREATE TABLE customers (
    id   integer PRIMARY KEY,
    name text NOT NULL
);
CREATE TABLE payments (
    payment_id  bigint NOT NULL,
    customer_id integer NOT NULL,
    amount      numeric(10, 2) NOT NULL,
    paid_at     timestamptz NOT NULL,
    note        text,
    PRIMARY KEY (payment_id, paid_at)
) PARTITION BY RANGE (paid_at);
CREATE TABLE payments_2022 PARTITION OF payments
    FOR VALUES FROM ('2022-01-01 00:00+00') TO ('2023-01-01 00:00+00');
CREATE TABLE payments_2023 PARTITION OF payments
    FOR VALUES FROM ('2023-01-01 00:00+00') TO ('2024-01-01 00:00+00')
    PARTITION BY RANGE (paid_at);
CREATE TABLE payments_2023_h1 PARTITION OF payments_2023
    FOR VALUES FROM ('2023-01-01 00:00+00') TO ('2023-07-01 00:00+00');
CREATE TABLE payments_2023_h2 PARTITION OF payments_2023
    FOR VALUES FROM ('2023-07-01 00:00+00') TO ('2024-01-01 00:00+00');
-- The aggregate view links payments by customer_id, outside their key: every
-- leaf needs the full old row (the root's setting does not reach its leaves).
ALTER TABLE payments REPLICA IDENTITY FULL;
ALTER TABLE payments_2022 REPLICA IDENTITY FULL;
ALTER TABLE payments_2023 REPLICA IDENTITY FULL;
ALTER TABLE payments_2023_h1 REPLICA IDENTITY FULL;
ALTER TABLE payments_2023_h2 REPLICA IDENTITY FULL;
INSERT INTO customers SELECT i, 'customer ' || i FROM generate_series(1, 12) AS i;
INSERT INTO payments
SELECT i, i % 12 + 1, i * 1.25,
       timestamptz '2022-01-01 00:00+00' + i * interval '97 hours', 'initial'
FROM generate_series(1, 150) AS i;
"""

TABLES = ["public.customers", "public.payments"]

VIEWS: dict[str, Any] = {
    "payments": {"table": "public.payments"},
    # Aggregate views in Redis and Elasticsearch only: FerretDB (the MongoDB
    # stand-in) is slow on updates, and the code path is the same for every
    # sink; the table view above covers MongoDB.
    "customer_payments": {
        "kind": "aggregate",
        "table": "public.customers",
        "sinks": ["redis", "elasticsearch"],
        "embed": {
            "payments": {
                "children": "public.payments",
                "on": {"customer_id": "id"},
                "order_by": ["payment_id", "paid_at"],
                "fields": ["payment_id", "amount", "paid_at"],
            }
        },
    },
    "payment_docs": {
        "kind": "aggregate",
        "table": "public.payments",
        "sinks": ["redis", "elasticsearch"],
        "embed": {
            "customer": {
                "parent": "public.customers",
                "on": {"id": "customer_id"},
            }
        },
    },
}

START = datetime(2022, 1, 1, tzinfo=UTC)
YEAR_2024 = "paid_at >= '2024-01-01 00:00+00' AND paid_at < '2025-01-01 00:00+00'"


def _instant(rng: random.Random, year: int) -> datetime:
    """A moment of ``year`` (2022-2024), to the second."""
    start = datetime(year, 1, 1, tzinfo=UTC)
    return start + timedelta(seconds=rng.randrange(365 * 24 * 3600))


class Workload:
    """Inserts into several partitions, updates, moves across partitions, deletes."""

    def __init__(self, conn: psycopg.Connection[Any], seed: int) -> None:
        self.conn = conn
        self.rng = random.Random(seed)
        self.next_id = 1000

    def keys(self) -> list[tuple[int, datetime]]:
        return self.conn.execute(
            "SELECT payment_id, paid_at FROM payments ORDER BY 1, 2"
        ).fetchall()

    def step(self, years: tuple[int, ...]) -> str:
        rng, conn = self.rng, self.conn
        roll = rng.random()
        keys = self.keys()
        if roll < 0.3 or not keys:
            self.next_id += 1
            conn.execute(
                "INSERT INTO payments VALUES (%s, %s, %s, %s, 'new')",
                (
                    self.next_id,
                    rng.randrange(1, 13),
                    Decimal(rng.randrange(100, 99_999)) / 100,
                    _instant(rng, rng.choice(years)),
                ),
            )
            return "insert"
        key = rng.choice(keys)
        if roll < 0.55:
            conn.execute(
                "UPDATE payments SET amount = amount + 1, note = %s "
                "WHERE payment_id = %s AND paid_at = %s",
                (f"updated {rng.randrange(1000)}", *key),
            )
            return "update"
        if roll < 0.65:
            conn.execute(
                "UPDATE payments SET customer_id = %s "
                "WHERE payment_id = %s AND paid_at = %s",
                (rng.randrange(1, 13), *key),
            )
            return "reassign"
        if roll < 0.85:
            # A new partition key: PostgreSQL deletes the row from its leaf and
            # inserts it into the leaf of the new year (or half-year).
            other = [y for y in years if y != key[1].year] or list(years)
            conn.execute(
                "UPDATE payments SET paid_at = %s "
                "WHERE payment_id = %s AND paid_at = %s",
                (_instant(rng, rng.choice(other)), *key),
            )
            return "move"
        conn.execute("DELETE FROM payments WHERE payment_id = %s AND paid_at = %s", key)
        return "delete"


def _converged(p: Any) -> bool:
    return all(d.ok for d in p.verify())


def test_partitioned_table_changes_reach_every_view_under_the_root(make_pipeline):
    p = make_pipeline(SCHEMA, TABLES, VIEWS)
    p.apply_connector()
    p.start_worker()
    with psycopg.connect(p.dsn, autocommit=True) as conn:
        load = Workload(conn, seed=20_221_231)
        done = [load.step((2022, 2023)) for _ in range(300)]
        assert {"insert", "update", "reassign", "move", "delete"} <= set(done)
        conn.execute("UPDATE customers SET name = name || '!' WHERE id % 3 = 0")
        p.wait_drained(timeout=180)
        drifts = p.verify()
        assert {(d.view, d.sink) for d in drifts} == {
            ("payments", "redis"),
            ("payments", "elasticsearch"),
            ("payments", "mongodb"),
            ("customer_payments", "redis"),
            ("customer_payments", "elasticsearch"),
            ("payment_docs", "redis"),
            ("payment_docs", "elasticsearch"),
        }
        bad = [d for d in drifts if not d.ok]
        assert not bad, "after streaming:\n" + "\n".join(d.describe() for d in bad)

        # ATTACH: a table filled beforehand becomes the 2024 partition. DDL
        # carries no row changes, so the views of the root load its rows with
        # `readside snapshot` (table view: Debezium's incremental snapshot of
        # the root, limited to the new range).
        conn.execute(
            "CREATE TABLE payments_2024 (LIKE payments INCLUDING ALL);"
            "ALTER TABLE payments_2024 REPLICA IDENTITY FULL;"
            "INSERT INTO payments_2024 "
            "SELECT 5000 + i, i % 12 + 1, i, "
            "timestamptz '2024-01-01 00:00+00' + i * interval '50 hours', 'attached' "
            "FROM generate_series(1, 40) AS i;"
            "ALTER TABLE payments ATTACH PARTITION payments_2024 "
            "FOR VALUES FROM ('2024-01-01 00:00+00') TO ('2025-01-01 00:00+00')"
        )
        p.run_cli("snapshot", "payments", "--where", YEAR_2024)
        p.run_cli("snapshot", "payment_docs", "--where", YEAR_2024)
        p.run_cli("snapshot", "customer_payments")
        for _ in range(100):  # streaming goes on, into the attached year too
            load.step((2022, 2023, 2024))
        wait_for(lambda: _converged(p), 180, "the attached partition's rows", 2)

        # DETACH the documented way: the rows leave the root as deletes of the
        # root (through the stream), then stay in the detached table.
        kept = conn.execute("SELECT count(*) FROM payments_2022").fetchone()
        assert kept is not None
        assert kept[0] > 0
        with conn.transaction():
            conn.execute(
                "CREATE TEMP TABLE leaving ON COMMIT DROP AS "
                "SELECT * FROM payments_2022;"
                "DELETE FROM payments_2022;"
                "ALTER TABLE payments DETACH PARTITION payments_2022;"
                "INSERT INTO payments_2022 SELECT * FROM leaving"
            )
        assert conn.execute("SELECT count(*) FROM payments_2022").fetchone() == kept
        for _ in range(60):  # changes of the detached table are not the view's
            load.step((2023, 2024))
            conn.execute("UPDATE payments_2022 SET note = 'archived'")
    p.wait_drained(timeout=180)
    p.assert_converged()
    assert not p.dead_letters(), "no record may be dead-lettered"
    # The oracle is the SQL definition on the root: no 2022 row any more.
    years = p.sql(
        "SELECT DISTINCT extract(year FROM paid_at AT TIME ZONE 'UTC')::int "
        "FROM payments ORDER BY 1"
    )
    assert [y for (y,) in years] == [2023, 2024]


def test_partitioned_publication_made_without_root_option_is_updated_by_apply(
    make_pipeline,
):
    """A publication as Debezium's ``filtered`` mode left it (the root listed,
    no ``publish_via_partition_root``): ``connector apply`` sets the option and
    the captured tables, and the leaves' changes then reach the view."""
    p = make_pipeline(SCHEMA, TABLES, {"payments": VIEWS["payments"]})
    pub = p.config.source.publication
    p.sql(f"CREATE PUBLICATION {pub} FOR TABLE public.customers, public.payments")
    p.apply_connector()
    rows = p.sql("SELECT pubviaroot FROM pg_publication WHERE pubname = %s", (pub,))
    assert rows == [(True,)]
    members = p.sql(
        "SELECT schemaname || '.' || tablename FROM pg_publication_tables "
        "WHERE pubname = %s ORDER BY 1",
        (pub,),
    )
    src = p.config.source
    assert [m for (m,) in members] == sorted(
        [*TABLES, src.heartbeat_table, src.signal_table]
    )
    p.start_worker()
    with psycopg.connect(p.dsn, autocommit=True) as conn:
        load = Workload(conn, seed=7)
        for _ in range(80):
            load.step((2022, 2023))
    p.wait_drained(timeout=180)
    p.assert_converged()


def test_partition_listed_instead_of_its_root_is_a_config_error_naming_the_root(
    make_pipeline,
):
    leaf = "public.payments_2023_h1"
    p = make_pipeline(SCHEMA, ["public.customers", leaf], {"h1": {"table": leaf}})
    for args in (("config", "check"), ("connector", "apply", "--no-wait")):
        run = p.run_cli(*args, timeout=60, ok=False)
        assert run.returncode != 0, f"{args}: {run.stdout}"
        assert f"{leaf} is a partition of public.payments" in run.stderr, run.stderr
    pub = p.config.source.publication
    assert not p.sql("SELECT 1 FROM pg_publication WHERE pubname = %s", (pub,))


def test_partitioned_child_needs_full_identity_on_every_leaf(make_pipeline):
    """The old row of a change is logged by its leaf: FULL on the root alone
    would leave deletes without their customer, so the worker refuses."""
    p = make_pipeline(SCHEMA, TABLES, {"customer_payments": VIEWS["customer_payments"]})
    p.sql("ALTER TABLE payments_2023_h2 REPLICA IDENTITY DEFAULT")
    worker = p.start_worker()
    wait_for(lambda: not worker.alive(), 60, "the worker to refuse the view")
    assert "payments needs REPLICA IDENTITY FULL" in worker.log_text(), worker.tail()
