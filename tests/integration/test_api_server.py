"""``readside serve`` against a drained pipeline: every route returns exactly
what the source defines; malicious and malformed requests get a 4xx with a
reason, reach no store, and leave the stores as they were; SIGTERM stops the
server cleanly."""

from __future__ import annotations

import socket
import time
from typing import Any

import psycopg
import pytest
from apiserver import start_server

from pipeline.verify import expected_documents
from pipeline.views import build_views

pytestmark = pytest.mark.integration

SCHEMA = """
CREATE TABLE products (
    id     integer PRIMARY KEY,
    name   text NOT NULL,
    status text NOT NULL,
    price  integer NOT NULL
);
INSERT INTO products
SELECT i, 'widget ' || i, (ARRAY['open', 'sold', 'held'])[i % 3 + 1], i * 10
FROM generate_series(1, 40) AS i;
"""
VIEW = "products"
VIEWS: dict[str, Any] = {
    VIEW: {
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
    },
    "cheap": {"table": "public.products", "sinks": ["redis"]},
}
KEY = "storefront-key-0123456789"
OPS = "ops-" + "o" * 20
OTHER = "other-view-key-0123456789"

BAD_REQUESTS: list[tuple[str, str, dict[str, Any], int, str]] = [
    # (method, path, request kwargs, status, reason)
    ("POST", "/filter", {"json": {"where": {"$where": "sleep(100)"}}}, 400, "field"),
    ("POST", "/filter", {"json": {"where": {"price": {"$gt": 1}}}}, 400, "operator"),
    ("POST", "/filter", {"json": {"where": {"status": {"$ne": "x"}}}}, 400, "operator"),
    ("POST", "/filter", {"json": {"where": {"a.b": 1}}}, 400, "field"),
    ("POST", "/filter", {"json": {"where": {"price": {"gte": "1"}}}}, 400, "value"),
    ("POST", "/filter", {"json": {"where": {}, "limit": 5}}, 400, "where"),
    (
        "POST",
        "/filter",
        {"json": {"where": {"status": "open"}, "limit": 10**6}},
        400,
        "size",
    ),
    (
        "POST",
        "/filter",
        {"json": {"where": {"status": "open"}, "$where": 1}},
        400,
        "request",
    ),
    ("POST", "/search", {"json": {"script": {"source": "1"}}}, 400, "request"),
    ("POST", "/search", {"json": {"sort": ["_script"]}}, 400, "field"),
    ("POST", "/search", {"json": {"filters": {"_id": "1"}}}, 400, "field"),
    ("POST", "/search", {"json": {"query": "name:*dget"}}, 400, "query"),
    ("GET", "/search", {"params": {"size": 100000}}, 400, "size"),
    ("GET", "/search", {"params": {"page": 10**6, "size": 50}}, 400, "page"),
    ("GET", "/search", {"params": {"script": "doc['price']"}}, 400, "parameter"),
    ("GET", "/search", {"params": {"filter": "nocolon"}}, 400, "filters"),
    ("GET", "/search", {"params": {"size": "lots"}}, 400, "request"),
    # ids are any text the stores hold: pattern characters are plain ones
    ("GET", "/docs/ab*", {}, 404, "not_found"),
    ("GET", "/docs/k%5B1%5D", {}, 404, "not_found"),
    ("GET", "/docs/" + "x" * 600, {}, 400, "ids"),
    ("GET", "/docs/a%01b", {}, 400, "ids"),
    ("GET", "/docs", {"params": {"ids": ["1", "\t"]}}, 400, "ids"),
    ("POST", "/mget", {"json": {"ids": [{"$gt": ""}]}}, 400, "ids"),
    ("POST", "/mget", {"json": {"ids": list(range(1001))}}, 400, "size"),
    ("POST", "/mget", {"json": {"ids": "1"}}, 400, "request"),
    ("GET", "/docs/1", {"params": {"min_lsn": "zz/1"}}, 400, "min_lsn"),
    ("GET", "/docs/1", {"params": {"min_lsn": "-5"}}, 400, "min_lsn"),
]


