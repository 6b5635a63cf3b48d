"""The demo shop's rows: generated for a seed, loaded with COPY, changed live.

Everything here talks to PostgreSQL only. Rows are generated with
``random.Random(seed)``, so two runs with one seed load the same shop; the live
changes follow the same generator but their count depends on the clock.
:func:`expected_documents` is the demo's oracle: it reads the source tables and
shapes every row exactly as the view would (type mapping, field selection,
filter, transforms), so a store is correct when it holds exactly these
documents.
"""

from __future__ import annotations

import hashlib
import logging
import random
import time
import uuid
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from importlib import resources
from typing import Any

import psycopg
from psycopg.rows import dict_row
from psycopg.types.json import Jsonb

from pipeline.events import Document
from pipeline.types import pg_row_to_json
from pipeline.views import TableView, doc_id

logger = logging.getLogger(__name__)

FIRST = [
    "Ada",
    "Alan",
    "Barbara",
    "Claude",
    "Donald",
    "Edsger",
    "Frances",
    "Grace",
    "John",
    "Katherine",
    "Leslie",
    "Margaret",
    "Niklaus",
    "Radia",
]
LAST = [
    "Lovelace",
    "Turing",
    "Liskov",
    "Shannon",
    "Knuth",
    "Dijkstra",
    "Allen",
    "Hopper",
    "Backus",
    "Johnson",
    "Lamport",
    "Hamilton",
    "Wirth",
    "Perlman",
]
COUNTRIES = ["DE", "FR", "GB", "IT", "NL", "PL", "ES", "SE", "US", "JP"]
ADJECTIVES = ["Compact", "Deluxe", "Eco", "Classic", "Smart", "Rugged", "Mini"]
NOUNS = ["Lamp", "Kettle", "Chair", "Backpack", "Speaker", "Desk", "Mug", "Clock"]
TAGS = ["home", "office", "outdoor", "kitchen", "gift", "sale", "new", "audio"]
COLORS = ["black", "white", "red", "oak", "steel", "green"]
STATUSES = ["new", "paid", "shipped", "cancelled"]
_NEXT_STATUS = {"new": "paid", "paid": "shipped"}
_EPOCH = datetime(2024, 1, 1, tzinfo=UTC)


@dataclass(frozen=True)
class Sizes:
    customers: int = 2000
    products: int = 500
    orders: int = 5000


@dataclass(frozen=True)
class Samples:
    """The rows whose documents the demo shows, and what happens to them."""

    customer_id: int = 7  # renamed live: display_name changes
    product_sku: str = "SKU-00003"  # repriced live
    order_id: int = 11  # shipped live
    cancelled_order_id: int = 12  # cancelled live: leaves the orders view

    def ids(self) -> dict[str, str]:
        """Document id of each sample, by table."""
        return {
            "public.customers": str(self.customer_id),
            "public.products": self.product_sku,
            "public.orders": str(self.order_id),
        }


@dataclass
class LiveStats:
    transactions: int = 0
    inserts: int = 0
    updates: int = 0
    deletes: int = 0
    touched: dict[str, set[str]] = field(default_factory=dict)

    def touch(self, table: str, ident: object) -> None:
        self.touched.setdefault(table, set()).add(str(ident))


def _customer(rng: random.Random, ident: int) -> tuple[Any, ...]:
    first, last = rng.choice(FIRST), rng.choice(LAST)
    secret = hashlib.sha256(f"pw-{ident}-{rng.random()}".encode()).hexdigest()
    created = _EPOCH + timedelta(minutes=rng.randrange(0, 500_000))
    return (
        ident,
        first,
        last,
        f"{first}.{last}.{ident}@example.com".lower(),
        rng.choice(COUNTRIES),
        secret,
        created,
    )


