"""Read-your-writes: 1,000 write-then-read cycles under a background write
load, half through HTTP and half through the client, each read with the
``min_lsn`` of its own commit sees its own write; with the worker stopped, a
read waits, then answers 412 (HTTP) or raises NotYetFresh (client) with the
current watermark.

The view has no MongoDB sink: FerretDB (the local stack's MongoDB) scans its
collection on every version-guarded update and cannot keep up with this load.
The watermark does not depend on the sink (offsets are committed once every
sink acknowledged), so Redis and Elasticsearch reads cover the rule."""

from __future__ import annotations

import random
import threading
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import psycopg
import pytest
from apiserver import start_server
from harness import BackgroundLoad

from query import NotYetFresh, ReadClient, commit_lsn
from query.lsn import parse

pytestmark = pytest.mark.integration

SCHEMA = """
CREATE TABLE items (
    id   integer PRIMARY KEY,
    val  integer NOT NULL,
    tag  text NOT NULL
);
INSERT INTO items SELECT i, 0, 't' || i FROM generate_series(1, 1200) AS i;
"""
VIEWS: dict[str, Any] = {
    "items": {
        "table": "public.items",
        "sinks": ["redis", "elasticsearch"],
        "sink_options": {
            "elasticsearch": {
                "mappings": {
                    "properties": {
                        "val": {"type": "integer"},
                        "tag": {"type": "keyword"},
                    }
                }
            }
        },
    }
}
THREADS = 48
CYCLES = 1000
LOAD_IDS = range(1001, 1201)  # the background load writes only these rows


def _load_step(conn: psycopg.Connection[Any], rng: random.Random) -> None:
    conn.execute(
        "UPDATE items SET val = val + 1 WHERE id = %s", (rng.choice(LOAD_IDS),)
    )


class Cycles:
    """Each worker thread owns the ids i with i % THREADS == its number."""

    def __init__(self, dsn: str) -> None:
        self.dsn = dsn
        self.local = threading.local()
        self.failures: list[str] = []

    def conn(self) -> psycopg.Connection[Any]:
        if not hasattr(self.local, "conn"):
            self.local.conn = psycopg.connect(self.dsn, autocommit=True)
        return self.local.conn  # type: ignore[no-any-return]

    def write(self, n: int) -> tuple[str, int, int]:
        """Commit a new value for row ``n % 1000 + 1``; (id, value, lsn)."""
        ident, value = n % 1000 + 1, n + 1
        conn = self.conn()
        with conn.transaction():
            conn.execute("UPDATE items SET val = %s WHERE id = %s", (value, ident))
        return str(ident), value, commit_lsn(conn)


def test_read_your_writes_under_load_sees_own_write_then_412_when_stopped(
    make_pipeline,
):
    p = make_pipeline(SCHEMA, ["public.items"], VIEWS)
    p.apply_connector()
    worker = p.start_worker()
    p.wait_drained(timeout=120)
    server = start_server(
        p, {"min_lsn_wait_s": 10, "max_page_size": 10, "anonymous": True}
    )
    cycles = Cycles(p.dsn)
    http_local = threading.local()

    def http() -> Any:
        if not hasattr(http_local, "c"):
            http_local.c = server.client()
        return http_local.c

    client = ReadClient(p.config, wait_s=20)
    server_marks: list[int] = []  # the watermarks the server answered with

    def one(n: int) -> None:
        ident, value, lsn = cycles.write(n)
        kind = n % 4
        if kind == 0:  # HTTP get by id
            resp = http().get(f"/v1/views/items/docs/{ident}", params={"min_lsn": lsn})
            got = (
                resp.json().get("doc", {}).get("val") if resp.is_success else resp.text
            )
            if resp.is_success:
                served = parse(resp.headers["X-Readside-Watermark-Lsn"])
                assert served >= lsn
                server_marks.append(served)
        elif kind == 1:  # HTTP search (Elasticsearch, refreshed after the mark)
            resp = http().post(
                "/v1/views/items/search",
                params={"min_lsn": f"{lsn >> 32:X}/{lsn & 0xFFFFFFFF:X}"},
                json={"filters": {"tag": f"t{ident}"}},
            )
            hits = resp.json().get("hits", []) if resp.is_success else resp.text
            got = hits[0]["doc"]["val"] if isinstance(hits, list) and hits else hits
        elif kind == 2:  # client get by id
            answer = client.get("items", ident, min_lsn=lsn)
            got = (answer.doc or {}).get("val")
            assert answer.freshness.watermark_lsn is not None
            assert answer.freshness.watermark_lsn >= lsn
        else:  # client search (Elasticsearch)
            answer = client.search("items", filters={"tag": f"t{ident}"}, min_lsn=lsn)
            got = answer.docs.get(ident, {}).get("val")
        if got != value:
            cycles.failures.append(f"cycle {n} kind {kind}: wanted {value}, got {got}")

    try:
        with BackgroundLoad(p.dsn, _load_step, seed=5, pause_s=0.002) as load:
            load.wait_ops(50)
            with ThreadPoolExecutor(THREADS) as pool:
                list(pool.map(one, range(CYCLES)))
            assert load.ops > 100
        assert not cycles.failures, cycles.failures[:10]

        # the worker stops: a fresh write is never reached, the answer is a
        # timeout with the current watermark
        assert worker.terminate() == 0
        client.wait_s = 2.0
        ident, _value, lsn = cycles.write(5000)
        with pytest.raises(NotYetFresh) as info:
            client.get("items", ident, min_lsn=lsn)
        mark = info.value.watermark
        assert mark is not None
        assert mark < lsn
        resp = http().get(f"/v1/views/items/docs/{ident}", params={"min_lsn": lsn})
        assert resp.status_code == 412
        body = resp.json()
        assert parse(body["min_lsn"]) == lsn
        # the server's own watermark, which never goes back (the client's
        # `mark` comes from samples of its own, taken at other moments)
        assert parse(body["watermark_lsn"]) >= max(server_marks)
        assert parse(body["watermark_lsn"]) < lsn
        assert "did not reach" in body["error"]
        # a read without min_lsn still answers, with the old value
        assert http().get(f"/v1/views/items/docs/{ident}").status_code == 200
    finally:
        client.close()
        server.stop()
