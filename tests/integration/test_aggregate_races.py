"""Aggregate views under races, on the real stack: concurrent re-reads of one
root, a long transaction open across a read, and type parity with table views.

The version of an aggregate document comes from the snapshot of the read that
built it (docs/design.md: two kinds of view), so whichever order reads reach the stores
in, every sink must keep the newest one.
"""

from __future__ import annotations

import json
import random
import socket
import urllib.request
import uuid
from datetime import UTC, date, datetime, time, timedelta
from decimal import Decimal
from typing import Any

import psycopg
import pytest
from harness import SINKS, BackgroundLoad, wait_for
from psycopg.types.json import Json, Jsonb
from shop_model import SCHEMA, TABLES, VIEW, expected_documents

from connectors.base import Sink
from pipeline.aggregate import AggregateView, Pending, prepare_views
from pipeline.aggregate.reader import Reader, snapshot_version
from pipeline.errors import TransientError
from pipeline.events import Delete, DocumentOp, Upsert
from pipeline.verify import canonical
from pipeline.views import build_views
from pipeline.worker import build_sinks

pytestmark = pytest.mark.integration

SEED = """
INSERT INTO products VALUES (1, 'pen', 1.25, '{"w": 1}'), (2, 'ink', 7.50, null);
INSERT INTO tags VALUES (1, 'red'), (2, 'blue');
INSERT INTO customers (id, name, tier) VALUES
    (1, 'ann', 'gold'), (2, 'bob', 'silver'), (3, 'cid', 'basic'), (4, 'dee', 'gold');
INSERT INTO orders VALUES
    (10, 1, 'new', 1), (20, 1, 'paid', 2), (30, 2, 'new', 3), (40, 3, 'sent', 4),
    (50, 4, 'new', 5);
INSERT INTO items VALUES
    (100, 10, 1, 1), (101, 20, 2, 2), (102, 30, 1, 3), (103, 40, 2, 1),
    (104, 50, 1, 2);
INSERT INTO customer_tags VALUES (1, 1), (2, 2), (3, 1);
"""


#: every root of SEED, as a batch's pending re-read names them
ALL = Pending(root_keys={("1",), ("2",), ("3",), ("4",)})


def shop(make_pipeline: Any) -> Any:
    p = make_pipeline(SCHEMA, TABLES, {"customers": VIEW})
    p.sql(SEED)
    return p


def prepared(p: Any, name: str) -> AggregateView:
    views = build_views(p.config, only=[name])
    prepare_views(views, p.dsn)
    view = views[name]
    assert isinstance(view, AggregateView)
    return view


def open_sinks(p: Any) -> dict[str, Sink]:
    sinks = build_sinks(p.config, list(SINKS))
    for sink in sinks.values():
        sink.open()
    return sinks


def by_id(ops: list[DocumentOp]) -> dict[str, DocumentOp]:
    return {op.doc_id: op for op in ops}


def body(op: DocumentOp) -> str | None:
    return canonical(op.doc) if isinstance(op, Upsert) else None


# --- a table rewritten under a read ------------------------------------------


class CommitsUnder(Reader):
    """A reader whose next read has ``change`` commit between its snapshot
    and its statements, as a migration or a writer running beside the
    worker."""

    def __init__(self, dsn: str, change: Any) -> None:
        super().__init__(dsn)
        self.change = change

    def begin(self, txids: Any = (), tables: Any = ()) -> Any:
        snap = super().begin(txids, tables)
        if self.change is not None:
            self.change, change = None, self.change
            change()
        return snap


