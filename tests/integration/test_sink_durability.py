"""What each sink waits for before the worker may commit an offset, and the
tombstones that keep a replay from resurrecting a deleted document.

Needs the local stack. The Redis tests that need a server configured in a
particular way (append-only file off, fsync always, a replica) start their own
short-lived ``redis-server`` processes on free ports; the shared Redis is only
read (``CONFIG GET``), never reconfigured.
"""

from __future__ import annotations

import shutil
import subprocess
import threading
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pymongo.monitoring
import pytest
import redis
from harness import wait_for
from test_sink_conformance import (
    SEARCH_KINDS,
    VIEW,
    MakeSink,
    _closed_port,
    _config,
    mongo_uri,
)
from test_sink_conformance import make_sink as make_sink  # the fixture, by name

from connectors import conformance
from connectors.base import Stored, ViewTarget
from connectors.elasticsearch.sink import ElasticsearchSink
from connectors.mongodb.sink import MongoSink
from connectors.redis.sink import RedisSink
from connectors.registry import build_sink
from pipeline.errors import ConfigError, TransientError
from pipeline.events import Delete, DocumentOp, Upsert

pytestmark = pytest.mark.integration


# -- Redis: tombstones ----------------------------------------------------------


def test_redis_tombstone_default_never_expires(make_sink: MakeSink) -> None:
    sink = make_sink("redis")
    assert isinstance(sink, RedisSink)
    sink.write([Upsert(VIEW, "1", 10, {"a": 1})])
    sink.write([Delete(VIEW, "1", 20), Delete(VIEW, "never-seen", 20)])
    p = sink.targets[VIEW].name
    # -1: no expiry. A tombstone that expires lets any later replay of an
    # older upsert (compacted topic, dlq replay, a lagging worker) resurrect.
    assert sink.client.ttl(f"{p}#v:1") == -1
    assert sink.client.ttl(f"{p}#v:never-seen") == -1
    replay: list[DocumentOp] = [
        Upsert(VIEW, "1", 10, {"a": 1}),
        Upsert(VIEW, "never-seen", 5, {"a": 0}),
    ]
    assert sink.write(replay).stale == 2
    assert sink.ids(VIEW) == set()


def test_redis_tombstone_ttl_set_allows_resurrection_after_expiry(
    make_sink: MakeSink,
) -> None:
    # The documented trade-off of tombstone_ttl_s: once the tombstone has
    # expired, an older upsert replayed later is applied.
    sink = make_sink("redis", {"tombstone_ttl_s": 1})
    sink.write([Upsert(VIEW, "1", 10, {"a": 1}), Delete(VIEW, "1", 20)])
    assert sink.write([Upsert(VIEW, "1", 10, {"a": 1})]).stale == 1
    wait_for(lambda: not sink.fetch(VIEW, ["1"]), 5, "the tombstone to expire")
    assert sink.write([Upsert(VIEW, "1", 10, {"a": 1})]).applied == 1
    assert sink.ids(VIEW) == {"1"}


# -- Redis: waiting for the append-only file and for replicas -------------------


@pytest.fixture
def redis_server(tmp_path: Path) -> Iterator[Callable[..., str]]:
    """Start private redis-server processes; each call returns its URL."""
    binary = shutil.which("redis-server")
    assert binary, "redis-server not on PATH"
    procs: list[subprocess.Popen[bytes]] = []

    def start(*args: str) -> str:
        port = _closed_port()
        data = tmp_path / f"redis-{port}"
        data.mkdir()
        cmd = [binary, "--port", str(port), "--bind", "127.0.0.1"]
        cmd += ["--save", "", "--dir", str(data), *args]
        procs.append(subprocess.Popen(cmd, stdout=subprocess.DEVNULL))
        url = f"redis://127.0.0.1:{port}/0"
        client = redis.Redis.from_url(url)

        def up() -> bool:
            try:
                return bool(client.ping())
            except redis.RedisError:
                return False

        wait_for(up, 10, f"redis-server on port {port}")
        client.close()
        return url

    yield start
    for proc in procs:
        proc.terminate()
        proc.wait(10)


