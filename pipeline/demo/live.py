"""The demo's live changes: small transactions on every table of the shop.

Besides random changes, scripted ones make the sample documents move: the
sample customer is renamed and gets a new order line, the sample product is
repriced, the sample order shipped, and another order cancelled (it leaves
the ``orders`` view's filter, so the stores must delete it). Order lines are
inserted, changed, deleted and moved to other orders, and orders move to
other customers now and then, so the aggregate view ``customer_orders`` sees
changes on every level, including foreign keys that move.
"""

from __future__ import annotations

import logging
import random
import time
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any

import psycopg

from pipeline.demo.data import (
    COUNTRIES,
    Samples,
    Sizes,
    customer_row,
    item_row,
    order_row,
)

logger = logging.getLogger(__name__)

_NEXT_STATUS = {"new": "paid", "paid": "shipped"}


@dataclass
class LiveStats:
    transactions: int = 0
    inserts: int = 0
    updates: int = 0
    deletes: int = 0
    touched: dict[str, set[str]] = field(default_factory=dict)

    def touch(self, table: str, ident: object) -> None:
        self.touched.setdefault(table, set()).add(str(ident))


def _scripted(samples: Samples) -> list[tuple[str, str, object]]:
    """(statement, table, id) of the changes the samples show."""
    return [
        (
            "UPDATE customers SET first_name = 'Grace', last_name = 'Hopper' "
            "WHERE id = %s",
            "public.customers",
            samples.customer_id,
        ),
        (
            "INSERT INTO order_items (order_id, sku, qty, unit_price) "
            "SELECT o.id, p.sku, 3, p.price FROM orders o, products p "
            "WHERE o.customer_id = %s AND p.sku = %s "
            "ORDER BY o.placed_at DESC LIMIT 1",
            "public.order_items",
            (samples.customer_id, samples.product_sku),
        ),
        (
            "UPDATE products SET price = price + 1.25 WHERE sku = %s",
            "public.products",
            samples.product_sku,
        ),
        (
            "UPDATE orders SET status = 'shipped' WHERE id = %s",
            "public.orders",
            samples.order_id,
        ),
        (
            "UPDATE orders SET status = 'cancelled', ship_by = NULL WHERE id = %s",
            "public.orders",
            samples.cancelled_order_id,
        ),
    ]


def change_live(
    dsn: str, seed: int, sizes: Sizes, samples: Samples, seconds: float
) -> LiveStats:
    """Insert, update and delete rows in small transactions for ``seconds``."""
    rng = random.Random(seed + 1)  # noqa: S311 - demo data
    stats = LiveStats()
    scripted = _scripted(samples)
    total = len(scripted)
    protected = {samples.order_id, samples.cancelled_order_id}
    start = time.monotonic()
    with psycopg.connect(dsn, autocommit=False) as conn:
        got = conn.execute("SELECT coalesce(max(id), 0) FROM order_items").fetchone()
        items = int(got[0]) if got else 0
        conn.commit()
        while (elapsed := time.monotonic() - start) < seconds:
            with conn.transaction():
                fired = total - len(scripted)
                if scripted and elapsed > seconds * (fired + 1) / (total + 1):
                    statement, table, ident = scripted.pop(0)
                    params = ident if isinstance(ident, tuple) else (ident,)
                    conn.execute(statement, params)
                    stats.updates += 1
                    stats.touch(table, params[0])
                for _ in range(rng.randrange(1, 4)):
                    _random_change(conn, rng, sizes, items, protected, stats)
            stats.transactions += 1
            time.sleep(0.02)
    return stats