@pytest.mark.parametrize(
    "migration",
    [
        "ALTER TABLE customers ADD COLUMN noted timestamptz DEFAULT clock_timestamp()",
        "ALTER TABLE orders ALTER COLUMN placed TYPE bigint",
        # a table swapped for a copy (a new table by the same name, whose
        # rows a snapshot taken before the swap does not see)
        "CREATE TABLE items_new (LIKE items INCLUDING ALL); "
        "INSERT INTO items_new SELECT * FROM items; "
        "DROP TABLE items; ALTER TABLE items_new RENAME TO items",
    ],
    ids=["root_table", "child_table", "child_table_swapped"],
)
def test_a_read_whose_snapshot_predates_a_table_rewrite_is_read_again(
    make_pipeline, migration
):
    """A rewrite of a table is not MVCC-safe: a snapshot taken before it
    commits sees the table empty (and a table swapped for a copy, the copy).
    A re-read in such a snapshot must be given up, not turned into deletes
    of every root (the root's table) or documents without their orders or
    items (a child's), at a version newer than anything stored."""
    p = shop(make_pipeline)
    view = prepared(p, "customers")
    before = {i: body(op) for i, op in by_id(view.reread(Reader(p.dsn), ALL)).items()}
    assert set(before) == {"1", "2", "3", "4"}
    reader = CommitsUnder(p.dsn, lambda: p.sql(migration))
    try:
        with pytest.raises(TransientError, match="rewritten or dropped while read"):
            view.reread(reader, ALL)
        again = by_id(view.reread(reader, ALL))  # a new snapshot: read whole
    finally:
        reader.close()
    assert {i: body(op) for i, op in again.items()} == before


def test_a_read_that_failed_reports_its_own_error_not_the_rewrite(make_pipeline):
    """A read's body that raised is rolled back unchecked: its error is the
    one that goes on, even when a table it names was rewritten meanwhile,
    and the reader's next read starts clean."""
    p = shop(make_pipeline)
    reader = CommitsUnder(p.dsn, lambda: p.sql("VACUUM FULL orders"))

    def failing_read() -> None:
        with reader.read(tables=["public.customers", "public.orders"]):
            reader.query("SELECT count(*) FROM orders", {})
            raise LookupError("the body's own error")

    try:
        with pytest.raises(LookupError, match="the body's own"):
            failing_read()
        with reader.read(tables=["public.orders"]):
            rows = reader.query("SELECT count(*) FROM orders", {})
    finally:
        reader.close()
    assert rows == [(5,)]


# --- concurrent re-reads ------------------------------------------------------

CHANGES = {
    # an item moves between two orders of the same customer (third level)
    "item_moves_order": "UPDATE items SET order_id = 20, qty = qty + 5 WHERE id = 100",
    # an order moves to another customer: both roots change
    "order_moves_customer": "UPDATE orders SET customer_id = 2 WHERE id = 10",
    # the root goes away: the newer read is a delete (tombstone)
    "root_deleted": "DELETE FROM customers WHERE id = 1",
}


@pytest.mark.parametrize("a_reads_rows_after_commit", [False, True])
@pytest.mark.parametrize("change", sorted(CHANGES))
def test_reread_older_snapshot_written_last_every_sink_keeps_newer(
    make_pipeline, change, a_reads_rows_after_commit
):
    p = shop(make_pipeline)
    view = prepared(p, "customers")
    sinks = open_sinks(p)
    reader_b = Reader(p.dsn)
    reader_a = CommitsUnder(p.dsn, lambda: p.sql(CHANGES[change]))
    pending = Pending(root_keys={("1",), ("2",)})
    try:
        if a_reads_rows_after_commit:
            # A's snapshot S1 is taken before the writer commits; its rows
            # are read (in S1) only afterwards.
            ops_a = view.reread(reader_a, pending)
        else:
            reader_a.change = None
            ops_a = view.reread(reader_a, pending)
            p.sql(CHANGES[change])
        ops_b = view.reread(reader_b, pending)
        a, b = by_id(ops_a), by_id(ops_b)
        assert set(a) == set(b) == {"1", "2"}
        assert body(a["1"]) != body(b["1"]), "A must hold the state before the change"
        assert isinstance(a["1"], Upsert)
        assert all(op_a.version < b[i].version for i, op_a in a.items())
        if change == "root_deleted":
            assert isinstance(b["1"], Delete)

        for name, sink in sinks.items():
            newer = sink.write(ops_b)
            assert (newer.applied, newer.stale, newer.rejected) == (2, 0, []), name
            older = sink.write(ops_a)
            assert (older.applied, older.stale, older.rejected) == (0, 2, []), name

        oracle = expected_documents(p.dsn)  # the source's documents now
        assert (change == "root_deleted") == ("1" not in oracle)
        for name, sink in sinks.items():
            stored = sink.fetch("customers", ["1", "2"])
            for ident in ("1", "2"):
                have = stored.get(ident)
                assert have is not None, (name, ident)
                assert have.version == b[ident].version, (name, ident)
                got = None if have.doc is None else canonical(have.doc)
                assert got == oracle.get(ident), (name, ident)
                assert got == body(b[ident]), (name, ident)
            assert ("1" in sink.ids("customers")) == (change != "root_deleted")
    finally:
        reader_a.close()
        reader_b.close()
        for sink in sinks.values():
            sink.close()


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def metric(port: int, name: str, **labels: str) -> float:
    """Sum of the samples of ``name`` whose labels include ``labels``."""
    url = f"http://127.0.0.1:{port}/metrics"
    with urllib.request.urlopen(url, timeout=5) as resp:
        text = resp.read().decode()
    total = 0.0
    for line in text.splitlines():
        if not line.startswith(name + "{"):
            continue
        head, value = line.rsplit(" ", 1)
        if all(f'{k}="{v}"' in head for k, v in labels.items()):
            total += float(value)
    return total


