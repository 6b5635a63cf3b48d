"""Convergence oracle: after a randomized workload every store equals the source.

Tables cover every mapped type, a composite primary key (declared in another
order than its columns) and a TOASTed text column later updated on another
column. Views chain transforms and a focus filter that rows enter and leave.
Two workers in one group apply the changes; when drained, ``verify()`` must
report no drift for any view in any of redis, elasticsearch and mongodb.
"""

from __future__ import annotations

import random
import string
import uuid
from datetime import UTC, date, datetime, time, timedelta
from decimal import Decimal
from typing import Any

import psycopg
import pytest
from psycopg.types.json import Json, Jsonb

pytestmark = pytest.mark.integration

SCHEMA = """
CREATE TYPE mood AS ENUM ('sad', 'ok', 'happy');
CREATE DOMAIN posint AS integer CHECK (VALUE > 0);
CREATE TABLE items (
    id         bigint PRIMARY KEY,
    status     text NOT NULL,
    price      numeric(12, 3),
    amount     numeric,
    ratio      double precision,
    small      real,
    created_at timestamptz,
    local_ts   timestamp,
    day        date,
    at_time    time,
    span       interval,
    ref        uuid,
    blob       bytea,
    tags       text[],
    nums       int[],
    attrs      jsonb,
    raw        json,
    feeling    mood,
    qty        posint,
    search     tsvector,
    flag       boolean,
    big        bigint,
    note       text
);
CREATE TABLE stock (
    warehouse  text NOT NULL,
    sku        text NOT NULL,
    qty        integer,
    updated_at timestamptz,
    PRIMARY KEY (sku, warehouse)
);
CREATE TABLE docs (
    id       integer PRIMARY KEY,
    title    text NOT NULL,
    revision integer NOT NULL,
    body     text
);
"""

TABLES = ["public.items", "public.stock", "public.docs"]

VIEWS: dict[str, Any] = {
    "items": {
        "table": "public.items",
        "filter": "status != 'cancelled'",
        "exclude": ["big"],
        "transforms": [
            {"type": "rename", "fields": {"note": "remark"}},
            {"type": "compute", "field": "label", "template": "{status}/{id}"},
        ],
        # json columns hold mixed-type arrays and floats hold NaN: Elasticsearch
        # cannot index those dynamically, so index only what sites query.
        "sink_options": {
            "elasticsearch": {
                "mappings": {
                    "dynamic": False,
                    "properties": {
                        "status": {"type": "keyword"},
                        "label": {"type": "keyword"},
                    },
                }
            }
        },
    },
    "stock": {"table": "public.stock"},
    "docs": {
        "table": "public.docs",
        "transforms": [{"type": "rename", "fields": {"title": "headline"}}],
    },
}

STATUSES = ["new", "paid", "shipped", "cancelled"]


def _maybe(rng: random.Random, value: Any, null_prob: float = 0.15) -> Any:
    return None if rng.random() < null_prob else value


def _text(rng: random.Random, n: int) -> str:
    alphabet = string.ascii_letters + string.digits + " äßé€✓'\"\\"
    return "".join(rng.choice(alphabet) for _ in range(n))


def _big_text(rng: random.Random) -> str:
    """Random, hardly compressible text over 8 KB (stored out of line)."""
    return "".join(
        rng.choice(string.ascii_letters + string.digits) for _ in range(9_000)
    )


