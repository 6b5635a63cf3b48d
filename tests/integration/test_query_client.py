"""The read client against a drained pipeline: every read returns what the
source defines, in every store, with freshness, also through the reads on an
event loop the server makes; Redis down falls back to MongoDB."""

from __future__ import annotations

import asyncio
import os
import signal
from collections.abc import Callable
from typing import Any

import psycopg
import pytest
from harness import stack_config

from pipeline.stack import runner
from pipeline.verify import expected_documents
from pipeline.views import build_views
from query import Answer, QueryError, ReadClient

# exclusive: stops and pauses the stack's Redis
pytestmark = [pytest.mark.integration, pytest.mark.exclusive]

SCHEMA = """
CREATE TABLE products (
    id     integer PRIMARY KEY,
    name   text NOT NULL,
    status text NOT NULL,
    price  integer NOT NULL
);
INSERT INTO products
SELECT i, 'widget ' || i, (ARRAY['open', 'sold', 'held'])[i % 3 + 1], i * 10
FROM generate_series(1, 30) AS i;
"""

VIEWS: dict[str, Any] = {
    "products": {
        "table": "public.products",
        "sink_options": {
            "redis": {"indexes": {"status": "eq", "price": "range"}},
            "elasticsearch": {
                "mappings": {
                    "properties": {
                        "name": {"type": "text"},
                        "status": {"type": "keyword"},
                        "price": {"type": "integer"},
                    }
                }
            },
        },
    }
}
VIEW = "products"
DELETED = "7"


def _expected(p: Any) -> dict[str, dict[str, Any]]:
    view = build_views(p.config)[VIEW]
    with psycopg.connect(p.dsn, autocommit=True) as conn:
        return expected_documents(conn, view)


def _fresh(answer: Answer, store: str) -> None:
    assert answer.store == store
    assert answer.applied_lsn is not None
    assert answer.applied_lsn > 0
    assert answer.lag_ms is not None
    assert answer.lag_ms >= 0


def _where(expected: dict[str, dict[str, Any]], **eq: Any) -> dict[str, dict[str, Any]]:
    return {i: d for i, d in expected.items() if all(d[k] == v for k, v in eq.items())}


def test_query_client_reads_match_source_and_fall_back(make_pipeline):
    p = make_pipeline(SCHEMA, ["public.products"], VIEWS)
    p.apply_connector()
    p.start_worker()
    p.sql("DELETE FROM products WHERE id = %s", (int(DELETED),))
    p.sql("UPDATE products SET status = 'open', price = 999 WHERE id = 8")
    p.wait_drained(timeout=120)
    expected = _expected(p)
    assert DELETED not in expected
    assert len(expected) == 29
    ids = sorted(expected, key=int)

    with ReadClient(p.config) as client:
        # by id, from each store in turn
        for store in ("redis", "mongodb", "elasticsearch"):
            client.read_order = (store,)
            one = client.get(VIEW, "8")
            _fresh(one, store)
            assert one.doc == expected["8"]
            assert client.get(VIEW, DELETED).doc is None
            many = client.get_many(VIEW, [*ids, DELETED, "404"])
            _fresh(many, store)
            assert many.docs == expected
        client.read_order = ("redis", "mongodb", "elasticsearch")

        # filters: Redis indexes when they cover the fields, else MongoDB
        got = client.filter(VIEW, {"status": "open"})
        _fresh(got, "redis")
        assert got.docs == _where(expected, status="open")
        got = client.filter(VIEW, {"price": {"gte": 100, "lt": 200}})
        assert got.store == "redis"
        assert got.docs == {
            i: d for i, d in expected.items() if 100 <= d["price"] < 200
        }
        got = client.filter(VIEW, {"status": "open", "name": "widget 8"})
        _fresh(got, "mongodb")
        assert got.docs == {"8": expected["8"]}
        got = client.filter(VIEW, {"status": "sold", "price": {"gt": 50}}, limit=3)
        want = {
            i: d
            for i, d in expected.items()
            if d["status"] == "sold" and d["price"] > 50
        }
        assert got.total == len(want)
        assert got.docs == {i: want[i] for i in sorted(want)[:3]}

        # search on Elasticsearch (refresh: documents become searchable then)
        es: Any = client._sink("elasticsearch")
        es.client.indices.refresh(index=es.alias(VIEW))
        got = client.search(VIEW, size=1000)
        _fresh(got, "elasticsearch")
        assert got.total == len(expected)
        assert got.docs == expected
        got = client.search(
            VIEW, filters={"status": ["open", "held"]}, sort=["-price"], size=5, page=2
        )
        want_ids = sorted(
            (i for i, d in expected.items() if d["status"] in ("open", "held")),
            key=lambda i: -expected[i]["price"],
        )
        assert got.total == len(want_ids)
        assert list(got.docs) == want_ids[5:10]
        assert (got.page, got.size) == (2, 5)
        got = client.search(VIEW, query="name:widget AND price:[250 TO 300]")
        assert got.docs == {
            i: d for i, d in expected.items() if 250 <= d["price"] <= 300
        }
        with pytest.raises(QueryError):
            client.search(VIEW, query="name:*dget")

        # Redis down: get falls back to MongoDB
        stack = stack_config()
        pidfile = runner.data_dir(stack) / "run" / "redis.pid"
        assert pidfile.exists(), (
            f"no Redis of this stack to stop: {pidfile} (point $READSIDE_CONFIG "
            "at a config whose stack.data_dir is the running stack's)"
        )
        runner.stop_service(stack, "redis")
        try:
            one = client.get(VIEW, "8")
            _fresh(one, "mongodb")
            assert one.doc == expected["8"]
            got = client.filter(VIEW, {"status": "held"})
            assert got.store == "mongodb"
            assert got.docs == _where(expected, status="held")
        finally:
            runner.start_service(stack, "redis")
        assert client.get(VIEW, "8").store == "redis"

        asyncio.run(_reads_on_a_loop(client, expected, stack))


