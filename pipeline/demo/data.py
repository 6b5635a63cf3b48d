"""The demo shop's rows: generated for a seed, loaded with COPY.

Everything here talks to PostgreSQL only. Rows are generated with
``random.Random(seed)``, so two runs with one seed load the same shop (the
live changes are in :mod:`pipeline.demo.live`). :func:`expected_documents` is
the demo's oracle: it reads the source tables and shapes every row exactly as
a table view would (type mapping, field selection, filter, transforms), or
runs an aggregate view's SQL, so a store is correct when it holds exactly
these documents.
"""

from __future__ import annotations

import hashlib
import logging
import random
import uuid
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from importlib import resources
from typing import Any

import psycopg
from psycopg.types.json import Jsonb

from pipeline.aggregate.reader import Reader
from pipeline.events import Document
from pipeline.verify import view_documents
from pipeline.views import View

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


def customer_row(rng: random.Random, ident: int) -> tuple[Any, ...]:
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


def product_row(rng: random.Random, n: int) -> tuple[Any, ...]:
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


def _items(
    rng: random.Random, first_id: int, order_id: int, products: int
) -> list[tuple[Any, ...]]:
    """1 to 4 lines of one order: (id, order_id, sku, qty, unit_price)."""
    return [
        (first_id + n, *item_row(rng, products, order_id))
        for n in range(rng.randrange(1, 5))
    ]


def item_row(rng: random.Random, products: int, order_id: int) -> tuple[Any, ...]:
    """(order_id, sku, qty, unit_price) of one order line."""
    return (
        order_id,
        f"SKU-{rng.randrange(1, products + 1):05d}",
        rng.randrange(1, 6),
        Decimal(rng.randrange(199, 99_999)) / 100,
    )


def order_row(rng: random.Random, ident: int, customers: int) -> tuple[Any, ...]:
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
    orders = [order_row(rng, i, sizes.customers) for i in range(1, sizes.orders + 1)]
    items: list[tuple[Any, ...]] = []
    for order in orders:
        items += _items(rng, len(items) + 1, order[0], sizes.products)
    tables: dict[str, tuple[str, list[tuple[Any, ...]]]] = {
        "customers": (
            "id, first_name, last_name, email, country, password_hash, created_at",
            [customer_row(rng, i) for i in range(1, sizes.customers + 1)],
        ),
        "products": (
            "sku, name, price, tags, attributes, description",
            [product_row(rng, i) for i in range(1, sizes.products + 1)],
        ),
        "orders": (
            "id, customer_id, status, total, placed_at, ship_by, ref",
            orders,
        ),
        "order_items": ("id, order_id, sku, qty, unit_price", items),
    }
    with conn.cursor() as cur:
        for table, (columns, rows) in tables.items():
            with cur.copy(f"COPY {table} ({columns}) FROM STDIN") as copy:
                for row in rows:
                    copy.write_row(row)
        for table in ("customers", "orders", "order_items"):
            cur.execute(
                f"SELECT setval(pg_get_serial_sequence('{table}', 'id'), "
                f"(SELECT max(id) FROM {table}))"
            )
    return {t: len(rows) for t, (_c, rows) in tables.items()}


def table_counts(dsn: str, tables: list[str]) -> dict[str, int]:
    with psycopg.connect(dsn) as conn:
        out = {}
        for table in tables:
            got = conn.execute(f"SELECT count(*) FROM {table}").fetchone()
            out[table] = int(got[0]) if got else 0
        return out


def expected_documents(
    dsn: str, views: Mapping[str, View]
) -> dict[str, dict[str, Document]]:
    """Per view, every document it must hold: id -> body, read from the source.

    Table views shape each row as the worker does; aggregate views (prepared
    with :func:`pipeline.aggregate.prepare_views`) run their own SQL in one
    snapshot (:meth:`~pipeline.aggregate.AggregateView.documents`).
    """
    reader = Reader(dsn)
    try:
        with psycopg.connect(dsn, autocommit=True) as conn:
            return {
                name: view_documents(conn, reader, view) for name, view in views.items()
            }
    finally:
        reader.close()