FEW = (1, 2, 3, 4)


def churn(conn: psycopg.Connection[Any], rng: random.Random) -> None:
    """One transaction changing the same few roots through several tables."""
    with conn.transaction():
        for _ in range(rng.randrange(1, 3)):
            cust = rng.choice(FEW)
            roll = rng.randrange(7)
            if roll == 0:
                conn.execute(
                    "UPDATE customers SET name = %s, tier = %s WHERE id = %s",
                    (
                        f"c{rng.randrange(1000)}",
                        rng.choice(["gold", "silver", "banned"]),
                        cust,
                    ),
                )
            elif roll == 1:
                conn.execute(
                    "UPDATE orders SET customer_id = %s, placed = placed + 1 "
                    "WHERE id = %s",
                    (cust, rng.choice([10, 20, 30, 40, 50])),
                )
            elif roll == 2:
                conn.execute(
                    "UPDATE items SET order_id = %s, qty = qty + 1 WHERE id = %s",
                    (rng.choice([10, 20, 30, 40, 50]), rng.randrange(100, 105)),
                )
            elif roll == 3:
                conn.execute(
                    "UPDATE orders SET status = %s WHERE id = %s",
                    (f"s{rng.randrange(100)}", rng.choice([10, 20, 30, 40, 50])),
                )
            elif roll == 4:
                conn.execute(
                    "UPDATE products SET price = price + 1 WHERE id = %s",
                    (rng.choice([1, 2]),),
                )
            elif roll == 5:
                conn.execute(
                    "DELETE FROM customer_tags WHERE customer_id = %s", (cust,)
                )
                conn.execute(
                    "INSERT INTO customer_tags VALUES (%s, %s)",
                    (cust, rng.choice([1, 2])),
                )
            else:
                conn.execute(
                    "UPDATE tags SET label = %s WHERE id = %s",
                    (f"t{rng.randrange(100)}", rng.choice([1, 2])),
                )


def test_two_workers_one_delayed_reader_stores_converge(make_pipeline):
    p = shop(make_pipeline)
    p.apply_connector()
    p.start_worker()
    port = free_port()
    slow = p.start_worker(
        env={"READSIDE_FAULT_REREAD_DELAY_MS": "300"}, metrics_port=port
    )
    p.wait_log(slow, "assigned partitions=")
    with BackgroundLoad(p.dsn, churn, seed=11, pause_s=0.01) as load:
        wait_for(
            lambda: metric(port, "readside_ops_total", outcome="stale") >= 3,
            40,
            "the delayed worker to have late (stale) writes",
        )
        load.wait_ops(50)
    p.wait_drained(timeout=90)
    # The delayed worker read roots the other one wrote later from newer
    # snapshots: its late writes were refused by the version guard.
    assert metric(port, "readside_aggregate_reads_total") > 0
    for sink in SINKS:
        assert metric(port, "readside_ops_total", sink=sink, outcome="stale") > 0
    view = prepared(p, "customers")
    reader = Reader(p.dsn)
    try:
        from_sql = {k: canonical(v) for k, v in view.documents(reader).items()}
    finally:
        reader.close()
    assert from_sql == expected_documents(p.dsn)
    p.assert_converged()
    assert not p.dead_letters()