def _redis_version(url: str) -> tuple[int, ...]:
    client = redis.Redis.from_url(url, decode_responses=True)
    version = str(client.info("server")["redis_version"])
    client.close()
    return tuple(int(x) for x in version.split("."))


def _open_redis(url: str, **cfg: Any) -> RedisSink:
    target = ViewTarget(VIEW, "dur", {})
    sink = build_sink("cache", _config("redis", url=url, **cfg), {VIEW: target})
    assert isinstance(sink, RedisSink)
    sink.open()
    return sink


def test_redis_wait_aof_with_aof_off_refused_at_open(
    redis_server: Callable[..., str],
) -> None:
    url = redis_server("--appendonly", "no")
    with pytest.raises(ConfigError, match=r"sinks\.cache\.wait_aof.*appendonly"):
        _open_redis(url, wait_aof=True)


def test_redis_wait_aof_with_fsync_always_applies(
    redis_server: Callable[..., str],
) -> None:
    url = redis_server("--appendonly", "yes", "--appendfsync", "always")
    sink = _open_redis(url, wait_aof=True)
    assert sink.write([Upsert(VIEW, "1", 1, {"a": 1})]).applied == 1
    assert sink.write([Upsert(VIEW, "1", 1, {"a": 1})]).stale == 1
    sink.close()


def test_redis_wait_aof_everysec_needs_waitaof(
    redis_server: Callable[..., str],
) -> None:
    url = redis_server("--appendonly", "yes", "--appendfsync", "everysec")
    if _redis_version(url) >= (7, 2):
        sink = _open_redis(url, wait_aof=True)  # WAITAOF 1 0 after each batch
        assert sink.write([Upsert(VIEW, "1", 1, {"a": 1})]).applied == 1
        sink.close()
    else:
        # Redis 7.0 acknowledges before the everysec fsync and has no WAITAOF:
        # the promise cannot be kept, so the sink refuses to start.
        with pytest.raises(ConfigError, match=r"sinks\.cache\.wait_aof.*7\.2"):
            _open_redis(url, wait_aof=True)


def test_redis_shared_server_aof_setting_read(make_sink: MakeSink) -> None:
    # What the shared stack's Redis promises (read only, never reconfigured):
    # its AOF is on, so wait_aof is usable there as soon as the server can
    # fsync before acknowledging (appendfsync always) or wait (WAITAOF).
    sink = make_sink("redis")
    assert isinstance(sink, RedisSink)
    assert sink.client.config_get("appendonly") == {"appendonly": "yes"}


def test_redis_wait_replicas_without_replica_raises_transient(
    make_sink: MakeSink,
) -> None:
    sink = make_sink("redis", wait_replicas=1, wait_timeout_ms=100)
    with pytest.raises(TransientError, match="0 of 1 replica"):
        sink.write([Upsert(VIEW, "1", 1, {"a": 1})])
    # The retry finds the write already applied (stale) and still waits.
    with pytest.raises(TransientError, match="0 of 1 replica"):
        sink.write([Upsert(VIEW, "1", 1, {"a": 1})])


def test_redis_wait_replicas_with_replica_applies(
    redis_server: Callable[..., str],
) -> None:
    primary = redis_server("--repl-diskless-sync-delay", "0")
    port = primary.rsplit(":", 1)[1].split("/")[0]
    replica = redis_server("--replicaof", "127.0.0.1", port)
    on_replica = redis.Redis.from_url(replica, decode_responses=True)
    wait_for(
        lambda: on_replica.info("replication").get("master_link_status") == "up",
        20,
        "the replica to finish its first sync",
    )
    sink = _open_redis(primary, wait_replicas=1, wait_timeout_ms=5000)
    assert sink.write([Upsert(VIEW, "1", 1, {"a": 1})]).applied == 1
    # A retried batch that is all stale still waits (and passes).
    assert sink.write([Upsert(VIEW, "1", 1, {"a": 1})]).stale == 1
    assert on_replica.get("dur:1") == '{"a":1}'
    sink.close()
    on_replica.close()


