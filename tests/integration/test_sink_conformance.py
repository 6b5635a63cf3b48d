"""The conformance suite against the real stores, plus per-store behaviour.

Needs the local stack (``readside stack up --with opensearch``) or the stores
named by ``READSIDE_REDIS_URL``, ``READSIDE_ES_URL``, ``READSIDE_OS_URL`` and
``READSIDE_MONGO_URI``. A store
that cannot be reached fails these tests; nothing is skipped or mocked. The
fifth kind, ``memory`` (connectors/memory.py), needs no server: it runs the
same cases, built through its entry point like the others; the outage cases
do not fit it (there is no server to be down).
"""

from __future__ import annotations

import os
import socket
import uuid
from collections.abc import Callable, Iterator, Mapping
from typing import Any

import pytest
from harness import mongodb_sink, opensearch_sink, redis_sink

from connectors import conformance
from connectors.base import Sink, Stored, ViewTarget
from connectors.elasticsearch.sink import ElasticsearchSink
from connectors.memory import MemorySink, MemorySinkConfig
from connectors.mongodb.sink import MongoSink
from connectors.opensearch import OpenSearchSinkConfig
from connectors.redis.sink import RedisSink
from connectors.registry import build_sink
from pipeline.config import ElasticsearchSinkConfig, MongoSinkConfig, RedisSinkConfig
from pipeline.errors import TransientError
from pipeline.events import Delete, DocumentOp, Upsert

pytestmark = pytest.mark.integration

#: (unset: the stack's Redis, as its ACL user)
REDIS_URL = os.environ.get("READSIDE_REDIS_URL")
ES_URL = os.environ.get("READSIDE_ES_URL", "http://127.0.0.1:19200")
#: (unset: the stack's node, over HTTPS as its internal user)
OS_URL = os.environ.get("READSIDE_OS_URL")
#: (unset: the stack's FerretDB, as its backend's MongoDB role)
MONGO_URI = os.environ.get("READSIDE_MONGO_URI")
VIEW = "orders"

AnySink = RedisSink | ElasticsearchSink | MongoSink | MemorySink
#: the in-process store every memory sink of these tests shares
MEMORY_STORE = "readside-test"


def mongo_uri() -> str:
    """``READSIDE_MONGO_URI``, else the stack's FerretDB with its login."""
    return MONGO_URI or str(mongodb_sink()["uri"])


def _config(
    kind: str, url: str | None = None, timeout_s: float | None = None, **extra: Any
) -> Any:
    if timeout_s is not None:
        extra["timeout_s"] = timeout_s
    if kind == "redis":
        given = url or REDIS_URL
        login = {} if given else redis_sink()
        return RedisSinkConfig(type="redis", **{"url": given, **login, **extra})
    if kind == "memory":
        return MemorySinkConfig(type="memory", store=MEMORY_STORE, **extra)
    if kind == "elasticsearch":
        return ElasticsearchSinkConfig(
            type="elasticsearch",
            hosts=[url or ES_URL],
            index_prefix="rs-test-",
            **extra,
        )
    if kind == "opensearch":
        url = url or OS_URL
        return OpenSearchSinkConfig(
            type="opensearch",
            **({"hosts": [url]} if url else opensearch_sink()),
            index_prefix="rs-test-",
            **extra,
        )
    return MongoSinkConfig(
        type="mongodb",
        uri=url or mongo_uri(),
        database="readside_test",
        **extra,
    )


MakeSink = Callable[..., AnySink]


@pytest.fixture
def make_sink() -> Iterator[MakeSink]:
    """Build opened sinks on fresh, uniquely named targets; drop them after."""
    made: list[AnySink] = []

    def make(
        kind: str, options: Mapping[str, Any] | None = None, **cfg: Any
    ) -> AnySink:
        """``cfg``: settings of the sink's configuration (``url``, ...)."""
        name = f"conf-{uuid.uuid4().hex[:12]}"
        target = ViewTarget(VIEW, name, dict(options or {}))
        sink = build_sink(f"{kind}-test", _config(kind, **cfg), {VIEW: target})
        assert isinstance(sink, RedisSink | ElasticsearchSink | MongoSink | MemorySink)
        made.append(sink)
        sink.open()
        return sink

    yield make
    for sink in made:
        sink.drop(VIEW)
        sink.close()