def _random_change(
    conn: psycopg.Connection[Any],
    rng: random.Random,
    sizes: Sizes,
    items: int,
    protected: set[int],
    stats: LiveStats,
) -> None:
    roll = rng.random()
    if roll < 0.45:
        _order_change(conn, rng, sizes, protected, stats, roll / 0.45)
    elif roll < 0.7:
        _item_change(conn, rng, sizes, items, stats, (roll - 0.45) / 0.25)
    elif roll < 0.8:  # a price change
        sku = f"SKU-{rng.randrange(1, sizes.products + 1):05d}"
        conn.execute(
            "UPDATE products SET price = %s WHERE sku = %s",
            (Decimal(rng.randrange(199, 99_999)) / 100, sku),
        )
        stats.updates += 1
        stats.touch("public.products", sku)
    elif roll < 0.9:  # a new customer
        row = customer_row(rng, 0)
        got = conn.execute(
            "INSERT INTO customers (first_name, last_name, email, country, "
            "password_hash, created_at) VALUES (%s, %s, %s, %s, %s, %s) RETURNING id",
            (row[1], row[2], f"new-{rng.getrandbits(48):x}@example.com", *row[4:]),
        ).fetchone()
        stats.inserts += 1
        stats.touch("public.customers", got[0] if got else "?")
    else:  # a customer moves
        ident = rng.randrange(1, sizes.customers + 1)
        conn.execute(
            "UPDATE customers SET country = %s WHERE id = %s",
            (rng.choice(COUNTRIES), ident),
        )
        stats.updates += 1
        stats.touch("public.customers", ident)


def _order_change(
    conn: psycopg.Connection[Any],
    rng: random.Random,
    sizes: Sizes,
    protected: set[int],
    stats: LiveStats,
    roll: float,
) -> None:
    ident = rng.randrange(1, sizes.orders + 1)
    if roll < 0.4:  # a new order with its lines
        row = order_row(rng, 0, sizes.customers)[1:]
        got = conn.execute(
            "INSERT INTO orders (customer_id, status, total, placed_at, ship_by, ref) "
            "VALUES (%s, %s, %s, %s, %s, %s) RETURNING id",
            row,
        ).fetchone()
        new = int(got[0]) if got else 0
        for _ in range(rng.randrange(1, 5)):
            _insert_item(conn, rng, sizes, new)
        stats.inserts += 1
        stats.touch("public.orders", new)
    elif ident in protected:
        return
    elif roll < 0.75:  # an order moves on
        got = conn.execute(
            "SELECT status FROM orders WHERE id = %s", (ident,)
        ).fetchone()
        if got and got[0] in _NEXT_STATUS:
            conn.execute(
                "UPDATE orders SET status = %s WHERE id = %s",
                (_NEXT_STATUS[got[0]], ident),
            )
            stats.updates += 1
            stats.touch("public.orders", ident)
    elif roll < 0.9:  # an order deleted (its lines go with it)
        cur = conn.execute("DELETE FROM orders WHERE id = %s", (ident,))
        stats.deletes += cur.rowcount
        stats.touch("public.orders", ident)
    else:  # an order moves to another customer
        cur = conn.execute(
            "UPDATE orders SET customer_id = %s WHERE id = %s",
            (rng.randrange(1, sizes.customers + 1), ident),
        )
        stats.updates += cur.rowcount
        stats.touch("public.orders", ident)


def _insert_item(
    conn: psycopg.Connection[Any], rng: random.Random, sizes: Sizes, order: int
) -> int:
    """A new line in ``order`` if it exists; the rows inserted (0 or 1)."""
    cur = conn.execute(
        "INSERT INTO order_items (order_id, sku, qty, unit_price) "
        "SELECT id, %s, %s, %s FROM orders WHERE id = %s",
        (*item_row(rng, sizes.products, order)[1:], order),
    )
    return cur.rowcount


def _item_change(
    conn: psycopg.Connection[Any],
    rng: random.Random,
    sizes: Sizes,
    items: int,
    stats: LiveStats,
    roll: float,
) -> None:
    ident = rng.randrange(1, items + 1)
    order = rng.randrange(1, sizes.orders + 1)
    if roll < 0.3:  # a line added to an order
        stats.inserts += _insert_item(conn, rng, sizes, order)
        stats.touch("public.order_items", f"order {order}")
        return
    if roll < 0.6:  # a quantity changed
        cur = conn.execute(
            "UPDATE order_items SET qty = %s WHERE id = %s",
            (rng.randrange(1, 6), ident),
        )
        stats.updates += cur.rowcount
    elif roll < 0.8:  # a line removed
        cur = conn.execute("DELETE FROM order_items WHERE id = %s", (ident,))
        stats.deletes += cur.rowcount
    else:  # a line moved to another order
        cur = conn.execute(
            "UPDATE order_items SET order_id = o.id FROM orders o "
            "WHERE order_items.id = %s AND o.id = %s",
            (ident, order),
        )
        stats.updates += cur.rowcount
    stats.touch("public.order_items", ident)