def _product(rng: random.Random, n: int) -> tuple[Any, ...]:
    attributes = {
        "color": rng.choice(COLORS),
        "weight_g": rng.randrange(50, 9000),
        "dims_cm": [rng.randrange(5, 120) for _ in range(3)],
    }
    name = f"{rng.choice(ADJECTIVES)} {rng.choice(NOUNS)}"
    return (
        f"SKU-{n:05d}",
        name,
        Decimal(rng.randrange(199, 99_999)) / 100,
        rng.sample(TAGS, rng.randrange(0, 4)),
        Jsonb(attributes),
        f"{name}: {rng.choice(COLORS)} finish, ships in {rng.randrange(1, 9)} days",
    )


def _order(rng: random.Random, ident: int, customers: int) -> tuple[Any, ...]:
    placed = _EPOCH + timedelta(minutes=rng.randrange(0, 500_000))
    status = rng.choices(STATUSES, weights=[30, 35, 30, 5])[0]
    ship_by = None if status == "cancelled" else (placed + timedelta(days=3)).date()
    return (
        ident,
        rng.randrange(1, customers + 1),
        status,
        Decimal(rng.randrange(500, 250_000)) / 100,
        placed,
        ship_by,
        uuid.UUID(int=rng.getrandbits(128), version=4),
    )


def create_schema(conn: psycopg.Connection[Any]) -> None:
    sql = resources.files("pipeline.demo").joinpath("shop.sql").read_text()
    conn.execute(sql)


def load(conn: psycopg.Connection[Any], seed: int, sizes: Sizes) -> dict[str, int]:
    """Generate and COPY the shop's rows; returns the row count per table."""
    rng = random.Random(seed)  # noqa: S311 - demo data, not secrets
    tables: dict[str, tuple[str, list[tuple[Any, ...]]]] = {
        "customers": (
            "id, first_name, last_name, email, country, password_hash, created_at",
            [_customer(rng, i) for i in range(1, sizes.customers + 1)],
        ),
        "products": (
            "sku, name, price, tags, attributes, description",
            [_product(rng, i) for i in range(1, sizes.products + 1)],
        ),
        "orders": (
            "id, customer_id, status, total, placed_at, ship_by, ref",
            [_order(rng, i, sizes.customers) for i in range(1, sizes.orders + 1)],
        ),
    }
    with conn.cursor() as cur:
        for table, (columns, rows) in tables.items():
            with cur.copy(f"COPY {table} ({columns}) FROM STDIN") as copy:
                for row in rows:
                    copy.write_row(row)
        for table in ("customers", "orders"):
            cur.execute(
                f"SELECT setval(pg_get_serial_sequence('{table}', 'id'), "
                f"(SELECT max(id) FROM {table}))"
            )
    return {t: len(rows) for t, (_c, rows) in tables.items()}


