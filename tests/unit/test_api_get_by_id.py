"""Get by id through the HTTP API, on an in-memory store: the answer, its
headers, its errors and its metrics, and that it is answered on the lean
path (no FastAPI request parsing).

Kafka and PostgreSQL point at a closed port: answers carry no freshness
figures, and a ``min_lsn`` is never reached (412).
"""

from __future__ import annotations

import json
import uuid
from typing import Any

import fastapi.routing
import pytest
from fastapi.testclient import TestClient

from connectors.memory import shared_store
from pipeline.config import parse
from pipeline.events import Delete, Upsert
from pipeline.worker import build_sinks
from query.server import create_app
from query.service import Service

pytestmark = pytest.mark.unit

CLOSED = "127.0.0.1:9"
KEY = "k" * 20
FOCUS_KEY = "f" * 20
DOC = {"id": 1, "name": "café", "tags": ["a", "b"], "price": "12.50"}


def config(store: str, **api: Any) -> Any:
    return parse(
        {
            "source": {"dsn": f"postgresql://x@{CLOSED}/x", "tables": ["public.t"]},
            "kafka": {"bootstrap_servers": CLOSED},
            "connect": {"url": f"http://{CLOSED}"},
            # named as the read order asks for a key-value store first
            "sinks": {"redis": {"type": "memory", "store": store}},
            "views": {
                "t": {"table": "public.t", "sinks": ["redis"]},
                "u": {"table": "public.t", "sinks": ["redis"]},
            },
            "api": api,
        }
    )


def site_service(store: str, min_lsn_wait_s: float, *batches: list[Any]) -> Any:
    """The server's service for a site key reading view ``t`` of the
    in-memory ``store``, after the sink wrote ``batches``."""
    cfg = config(
        store,
        keys=[{"name": "site", "key": KEY, "views": ["t"]}],
        min_lsn_wait_s=min_lsn_wait_s,
    )
    sink = build_sinks(cfg, ["redis"])["redis"]
    sink.open()
    for batch in batches:
        sink.write(batch)
    svc = Service(cfg)
    svc.client.freshness.timeout_s = 0.05  # the closed Kafka answers nothing
    return cfg, svc


@pytest.fixture
def http() -> Any:
    store = f"api-get-{uuid.uuid4().hex[:8]}"
    cfg, svc = site_service(
        store,
        0.2,
        [Upsert("t", "1", 5, DOC), Upsert("t", "2", 5, {"id": 2})],
        [Delete("t", "2", 6)],
    )
    client = TestClient(
        create_app(cfg, svc), headers={"Authorization": f"Bearer {KEY}"}
    )
    yield client
    svc.stop()
    shared_store(store).data.clear()


def test_api_get_by_id_answers_document_view_id_and_freshness(http):
    resp = http.get("/v1/views/t/docs/1")
    assert resp.status_code == 200, resp.text
    assert resp.headers["content-type"] == "application/json"
    assert resp.headers["x-readside-store"] == "redis"
    assert "x-readside-watermark-lsn" not in resp.headers  # none known
    assert resp.json() == {
        "view": "t",
        "id": "1",
        "doc": DOC,
        "freshness": {
            "store": "redis",
            "watermark_lsn": None,
            "applied_lsn": None,
            "lag_ms": None,
        },
    }
    # compact JSON, non-ASCII as it is (as FastAPI's JSONResponse writes it)
    assert resp.content == json.dumps(
        resp.json(), ensure_ascii=False, separators=(",", ":")
    ).encode("utf-8")


def test_api_get_by_id_missing_or_deleted_answers_404_not_found(http):
    for ident in ("2", "3"):
        resp = http.get(f"/v1/views/t/docs/{ident}")
        assert resp.status_code == 404, resp.text
        body = resp.json()
        assert body["reason"] == "not_found"
        assert body["id"] == ident
        assert body["view"] == "t"
        assert resp.headers["x-readside-store"] == "redis"


