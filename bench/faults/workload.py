"""The seeded write workload of a fault run, and its history of committed changes.

Two writer threads on their own connections, each with an RNG derived from
the run's seed: the main writer commits short transactions picked by weight
(inserts with children, updates, deletes, foreign-key moves, primary-key
changes, TOASTed values left unchanged or replaced, fan-out price updates);
the long writer holds a transaction open for one to four seconds while
changing a few rows, so that its commit interleaves with the main writer's.
A transaction that fails (deadlock, a service restarting) is rolled back and
not recorded; the id sets are then re-read from the database.

Every committed transaction is appended to :attr:`Workload.history` in commit
order (the order the commits returned): its sequence number, time and
``(table, key, op)`` list. Ids are never reused (new rows and new keys come
from counters), so a document that comes back after its delete is a fault.
"""

from __future__ import annotations

import logging
import random
import string
import threading
import time
from collections.abc import Callable
from typing import Any

import psycopg

logger = logging.getLogger(__name__)

Change = tuple[str, int, str]  # (table, key, op: c/u/d)
TIERS = ("gold", "silver", "basic")
STATUSES = ("new", "paid", "sent", "returned")
BIO_CHARS = 2600  # over the 2 KB TOAST threshold; random letters do not compress
#: ids from here up are other writers' (the read-your-writes probe's rows,
#: poison keys): the workload never picks them, even after a reload
RESERVED_IDS = 800_000_000


def bio(rng: random.Random) -> str:
    return "".join(rng.choices(string.ascii_letters, k=BIO_CHARS))