def change_live(
    dsn: str, seed: int, sizes: Sizes, samples: Samples, seconds: float
) -> LiveStats:
    """Insert, update and delete rows in small transactions for ``seconds``.

    Besides random changes, four scripted ones make the sample documents
    move: the sample customer is renamed, the sample product repriced, the
    sample order shipped, and another order cancelled (it leaves the
    ``orders`` view's filter, so the stores must delete it).
    """
    rng = random.Random(seed + 1)  # noqa: S311 - demo data
    stats = LiveStats()
    scripted = [
        (
            "UPDATE customers SET first_name = 'Grace', last_name = 'Hopper' "
            "WHERE id = %s",
            "public.customers",
            samples.customer_id,
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
    protected = {samples.order_id, samples.cancelled_order_id}
    start = time.monotonic()
    with psycopg.connect(dsn, autocommit=False) as conn:
        while (elapsed := time.monotonic() - start) < seconds:
            with conn.transaction():
                if scripted and elapsed > seconds * (5 - len(scripted)) / 5:
                    sql, table, ident = scripted.pop(0)
                    conn.execute(sql, (ident,))
                    stats.updates += 1
                    stats.touch(table, ident)
                for _ in range(rng.randrange(1, 4)):
                    _random_change(conn, rng, sizes, protected, stats)
            stats.transactions += 1
            time.sleep(0.02)
    return stats


def _random_change(
    conn: psycopg.Connection[Any],
    rng: random.Random,
    sizes: Sizes,
    protected: set[int],
    stats: LiveStats,
) -> None:
    roll = rng.random()
    if roll < 0.25:  # a new order
        row = _order(rng, 0, sizes.customers)[1:]
        got = conn.execute(
            "INSERT INTO orders (customer_id, status, total, placed_at, ship_by, ref) "
            "VALUES (%s, %s, %s, %s, %s, %s) RETURNING id",
            row,
        ).fetchone()
        stats.inserts += 1
        stats.touch("public.orders", got[0] if got else "?")
    elif roll < 0.45:  # an order moves on
        ident = rng.randrange(1, sizes.orders + 1)
        got = conn.execute(
            "SELECT status FROM orders WHERE id = %s", (ident,)
        ).fetchone()
        if got and got[0] in _NEXT_STATUS and ident not in protected:
            conn.execute(
                "UPDATE orders SET status = %s WHERE id = %s",
                (_NEXT_STATUS[got[0]], ident),
            )
            stats.updates += 1
            stats.touch("public.orders", ident)
    elif roll < 0.6:  # a price change
        sku = f"SKU-{rng.randrange(1, sizes.products + 1):05d}"
        conn.execute(
            "UPDATE products SET price = %s WHERE sku = %s",
            (Decimal(rng.randrange(199, 99_999)) / 100, sku),
        )
        stats.updates += 1
        stats.touch("public.products", sku)
    elif roll < 0.75:  # a new customer
        row = _customer(rng, 0)
        got = conn.execute(
            "INSERT INTO customers (first_name, last_name, email, country, "
            "password_hash, created_at) VALUES (%s, %s, %s, %s, %s, %s) RETURNING id",
            (row[1], row[2], f"new-{rng.getrandbits(48):x}@example.com", *row[4:]),
        ).fetchone()
        stats.inserts += 1
        stats.touch("public.customers", got[0] if got else "?")
    elif roll < 0.88:  # an order deleted
        ident = rng.randrange(1, sizes.orders + 1)
        if ident not in protected:
            cur = conn.execute("DELETE FROM orders WHERE id = %s", (ident,))
            stats.deletes += cur.rowcount
            stats.touch("public.orders", ident)
    else:  # a customer moves
        ident = rng.randrange(1, sizes.customers + 1)
        conn.execute(
            "UPDATE customers SET country = %s WHERE id = %s",
            (rng.choice(COUNTRIES), ident),
        )
        stats.updates += 1
        stats.touch("public.customers", ident)


def primary_key(conn: psycopg.Connection[Any], table: str) -> list[str]:
    rows = conn.execute(
        "SELECT a.attname FROM pg_index i JOIN pg_attribute a "
        "ON a.attrelid = i.indrelid AND a.attnum = ANY(i.indkey) "
        "WHERE i.indrelid = %s::regclass AND i.indisprimary ORDER BY a.attnum",
        (table,),
    ).fetchall()
    return [str(r["attname"] if isinstance(r, dict) else r[0]) for r in rows]


def table_counts(dsn: str, tables: list[str]) -> dict[str, int]:
    with psycopg.connect(dsn) as conn:
        out = {}
        for table in tables:
            got = conn.execute(f"SELECT count(*) FROM {table}").fetchone()
            out[table] = int(got[0]) if got else 0
        return out


def expected_documents(
    dsn: str, views: Mapping[str, TableView]
) -> dict[str, dict[str, Document]]:
    """Per view, every document it must hold: id -> body, read from the source."""
    out: dict[str, dict[str, Document]] = {}
    with psycopg.connect(dsn, row_factory=dict_row) as conn:
        for name, view in views.items():
            pk = primary_key(conn, view.cfg.table)
            docs: dict[str, Document] = {}
            for row in conn.execute(f"SELECT * FROM {view.cfg.table}"):
                shaped = view.shape(pg_row_to_json(row))
                if view.row_filter is not None and not view.row_filter(shaped):
                    continue
                doc = view.transform(shaped) if view.transform else shaped
                if doc is not None:
                    docs[doc_id({k: row[k] for k in pk})] = doc
            out[name] = docs
    return out
