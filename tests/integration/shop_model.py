"""A three-level aggregate view over a small shop, a random workload on every
level, and an oracle that builds the expected documents without the view's SQL.

customer -> orders (newest first) -> items -> product (many-to-one), and
customer -> tags (many-to-many through customer_tags). Customers whose tier is
'banned' are outside the view's focus.
"""

from __future__ import annotations

import random
from decimal import Decimal
from typing import Any

import psycopg
from psycopg.rows import dict_row

from pipeline.types import pg_row_to_json
from pipeline.verify import canonical

SCHEMA = """
CREATE TABLE customers (
    id      integer PRIMARY KEY,
    name    text NOT NULL,
    tier    text NOT NULL,
    since   timestamptz NOT NULL DEFAULT '2020-01-01T00:00:00Z'
);
CREATE TABLE products (
    id    integer PRIMARY KEY,
    name  text NOT NULL,
    price numeric(10, 2) NOT NULL,
    spec  jsonb
);
CREATE TABLE orders (
    id          integer PRIMARY KEY,
    customer_id integer NOT NULL REFERENCES customers ON DELETE CASCADE,
    status      text NOT NULL,
    placed      integer NOT NULL
);
CREATE TABLE items (
    id         integer PRIMARY KEY,
    order_id   integer NOT NULL REFERENCES orders ON DELETE CASCADE,
    product_id integer NOT NULL REFERENCES products,
    qty        integer NOT NULL
);
CREATE TABLE tags (
    id    integer PRIMARY KEY,
    label text NOT NULL
);
CREATE TABLE customer_tags (
    customer_id integer REFERENCES customers ON DELETE CASCADE,
    tag_id      integer REFERENCES tags ON DELETE CASCADE,
    PRIMARY KEY (customer_id, tag_id)
);
ALTER TABLE orders REPLICA IDENTITY FULL;
ALTER TABLE items REPLICA IDENTITY FULL;
"""

TABLES = [
    "public.customers",
    "public.products",
    "public.orders",
    "public.items",
    "public.tags",
    "public.customer_tags",
]

VIEW: dict[str, Any] = {
    "kind": "aggregate",
    "table": "public.customers",
    "where": "tier <> 'banned'",
    "rename": {"name": "full_name"},
    "embed": {
        "orders": {
            "children": "public.orders",
            "on": {"customer_id": "id"},
            "exclude": ["customer_id"],
            "order_by": ["placed desc"],
            "embed": {
                "items": {
                    "children": "public.items",
                    "on": {"order_id": "id"},
                    "fields": ["id", "qty", "product_id"],
                    "embed": {
                        "product": {
                            "parent": "public.products",
                            "on": {"id": "product_id"},
                            "fields": ["name", "price", "spec"],
                        }
                    },
                }
            },
        },
        "tags": {
            "many_to_many": "public.tags",
            "through": "public.customer_tags",
            "on": {"customer_id": "id"},
            "target_on": {"id": "tag_id"},
            "order_by": ["label"],
        },
    },
    "transforms": [{"type": "compute", "field": "badge", "template": "{tier}:{id}"}],
    "sink_options": {
        "elasticsearch": {"mappings": {"dynamic": False, "properties": {}}}
    },
}

TIERS = ["gold", "silver", "basic", "banned"]


def expected_documents(dsn: str) -> dict[str, str]:
    """The view's documents built from plain table reads (canonical JSON)."""
    with (
        psycopg.connect(dsn, autocommit=True) as conn,
        conn.transaction(),
        conn.cursor(row_factory=dict_row) as cur,
    ):
        cur.execute("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ")

        def rows(table: str) -> list[dict[str, Any]]:
            return [pg_row_to_json(r) for r in cur.execute(f"SELECT * FROM {table}")]

        products = {p["id"]: p for p in rows("products")}
        tags = {t["id"]: t for t in rows("tags")}
        items_by_order: dict[int, list[dict[str, Any]]] = {}
        for it in sorted(rows("items"), key=lambda r: r["id"]):
            p = products[it["product_id"]]
            items_by_order.setdefault(it["order_id"], []).append(
                {
                    "id": it["id"],
                    "qty": it["qty"],
                    "product_id": it["product_id"],
                    "product": {k: p[k] for k in ("name", "price", "spec")},
                }
            )
        orders_by_customer: dict[int, list[dict[str, Any]]] = {}
        for o in sorted(rows("orders"), key=lambda r: (-r["placed"], r["id"])):
            orders_by_customer.setdefault(o["customer_id"], []).append(
                {
                    "id": o["id"],
                    "status": o["status"],
                    "placed": o["placed"],
                    "items": items_by_order.get(o["id"], []),
                }
            )
        tags_by_customer: dict[int, list[dict[str, Any]]] = {}
        for ct in rows("customer_tags"):
            tag = tags[ct["tag_id"]]
            tags_by_customer.setdefault(ct["customer_id"], []).append(tag)
        out: dict[str, str] = {}
        for c in rows("customers"):
            if c["tier"] == "banned":
                continue
            doc = {
                "id": c["id"],
                "full_name": c["name"],
                "tier": c["tier"],
                "since": c["since"],
                "orders": orders_by_customer.get(c["id"], []),
                "tags": sorted(
                    tags_by_customer.get(c["id"], []),
                    key=lambda t: (t["label"], t["id"]),
                ),
                "badge": f"{c['tier']}:{c['id']}",
            }
            out[str(c["id"])] = canonical(doc)
        return out