def _item_values(rng: random.Random) -> dict[str, Any]:
    base = datetime(1960, 1, 1, tzinfo=UTC)
    ts = base + timedelta(microseconds=rng.randrange(0, 10**17))
    return {
        "status": rng.choice(STATUSES),
        "price": _maybe(rng, Decimal(rng.randrange(-(10**8), 10**8)) / 1000),
        "amount": _maybe(
            rng,
            rng.choice(
                [
                    Decimal("NaN"),
                    Decimal("0.00000001"),
                    Decimal("123456789012345678.5"),
                    Decimal(rng.randrange(10**6)).scaleb(-rng.randrange(0, 9)),
                ]
            ),
        ),
        "ratio": _maybe(
            rng,
            rng.choice(
                [rng.uniform(-1e9, 1e9), 0.1, 0.0, float("inf"), float("nan"), 1e-300]
            ),
        ),
        "small": _maybe(rng, rng.choice([1.5, -2.25, 1e10, 0.1])),
        "created_at": _maybe(rng, ts),
        "local_ts": _maybe(rng, ts.replace(tzinfo=None)),
        "day": _maybe(rng, date(1900, 1, 1) + timedelta(days=rng.randrange(80_000))),
        "at_time": _maybe(
            rng,
            time(
                rng.randrange(24),
                rng.randrange(60),
                rng.randrange(60),
                rng.choice([0, 1, 999_999]),
            ),
        ),
        "span": _maybe(
            rng,
            rng.choice(
                [
                    "1 year 2 mons 3 days 04:05:06.5",
                    "-3 days",
                    "00:00:00.000001",
                    "0",
                    f"{rng.randrange(1000)} hours",
                ]
            ),
        ),
        "ref": _maybe(rng, uuid.UUID(int=rng.getrandbits(128))),
        "blob": _maybe(rng, rng.randbytes(rng.randrange(0, 40))),
        "tags": _maybe(rng, rng.choice([[], ["a", None, "b,c"], [_text(rng, 5)]])),
        "nums": _maybe(
            rng, [rng.randrange(-100, 100) for _ in range(rng.randrange(4))]
        ),
        "attrs": _maybe(
            rng,
            Jsonb(
                {
                    "n": rng.randrange(100),
                    "nested": {"list": [1, "two", None, True], "s": _text(rng, 4)},
                }
            ),
        ),
        "raw": _maybe(rng, Json([rng.randrange(10), {"k": _text(rng, 3)}])),
        "feeling": _maybe(rng, rng.choice(["sad", "ok", "happy"])),
        "qty": _maybe(rng, rng.randrange(1, 1000)),
        "search": _maybe(rng, f"{rng.choice(string.ascii_lowercase) * 3} fat:2 cat"),
        "flag": _maybe(rng, rng.random() < 0.5),
        "big": _maybe(rng, rng.randrange(-(2**63), 2**63)),
        "note": _maybe(rng, _text(rng, rng.randrange(0, 30))),
    }