# -- MongoDB: the write concern reaches every write command ---------------------


class _Commands(pymongo.monitoring.CommandListener):
    """Records write commands sent to collections named by a test."""

    def __init__(self) -> None:
        self.watch: set[str] = set()
        self.seen: list[dict[str, Any]] = []
        self._lock = threading.Lock()

    def started(self, event: pymongo.monitoring.CommandStartedEvent) -> None:
        name = event.command_name
        if name in ("insert", "update") and event.command.get(name) in self.watch:
            with self._lock:
                self.seen.append(dict(event.command))

    def succeeded(self, event: pymongo.monitoring.CommandSucceededEvent) -> None:
        return None

    def failed(self, event: pymongo.monitoring.CommandFailedEvent) -> None:
        return None


_COMMANDS = _Commands()
pymongo.monitoring.register(_COMMANDS)  # clients created from now on report


def _uri_with(query: str) -> str:
    uri = mongo_uri()
    return uri + ("&" if "?" in uri else "?") + query


def _write_concerns(sink: MongoSink) -> list[tuple[str, Any]]:
    _COMMANDS.watch.add(sink.targets[VIEW].name)
    _COMMANDS.seen.clear()
    sink.write([Upsert(VIEW, "1", 1, {"a": 1}), Upsert(VIEW, "2", 1, {"a": 2})])
    sink.write([Upsert(VIEW, "1", 2, {"a": 3})])  # an update of a stored doc
    verbs = [next(iter(c)) for c in _COMMANDS.seen]
    # FerretDB's write of a stored document tries it as an insert first
    stored = ["update"] if sink.read_first else ["insert", "update"]
    assert verbs == ["insert", *stored], verbs
    return [(next(iter(c)), c.get("writeConcern")) for c in _COMMANDS.seen]


def _each(want: Any, sink: MongoSink) -> list[tuple[str, Any]]:
    """What :func:`_write_concerns` returns when every command carries ``want``."""
    verbs = ["insert", "update"] if sink.read_first else ["insert", "insert", "update"]
    return [(verb, want) for verb in verbs]


def test_mongodb_uri_write_concern_sent_with_writes(make_sink: MakeSink) -> None:
    sink = make_sink("mongodb", url=_uri_with("w=majority&journal=true"))
    assert isinstance(sink, MongoSink)
    want = {"w": "majority", "j": True}
    assert _write_concerns(sink) == _each(want, sink)


def test_mongodb_sink_write_concern_overrides_uri(make_sink: MakeSink) -> None:
    wc = {"w": 1, "j": True, "wtimeout_ms": 2000}
    sink = make_sink("mongodb", url=_uri_with("w=majority"), write_concern=wc)
    assert isinstance(sink, MongoSink)
    want = {"w": 1, "j": True, "wtimeout": 2000}
    assert _write_concerns(sink) == _each(want, sink)


def test_mongodb_default_write_concern_left_to_server(make_sink: MakeSink) -> None:
    sink = make_sink("mongodb")
    assert isinstance(sink, MongoSink)
    assert _write_concerns(sink) == _each(None, sink)


def test_mongodb_unacknowledged_write_concern_refused() -> None:
    target = {VIEW: ViewTarget(VIEW, "unacked")}
    sink = build_sink("docs", _config("mongodb", url=_uri_with("w=0")), target)
    with pytest.raises(ConfigError, match=r"sinks\.docs.*w=0"):
        sink.open()
    sink.close()


# -- Elasticsearch: wait_for_active_shards ---------------------------------------


@pytest.mark.parametrize("kind", SEARCH_KINDS)
def test_elasticsearch_wait_for_active_shards_not_met_raises_transient(
    make_sink: MakeSink, kind: str
) -> None:
    # One node: the replica of this index is never assigned, so 2 active
    # copies cannot be had and the store must not acknowledge.
    settings = {"number_of_replicas": 1}
    sink = make_sink(
        kind,
        {"settings": settings},
        wait_for_active_shards=2,
        timeout_s=4,
    )
    with pytest.raises(TransientError, match="unavailable_shards_exception"):
        sink.write([Upsert(VIEW, "1", 1, {"a": 1})])


