"""Get by id on an event loop (:meth:`ReadClient.aget`), on in-memory
stores: read on the loop from the first store, falling to the others on a
thread when it is down, with the answer :meth:`ReadClient.get` gives.

Kafka points at a closed port: the freshness figures are empty, and a look
at them (due on the first read) runs on the thread too.
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Callable
from typing import Any

import pytest

from connectors.memory import shared_store
from pipeline.config import parse
from pipeline.errors import TransientError
from pipeline.events import Delete, Upsert
from pipeline.worker import build_sinks
from query.client import ReadClient
from query.errors import StoreUnavailable, UnknownView

pytestmark = pytest.mark.unit

CLOSED = "127.0.0.1:9"
DOC = {"id": 1, "name": "café"}


@pytest.fixture
def client() -> Any:
    stores = {
        name: f"aget-{name}-{uuid.uuid4().hex[:8]}" for name in ("redis", "mongodb")
    }
    cfg = parse(
        {
            "source": {"dsn": f"postgresql://x@{CLOSED}/x", "tables": ["public.t"]},
            "kafka": {"bootstrap_servers": CLOSED},
            "connect": {"url": f"http://{CLOSED}"},
            "sinks": {n: {"type": "memory", "store": s} for n, s in stores.items()},
            "views": {"t": {"table": "public.t", "sinks": ["redis", "mongodb"]}},
        }
    )
    sinks = build_sinks(cfg, list(stores))
    for sink in sinks.values():
        sink.open()
        sink.write([Upsert("t", "1", 5, DOC), Upsert("t", "2", 5, {"id": 2})])
        sink.write([Delete("t", "2", 6)])
    c = ReadClient(cfg)
    c.freshness.timeout_s = 0.05  # the closed Kafka answers nothing
    yield c
    c.close()
    for store in stores.values():
        shared_store(store).data.clear()


class Pool:
    """The caller's thread pool: counts what it was asked to run."""

    def __init__(self) -> None:
        self.calls = 0

    async def __call__(self, fn: Callable[[], Any]) -> Any:
        self.calls += 1
        return await asyncio.to_thread(fn)


def aget(client: ReadClient, view: str, doc_id: str, pool: Pool) -> Any:
    async def read() -> Any:
        try:
            return await client.aget(view, doc_id, pool)
        finally:
            await client.aclose()

    return asyncio.run(read())


def test_aget_reads_the_first_store_on_the_loop(client):
    pool = Pool()
    first = aget(client, "t", "1", pool)
    assert (first.store, first.doc, first.total) == ("redis", DOC, 1)
    assert pool.calls == 1  # the first look at the freshness figures
    again = aget(client, "t", "1", pool)
    assert again.doc == DOC
    assert again.freshness == first.freshness
    assert pool.calls == 1  # figures in memory: no thread
    gone = aget(client, "t", "2", pool)
    assert (gone.store, gone.doc, gone.total) == ("redis", None, 0)
    assert gone == client.get("t", "2")
    assert aget(client, "t", "1", pool) == client.get("t", "1")


def test_aget_falls_to_the_next_store_on_a_thread(client, monkeypatch, caplog):
    async def down(view: str, ids: Any) -> Any:
        raise TransientError("redis: connection refused")

    monkeypatch.setattr(client.sink("redis"), "afetch", down)
    pool = Pool()
    answer = aget(client, "t", "1", pool)
    assert (answer.store, answer.doc) == ("mongodb", DOC)
    assert pool.calls == 1
    assert "store unavailable view=t sink=redis" in caplog.text

    def also_down(view: str, ids: Any) -> Any:
        raise TransientError("mongodb: timed out")

    monkeypatch.setattr(client.sink("mongodb"), "fetch", also_down)
    with pytest.raises(StoreUnavailable) as err:
        aget(client, "t", "1", pool)
    assert err.value.stores == ["redis", "mongodb"]
    assert "redis: connection refused" in str(err.value)
    assert "mongodb: timed out" in str(err.value)


def test_aget_refuses_an_unknown_view_before_any_store(client):
    pool = Pool()
    with pytest.raises(UnknownView):
        aget(client, "nope", "1", pool)
    assert pool.calls == 0