# --- long transaction ---------------------------------------------------------

_SNAPSHOT_XIP = """
SELECT pg_snapshot_xmax(s)::text::bigint,
       ARRAY(SELECT x::text::bigint FROM pg_snapshot_xip(s) AS x)
FROM (SELECT pg_current_snapshot() AS s) AS q
"""


class SnapshotSeen(Reader):
    """A reader that keeps the xmax and xip of its first read's snapshot."""

    seen: tuple[int, list[int]] | None = None

    def begin(self, txids: Any = (), tables: Any = ()) -> Any:
        snap = super().begin(txids, tables)
        if self.seen is None:
            row = self.connection().execute(_SNAPSHOT_XIP).fetchone()
            assert row is not None
            self.seen = (int(row[0]), [int(x) for x in row[1]])
        return snap


def test_long_transaction_open_across_read_update_reaches_every_sink(make_pipeline):
    p = shop(make_pipeline)
    p.apply_connector()
    p.start_worker()
    p.wait_drained(timeout=60)
    view = prepared(p, "customers")
    sinks = open_sinks(p)
    reader = SnapshotSeen(p.dsn)
    long = psycopg.connect(p.dsn)
    try:
        # T: renames root 1 and changes an item of root 2 (third level).
        long.execute("UPDATE customers SET name = 'renamed' WHERE id = 1")
        long.execute("UPDATE items SET qty = 99 WHERE id = 102")
        txid = long.execute("SELECT pg_current_xact_id()::text::bigint").fetchone()[0]
        # A later transaction completes, so T sits below xmax, in xip.
        p.sql("SELECT pg_current_xact_id()")

        # Read A while T is open; its snapshot, as the read's transaction saw it
        ops_a = by_id(view.reread(reader, Pending(root_keys={("1",), ("2",)})))
        assert reader.seen is not None
        xmax, xip = reader.seen
        assert txid in xip, "the open transaction must be in the read's xip"
        version_a = snapshot_version(view.epoch, xmax, len(xip))
        assert {op.version for op in ops_a.values()} == {version_a}
        doc1, doc2 = ops_a["1"].doc, ops_a["2"].doc  # type: ignore[union-attr]
        assert doc1["full_name"] == "ann"
        assert doc2["orders"][0]["items"][0]["qty"] == 3
        for name, sink in sinks.items():  # as a snapshot chunk would
            result = sink.write(list(ops_a.values()))
            assert result.applied == 2, name

        long.commit()
        p.wait_drained(timeout=60)
        for name, sink in sinks.items():
            stored = sink.fetch("customers", ["1", "2"])
            assert stored["1"].version > version_a, name
            assert stored["1"].doc["full_name"] == "renamed", name  # type: ignore[index]
            items = stored["2"].doc["orders"][0]["items"]  # type: ignore[index]
            assert items[0]["qty"] == 99, name
            late = sink.write(list(ops_a.values()))  # A replayed late: refused
            assert (late.applied, late.stale) == (0, 2), name
        p.assert_converged()
    finally:
        long.close()
        reader.close()
        for sink in sinks.values():
            sink.close()


# --- type parity --------------------------------------------------------------

PARITY_SCHEMA = """
CREATE EXTENSION IF NOT EXISTS hstore;
CREATE EXTENSION IF NOT EXISTS citext;
CREATE TYPE mood AS ENUM ('sad', 'ok', 'happy');
CREATE DOMAIN posint AS integer CHECK (VALUE > 0);
CREATE TABLE boxes (id integer PRIMARY KEY, label text NOT NULL);
CREATE TABLE typed (
    id         bigint PRIMARY KEY,
    box_id     integer NOT NULL REFERENCES boxes,
    tiny       smallint,
    whole      integer,
    big        bigint,
    flag       boolean,
    bit1       bit(1),
    small      real,
    ratio      double precision,
    price      numeric(12, 3),
    amount     numeric,
    scaled     numeric(20, 8),
    created_at timestamptz,
    local_ts   timestamp,
    day        date,
    at_time    time,
    at_timetz  timetz,
    span       interval,
    ref        uuid,
    blob       bytea,
    tags       text[],
    nums       int[],
    decs       numeric[],
    attrs      jsonb,
    raw        json,
    kv         hstore,
    feeling    mood,
    moods      mood[],
    qty        posint,
    search     tsvector,
    label      varchar(20),
    code       char(3),
    ci         citext,
    addr       inet,
    net        cidr,
    note       text
);
ALTER TABLE typed REPLICA IDENTITY FULL;
"""

