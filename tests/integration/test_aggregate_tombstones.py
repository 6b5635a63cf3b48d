"""After compaction, a tombstone is all that is left of a delete; an aggregate
view must still re-read the roots its key names.

While no worker ran, root rows (customers) were deleted, and links whose
owner is in their key (customer_tags rows of kept customers); compaction
then left only the tombstones of those keys. The resumed worker must remove
the deleted customers' documents and the removed tags from the others.
"""

from __future__ import annotations

from typing import Any

import pytest
from shop_model import SCHEMA, TABLES, VIEW
from test_tombstones import _drain_connector, compact_until

from pipeline.events import ChangeEvent, Op

pytestmark = pytest.mark.integration

SEED = """
INSERT INTO tags SELECT t, 'tag ' || t FROM generate_series(1, 4) t;
INSERT INTO customers SELECT c, 'customer ' || c, 'gold' FROM generate_series(1, 40) c;
INSERT INTO customer_tags SELECT c, t FROM generate_series(1, 40) c,
    generate_series(1, 4) t;
"""
GONE = list(range(1, 41, 4))  # customers deleted (their tags cascade)
KEPT = [c for c in range(1, 41) if c not in GONE]
UNTAGGED = KEPT[::3]  # kept customers whose tag 1 is removed
#: Rows the compaction rounds change; never an UNTAGGED customer, whose
#: re-read would hide a link tombstone the worker ignored.
ROLLED = [c for c in KEPT if c not in UNTAGGED]


def _only_tombstones(keys: set[tuple[Any, ...]], cols: list[str]) -> Any:
    def done(events: list[ChangeEvent]) -> bool:
        ops: dict[tuple[Any, ...], set[Op]] = {}
        for ev in events:
            ops.setdefault(tuple(ev.key[c] for c in cols), set()).add(ev.op)
        return all(ops.get(k) == {Op.TOMBSTONE} for k in keys)

    return done


def test_aggregate_tombstones_after_compaction_reread_their_roots(make_pipeline):
    p = make_pipeline(SCHEMA, TABLES, {"customers": VIEW})
    p.sql(SEED)
    p.apply_connector()
    worker = p.start_worker()
    p.wait_drained(timeout=180)
    p.assert_converged()
    assert worker.terminate() == 0, worker.tail()

    p.sql("DELETE FROM customers WHERE id = ANY(%s)", (GONE,))
    p.sql(
        "DELETE FROM customer_tags WHERE tag_id = 1 AND customer_id = ANY(%s)",
        (UNTAGGED,),
    )
    _drain_connector(p)

    def roll() -> None:  # a change on every partition of both topics
        p.sql("UPDATE customers SET tier = tier WHERE id = ANY(%s)", (ROLLED,))
        p.sql(
            "UPDATE customer_tags SET tag_id = tag_id "
            "WHERE tag_id = 2 AND customer_id = ANY(%s)",
            (ROLLED,),
        )

    customers = p.config.source.topic("public.customers")
    links = p.config.source.topic("public.customer_tags")
    gone = {(c,) for c in GONE}
    untagged = {(c, 1) for c in UNTAGGED} | {(c, t) for c in GONE for t in range(1, 5)}
    compact_until(
        p, customers, roll, _only_tombstones(gone, ["id"]), "deleted customers"
    )
    compact_until(
        p,
        links,
        roll,
        _only_tombstones(untagged, ["customer_id", "tag_id"]),
        "removed tags",
    )
    _drain_connector(p)

    p.start_worker()
    p.wait_drained(timeout=180)
    p.assert_converged()


ORDERS_SEED = """
INSERT INTO customers SELECT c, 'customer ' || c, 'gold' FROM generate_series(1, 30) c;
INSERT INTO orders SELECT c * 10 + k, c, 'open', k
    FROM generate_series(1, 30) c, generate_series(1, 3) k;
"""
#: orders deleted while no worker ran (their customers stay)
DROPPED = [c * 10 + 1 for c in range(1, 31, 3)]
#: orders whose changes roll the segments (never of a DROPPED order's owner,
#: whose re-read would hide a tombstone the worker ignored)
ROLLING = [c * 10 + k for c in range(2, 31, 3) for k in (2, 3)]


def test_aggregate_tombstone_of_a_child_whose_delete_was_compacted_away(
    make_pipeline,
):
    """An order names its customer only in its delete's before image
    (``orders.customer_id`` is outside its key). The worker was stopped
    longer than the delete window: compaction left only the tombstones of
    the deleted orders. Their owners are not known from them, so the worker
    must read every root again: no customer may keep a deleted order."""
    p = make_pipeline(SCHEMA, TABLES, {"customers": VIEW})
    p.sql(ORDERS_SEED)
    p.apply_connector()
    worker = p.start_worker()
    p.wait_drained(timeout=180)
    p.assert_converged()
    assert worker.terminate() == 0, worker.tail()

    p.sql("DELETE FROM orders WHERE id = ANY(%s)", (DROPPED,))
    _drain_connector(p)

    def roll() -> None:  # a change on every partition of the orders topic
        p.sql("UPDATE orders SET status = status WHERE id = ANY(%s)", (ROLLING,))

    orders = p.config.source.topic("public.orders")
    gone = {(o,) for o in DROPPED}
    compact_until(p, orders, roll, _only_tombstones(gone, ["id"]), "deleted orders")
    _drain_connector(p)

    resumed = p.start_worker()
    p.wait_drained(timeout=180)
    p.assert_converged()
    assert "every root of customers is read again" in resumed.log_text()
