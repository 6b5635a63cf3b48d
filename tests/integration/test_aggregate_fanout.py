"""A change that fans out to many roots is re-read in chunks, on the real stack.

A product's price is embedded in every customer who ordered it, so one
UPDATE names all of them. Read in one snapshot and written in one batch, a
large enough fan-out outlives ``max.poll.interval.ms``; with
``worker.reread_chunk_roots`` the roots are read at most that many per
snapshot (each seeing the triggering transaction, with its own version), and
the stores still converge to the view's SQL.
"""

from __future__ import annotations

from typing import Any

import pytest
from shop_model import SCHEMA, TABLES, VIEW

from pipeline.aggregate import AggregateView

pytestmark = pytest.mark.integration

FANOUT = 100
CHUNK = 7


def _start_in_process(p: Any) -> AggregateView:
    view = p.start_in_process().views["customers"]
    assert isinstance(view, AggregateView)
    return view


def test_aggregate_fanout_change_reread_in_chunks_converges(make_pipeline):
    p = make_pipeline(
        SCHEMA, TABLES, {"customers": VIEW}, worker={"reread_chunk_roots": CHUNK}
    )
    with p.connect() as conn, conn.transaction():
        conn.execute("INSERT INTO products VALUES (1, 'pen', 1.25, null)")
        conn.execute("INSERT INTO products VALUES (2, 'ink', 7.50, null)")
        for c in range(1, FANOUT + 21):
            conn.execute(
                "INSERT INTO customers (id, name, tier) VALUES (%s, %s, 'gold')",
                (c, f"c{c}"),
            )
            conn.execute("INSERT INTO orders VALUES (%s, %s, 'new', 1)", (c, c))
            # The first FANOUT customers bought product 1 (some twice).
            product = 1 if c <= FANOUT else 2
            conn.execute("INSERT INTO items VALUES (%s, %s, %s, 1)", (c, c, product))
            if c % 10 == 0 and c <= FANOUT:
                conn.execute("INSERT INTO items VALUES (%s, %s, 1, 2)", (10_000 + c, c))
    p.apply_connector()
    view = _start_in_process(p)
    p.wait_drained()
    p.assert_converged()
    before = view.reads
    p.sql("UPDATE products SET price = 99.99 WHERE id = 1")
    p.wait_drained()
    chunks = -(-FANOUT // CHUNK)  # 15 snapshots of at most 7 roots
    assert view.reads - before == chunks
    p.assert_converged()
    docs = p.sql(
        "SELECT count(DISTINCT o.customer_id) FROM orders o "
        "JOIN items i ON i.order_id = o.id WHERE i.product_id = 1"
    )
    assert docs == [(FANOUT,)]