PARITY_ES = {
    "elasticsearch": {"mappings": {"dynamic": False, "properties": {}}},
}
PARITY_VIEWS: dict[str, Any] = {
    "typed_table": {"table": "public.typed", "sink_options": PARITY_ES},
    "typed_root": {
        "kind": "aggregate",
        "table": "public.typed",
        "sink_options": PARITY_ES,
    },
    "boxes": {
        "kind": "aggregate",
        "table": "public.boxes",
        "embed": {"typed": {"children": "public.typed", "on": {"box_id": "id"}}},
        "sink_options": PARITY_ES,
    },
}


SPECIAL_FLOATS = (float("inf"), float("-inf"), float("nan"))


def _maybe(rng: random.Random, value: Any) -> Any:
    return None if rng.random() < 0.15 else value


def typed_values(rng: random.Random) -> dict[str, Any]:
    """Random values of every mapped type.

    Not here: money (Debezium does not map it like the psycopg path), and
    -0.0 (FerretDB stores it as 0.0, in either kind of view).
    """
    base = datetime(1960, 1, 1, tzinfo=UTC)
    ts = base + timedelta(microseconds=rng.randrange(0, 10**17))
    text = "".join(rng.choice("abcäßé€✓'\"\\ ,{}") for _ in range(rng.randrange(9)))
    return {
        "tiny": _maybe(rng, rng.randrange(-(2**15), 2**15)),
        "whole": _maybe(rng, rng.randrange(-(2**31), 2**31)),
        "big": _maybe(rng, rng.randrange(-(2**63), 2**63)),
        "flag": _maybe(rng, rng.random() < 0.5),
        "bit1": _maybe(rng, rng.choice(["0", "1"])),
        "small": _maybe(rng, rng.choice([1.5, -2.25, 1e10, 0.1, float("nan")])),
        "ratio": _maybe(
            rng,
            rng.choice([rng.uniform(-1e9, 1e9), 0.1, 0.0, 1e-300, *SPECIAL_FLOATS]),
        ),
        "price": _maybe(rng, Decimal(rng.randrange(-(10**8), 10**8)) / 1000),
        "amount": _maybe(
            rng,
            rng.choice(
                [
                    Decimal("NaN"),
                    Decimal("Infinity"),
                    Decimal("-Infinity"),
                    Decimal("0.00000001"),
                    Decimal("123456789012345678.5"),
                    Decimal(rng.randrange(10**6)).scaleb(-rng.randrange(0, 9)),
                ]
            ),
        ),
        "scaled": _maybe(rng, rng.choice([Decimal(0), Decimal("1e-8"), Decimal(5)])),
        "created_at": _maybe(rng, ts),
        "local_ts": _maybe(rng, ts.replace(tzinfo=None)),
        "day": _maybe(rng, date(1900, 1, 1) + timedelta(days=rng.randrange(80_000))),
        "at_time": _maybe(
            rng, time(rng.randrange(24), rng.randrange(60), 0, rng.choice([0, 1]))
        ),
        "at_timetz": _maybe(rng, rng.choice(["10:30:00+02", "23:59:59.5-05:30"])),
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
        "tags": _maybe(rng, rng.choice([[], ["a", None, "b,c"], [text]])),
        "nums": _maybe(rng, [rng.randrange(-100, 100) for _ in range(3)]),
        "decs": _maybe(rng, [Decimal("1.50"), None, Decimal("0.00000001")]),
        "attrs": _maybe(
            rng, Jsonb({"n": rng.randrange(100), "l": [1, "two", None, 1.5], "s": text})
        ),
        "raw": _maybe(rng, Json([rng.randrange(10), {"k": text}])),
        "kv": _maybe(rng, {"a": "1", "b": None, "c": text}),
        "feeling": _maybe(rng, rng.choice(["sad", "ok", "happy"])),
        # an enum's array: a list of labels in every view (its literal text
        # is sent untyped, for PostgreSQL to read as mood[]); no NULL label,
        # for which Debezium sends the whole array as null (docs/types.md)
        "moods": _maybe(rng, rng.choice(["{}", '{sad,"happy",sad}', "{ok}"])),
        "qty": _maybe(rng, rng.randrange(1, 1000)),
        "search": _maybe(rng, f"{rng.choice('abc') * 3} fat:2 cat"),
        "label": _maybe(rng, text[:20]),
        "code": _maybe(rng, rng.choice(["a", "abc"])),
        "ci": _maybe(rng, rng.choice(["Mixed Case", text])),
        "addr": _maybe(rng, rng.choice(["192.168.0.1", "10.1.2.3/24", "::1"])),
        "net": _maybe(rng, rng.choice(["10.0.0.0/8", "2001:db8::/32"])),
        "note": _maybe(rng, text),
    }