class Workload:
    """The writers, the ids they made and the history of what they committed."""

    def __init__(self, dsn: str, seed: int, pause_s: float) -> None:
        self.dsn = dsn
        self.seed = seed
        self.pause_s = pause_s
        self.lock = threading.Lock()
        self.ids: dict[str, set[int]] = {
            t: set() for t in ("products", "customers", "orders", "order_lines")
        }
        self.ever: dict[str, list[int]] = {t: [] for t in self.ids}
        self.next_id = 1
        self.history: list[dict[str, Any]] = []
        self.counts: dict[str, int] = {}
        self.failed = 0
        self._stop = threading.Event()
        self._threads: list[threading.Thread] = []

    # ------------------------------------------------------------ ids
    def new_id(self, table: str) -> int:
        with self.lock:
            ident = self.next_id
            self.next_id += 1
        return ident

    def pick(self, rng: random.Random, table: str) -> int | None:
        with self.lock:
            live = sorted(self.ids[table])
        return rng.choice(live) if live else None

    def _apply(self, changes: list[Change]) -> None:
        with self.lock:
            for table, key, op in changes:
                if op == "d":
                    self.ids[table].discard(key)
                elif key not in self.ids[table]:
                    self.ids[table].add(key)
                    self.ever[table].append(key)

    def _reload(self, conn: psycopg.Connection[Any]) -> None:
        with self.lock:
            for table in self.ids:
                rows = conn.execute(
                    f"SELECT id FROM {table} WHERE id < %s", (RESERVED_IDS,)
                ).fetchall()
                self.ids[table] = {int(r[0]) for r in rows}

    # ------------------------------------------------------------ seed
    def seed_rows(self, customers: int, products: int) -> None:
        """The rows of the initial snapshot (not in the history)."""
        rng = random.Random(f"{self.seed}-seed")
        with psycopg.connect(self.dsn) as conn:
            for _ in range(products):
                self._apply(self._insert_product(conn, rng))
            for _ in range(customers):
                self._apply(self._insert_customer(conn, rng))
            conn.commit()

    # ------------------------------------------------------------ operations
    def _insert_product(
        self, conn: psycopg.Connection[Any], rng: random.Random
    ) -> list[Change]:
        pid = self.new_id("products")
        conn.execute(
            "INSERT INTO products VALUES (%s, %s, %s)",
            (pid, f"product {pid}", rng.randint(50, 99999) / 100),
        )
        return [("products", pid, "c")]

    def _insert_order(
        self, conn: psycopg.Connection[Any], rng: random.Random, cid: int
    ) -> list[Change]:
        oid = self.new_id("orders")
        conn.execute(
            "INSERT INTO orders VALUES (%s, %s, %s, %s, %s)",
            (
                oid,
                cid,
                rng.choice(STATUSES),
                rng.randint(0, 999),
                rng.randint(0, 99999) / 10,
            ),
        )
        out: list[Change] = [("orders", oid, "c")]
        for _ in range(rng.randint(1, 3)):
            pid = self.pick(rng, "products")
            if pid is None:
                break
            lid = self.new_id("order_lines")
            conn.execute(
                "INSERT INTO order_lines VALUES (%s, %s, %s, %s)",
                (lid, oid, pid, rng.randint(1, 9)),
            )
            out.append(("order_lines", lid, "c"))
        return out

    def _insert_customer(
        self, conn: psycopg.Connection[Any], rng: random.Random
    ) -> list[Change]:
        cid = self.new_id("customers")
        conn.execute(
            "INSERT INTO customers VALUES (%s, %s, %s, %s, now(), 0, %s)",
            (
                cid,
                f"customer {cid}",
                rng.choice(TIERS),
                f"c{cid}@example.com",
                bio(rng),
            ),
        )
        out: list[Change] = [("customers", cid, "c")]
        for _ in range(rng.randint(0, 3)):
            out += self._insert_order(conn, rng, cid)
        return out

    def _cascade(
        self, conn: psycopg.Connection[Any], sql: str, args: tuple[Any, ...]
    ) -> list[int]:
        return [int(r[0]) for r in conn.execute(sql, args).fetchall()]

    def op(
        self, name: str, conn: psycopg.Connection[Any], rng: random.Random
    ) -> list[Change]:
        """Run operation ``name`` in the open transaction; the changes it made."""
        cust, order = self.pick(rng, "customers"), self.pick(rng, "orders")
        line, prod = self.pick(rng, "order_lines"), self.pick(rng, "products")
        if name == "insert_customer":
            return self._insert_customer(conn, rng)
        if name == "insert_product":
            return self._insert_product(conn, rng)
        if name == "insert_order" and cust is not None:
            return self._insert_order(conn, rng, cust)
        if name == "touch_customer" and cust is not None:  # bio left unchanged (TOAST)
            conn.execute(
                "UPDATE customers SET visits = visits + 1, tier = %s WHERE id = %s",
                (rng.choice(TIERS), cust),
            )
            return [("customers", cust, "u")]
        if name == "rewrite_bio" and cust is not None:
            conn.execute(
                "UPDATE customers SET bio = %s WHERE id = %s", (bio(rng), cust)
            )
            return [("customers", cust, "u")]
        if name == "delete_customer" and cust is not None:
            orders = self._cascade(
                conn, "SELECT id FROM orders WHERE customer_id = %s", (cust,)
            )
            lines = self._cascade(
                conn, "SELECT id FROM order_lines WHERE order_id = ANY(%s)", (orders,)
            )
            conn.execute("DELETE FROM customers WHERE id = %s", (cust,))
            return (
                [("customers", cust, "d")]
                + [("orders", o, "d") for o in orders]
                + [("order_lines", i, "d") for i in lines]
            )
        if name == "update_order" and order is not None:
            conn.execute(
                "UPDATE orders SET status = %s, total = %s WHERE id = %s",
                (rng.choice(STATUSES), rng.randint(0, 99999) / 10, order),
            )
            return [("orders", order, "u")]
        if name == "move_order" and order is not None and cust is not None:  # FK move
            conn.execute(
                "UPDATE orders SET customer_id = %s WHERE id = %s", (cust, order)
            )
            return [("orders", order, "u")]
        if name == "rekey_order" and order is not None:  # PK change, cascades to lines
            new = self.new_id("orders")
            lines = self._cascade(
                conn, "SELECT id FROM order_lines WHERE order_id = %s", (order,)
            )
            conn.execute("UPDATE orders SET id = %s WHERE id = %s", (new, order))
            return [("orders", order, "d"), ("orders", new, "c")] + [
                ("order_lines", i, "u") for i in lines
            ]
        if name == "delete_order" and order is not None:
            lines = self._cascade(
                conn, "SELECT id FROM order_lines WHERE order_id = %s", (order,)
            )
            conn.execute("DELETE FROM orders WHERE id = %s", (order,))
            return [("orders", order, "d")] + [("order_lines", i, "d") for i in lines]
        if name == "move_line" and line is not None and order is not None:
            conn.execute(
                "UPDATE order_lines SET order_id = %s WHERE id = %s", (order, line)
            )
            return [("order_lines", line, "u")]
        if name == "update_line" and line is not None:
            conn.execute(
                "UPDATE order_lines SET qty = %s WHERE id = %s",
                (rng.randint(1, 9), line),
            )
            return [("order_lines", line, "u")]
        if name == "delete_line" and line is not None:
            conn.execute("DELETE FROM order_lines WHERE id = %s", (line,))
            return [("order_lines", line, "d")]
        if name == "price_fanout" and prod is not None:  # many roots embed it
            conn.execute(
                "UPDATE products SET price = %s WHERE id = %s",
                (rng.randint(50, 99999) / 100, prod),
            )
            return [("products", prod, "u")]
        if name == "rekey_product" and prod is not None:  # PK change, cascades to lines
            new = self.new_id("products")
            lines = self._cascade(
                conn, "SELECT id FROM order_lines WHERE product_id = %s", (prod,)
            )
            conn.execute("UPDATE products SET id = %s WHERE id = %s", (new, prod))
            return [("products", prod, "d"), ("products", new, "c")] + [
                ("order_lines", i, "u") for i in lines
            ]
        return []


