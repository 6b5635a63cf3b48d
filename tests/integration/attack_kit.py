"""Helpers of ``test_attacks``: the server's route table, a dump of every
store a pipeline writes, raw HTTP for bodies a client library will not send,
and a watch on how often the API samples the watermark."""

from __future__ import annotations

import json
import socket
import threading
import time
from collections.abc import Iterator
from typing import Any

import psycopg
import pymongo
import redis
from elasticsearch import Elasticsearch
from fastapi import FastAPI

from pipeline.config import Config
from query import fastpath
from query.server import create_app
from query.service import Service


def app_routes(config: Config) -> list[tuple[str, str]]:
    """(method, path template) of every route ``readside serve`` answers:
    the app's route table and the lean get-by-id path in front of it."""
    svc = Service(config)
    try:
        app: Any = create_app(config, svc)
        while not isinstance(app, FastAPI):
            app = app.app
        out = {(m, path) for m, path in _walk(app.routes) if m != "HEAD"}
    finally:
        svc.stop()
    out.add(("GET", fastpath.TEMPLATE))
    return sorted(out)


def _walk(routes: list[Any], prefix: str = "") -> Iterator[tuple[str, str]]:
    """(method, path) of routes, through included routers (which FastAPI
    keeps as routes of their own); a route of an unknown kind fails."""
    for route in routes:
        inner = getattr(route, "original_router", None)
        if inner is not None:
            more = getattr(route.include_context, "prefix", "") or ""
            yield from _walk(inner.routes, prefix + more)
        elif isinstance(getattr(route, "path", None), str):
            for method in getattr(route, "methods", None) or ():
                yield method, prefix + route.path
        else:
            raise AssertionError(f"a route the suite cannot read: {route!r}")


def fill(template: str, view: str, doc_id: str = "1") -> str:
    """A concrete path of a route template."""
    path = template.replace("{view}", view).replace("{doc_id}", doc_id)
    assert "{" not in path, f"route {template}: a parameter the suite does not know"
    return path


# -- every store of a pipeline ------------------------------------------------------


def _redis_value(client: redis.Redis, key: str) -> Any:
    kind = client.type(key)
    if kind == "string":
        return client.get(key)
    if kind == "set":
        return sorted(client.smembers(key))
    if kind == "zset":
        return client.zrange(key, 0, -1, withscores=True)
    if kind == "hash":
        return client.hgetall(key)
    if kind == "list":
        return client.lrange(key, 0, -1)
    return kind


def dump_stores(config: Config, suffix: str, versions: bool = True) -> dict[str, Any]:
    """Every key, document and index the pipeline of ``suffix`` has in Redis,
    Elasticsearch and MongoDB, to compare before and after (without
    ``versions``: the documents only, as a reload at new versions leaves
    them)."""
    out: dict[str, Any] = {}
    rcfg: Any = config.sinks["redis"]
    with rcfg.connect(decode_responses=True) as client:
        keys = sorted(client.scan_iter(match=f"it{suffix}*", count=1000))
        if not versions:
            keys = [k for k in keys if "#v:" not in k]
        out["redis"] = {k: _redis_value(client, k) for k in keys}
    ecfg: Any = config.sinks["elasticsearch"]
    es = Elasticsearch(ecfg.hosts)
    try:
        pattern = f"{ecfg.index_prefix}*"
        es.indices.refresh(index=pattern)
        indices = es.indices.get_alias(index=pattern)
        hits = es.search(
            index=pattern, size=10000, version=True, query={"match_all": {}}
        )["hits"]["hits"]
        out["elasticsearch"] = {
            "indices": {k: sorted(v.get("aliases", {})) for k, v in indices.items()},
            "docs": sorted(
                (
                    h["_index"],
                    h["_id"],
                    h["_version"] if versions else 0,
                    json.dumps(h["_source"]),
                )
                for h in hits
            ),
        }
    finally:
        es.close()
    mcfg: Any = config.sinks["mongodb"]
    with pymongo.MongoClient(mcfg.uri.get_secret_value()) as mongo:
        db = mongo[mcfg.database]
        hidden = {} if versions else {"_v": 0}
        out["mongodb"] = {
            name: sorted(
                json.dumps({**d, **hidden}, default=str) for d in db[name].find()
            )
            for name in sorted(db.list_collection_names())
        }
    return out


def source_state(dsn: str) -> list[Any]:
    """The source's tables and a digest of every row, to see it unchanged."""
    with psycopg.connect(dsn, autocommit=True) as conn:
        tables = conn.execute(
            "SELECT table_name FROM information_schema.tables "
            "WHERE table_schema = 'public' ORDER BY 1"
        ).fetchall()
        state: list[Any] = []
        for (name,) in tables:
            if name.startswith("readside_"):  # heartbeats, signals
                continue
            digest = "SELECT md5(string_agg(t::text, '|' ORDER BY t::text))"
            rows = conn.execute(f'{digest} FROM "{name}" t').fetchone()
            state.append((name, rows))
        return state


# -- raw HTTP -------------------------------------------------------------------


def raw_request(
    base: str, head: str, body_parts: list[bytes], timeout: float = 5.0
) -> bytes:
    """Send ``head`` then the body parts until the server answers (it may
    answer before the body is whole); returns what it answered."""
    host, port = base.removeprefix("http://").split(":")
    with socket.create_connection((host, int(port)), timeout=timeout) as sock:
        sock.sendall(head.encode())
        sock.setblocking(False)
        data = b""
        deadline = time.monotonic() + timeout
        parts = list(body_parts)
        while time.monotonic() < deadline:
            try:
                chunk = sock.recv(65536)
                if not chunk:
                    break
                data += chunk
                if b"\r\n\r\n" in data:
                    break
            except BlockingIOError:
                pass
            if parts:
                try:
                    sock.sendall(parts[0])
                    parts.pop(0)
                except (BlockingIOError, BrokenPipeError, ConnectionResetError):
                    time.sleep(0.01)
            else:
                time.sleep(0.01)
        return data


# -- the watermark sampler ------------------------------------------------------


class SampleWatch:
    """Counts the watermark samples the API takes: each is one query of its
    connection to ``dbname`` (``api.watermark_dsn``), seen by polling
    ``pg_stat_activity`` for a new ``query_start``."""

    def __init__(self, admin_dsn: str, dbname: str) -> None:
        self.admin_dsn, self.dbname = admin_dsn, dbname
        self.starts: set[Any] = set()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def __enter__(self) -> SampleWatch:
        self._thread.start()
        return self

    def __exit__(self, *_exc: object) -> None:
        self._stop.set()
        self._thread.join(10)

    def _run(self) -> None:
        with psycopg.connect(self.admin_dsn, autocommit=True) as conn:
            while not self._stop.is_set():
                rows = conn.execute(
                    "SELECT pid, query_start FROM pg_stat_activity "
                    "WHERE datname = %s AND pid <> pg_backend_pid()",
                    (self.dbname,),
                ).fetchall()
                self.starts.update(r for r in rows if r[1] is not None)
                time.sleep(0.005)

    @property
    def samples(self) -> int:
        return len(self.starts)
