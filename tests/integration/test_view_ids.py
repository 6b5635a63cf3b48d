"""Document ids a site can use (``id:`` of an aggregate view), on the real stack.

``payments`` is partitioned by ``paid_at`` and keyed by ``(payment_id,
paid_at)``, so its default id joins both (``7:2022-01-05T01%3A00%3A00Z``).
The view ``payment_docs`` names its documents by ``payment_id`` alone. The
workload inserts, updates, moves rows to another partition (a new key, the
same id: the delete of the old key and the insert of the new one arrive on
different Kafka partitions, in either order) and deletes; every store must
then hold exactly the view's SQL definition under ``payment_id`` ids. A
second row with a taken ``payment_id`` is reported (a dead letter, and
``readside verify``), never merged. The read side takes the ids the stores
hold, composite ones included, from ``ReadClient`` and over HTTP.
"""

from __future__ import annotations

import random
from datetime import UTC, datetime, timedelta
from typing import Any
from urllib.parse import quote

import psycopg
import pytest
from apiserver import start_server

from pipeline.dlq import H_REASON
from pipeline.events import Upsert, doc_id
from pipeline.types import pg_value_to_json
from pipeline.worker import build_sinks
from query import ReadClient

pytestmark = pytest.mark.integration

SCHEMA = """
CREATE TABLE customers (id integer PRIMARY KEY, name text NOT NULL);
CREATE TABLE payments (
    payment_id  bigint NOT NULL,
    customer_id integer NOT NULL,
    amount      numeric(10, 2) NOT NULL,
    paid_at     timestamptz NOT NULL,
    PRIMARY KEY (payment_id, paid_at)
) PARTITION BY RANGE (paid_at);
CREATE TABLE payments_2022 PARTITION OF payments
    FOR VALUES FROM ('2022-01-01 00:00+00') TO ('2023-01-01 00:00+00');
CREATE TABLE payments_2023 PARTITION OF payments
    FOR VALUES FROM ('2023-01-01 00:00+00') TO ('2024-01-01 00:00+00');
CREATE TABLE pages (slug text PRIMARY KEY, title text NOT NULL);
INSERT INTO customers SELECT i, 'customer ' || i FROM generate_series(1, 6) AS i;
INSERT INTO payments
SELECT i, i % 6 + 1, i * 1.25,
       timestamptz '2022-01-01 00:00+00' + i * interval '97 hours'
FROM generate_series(1, 40) AS i;
INSERT INTO pages VALUES ('docs/intro', 'Intro'), ('a b?c*[d]', 'Odd'),
                         ('100%', 'Percent'), ('x:y', 'Colon');
"""

TABLES = ["public.customers", "public.payments", "public.pages"]

VIEWS: dict[str, Any] = {
    "payment_docs": {
        "kind": "aggregate",
        "table": "public.payments",
        "id": ["payment_id"],
        "embed": {
            "customer": {"parent": "public.customers", "on": {"id": "customer_id"}}
        },
    },
    "payments": {"table": "public.payments", "sinks": ["redis", "elasticsearch"]},
    "pages": {"table": "public.pages", "sinks": ["redis", "elasticsearch"]},
}


def _workload(conn: psycopg.Connection[Any], seed: int, steps: int) -> set[str]:
    rng = random.Random(seed)
    done: set[str] = set()
    next_id = 1000
    for _ in range(steps):
        keys = conn.execute("SELECT payment_id, paid_at FROM payments").fetchall()
        key = rng.choice(keys)
        roll = rng.random()
        if roll < 0.25:
            next_id += 1
            at = datetime(rng.choice((2022, 2023)), 3, 1, tzinfo=UTC)
            conn.execute(
                "INSERT INTO payments VALUES (%s, %s, 9.99, %s)",
                (next_id, rng.randrange(1, 7), at + timedelta(hours=next_id)),
            )
            done.add("insert")
        elif roll < 0.5:
            conn.execute(
                "UPDATE payments SET amount = amount + 1, customer_id = %s "
                "WHERE payment_id = %s AND paid_at = %s",
                (rng.randrange(1, 7), *key),
            )
            done.add("update")
        elif roll < 0.85:
            # the partition key: a delete and an insert of two keys, one id
            year = 2023 if key[1].year == 2022 else 2022
            conn.execute(
                "UPDATE payments SET paid_at = %s "
                "WHERE payment_id = %s AND paid_at = %s",
                (key[1].replace(year=year), *key),
            )
            done.add("move")
        else:
            conn.execute(
                "DELETE FROM payments WHERE payment_id = %s AND paid_at = %s", key
            )
            done.add("delete")
    return done


def _bad(p: Any) -> list[str]:
    return [d.describe() for d in p.verify() if not d.ok]