def test_api_get_by_id_refusals_keep_their_status_and_reason(http):
    anon = TestClient(http.app)
    cases = [
        (anon.get("/v1/views/t/docs/1"), 401, None),
        (anon.get("/v1/views/t/docs/1", headers={"X-Api-Key": "x" * 20}), 401, None),
        (http.get("/v1/views/u/docs/1"), 403, None),
        (http.get("/v1/views/nope/docs/1"), 404, "view"),
        # ids are any text the stores hold (a*b too), without control characters
        (http.get("/v1/views/t/docs/a%01b"), 400, "ids"),
        (http.get("/v1/views/t/docs/1", params={"x": "1"}), 400, "parameter"),
        (http.get("/v1/views/t/docs/1", params={"min_lsn": "1/2/3"}), 400, "min_lsn"),
    ]
    for resp, status, reason in cases:
        assert resp.status_code == status, resp.text
        if reason is not None:
            assert resp.json()["reason"] == reason
    assert cases[0][0].headers["www-authenticate"] == "Bearer"
    resp = http.get("/v1/views/t/docs/1", params={"min_lsn": "0/16B3748"})
    assert resp.status_code == 412
    assert resp.json()["min_lsn"] == "0/16B3748"


def test_api_get_by_id_key_in_x_api_key_header(http):
    anon = TestClient(http.app)
    resp = anon.get("/v1/views/t/docs/1", headers={"X-Api-Key": KEY})
    assert resp.status_code == 200, resp.text


def test_api_get_by_id_counted_by_route_template(http):
    http.get("/v1/views/t/docs/1")
    http.get("/v1/views/t/docs/3")
    metrics = TestClient(
        http.app, headers={"Authorization": f"Bearer {KEY}"}
    )  # the site key is no operator's: 403, and counted too
    assert metrics.get("/metrics").status_code == 403
    from prometheus_client import REGISTRY

    def count(status: str) -> float:
        value = REGISTRY.get_sample_value(
            "readside_api_requests_total",
            {
                "route": "/v1/views/{view}/docs/{doc_id}",
                "method": "GET",
                "status": status,
            },
        )
        return value or 0.0

    before = count("200"), count("404")
    http.get("/v1/views/t/docs/1")
    http.get("/v1/views/t/docs/3")
    assert (count("200"), count("404")) == (before[0] + 1, before[1] + 1)


def test_api_get_by_id_skips_fastapi_request_parsing(http, monkeypatch):
    def refused(*_a: Any, **_k: Any) -> Any:
        raise AssertionError("get by id went through FastAPI's dependency solving")

    monkeypatch.setattr(fastapi.routing, "solve_dependencies", refused)
    resp = http.get("/v1/views/t/docs/1")
    assert resp.status_code == 200, resp.text
    assert resp.json()["doc"] == DOC


def test_api_get_by_id_declaring_a_body_over_the_limit_answers_413(http):
    limit = 1 << 20  # api.max_body_bytes by default
    resp = http.request(
        "GET", "/v1/views/t/docs/1", headers={"Content-Length": str(limit + 1)}
    )
    assert resp.status_code == 413, resp.text
    assert resp.json()["reason"] == "size"


def test_api_other_routes_still_counted_by_their_template(http):
    from prometheus_client import REGISTRY

    def count() -> float:
        labels = {"route": "/v1/views/{view}/docs", "method": "GET", "status": "200"}
        value = REGISTRY.get_sample_value("readside_api_requests_total", labels)
        return value or 0.0

    before = count()
    resp = http.get("/v1/views/t/docs", params={"ids": ["1", "3"]})
    assert resp.status_code == 200, resp.text
    assert resp.json()["docs"] == {"1": DOC}
    assert resp.json()["missing"] == ["3"]
    assert count() == before + 1