def stored_bodies(sink: Sink, view: str) -> dict[str, str]:
    ids = sorted(sink.ids(view))
    return {i: canonical(s.doc) for i, s in sink.fetch(view, ids).items() if s.doc}


def test_type_parity_table_view_equals_aggregate_view_in_every_sink(make_pipeline):
    p = make_pipeline(PARITY_SCHEMA, ["public.boxes", "public.typed"], PARITY_VIEWS)
    rng = random.Random(4242)
    with psycopg.connect(p.dsn, autocommit=True) as conn:
        from psycopg.types import TypeInfo
        from psycopg.types.hstore import register_hstore

        register_hstore(TypeInfo.fetch(conn, "hstore"), conn)
        conn.execute("INSERT INTO boxes VALUES (1, 'one'), (2, 'two')")

        def insert(ident: int, values: dict[str, Any]) -> None:
            cols = ", ".join(["id", "box_id", *values])
            marks = ", ".join(["%s"] * (len(values) + 2))
            conn.execute(
                f"INSERT INTO typed ({cols}) VALUES ({marks})",
                [ident, 1 + ident % 2, *values.values()],
            )

        insert(1, {})  # every column NULL
        for ident in range(2, 12):  # before the connector: initial snapshot
            insert(ident, typed_values(rng))
        p.apply_connector()
        p.start_worker()
        for ident in range(12, 30):  # streamed
            insert(ident, typed_values(rng))
        for ident in range(2, 8):  # streamed updates of snapshotted rows
            vals = typed_values(rng)
            sets = ", ".join(f"{c} = %s" for c in vals)
            conn.execute(
                f"UPDATE typed SET {sets} WHERE id = %s", [*vals.values(), ident]
            )
    p.wait_drained(timeout=60)
    assert not p.dead_letters()
    sinks = open_sinks(p)
    try:
        for name, sink in sinks.items():
            table = stored_bodies(sink, "typed_table")
            root = stored_bodies(sink, "typed_root")
            assert len(table) == 29, name
            for ident, doc in table.items():
                assert field_diff(root.get(ident), doc) == {}, (name, ident)
            nested = 0
            for box in sink.fetch("boxes", ["1", "2"]).values():
                assert box.doc is not None
                for child in box.doc["typed"]:
                    want = table[str(child["id"])]
                    assert field_diff(canonical(child), want) == {}, (name, child["id"])
                    nested += 1
            assert nested == 29, name
    finally:
        for sink in sinks.values():
            sink.close()
    # Every view also equals its definition on the source (verify's oracle).
    drifts = p.verify()
    assert len(drifts) == 9
    bad = [d for d in drifts if not d.ok]
    assert not bad, "drift:\n" + "\n".join(d.describe() for d in bad)


def field_diff(got: str | None, want: str) -> dict[str, Any]:
    """Fields whose values differ between two canonical documents."""
    if got is None:
        return {"<document>": "missing"}
    g, w = json.loads(got), json.loads(want)
    return {k: (g.get(k), w.get(k)) for k in set(g) | set(w) if g.get(k) != w.get(k)}