#: the kinds with a server (the outage cases run on these)
SERVER_KINDS = ["redis", "elasticsearch", "opensearch", "mongodb"]
KINDS = [*SERVER_KINDS, "memory"]


def _is_ferretdb(sink: MongoSink) -> bool:
    return "ferretdbVersion" in sink.db.client.admin.command("buildInfo")


@pytest.mark.parametrize("case", list(conformance.CASES))
@pytest.mark.parametrize("kind", KINDS)
def test_sink_conformance_case_passes(
    make_sink: MakeSink, kind: str, case: str, request: pytest.FixtureRequest
) -> None:
    sink = make_sink(kind)
    assert isinstance(sink, Sink)
    if case == "nested_arrays_round_trip" and isinstance(sink, MongoSink):
        if _is_ferretdb(sink):
            # Known store limitation (MongoDB stores them): the sink must
            # reject the document, and the case must fail on it.
            request.applymarker(
                pytest.mark.xfail(
                    reason="FerretDB v1 refuses arrays of arrays", strict=True
                )
            )
    conformance.CASES[case](sink, VIEW)


# -- outages ---------------------------------------------------------------


def _closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


_DEAD_URL = {
    "redis": "redis://127.0.0.1:{port}/0",
    "elasticsearch": "http://127.0.0.1:{port}",
    "opensearch": "https://127.0.0.1:{port}",
    "mongodb": "mongodb://127.0.0.1:{port}/",
}


@pytest.mark.parametrize("kind", SERVER_KINDS)
def test_sink_store_down_raises_transient(kind: str) -> None:
    url = _DEAD_URL[kind].format(port=_closed_port())
    cfg = _config(kind, url=url, timeout_s=0.5)
    sink = build_sink(kind, cfg, {VIEW: ViewTarget(VIEW, "down")})
    with pytest.raises(TransientError):
        sink.open()
    with pytest.raises(TransientError):
        sink.write([Upsert(VIEW, "1", 1, {"a": 1})])
    with pytest.raises(TransientError):
        sink.fetch(VIEW, ["1"])
    sink.close()
    sink.close()


# -- Redis -------------------------------------------------------------------


def test_redis_secondary_indexes_follow_updates_and_deletes(
    make_sink: MakeSink,
) -> None:
    sink = make_sink("redis", {"indexes": {"status": "eq", "total": "range"}})
    assert isinstance(sink, RedisSink)
    r, p = sink.client, sink.targets[VIEW].name
    ops: list[DocumentOp] = [
        Upsert(VIEW, "1", 1, {"status": "new", "total": "10.50"}),
        Upsert(VIEW, "2", 1, {"status": "new", "total": 3}),
        Upsert(VIEW, "3", 1, {"status": "paid", "total": None}),
    ]
    assert sink.write(ops).applied == 3
    assert r.smembers(f"{p}#idx:status:new") == {"1", "2"}
    assert r.zrange(f"{p}#idx:total", 0, -1, withscores=True) == [("2", 3), ("1", 10.5)]
    sink.write(
        [Upsert(VIEW, "1", 2, {"status": "paid", "total": 1}), Delete(VIEW, "2", 2)]
    )
    sink.write([Upsert(VIEW, "3", 0, {"status": "stale", "total": 99})])  # stale
    assert r.smembers(f"{p}#idx:status:new") == set()
    assert r.smembers(f"{p}#idx:status:paid") == {"1", "3"}
    assert r.exists(f"{p}#idx:status:stale") == 0
    assert r.zrange(f"{p}#idx:total", 0, -1, withscores=True) == [("1", 1.0)]


def test_redis_bad_range_value_rejected_rest_applied(make_sink: MakeSink) -> None:
    sink = make_sink("redis", {"indexes": {"total": "range"}})
    result = sink.write(
        [Upsert(VIEW, "1", 1, {"total": "abc"}), Upsert(VIEW, "2", 1, {"total": 2})]
    )
    assert result.applied == 1
    assert [op.doc_id for op, _ in result.rejected] == ["1"]


def test_redis_script_flushed_is_reloaded(make_sink: MakeSink) -> None:
    sink = make_sink("redis")
    assert isinstance(sink, RedisSink)
    sink.client.script_flush()
    assert sink.write([Upsert(VIEW, "1", 1, {"a": 1})]).applied == 1