@pytest.mark.parametrize("kind", SEARCH_KINDS)
def test_elasticsearch_wait_for_active_shards_met_applies(
    make_sink: MakeSink, kind: str
) -> None:
    sink = make_sink(kind, wait_for_active_shards="all")
    assert sink.write([Upsert(VIEW, "1", 1, {"a": 1})]).applied == 1


# -- Elasticsearch: routed views keep a delete and later writes together ---------


@pytest.mark.parametrize("kind", SEARCH_KINDS)
def test_elasticsearch_routed_delete_of_absent_blocks_older_upsert(
    make_sink: MakeSink, kind: str
) -> None:
    sink = make_sink(
        kind,
        {"routing_field": "tenant", "settings": {"number_of_shards": 5}},
    )
    assert isinstance(sink, ElasticsearchSink)
    ids = [f"doc-{i}" for i in range(12)]
    # Deletes of documents the store never held (a filtered-out row, an
    # insert still in the dead-letter topic), then the older upserts replayed.
    assert sink.write([Delete(VIEW, i, 20) for i in ids]).applied == 12
    older = [Upsert(VIEW, i, 10, {"tenant": f"t-{i}", "n": 1}) for i in ids]
    result = sink.write(older)
    assert (result.applied, result.stale) == (0, 12)
    assert sink.ids(VIEW) == set()
    assert sink.fetch(VIEW, ids) == {i: Stored(20, None) for i in ids}
    # A newer upsert does come back, once, on its tenant's shard.
    newer = [Upsert(VIEW, i, 30, {"tenant": f"t-{i}", "n": 2}) for i in ids]
    assert sink.write(newer).applied == 12
    assert sink.ids(VIEW) == set(ids)
    sink.client.indices.refresh(index=sink.alias(VIEW))
    assert sink.client.count(index=sink.alias(VIEW))["count"] == 12
    hits = sink.client.search(index=sink.alias(VIEW), size=20, version=True)
    assert {h["_id"]: h.get("_routing") for h in hits["hits"]["hits"]} == {
        i: f"t-{i}" for i in ids
    }
    # ... and a delete after it lands on that shard.
    assert sink.write([Delete(VIEW, i, 40) for i in ids]).applied == 12
    assert sink.write(newer).stale == 12
    assert sink.ids(VIEW) == set()


@pytest.mark.parametrize("kind", SEARCH_KINDS)
def test_elasticsearch_routed_refused_upsert_keeps_the_tombstone(
    make_sink: MakeSink, kind: str
) -> None:
    mappings = {"properties": {"total": {"type": "long"}}}
    options = {"routing_field": "tenant", "mappings": mappings}
    sink = make_sink(kind, {**options, "settings": {"number_of_shards": 5}})
    ids = [f"doc-{i}" for i in range(12)]
    sink.write([Delete(VIEW, i, 20) for i in ids])
    refused = [Upsert(VIEW, i, 30, {"tenant": f"t-{i}", "total": "x"}) for i in ids]
    assert len(sink.write(refused).rejected) == 12  # to the dead-letter topic
    older = [Upsert(VIEW, i, 10, {"tenant": f"t-{i}", "total": 1}) for i in ids]
    assert sink.write(older).stale == 12
    assert sink.ids(VIEW) == set()


@pytest.mark.parametrize("kind", SEARCH_KINDS)
def test_elasticsearch_routed_conformance_case_passes(
    make_sink: MakeSink, kind: str
) -> None:
    sink = make_sink(
        kind,
        {"routing_field": "tenant", "settings": {"number_of_shards": 5}},
    )
    conformance.CASES["delete_of_unknown_blocks_older_upsert"](sink, VIEW)


# -- Elasticsearch: an unreadable shard is an outage, not a missing document ------