async def _reads_on_a_loop(
    client: ReadClient, expected: dict[str, Any], stack: Any
) -> None:
    """``aget`` (the server's get by id): Redis read on the loop, every id
    at once (joined while a read is out), each answered with its own
    document; Redis down or hung, MongoDB on a thread; Redis back, on the loop
    again."""

    async def pool(fn: Callable[[], Answer]) -> Answer:
        return await asyncio.to_thread(fn)

    try:
        ids = [*sorted(expected, key=int), DELETED, "404"]
        for _ in range(2):  # the second time the freshness figures are in memory
            got = await asyncio.gather(*(client.aget(VIEW, i, pool) for i in ids))
            assert {a.store for a in got} == {"redis"}
            assert {i: a.doc for i, a in zip(ids, got, strict=True)} == {
                **expected,
                DELETED: None,
                "404": None,
            }
            _fresh(got[0], "redis")
        await asyncio.to_thread(runner.stop_service, stack, "redis")
        try:
            one = await client.aget(VIEW, "8", pool)
            _fresh(one, "mongodb")
            assert one.doc == expected["8"]
        finally:
            await asyncio.to_thread(runner.start_service, stack, "redis")
        one = await client.aget(VIEW, "8", pool)
        assert (one.store, one.doc) == ("redis", expected["8"])

        # Redis hung (stopped, its connections open): the reads out time out,
        # those joined behind them fail with them, and all fall to MongoDB
        pid = int((runner.data_dir(stack) / "run" / "redis.pid").read_text())
        timeout = client.config.sinks["redis"].timeout_s
        os.kill(pid, signal.SIGSTOP)
        try:
            got = await asyncio.wait_for(
                asyncio.gather(*(client.aget(VIEW, i, pool) for i in ids)),
                2 * timeout + 5,  # one Redis timeout, then MongoDB
            )
        finally:
            os.kill(pid, signal.SIGCONT)
        assert {a.store for a in got} == {"mongodb"}
        assert {i: a.doc for i, a in zip(ids, got, strict=True)} == {
            **expected,
            DELETED: None,
            "404": None,
        }
        one = await client.aget(VIEW, "8", pool)
        assert (one.store, one.doc) == ("redis", expected["8"])
    finally:
        await client.aclose()