class Workload:
    """Random inserts, updates, deletes and key changes, with a model of keys."""

    def __init__(self, conn: psycopg.Connection[Any], seed: int) -> None:
        self.conn = conn
        self.rng = random.Random(seed)
        self.items: set[int] = set()
        self.stock: set[tuple[str, str]] = set()
        self.docs: set[int] = set()
        self.next_id = 1

    def _id(self) -> int:
        self.next_id += 1
        return self.next_id

    def item(self) -> None:
        rng, cur = self.rng, self.conn
        roll = rng.random()
        if not self.items or roll < 0.3:
            vals = _item_values(rng)
            ident = self._id()
            cols = ", ".join(["id", *vals])
            marks = ", ".join(["%s"] * (len(vals) + 1))
            cur.execute(
                f"INSERT INTO items ({cols}) VALUES ({marks})", [ident, *vals.values()]
            )
            self.items.add(ident)
            return
        ident = rng.choice(sorted(self.items))
        if roll < 0.75:
            vals = _item_values(rng)
            chosen = rng.sample(sorted(vals), rng.randrange(1, 5))
            sets = ", ".join(f"{c} = %s" for c in chosen)
            cur.execute(
                f"UPDATE items SET {sets} WHERE id = %s",
                [*(vals[c] for c in chosen), ident],
            )
        elif roll < 0.85:
            new = self._id()
            cur.execute("UPDATE items SET id = %s WHERE id = %s", (new, ident))
            self.items.discard(ident)
            self.items.add(new)
        else:
            cur.execute("DELETE FROM items WHERE id = %s", (ident,))
            self.items.discard(ident)

    def stock_op(self) -> None:
        rng, cur = self.rng, self.conn
        roll = rng.random()
        now = datetime.now(UTC)
        if not self.stock or roll < 0.35:
            key = (rng.choice(["north", "south", "e:a%st"]), f"sku-{rng.randrange(60)}")
            if key in self.stock:
                return
            cur.execute(
                "INSERT INTO stock (warehouse, sku, qty, updated_at) "
                "VALUES (%s, %s, %s, %s)",
                (*key, _maybe(rng, rng.randrange(100)), now),
            )
            self.stock.add(key)
            return
        key = rng.choice(sorted(self.stock))
        if roll < 0.75:
            cur.execute(
                "UPDATE stock SET qty = %s, updated_at = %s "
                "WHERE warehouse = %s AND sku = %s",
                (_maybe(rng, rng.randrange(100)), now, *key),
            )
        elif roll < 0.85:
            new = (key[0] + "2", key[1])
            if new in self.stock:
                return
            cur.execute(
                "UPDATE stock SET warehouse = %s WHERE warehouse = %s AND sku = %s",
                (new[0], *key),
            )
            self.stock.discard(key)
            self.stock.add(new)
        else:
            cur.execute("DELETE FROM stock WHERE warehouse = %s AND sku = %s", key)
            self.stock.discard(key)

    def doc(self) -> None:
        rng, cur = self.rng, self.conn
        roll = rng.random()
        if not self.docs or (roll < 0.1 and len(self.docs) < 25):
            ident = self._id()
            cur.execute(
                "INSERT INTO docs VALUES (%s, %s, 0, %s)",
                (ident, _text(rng, 10), _big_text(rng)),
            )
            self.docs.add(ident)
        elif roll < 0.9:
            # Another column only: the TOASTed body arrives as unavailable.
            ident = rng.choice(sorted(self.docs))
            cur.execute(
                "UPDATE docs SET title = %s, revision = revision + 1 WHERE id = %s",
                (_text(rng, 10), ident),
            )
        elif roll < 0.95:
            ident = rng.choice(sorted(self.docs))
            cur.execute(
                "UPDATE docs SET body = %s WHERE id = %s", (_big_text(rng), ident)
            )
        else:
            ident = rng.choice(sorted(self.docs))
            cur.execute("DELETE FROM docs WHERE id = %s", (ident,))
            self.docs.discard(ident)

    def transaction(self) -> None:
        """One transaction of 1-4 random operations over the tables."""
        with self.conn.transaction():
            for _ in range(self.rng.randrange(1, 5)):
                pick = self.rng.random()
                if pick < 0.55:
                    self.item()
                elif pick < 0.85:
                    self.stock_op()
                else:
                    self.doc()


def test_worker_randomized_workload_converges_in_every_sink(make_pipeline):
    p = make_pipeline(SCHEMA, TABLES, VIEWS)
    with psycopg.connect(p.dsn, autocommit=True) as conn:
        load = Workload(conn, seed=20_240_611)
        for _ in range(150):  # rows present before the initial snapshot
            load.transaction()
        p.apply_connector()
        p.start_worker()
        p.start_worker()
        for _ in range(1200):
            load.transaction()
        # Every document has been written with its TOASTed body before; now
        # touch each on another column so the unchanged body must be filled.
        for ident in sorted(load.docs):
            conn.execute(
                "UPDATE docs SET revision = revision + 1 WHERE id = %s", (ident,)
            )
    p.wait_drained(timeout=180)
    drifts = p.verify()
    assert {(d.view, d.sink) for d in drifts} == {
        (v, s) for v in VIEWS for s in ("redis", "elasticsearch", "mongodb")
    }
    assert sum(d.expected for d in drifts if d.view == "docs") > 0
    assert sum(d.expected for d in drifts if d.view == "items") > 0
    bad = [d for d in drifts if not d.ok]
    assert not p.dead_letters(), "no record may be dead-lettered"
    assert not bad, "drift:\n" + "\n".join(d.describe() for d in bad)
