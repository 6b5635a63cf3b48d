"""Attacks on ``readside serve`` and the focus apply, against the real stack.

One pipeline and one server for the module (three views in the three
stores, an aggregate view with two focuses, keys of each kind). Every
route of the server's route table is tried without a key and with the
wrong one; bodies, id lists and pages above the limits; store-native
injection in every parameter; far-future and malformed ``min_lsn``; SQL
planted as a focus's applied ``where`` in the snapshot topic. Each attack
must get a clear 4xx (or be refused when the config is loaded) and no 5xx;
after each test every store still holds exactly what it held before, the
server logged no store error, and (last) no output shows a planted secret.
"""

from __future__ import annotations

import concurrent.futures
import shutil
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import quote

import httpx
import psycopg
import pytest
import yaml
from apiserver import Server, start_server
from attack_cases import (
    BAD_FILTER_BODIES,
    BAD_IDS,
    BAD_LSN,
    BAD_SEARCH,
    BAD_WHERE,
    LITERAL_IDS,
    LITERAL_WHERE,
    SEARCH_TEXT,
)
from attack_kit import (
    SampleWatch,
    app_routes,
    dump_stores,
    fill,
    raw_request,
    source_state,
)
from harness import PG_ADMIN_DSN, Pipeline, create_pipeline
from planted import assert_hidden, password_of

from pipeline.snapshot.state import SnapshotLog, SnapshotState, focus_key
from pipeline.verify import verify

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
FROM generate_series(1, 30) AS i;
CREATE FUNCTION attack_probe() RETURNS boolean LANGUAGE plpgsql
AS $$ BEGIN RAISE EXCEPTION 'attack probe ran'; END $$;
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
    },
    "esonly": {"table": "public.products", "sinks": ["elasticsearch"]},
    "catalog": {"kind": "aggregate", "table": "public.products", "sinks": ["redis"]},
}
FOCUSES = {
    "eu": {"view": "catalog", "where": "status = 'open'"},
    "us": {"view": "catalog", "where": "status = 'sold'"},
}
SITE = "planted-site-key-0193"
EU = "planted-eu-key-55123"
US = "planted-us-key-99871"
OPS = "planted-ops-key-7734"
WRONG = "not-a-key-of-this-server"
MAX_BODY, MAX_IDS, MAX_PAGE, WAIT_S = 4096, 5, 10, 2.0
API: dict[str, Any] = {
    "keys": [
        {"name": "site", "key": SITE, "views": ["products", "esonly"]},
        {"name": "eu", "key": EU, "views": ["catalog"], "focus": "eu"},
        {"name": "us", "key": US, "views": ["catalog"], "focus": "us"},
        {"name": "ops", "key": OPS, "operator": True},
    ],
    "max_body_bytes": MAX_BODY,
    "max_ids": MAX_IDS,
    "max_page_size": MAX_PAGE,
    "min_lsn_wait_s": WAIT_S,
}
#: routes anyone may ask (/readyz tells whether, not why: see below)
OPEN = {"/healthz", "/readyz", "/openapi.json"}
FAR = "FFFFFFFF/FFFFFFFF"
#: a valid request of every view route; a new route needs one here
VALID: dict[tuple[str, str], dict[str, Any]] = {
    ("GET", "/v1/views/{view}/docs/{doc_id}"): {},
    ("GET", "/v1/views/{view}/docs"): {"params": {"ids": ["1", "2"]}},
    ("POST", "/v1/views/{view}/mget"): {"json": {"ids": ["1", "2"]}},
    ("GET", "/v1/views/{view}/search"): {"params": {"q": "widget"}},
    ("POST", "/v1/views/{view}/search"): {"json": {"query": "widget"}},
    ("POST", "/v1/views/{view}/filter"): {"json": {"where": {"status": "open"}}},
}
#: tests after which the documents are the same at new versions (a reload)
RELOADS = {"test_focus_where_in_the_snapshot_topic_is_never_run"}
#: what the server logs for a request that failed (uvicorn's own line for an
#: exception no handler took, the server's for a 5xx and a store down)
BAD_LOG = (
    "Exception in ASGI application",
    "store error",
    "request failed",
    "store unavailable",
)