class ShopLoad:
    """Random changes on every level, including foreign-key moves."""

    def __init__(self, seed: int, next_id: int = 1000) -> None:
        self.rng = random.Random(seed)
        self.next_id = next_id

    def _id(self) -> int:
        self.next_id += 1
        return self.next_id

    @staticmethod
    def _pick(conn: psycopg.Connection[Any], table: str, rng: random.Random) -> Any:
        row = conn.execute(
            f"SELECT id FROM {table} ORDER BY random() LIMIT 1"
        ).fetchone()
        del rng
        return row[0] if row else None

    def seed(self, conn: psycopg.Connection[Any], customers: int = 40) -> None:
        rng = self.rng
        with conn.transaction():
            for i in range(1, 11):
                conn.execute(
                    "INSERT INTO products VALUES (%s, %s, %s, %s)",
                    (i, f"product {i}", Decimal(i * 125) / 100, f'{{"w": {i}}}'),
                )
            for i in range(1, 6):
                conn.execute("INSERT INTO tags VALUES (%s, %s)", (i, f"tag{i}"))
            for _ in range(customers):
                self.new_customer(conn, rng)

    def new_customer(self, conn: psycopg.Connection[Any], rng: random.Random) -> None:
        cid = self._id()
        conn.execute(
            "INSERT INTO customers (id, name, tier) VALUES (%s, %s, %s)",
            (cid, f"customer {cid} ✓", rng.choice(TIERS)),
        )
        for _ in range(rng.randrange(0, 3)):
            self.new_order(conn, rng, cid)
        for tag in rng.sample(range(1, 6), rng.randrange(0, 3)):
            conn.execute("INSERT INTO customer_tags VALUES (%s, %s)", (cid, tag))

    def new_order(
        self, conn: psycopg.Connection[Any], rng: random.Random, cid: int
    ) -> None:
        oid = self._id()
        conn.execute(
            "INSERT INTO orders VALUES (%s, %s, %s, %s)",
            (oid, cid, rng.choice(["new", "paid", "sent"]), rng.randrange(1000)),
        )
        for _ in range(rng.randrange(0, 4)):
            conn.execute(
                "INSERT INTO items VALUES (%s, %s, %s, %s)",
                (self._id(), oid, rng.randrange(1, 11), rng.randrange(1, 9)),
            )

    def step(self, conn: psycopg.Connection[Any], rng: random.Random) -> None:
        """One transaction of one to three random changes."""
        with conn.transaction():
            for _ in range(rng.randrange(1, 4)):
                self._change(conn, rng)

    def _change(self, conn: psycopg.Connection[Any], rng: random.Random) -> None:
        pick = self._pick
        roll = rng.randrange(14)
        cust = pick(conn, "customers", rng)
        if roll == 0 or cust is None:
            self.new_customer(conn, rng)
        elif roll == 1:
            conn.execute("DELETE FROM customers WHERE id = %s", (cust,))
        elif roll == 2:
            conn.execute(
                "UPDATE customers SET tier = %s, name = name || '.' WHERE id = %s",
                (rng.choice(TIERS), cust),
            )
        elif roll == 3:
            self.new_order(conn, rng, cust)
        elif roll in (4, 5):  # an order moves to another customer
            order = pick(conn, "orders", rng)
            if order is not None:
                conn.execute(
                    "UPDATE orders SET customer_id = %s, placed = placed + 1 "
                    "WHERE id = %s",
                    (cust, order),
                )
        elif roll == 6:
            order = pick(conn, "orders", rng)
            if order is not None:
                conn.execute("DELETE FROM orders WHERE id = %s", (order,))
        elif roll == 7:
            conn.execute(
                "UPDATE orders SET status = %s WHERE id = "
                "(SELECT id FROM orders ORDER BY random() LIMIT 1)",
                (rng.choice(["new", "paid", "sent", "returned"]),),
            )
        elif roll in (8, 9):  # an item moves to another order
            item, order = pick(conn, "items", rng), pick(conn, "orders", rng)
            if item is not None and order is not None:
                conn.execute(
                    "UPDATE items SET order_id = %s, qty = qty + 1 WHERE id = %s",
                    (order, item),
                )
        elif roll == 10:
            item = pick(conn, "items", rng)
            if item is not None:
                conn.execute("DELETE FROM items WHERE id = %s", (item,))
        elif roll == 11:  # a product many items point to changes
            conn.execute(
                "UPDATE products SET price = price + 1, spec = %s WHERE id = %s",
                (f'{{"v": {rng.randrange(100)}}}', rng.randrange(1, 11)),
            )
        elif roll == 12:  # tag links come and go
            tag = rng.randrange(1, 6)
            conn.execute(
                "DELETE FROM customer_tags WHERE customer_id = %s AND tag_id = %s",
                (cust, tag),
            )
            if rng.random() < 0.6:
                conn.execute(
                    "INSERT INTO customer_tags VALUES (%s, %s) ON CONFLICT DO NOTHING",
                    (cust, rng.randrange(1, 6)),
                )
        else:  # a tag is renamed (many customers change)
            conn.execute(
                "UPDATE tags SET label = %s WHERE id = %s",
                (f"tag-{rng.randrange(100)}", rng.randrange(1, 6)),
            )