def test_redis_ttl_options_expire_documents_and_tombstones(make_sink: MakeSink) -> None:
    sink = make_sink("redis", {"ttl_s": 100, "tombstone_ttl_s": 50, "hash_tag": True})
    assert isinstance(sink, RedisSink)
    sink.write([Upsert(VIEW, "1", 1, {"a": 1}), Delete(VIEW, "2", 1)])
    p = sink.targets[VIEW].name
    assert 0 < sink.client.ttl(f"{p}:{{1}}") <= 100
    assert 0 < sink.client.ttl(f"{p}#v:{{2}}") <= 50
    assert sink.ids(VIEW) == {"1"}


# -- Elasticsearch and OpenSearch (one sink) -----------------------------------

#: the kinds of the Elasticsearch sink's logic: Elasticsearch's own, and
#: OpenSearch's (connectors/opensearch)
SEARCH_KINDS = ["elasticsearch", "opensearch"]
#: what each store calls a document its mapping refuses
PARSING_ERROR = {
    "elasticsearch": "document_parsing_exception",
    "opensearch": "mapper_parsing_exception",
}


@pytest.mark.parametrize("kind", SEARCH_KINDS)
def test_elasticsearch_mapping_error_rejected_rest_applied(
    make_sink: MakeSink, kind: str
) -> None:
    mappings = {"properties": {"total": {"type": "long"}}}
    sink = make_sink(kind, {"mappings": mappings})
    result = sink.write(
        [Upsert(VIEW, "1", 1, {"total": "abc"}), Upsert(VIEW, "2", 1, {"total": 2})]
    )
    assert result.applied == 1
    assert [op.doc_id for op, _ in result.rejected] == ["1"]
    assert PARSING_ERROR[kind] in result.rejected[0][1]


@pytest.mark.parametrize("kind", SEARCH_KINDS)
def test_elasticsearch_refused_but_stale_op_counts_stale(
    make_sink: MakeSink, kind: str
) -> None:
    # Elasticsearch parses a body before it checks the version: a stale op
    # whose body the mapping refuses must not be dead-lettered (its replay
    # would fail forever, and the stored document is newer anyway).
    mappings = {"properties": {"total": {"type": "long"}}}
    sink = make_sink(kind, {"mappings": mappings})
    sink.write([Upsert(VIEW, "1", 20, {"total": 5})])
    result = sink.write(
        [Upsert(VIEW, "1", 10, {"total": "abc"}), Upsert(VIEW, "2", 10, {"total": "x"})]
    )
    assert result.stale == 1
    assert [op.doc_id for op, _why in result.rejected] == ["2"]
    assert sink.fetch(VIEW, ["1"])["1"] == Stored(20, {"total": 5})


@pytest.mark.parametrize("kind", SEARCH_KINDS)
def test_elasticsearch_routed_view_deletes_on_the_same_shard(
    make_sink: MakeSink, kind: str
) -> None:
    sink = make_sink(
        kind,
        {"routing_field": "tenant", "settings": {"number_of_shards": 3}},
    )
    assert isinstance(sink, ElasticsearchSink)
    docs = [Upsert(VIEW, str(i), 1, {"tenant": f"t{i}"}) for i in range(6)]
    assert sink.write(docs).applied == 6
    assert sink.write([Delete(VIEW, str(i), 2) for i in range(3)]).applied == 3
    assert sink.ids(VIEW) == {"3", "4", "5"}
    assert sink.fetch(VIEW, ["0", "4"]) == {
        "0": Stored(2, None),
        "4": Stored(1, {"tenant": "t4"}),
    }
    sink.client.indices.refresh(index=sink.alias(VIEW))
    count = sink.client.count(index=sink.alias(VIEW))["count"]
    assert count == 6  # tombstones replaced the documents, no duplicates


@pytest.mark.parametrize("kind", SEARCH_KINDS)
def test_elasticsearch_open_twice_keeps_index_behind_alias(
    make_sink: MakeSink, kind: str
) -> None:
    sink = make_sink(kind)
    assert isinstance(sink, ElasticsearchSink)
    sink.write([Upsert(VIEW, "1", 1, {"a": 1})])
    sink.open()
    alias = sink.alias(VIEW)
    assert list(sink.client.indices.get_alias(name=alias)) == [f"{alias}-000001"]
    assert sink.ids(VIEW) == {"1"}