def _expected(p: Any) -> dict[str, dict[str, Any]]:
    view = build_views(p.config)[VIEW]
    with psycopg.connect(p.dsn, autocommit=True) as conn:
        return expected_documents(conn, view)


def _fresh(resp: Any, store: str) -> None:
    assert resp.status_code == 200, resp.text
    assert resp.headers["X-Readside-Store"] == store
    assert "/" in resp.headers["X-Readside-Watermark-Lsn"]
    assert int(resp.headers["X-Readside-Lag-Ms"]) >= 0
    assert resp.json()["freshness"]["store"] == store


def _idle_connection_still_served(base: str) -> None:
    """A connection idle for 7 s (past uvicorn's own 5 s default) still
    answers: the server must not close first, or a client's request sent as
    it closes is reset in flight (seen as ``Connection reset by peer``)."""
    host, port = base.removeprefix("http://").split(":")
    request = f"GET /healthz HTTP/1.1\r\nHost: {host}\r\n\r\n".encode()
    with socket.create_connection((host, int(port)), timeout=10) as sock:
        for idle_s in (7, 0):
            sock.sendall(request)
            head = _read_response(sock)
            assert head.startswith(b"HTTP/1.1 200"), head[:200]
            time.sleep(idle_s)


def _read_response(sock: socket.socket) -> bytes:
    """One whole HTTP response (head and ``Content-Length`` body): its body
    may come in a packet of its own, and must not be taken for the next
    response's start."""
    data = b""
    while b"\r\n\r\n" not in data:
        chunk = sock.recv(65536)
        assert chunk, f"connection closed mid-response: {data[:200]!r}"
        data += chunk
    head, _, body = data.partition(b"\r\n\r\n")
    length = 0
    for line in head.split(b"\r\n")[1:]:
        name, _, value = line.partition(b":")
        if name.strip().lower() == b"content-length":
            length = int(value)
    while len(body) < length:
        chunk = sock.recv(65536)
        assert chunk, f"connection closed mid-body: {data[:200]!r}"
        body += chunk
    return head