@dataclass
class Env:
    p: Pipeline
    server: Server
    wm_db: str
    routes: list[tuple[str, str]]
    http: httpx.Client
    shown: dict[str, str] = field(default_factory=dict)

    def call(
        self, method: str, path: str, key: str | None = SITE, **kw: Any
    ) -> httpx.Response:
        """One request (``key`` in ``X-Api-Key``), its answer kept for the
        secrets check; a 5xx fails at once."""
        headers = dict(kw.pop("headers", None) or {})
        if key is not None:
            headers["X-Api-Key"] = key
        resp = self.http.request(method, path, headers=headers, **kw)
        where = f"{method} {path} {kw.get('params', '')} #{len(self.shown)}"
        self.shown[where] = f"{resp.status_code} {dict(resp.headers)} {resp.text}"
        assert resp.status_code < 500, (where, resp.text[:300])
        return resp


@pytest.fixture(scope="module")
def env(stack: Any, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Env]:
    p = create_pipeline(
        tmp_path_factory.mktemp("attacks"), SCHEMA, ["public.products"], VIEWS
    )
    wm_db = f"{p.dbname}_wm"
    with psycopg.connect(PG_ADMIN_DSN, autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{wm_db}"')
    try:

        def plant(data: dict[str, Any]) -> None:
            data["focuses"] = FOCUSES
            wm = PG_ADMIN_DSN.rsplit("/", 1)[0] + f"/{wm_db}"
            data["api"] = {"watermark_dsn": wm}

        p.rewrite(plant)
        p.apply_connector()
        p.start_worker()
        p.sql("DELETE FROM products WHERE id = 7")  # a tombstone in every store
        p.wait_drained(timeout=180)
        wm = p.config.api.watermark_dsn
        assert wm is not None
        server = start_server(p, {**API, "watermark_dsn": wm.get_secret_value()})
        try:
            with server.client() as http:
                yield Env(p, server, wm_db, app_routes(p.config), http)
        finally:
            server.stop()
    finally:
        p.close()
        with psycopg.connect(PG_ADMIN_DSN, autocommit=True) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{wm_db}" WITH (FORCE)')


@pytest.fixture(autouse=True)
def untouched(env: Env, request: pytest.FixtureRequest) -> Iterator[None]:
    """Every store and the source as they were, and no store error logged."""
    versions = request.node.originalname not in RELOADS
    before = dump_stores(env.p.config, env.p.suffix, versions)
    held = (before["redis"], before["elasticsearch"]["docs"], before["mongodb"])
    assert all(held), "a store holds nothing: the comparison would prove nothing"
    source = source_state(env.p.dsn)
    logged = len(env.server.log_text())
    yield
    log = env.server.log_text()[logged:]
    assert not [b for b in BAD_LOG if b in log], log[-3000:]
    assert source_state(env.p.dsn) == source
    assert dump_stores(env.p.config, env.p.suffix, versions) == before


def _refused(resp: httpx.Response, status: int, reason: str | None = None) -> None:
    got = (resp.status_code, resp.json().get("reason") if reason else None)
    assert got == (status, reason), resp.text[:300]
    assert resp.json().get("error"), resp.text[:300]


# -- keys ------------------------------------------------------------------------


def _key_cases(template: str) -> list[tuple[str | None, str, int]]:
    """(key, view, status) a route must answer."""
    refused: list[tuple[str | None, str, int]] = [
        (None, "products", 401),
        (WRONG, "products", 401),
        ("", "products", 401),
    ]
    if "{view}" not in template:  # an operators' route
        return [*refused, (SITE, "products", 403), (EU, "products", 403)]
    return [
        *refused,
        (US, "catalog.eu", 403),  # another focus's view
        (EU, "products", 403),  # a view outside the key's focus
        (SITE, "catalog", 403),
        (SITE, "catalog.us", 403),
        (OPS, "products", 403),  # operator, no views
        (WRONG, "nope", 401),  # unknown view: the key first
    ]


def test_every_route_refuses_a_missing_or_foreign_key(env: Env):
    views = [t for _m, t in env.routes if "{view}" in t]
    assert "/v1/views/{view}/docs/{doc_id}" in views
    assert len(views) >= 6
    for method, template in env.routes:
        if template in OPEN:
            for key in (None, WRONG):
                resp = env.call(method, template, key)
                assert resp.status_code == 200, (template, resp.text[:200])
                if template == "/readyz":
                    assert resp.json() == {"ready": True}  # no store's error
            continue
        for key, view, status in _key_cases(template):
            # a body the route would refuse and a min_lsn it would wait on:
            # the key is checked before either is looked at
            started = time.monotonic()
            resp = env.call(
                method,
                fill(template, view),
                key,
                params={"min_lsn": FAR} if "{view}" in template else None,
                json={"bogus": {"$where": "1"}} if method == "POST" else None,
            )
            assert resp.status_code == status, (method, template, key, resp.text)
            assert time.monotonic() - started < WAIT_S / 2
        allowed = SITE if "{view}" in template else OPS
        kw = VALID.get((method, template), {}) if "{view}" in template else {}
        resp = env.call(method, fill(template, "products"), allowed, **kw)
        assert resp.status_code == 200, (method, template, resp.text[:300])
    # an unknown view: 404 naming only the key's own views
    for key, other in ((SITE, "catalog"), (EU, "catalog.us"), (US, "products")):
        resp = env.call("GET", "/v1/views/nope/docs/1", key)
        assert resp.status_code == 404
        assert other not in resp.json()["error"], resp.text
    # a key bound to a focus reads its own slice only
    resp = env.call("POST", "/v1/views/catalog/mget", US, json={"ids": ["1", "2", "3"]})
    assert resp.json()["view"] == "catalog.us"
    assert [d["status"] for d in resp.json()["docs"].values()] == ["sold"]


def test_every_view_route_has_a_valid_request(env: Env):
    views = {(m, t) for m, t in env.routes if "{view}" in t}
    assert views == set(VALID), "add the new route to VALID and to the attacks"


# -- sizes -----------------------------------------------------------------------


def _head(method: str, path: str, extra: str) -> str:
    return (
        f"{method} {path} HTTP/1.1\r\nHost: attack\r\nX-Api-Key: {SITE}\r\n"
        f"Content-Type: application/json\r\n{extra}\r\n"
    )


def test_oversized_bodies_are_refused_before_they_are_read(env: Env):
    posts = [t for m, t in env.routes if m == "POST"]
    assert posts
    for template in posts:
        path = fill(template, "products")
        body = b'{"ids": ["' + b"1" * MAX_BODY + b'"]}'
        _refused(env.call("POST", path, content=body), 413, "size")
        # 64 MiB declared, 16 KiB sent: the answer comes first
        head = _head("POST", path, f"Content-Length: {64 << 20}\r\n")
        data = raw_request(env.server.base, head, [b" " * 4096] * 4)
        assert data.startswith(b"HTTP/1.1 413"), (template, data[:200])
        # no length declared: refused once the bytes read pass the limit,
        # though the body never ends
        head = _head("POST", path, "Transfer-Encoding: chunked\r\n")
        chunk = b"400\r\n" + b" " * 1024 + b"\r\n"
        data = raw_request(env.server.base, head, [chunk] * 32)
        assert data.startswith(b"HTTP/1.1 413"), (template, data[:200])
    # the lean get by id: a declared body is refused too
    head = _head("GET", "/v1/views/products/docs/1", f"Content-Length: {1 << 30}\r\n")
    data = raw_request(env.server.base, head, [b" " * 4096])
    assert data.startswith(b"HTTP/1.1 413"), data[:200]


def test_id_lists_and_pages_above_the_limits_are_refused(env: Env):
    ids = [str(i) for i in range(1, MAX_IDS + 2)]
    over: list[tuple[str, str, dict[str, Any]]] = [
        ("POST", "mget", {"json": {"ids": ids}}),
        ("GET", "docs", {"params": {"ids": ids}}),
        ("GET", "search", {"params": {"size": MAX_PAGE + 1}}),
        ("POST", "search", {"json": {"size": MAX_PAGE + 1}}),
        ("POST", "filter", {"json": {"where": {"status": "open"}, "limit": 11}}),
    ]
    for method, route, kw in over:
        _refused(env.call(method, f"/v1/views/products/{route}", **kw), 400, "size")
    at = [
        ("POST", "mget", {"json": {"ids": ids[:MAX_IDS]}}),
        ("GET", "search", {"params": {"size": MAX_PAGE}}),
        ("POST", "filter", {"json": {"where": {"status": "open"}, "limit": 10}}),
    ]
    for method, route, kw in at:
        resp = env.call(method, f"/v1/views/products/{route}", **kw)
        assert resp.status_code == 200, resp.text


# -- injection -------------------------------------------------------------------


def test_ids_refuse_control_characters_and_read_patterns_as_text(env: Env):
    for view in ("esonly", "products"):
        base = f"/v1/views/{view}"
        for ident in BAD_IDS:
            _refused(
                env.call("POST", f"{base}/mget", json={"ids": [ident]}), 400, "ids"
            )
            _refused(env.call("GET", f"{base}/docs", params={"ids": ident}), 400, "ids")
            path = f"{base}/docs/{quote(ident, safe='')}"
            _refused(env.call("GET", path), 400, "ids")
        for ident in LITERAL_IDS:
            resp = env.call("POST", f"{base}/mget", json={"ids": [ident]})
            assert resp.json()["missing"] == [ident], resp.text
            path = f"{base}/docs/{quote(ident, safe='')}"
            assert env.call("GET", path).status_code == 404
        for ids in ([{"$gt": ""}], [["1"]], [None], [10**600]):
            resp = env.call("POST", f"{base}/mget", json={"ids": ids})
            _refused(resp, 400, "ids")


def test_filters_refuse_operators_and_read_patterns_as_text(env: Env):
    for where, reason in BAD_WHERE:
        resp = env.call("POST", "/v1/views/products/filter", json={"where": where})
        assert (resp.status_code, resp.json().get("reason")) == (400, reason), (
            where,
            resp.text[:300],
        )
    for body, reason in BAD_FILTER_BODIES:
        resp = env.call("POST", "/v1/views/products/filter", json=body)
        assert (resp.status_code, resp.json().get("reason")) == (400, reason), (
            body,
            resp.text[:300],
        )
    for where in LITERAL_WHERE:
        resp = env.call("POST", "/v1/views/products/filter", json={"where": where})
        assert resp.status_code == 200, (where, resp.text[:300])
        assert resp.json()["hits"] == [], where
        got = env.call("POST", "/v1/views/products/search", json={"filters": where})
        assert got.status_code == 200, (where, got.text[:300])
        assert got.json()["hits"] == [], where


def test_search_refuses_dsl_and_scripts_and_never_shows_tombstones(env: Env):
    for method, kw, reason in BAD_SEARCH:
        resp = env.call(method, "/v1/views/products/search", **kw)
        assert (resp.status_code, resp.json().get("reason")) == (400, reason), (
            kw,
            resp.text[:300],
        )
    for text in SEARCH_TEXT:
        for method, kw in (("GET", {"params": {"q": text}}), ("POST", {"json": {}})):
            if method == "POST":
                kw = {"json": {"query": text}}
            resp = env.call(method, "/v1/views/products/search", **kw)
            if resp.status_code == 400:
                assert resp.json()["reason"] == "query", resp.text[:300]
                assert "Traceback" not in resp.text
                continue
            assert resp.status_code == 200, (text, resp.text[:300])
            ids = {h["id"] for h in resp.json()["hits"]}
            assert "7" not in ids, text
            assert all("_deleted" not in h["doc"] for h in resp.json()["hits"])


# -- min_lsn ---------------------------------------------------------------------


def test_malformed_min_lsn_is_refused_on_every_view_route(env: Env):
    for (method, template), kw in VALID.items():
        path = fill(template, "products")
        for raw in BAD_LSN:
            resp = env.call(
                method,
                path,
                params={**kw.get("params", {}), "min_lsn": raw},
                json=kw.get("json"),
            )
            assert (resp.status_code, resp.json().get("reason")) == (400, "min_lsn"), (
                template,
                raw,
                resp.text[:300],
            )


def test_far_future_min_lsn_waits_its_bound_and_samples_fast_only_with_a_key(
    env: Env,
):
    def ask(key: str | None) -> tuple[int, float]:
        started = time.monotonic()
        resp = env.call(
            "GET", "/v1/views/products/docs/1", key, params={"min_lsn": FAR}
        )
        return resp.status_code, time.monotonic() - started

    # without a key: refused at once, and the sampler stays idle (1/s)
    with SampleWatch(PG_ADMIN_DSN, env.wm_db) as watch:
        end = time.monotonic() + 2
        while time.monotonic() < end:
            status, took = ask(None)
            assert (status, took < 0.5) == (401, True)
    assert watch.samples <= 5, watch.samples
    # with a key: 412 after api.min_lsn_wait_s, however many wait at once,
    # sampling fast meanwhile (the measure above can see it)
    with (
        SampleWatch(PG_ADMIN_DSN, env.wm_db) as watch,
        concurrent.futures.ThreadPoolExecutor(8) as pool,
    ):
        answers = list(pool.map(ask, [SITE] * 8))
    assert {s for s, _ in answers} == {412}
    assert all(WAIT_S <= took < WAIT_S + 1.5 for _, took in answers), answers
    assert watch.samples >= 8, watch.samples  # idle: about 2 in that time


# -- SQL in a focus's where ------------------------------------------------------


def test_focus_where_in_the_snapshot_topic_is_never_run(env: Env, tmp_path):
    p = env.p
    # in the config: one predicate only, refused when the config is loaded
    data = yaml.safe_load(p.config_path.read_text())
    for bad in (
        {"where": "status = 'open'; DROP TABLE products"},
        {"where": "status = 'open'", "previous": ["true; DELETE FROM products"]},
    ):
        data["focuses"]["eu"] = {"view": "catalog", **bad}
        path = tmp_path / "bad.yaml"
        path.write_text(yaml.safe_dump(data))
        run = p.run_cli("--config", str(path), "config", "check", ok=False)
        assert run.returncode != 0
        assert "must be one SQL predicate" in run.stdout + run.stderr
    # in the snapshot topic: whoever can write it records SQL as the last
    # applied where; the next apply never runs it (a full load instead)
    log = SnapshotLog(p.config)
    try:
        planted = "status = 'open' OR attack_probe()"
        state = SnapshotState("catalog.eu", ["redis"], planted, "focus", "applied")
        log.save(state, focus_key("eu"))
    finally:
        log.close()
    run = p.run_cli("focus", "apply", "eu", ok=False)
    shown = run.stdout + run.stderr
    assert run.returncode == 0, shown
    assert "attack probe ran" not in shown
    assert "previous: none (full load)" in shown
    drifts = verify(p.config, views=["catalog.eu", "catalog.us"])
    assert all(d.ok for d in drifts), [d.describe() for d in drifts]


# -- secrets (last: it reads every answer the attacks got) -----------------------


def test_no_answer_or_log_shows_a_secret(env: Env):
    # one more round of every route with every key, then every answer kept
    for method, template in env.routes:
        for key in (None, WRONG, SITE, EU, US, OPS):
            env.call(method, fill(template, "products"), key)
    shown = dict(env.shown)
    shown["serve log"] = env.server.log_text()
    assert len(shown) > 200
    password = password_of(env.p.dsn)  # the superuser's, in source.dsn
    assert_hidden(shown, (password, SITE, EU, US, OPS))
    # the password reached the server (else this proves nothing)
    assert password in env.p.config_path.read_text()
    shutil.copy(env.server.log, env.p.tmp_path / "serve-attacks.log")