#: operation -> weight of the main writer
WEIGHTS: dict[str, int] = {
    "insert_customer": 6,
    "insert_product": 2,
    "insert_order": 8,
    "touch_customer": 12,
    "rewrite_bio": 3,
    "delete_customer": 2,
    "update_order": 10,
    "move_order": 5,
    "rekey_order": 3,
    "delete_order": 3,
    "move_line": 4,
    "update_line": 5,
    "delete_line": 2,
    "price_fanout": 4,
    "rekey_product": 1,
}


def _run_writer(
    wl: Workload,
    name: str,
    rng: random.Random,
    body: Callable[..., list[Change]],
    pause_s: float,
) -> None:
    conn: psycopg.Connection[Any] | None = None
    while not wl._stop.is_set():
        try:
            if conn is None or conn.closed:
                conn = psycopg.connect(wl.dsn, connect_timeout=5)
            changes = body(conn, rng)
            conn.commit()
        except psycopg.Error as exc:
            wl.failed += 1
            logger.info(
                "transaction failed writer=%s error=%s", name, exc.__class__.__name__
            )
            try:
                if conn is not None and not conn.closed:
                    conn.rollback()
                    wl._reload(conn)
                    conn.commit()
            except psycopg.Error:
                conn = None
            time.sleep(0.5)
            continue
        if changes:
            wl._apply(changes)
            with wl.lock:
                wl.history.append(
                    {
                        "seq": len(wl.history),
                        "t": time.time(),
                        "writer": name,
                        "changes": changes,
                    }
                )
        time.sleep(pause_s)
    if conn is not None:
        conn.close()


def start(wl: Workload) -> None:
    """Start the main and the long writer."""
    main_rng = random.Random(f"{wl.seed}-main")
    long_rng = random.Random(f"{wl.seed}-long")
    names, weights = list(WEIGHTS), list(WEIGHTS.values())

    def main_tx(conn: psycopg.Connection[Any], rng: random.Random) -> list[Change]:
        name = rng.choices(names, weights)[0]
        wl.counts[name] = wl.counts.get(name, 0) + 1
        return wl.op(name, conn, rng)

    def long_tx(conn: psycopg.Connection[Any], rng: random.Random) -> list[Change]:
        changes: list[Change] = []
        end = time.monotonic() + rng.uniform(1.0, 4.0)
        while time.monotonic() < end and not wl._stop.is_set():
            changes += wl.op(
                rng.choice(["touch_customer", "update_order", "update_line"]), conn, rng
            )
            time.sleep(rng.uniform(0.2, 0.6))
        wl.counts["long_transaction"] = wl.counts.get("long_transaction", 0) + 1
        return changes

    for name, rng, body, pause in (
        ("main", main_rng, main_tx, wl.pause_s),
        ("long", long_rng, long_tx, 1.0),
    ):
        t = threading.Thread(
            target=_run_writer, args=(wl, name, rng, body, pause), daemon=True
        )
        t.start()
        wl._threads.append(t)


def stop(wl: Workload) -> None:
    wl._stop.set()
    for t in wl._threads:
        t.join(30)