@pytest.mark.parametrize("kind", SEARCH_KINDS)
def test_elasticsearch_unreadable_shard_is_transient_not_missing(
    make_sink: MakeSink, kind: str
) -> None:
    """For a few seconds after a restart a shard is not readable yet, and
    ``mget`` answers an error for each of its ids. Read as "not found", a
    site saw live documents as deleted. The alias is pointed at an index
    whose shard can never be allocated, to hold that state."""
    sink = make_sink(kind)
    assert isinstance(sink, ElasticsearchSink)
    ids = [f"doc-{i}" for i in range(5)]
    assert sink.write([Upsert(VIEW, i, 1, {"n": 1}) for i in ids]).applied == 5
    assert set(sink.fetch(VIEW, ids)) == set(ids)
    alias = sink.alias(VIEW)
    live = list(sink.client.indices.get_alias(name=alias))
    stranded = f"{live[0]}-stranded"
    sink.client.indices.create(
        index=stranded,
        settings={
            "number_of_shards": 1,
            "number_of_replicas": 0,
            "index.routing.allocation.require._name": "no-such-node",
        },
        wait_for_active_shards="0",
    )
    move = [{"remove": {"index": i, "alias": alias}} for i in live]
    sink.client.indices.update_aliases(
        actions=[*move, {"add": {"index": stranded, "alias": alias}}]
    )
    try:
        with pytest.raises(TransientError, match="unreadable"):
            sink.fetch(VIEW, ids)
        with pytest.raises(TransientError):
            sink.ids(VIEW)
    finally:
        back = [{"add": {"index": i, "alias": alias}} for i in live]
        sink.client.indices.update_aliases(
            actions=[{"remove": {"index": stranded, "alias": alias}}, *back]
        )
        sink.client.indices.delete(index=stranded)
    assert set(sink.fetch(VIEW, ids)) == set(ids)


# -- Redis: eviction --------------------------------------------------------------


@pytest.mark.parametrize("policy", ["allkeys-lru", "allkeys-lfu", "allkeys-random"])
def test_redis_that_may_evict_any_key_refused_at_open(
    redis_server: Callable[..., str], policy: str
) -> None:
    """Such a server drops acknowledged documents and the versions guarding
    them when its memory is full (with allkeys-lru and 3 MB, 794 of 5,000
    written documents were left, and a replay at an older version was
    applied): the sink refuses it, naming the setting."""
    url = redis_server("--maxmemory", "3mb", "--maxmemory-policy", policy)
    with pytest.raises(
        ConfigError, match=rf"sinks\.cache: .*maxmemory-policy {policy}"
    ):
        _open_redis(url)


@pytest.mark.parametrize("policy", ["noeviction", "volatile-lru"])
def test_redis_that_evicts_no_key_of_readside_is_accepted(
    redis_server: Callable[..., str], policy: str
) -> None:
    url = redis_server("--maxmemory", "3mb", "--maxmemory-policy", policy)
    sink = _open_redis(url)
    assert sink.write([Upsert(VIEW, "1", 1, {"a": 1})]).applied == 1
    sink.close()


def test_redis_policy_changed_to_evict_while_writing_stops_the_writes(
    redis_server: Callable[..., str],
) -> None:
    """``CONFIG SET maxmemory-policy allkeys-lru`` on a server the sink
    already writes to: its next look at the policy refuses the write, so the
    worker stops before it commits anything Redis may drop."""
    url = redis_server("--maxmemory", "3mb", "--maxmemory-policy", "noeviction")
    sink = _open_redis(url)
    assert sink.write([Upsert(VIEW, "1", 1, {"a": 1})]).applied == 1
    redis.Redis.from_url(url).config_set("maxmemory-policy", "allkeys-lru")
    assert sink.write([Upsert(VIEW, "2", 1, {"a": 2})]).applied == 1  # not due yet
    sink._policy_due = 0.0  # the minute has passed
    with pytest.raises(ConfigError, match=r"maxmemory-policy allkeys-lru"):
        sink.write([Upsert(VIEW, "3", 1, {"a": 3})])
    assert sink.fetch(VIEW, ["3"]) == {}  # refused before the write
    sink.close()