def test_api_server_drained_view_answers_exactly_and_refuses_bad_input(make_pipeline):
    p = make_pipeline(SCHEMA, ["public.products"], VIEWS)
    p.apply_connector()
    p.start_worker()
    p.sql("DELETE FROM products WHERE id = 7")
    p.sql("UPDATE products SET status = 'open', price = 999 WHERE id = 8")
    p.wait_drained(timeout=120)
    expected = _expected(p)
    assert len(expected) == 39
    keys = [
        {"name": "storefront", "key": KEY, "views": [VIEW]},
        {"name": "other", "key": OTHER, "views": ["cheap"]},
        {"name": "ops", "key": OPS, "operator": True},
    ]
    server = start_server(p, {"keys": keys, "max_page_size": 50})
    try:
        with server.client(headers={"Authorization": f"Bearer {KEY}"}) as http:
            base = f"/v1/views/{VIEW}"
            # by id
            got = http.get(f"{base}/docs/8")
            assert got.status_code == 200
            _fresh(got, "redis")
            assert got.json()["doc"] == expected["8"]
            gone = http.get(f"{base}/docs/7")
            assert gone.status_code == 404
            assert gone.json()["reason"] == "not_found"
            # multi-get, both forms
            ids = sorted(expected, key=int)
            got = http.post(f"{base}/mget", json={"ids": [*ids, "7", "404"]})
            assert got.status_code == 200
            assert got.json()["docs"] == expected
            assert got.json()["missing"] == ["7", "404"]
            got = http.get(f"{base}/docs", params={"ids": ["8", "9", "7"]})
            assert got.json()["docs"] == {i: expected[i] for i in ("8", "9")}
            # filter: Redis index, then MongoDB
            got = http.post(f"{base}/filter", json={"where": {"status": "open"}})
            _fresh(got, "redis")
            want = {i: d for i, d in expected.items() if d["status"] == "open"}
            assert {h["id"]: h["doc"] for h in got.json()["hits"]} == want
            got = http.post(
                f"{base}/filter",
                json={"where": {"price": {"gte": 100, "lt": 200}, "name": "widget 15"}},
            )
            _fresh(got, "mongodb")
            assert [h["id"] for h in got.json()["hits"]] == ["15"]
            # search (GET and POST) after the index's refresh; min_lsn 0 is
            # reached at once and refreshes the index
            got = http.get(f"{base}/search", params={"size": 50, "min_lsn": "0/0"})
            _fresh(got, "elasticsearch")
            assert got.json()["total"] == len(expected)
            assert {h["id"]: h["doc"] for h in got.json()["hits"]} == expected
            got = http.get(
                f"{base}/search",
                params={
                    "filter": ["status:open", "status:held"],
                    "sort": "-price",
                    "size": 5,
                    "page": 2,
                },
            )
            want_ids = sorted(
                (i for i, d in expected.items() if d["status"] in ("open", "held")),
                key=lambda i: -expected[i]["price"],
            )
            assert got.json()["total"] == len(want_ids)
            assert [h["id"] for h in got.json()["hits"]] == want_ids[5:10]
            got = http.post(
                f"{base}/search", json={"query": "name:widget AND price:[250 TO 300]"}
            )
            assert {h["id"] for h in got.json()["hits"]} == {
                "25",
                "26",
                "27",
                "28",
                "29",
                "30",
            }

            # malicious and malformed input: 4xx with a reason
            for method, path, kwargs, status, reason in BAD_REQUESTS:
                resp = http.request(method, base + path, **kwargs)
                assert (resp.status_code, resp.json().get("reason")) == (
                    status,
                    reason,
                ), (method, path, kwargs, resp.text[:300])
                assert resp.json()["error"]
            assert http.get("/v1/views/nope/docs/1").status_code == 404
            assert http.get("/v1/views/cheap/docs/1").status_code == 403
        with server.client() as anon:
            assert anon.get(f"/v1/views/{VIEW}/docs/8").status_code == 401
            bad = anon.get(f"/v1/views/{VIEW}/docs/8", headers={"X-Api-Key": OTHER})
            assert bad.status_code == 403
            assert anon.get("/healthz").status_code == 200
            # ready or not for anyone; which store failed for operators only
            ready = anon.get("/readyz")
            assert ready.status_code == 200
            assert ready.json() == {"ready": True}
            ops = {"X-Api-Key": OPS}
            ready = anon.get("/readyz", headers=ops)
            # every store that holds a view (the config's others hold none)
            held = {s for v in p.config.effective_views().values() for s in v.sinks}
            assert held == {"redis", "elasticsearch", "mongodb"}
            assert ready.json()["stores"] == {s: "ok" for s in held}
            schema = anon.get("/openapi.json").json()
            assert "/v1/views/{view}/search" in schema["paths"]
            assert anon.get("/metrics").status_code == 401
            assert anon.get("/metrics", headers={"X-Api-Key": KEY}).status_code == 403
            metrics = anon.get("/metrics", headers=ops).text
            assert 'route="/v1/views/{view}/filter",status="400"' in metrics
        _idle_connection_still_served(server.base)
    finally:
        code = server.stop()
    # nothing reached a store: the stores still hold exactly the source, the
    # server logged no store error, and SIGTERM ended it cleanly
    p.assert_converged()
    log = server.log_text()
    assert "store error" not in log
    assert "Traceback" not in log
    # uvicorn drains, runs the lifespan's shutdown, then re-raises SIGTERM
    assert code in (0, -15)
    assert "server stopped" in log
    assert "Application shutdown complete" in log