def test_api_store_call_past_the_timeout_is_a_store_timeout_else_cancelled():
    import asyncio
    import time

    from query.service import StoreTimeout

    store = f"api-get-{uuid.uuid4().hex[:8]}"
    svc = Service(config(store, anonymous=True, request_timeout_s=0.1))

    async def timed_out() -> None:
        start = time.monotonic()
        with pytest.raises(StoreTimeout):
            await svc.call(lambda: time.sleep(1))
        assert time.monotonic() - start < 0.5
        assert await svc.call(lambda: 7) == 7

    async def cancelled() -> None:
        task = asyncio.ensure_future(svc.call(lambda: time.sleep(0.3)))
        await asyncio.sleep(0.02)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task

    try:
        asyncio.run(timed_out())
        asyncio.run(cancelled())
    finally:
        svc.executor.shutdown(wait=True)


def test_freshness_figures_follow_every_new_checkpoint():
    from query.freshness import FreshnessCache

    now = [10_000]
    cache = FreshnessCache(CLOSED, "cp", ttl_s=3600, clock=lambda: now[0])
    cache._next_look = float("inf")  # no look at the (closed) Kafka

    def checkpoint(part: int, lsn: int, ts: int, sink: str = "redis") -> None:
        value = {
            "view": "t",
            "sink": sink,
            "topic": "x.public.t",
            "partition": part,
            "offset": 1,
            "lsn": lsn,
            "commit_ts_ms": ts,
            "applied_ts_ms": ts,
        }
        cache._take(b"k", json.dumps(value).encode())

    assert cache.freshness("t", "redis").applied_lsn is None
    checkpoint(0, 500, 9_000)
    checkpoint(1, 300, 8_000)
    checkpoint(0, 900, 9_500, sink="es")
    first = cache.freshness("t", "redis")
    assert (first.applied_lsn, first.lag_ms) == (300, 1_000)
    now[0] = 10_500  # lag follows the clock between checkpoints
    assert cache.freshness("t", "redis").lag_ms == 1_500
    checkpoint(1, 700, 9_900)
    later = cache.freshness("t", "redis")
    assert (later.applied_lsn, later.lag_ms) == (500, 600)
    assert cache.freshness("t", "es").applied_lsn == 900


def test_freshness_keeps_what_the_workers_recorded_of_unloaded_views():
    from pipeline.checkpoints import unloaded_key
    from query.freshness import FreshnessCache

    cache = FreshnessCache(CLOSED, "cp", ttl_s=3600)
    cache._next_look = float("inf")  # no look at the (closed) Kafka
    assert cache.unloaded_since("t", "redis") is None
    value = {"view": "t", "sink": "redis", "since_ms": 1234}
    cache._take(unloaded_key("t", "redis"), json.dumps(value).encode())
    assert cache.unloaded_since("t", "redis") == 1234
    assert cache.unloaded_load("t", "redis") is None  # a worker that did not say
    assert cache.unloaded_since("t", "es") is None
    load = "readside snapshot t --from-source"
    cache._take(unloaded_key("t", "es"), json.dumps(value | {"load": load}).encode())
    assert cache.unloaded_load("t", "es") == load
    assert cache.unloaded_sinks("t") == {"redis", "es"}
    assert cache.unloaded_sinks("u") == set()
    assert cache.freshness("t", "redis").applied_lsn is None  # not a checkpoint
    cache._take(unloaded_key("t", "redis"), None)  # whole again: a tombstone
    assert cache.unloaded_since("t", "redis") is None
    assert cache.unloaded_sinks("t") == {"es"}


def test_freshness_keeps_the_definitions_views_were_written_by():
    from pipeline.checkpoints import definition_key
    from query.freshness import FreshnessCache

    cache = FreshnessCache(CLOSED, "cp", ttl_s=3600)
    cache._next_look = float("inf")  # no look at the (closed) Kafka
    assert cache.definitions() == {}
    value = {"view": "t", "sink": "redis", "definition": {"table": "abc"}}
    cache._take(definition_key("t", "redis"), json.dumps(value).encode())
    assert cache.definitions() == {("t", "redis"): {"table": "abc"}}
    assert cache.freshness("t", "redis").applied_lsn is None  # not a checkpoint