# -- MongoDB -----------------------------------------------------------------


def test_mongodb_refused_document_mid_batch_rest_applied(make_sink: MakeSink) -> None:
    sink = make_sink("mongodb", {"indexes": ["status", ["total", -1]]})
    assert isinstance(sink, MongoSink)
    ops: list[DocumentOp] = [
        Upsert(VIEW, str(i), 5, {"status": "ok"}) for i in range(4)
    ]
    ops.insert(1, Upsert(VIEW, "big", 5, {"n": 2**64}))  # not an int64
    ops.insert(3, Upsert(VIEW, "res", 5, {"_v": 1}))  # reserved field
    result = sink.write(ops)
    assert result.applied == 4
    assert sorted(op.doc_id for op, _ in result.rejected) == ["big", "res"]
    assert sink.ids(VIEW) == {"0", "1", "2", "3"}
    names = set(sink.collection(VIEW).index_information())
    assert {"status_1", "total_-1"} <= names


@pytest.mark.parametrize("read_first", [False, True], ids=["insert", "read"])
def test_mongodb_writes_of_new_stored_and_stale_documents(
    make_sink: MakeSink, read_first: bool
) -> None:
    # FerretDB (the stack's) hangs on an update command of as many statements
    # as its pool: 10 per command there; MongoDB (READSIDE_MONGO_URI) takes a
    # batch's updates in one command. The sink reads the stored versions
    # first on MongoDB and inserts first on FerretDB; both ways run here.
    sink = make_sink("mongodb")
    assert isinstance(sink, MongoSink)
    assert sink.max_updates == (500 if MONGO_URI else 10)
    assert sink.read_first == bool(MONGO_URI)
    sink.read_first = read_first
    n = 2 * sink.max_updates + 3
    ids = [str(i) for i in range(n)]
    assert sink.write([Upsert(VIEW, i, 1, {"i": i}) for i in ids]).applied == n
    result = sink.write([Upsert(VIEW, i, 2, {"i": i + "'"}) for i in ids])
    assert (result.applied, result.stale, result.rejected) == (n, 0, [])
    result = sink.write([Upsert(VIEW, i, 1, {"i": "old"}) for i in ids])
    assert (result.applied, result.stale) == (0, n)
    # new, newer, stale and tombstoned documents in one batch
    mixed: list[DocumentOp] = [Upsert(VIEW, "new", 1, {"i": "new"})]
    mixed += [Upsert(VIEW, ids[0], 1, {"i": "old"}), Delete(VIEW, ids[1], 3)]
    mixed += [Upsert(VIEW, ids[2], 3, {"i": "3"})]
    result = sink.write(mixed)
    assert (result.applied, result.stale, result.rejected) == (3, 1, [])
    got = sink.fetch(VIEW, ["new", *ids[:3]])
    assert {i: (s.version, s.doc) for i, s in got.items()} == {
        "new": (1, {"i": "new"}),
        ids[0]: (2, {"i": ids[0] + "'"}),
        ids[1]: (3, None),
        ids[2]: (3, {"i": "3"}),
    }
    ids = ids[3:]
    stored = sink.fetch(VIEW, ids)
    assert {i: (s.version, s.doc) for i, s in stored.items()} == {
        i: (2, {"i": i + "'"}) for i in ids
    }


def test_mongodb_server_side_error_mid_batch_recovers(make_sink: MakeSink) -> None:
    # A statement the server refuses after the pre-check: FerretDB stops the
    # command there, MongoDB runs the rest; both must end the same way.
    sink = make_sink("mongodb")
    ops: list[DocumentOp] = [Upsert(VIEW, str(i), 5, {"i": i}) for i in range(4)]
    ops.insert(2, Upsert(VIEW, "bad", 5, {"a": {"$where": 1}}))
    result = sink.write(ops)
    stored = sink.fetch(VIEW, [str(i) for i in range(4)])
    assert {i: s.version for i, s in stored.items()} == {str(i): 5 for i in range(4)}
    assert result.applied + len(result.rejected) == 5
    assert result.applied >= 4