def test_view_ids_follow_moves_and_deletes_and_duplicates_are_reported(
    make_pipeline,
):
    # One record per batch: the two halves of a move are read back apart, in
    # the order the worker happens to consume the two Kafka partitions.
    p = make_pipeline(SCHEMA, TABLES, VIEWS, worker={"batch_size": 1})
    p.apply_connector()
    p.start_worker()
    with psycopg.connect(p.dsn, autocommit=True) as conn:
        done = _workload(conn, seed=1313, steps=120)
        assert done == {"insert", "update", "move", "delete"}
        p.wait_drained(timeout=180)
        assert not _bad(p), "\n".join(_bad(p))
        ids = {str(r[0]) for r in conn.execute("SELECT payment_id FROM payments")}
        with ReadClient(p.config) as client:
            for store in ("redis", "mongodb", "elasticsearch"):
                client.read_order = (store,)
                got = client.get_many("payment_docs", sorted(ids))
                assert set(got.docs) == ids, store
                one = conn.execute(
                    "SELECT payment_id, amount::text FROM payments LIMIT 1"
                ).fetchone()
                assert one is not None
                doc = client.get("payment_docs", str(one[0])).doc
                assert doc is not None
                assert doc["amount"] == one[1]
        assert p.dead_letters() == []

        # A second payment 9000: a duplicate id, reported and never merged.
        conn.execute(
            "INSERT INTO payments VALUES (9000, 1, 5.00, '2022-06-01 00:00+00')"
        )
        conn.execute(
            "INSERT INTO payments VALUES (9000, 2, 55.55, '2023-12-01 00:00+00')"
        )
        p.wait_drained(timeout=120)
        dead = p.dead_letters()
        assert dead, "the duplicate id was not reported"
        assert {d.headers[H_REASON] for d in dead} == {"duplicate_id"}
        drifts = [d for d in p.verify() if d.view == "payment_docs"]
        assert len(drifts) == 3
        assert all(list(d.duplicates) == ["9000"] and not d.ok for d in drifts)
        with ReadClient(p.config) as client:
            kept = client.get("payment_docs", "9000").doc
        assert kept is not None
        assert kept["amount"] == "5.00"  # the first in key order, alone

        # The duplicate goes: the id stays with the remaining row.
        conn.execute("DELETE FROM payments WHERE payment_id = 9000 AND amount = 55.55")
        p.wait_drained(timeout=120)
        assert not _bad(p), "\n".join(_bad(p))

        # verify --repair re-reads documents by these ids: a corrupted copy
        # and one of an id no row holds any more are both put right.
        sinks = build_sinks(p.config, ["redis"])
        redis = sinks["redis"]
        redis.open()
        try:
            stored = redis.fetch("payment_docs", ["9000"])["9000"]
            bad = {**(stored.doc or {}), "amount": "0.01"}
            ghost = {"amount": "1.00"}
            redis.write(
                [
                    Upsert("payment_docs", "9000", stored.version + 1, bad),
                    Upsert("payment_docs", "77777", stored.version + 1, ghost),
                ]
            )
        finally:
            redis.close()
        drift = {d.sink: d for d in p.verify() if d.view == "payment_docs"}
        assert drift["redis"].differing == ["9000"]
        assert drift["redis"].extra == ["77777"]
        p.run_cli("verify", "payment_docs", "--repair")
        assert not _bad(p), "\n".join(_bad(p))


def test_read_side_takes_the_ids_the_stores_hold(make_pipeline):
    p = make_pipeline(SCHEMA, TABLES, VIEWS)
    p.apply_connector()
    p.start_worker()
    p.wait_drained(timeout=180)
    assert not _bad(p), "\n".join(_bad(p))
    rows = p.sql("SELECT payment_id, paid_at FROM payments ORDER BY 1 LIMIT 3")
    # the stores' composite ids: key values as JSON text, ':' between them
    composite = [
        doc_id({"payment_id": pg_value_to_json(i), "paid_at": pg_value_to_json(at)})
        for i, at in rows
    ]
    slugs = [r[0] for r in p.sql("SELECT slug FROM pages ORDER BY 1")]
    with ReadClient(p.config) as client:
        held = client.get_many("payments", composite)
        assert set(held.docs) == set(composite), composite
        pages = client.get_many("pages", slugs)
        assert set(pages.docs) == set(slugs)
    server = start_server(p, {"anonymous": True})
    try:
        with server.client() as http:
            for view, ident in [
                *[("payments", i) for i in composite],
                *[("pages", s) for s in slugs],
                ("payment_docs", str(rows[0][0])),
            ]:
                r = http.get(f"/v1/views/{view}/docs/{quote(ident, safe='')}")
                assert r.status_code == 200, (ident, r.text)
                assert r.json()["id"] == ident
            r = http.get("/v1/views/pages/docs", params=[("ids", s) for s in slugs])
            assert r.status_code == 200, r.text
            assert set(r.json()["docs"]) == set(slugs)
            r = http.post("/v1/views/payments/mget", json={"ids": composite})
            assert set(r.json()["docs"]) == set(composite)
    finally:
        server.stop()
