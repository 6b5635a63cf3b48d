"""Bad input is refused with QueryError before any store is contacted.

The client's stores point at a closed port: a call that reached a store would
raise StoreUnavailable (or hang until its timeout), not QueryError.
"""

from __future__ import annotations

from typing import Any

import pytest

from connectors.elasticsearch.reads import es_body
from connectors.mongodb.reads import mongo_query
from connectors.reads import Range
from pipeline.config import parse
from query import QueryError, ReadClient, UnknownView
from query.freshness import FreshnessCache
from query.validate import where

pytestmark = pytest.mark.unit

CLOSED = "127.0.0.1:9"


@pytest.fixture
def client() -> Any:
    cfg = parse(
        {
            "source": {"dsn": "postgresql://x@127.0.0.1:9/x", "tables": ["public.t"]},
            "kafka": {"bootstrap_servers": CLOSED},
            "sinks": {
                "redis": {
                    "type": "redis",
                    "url": f"redis://{CLOSED}/0",
                    "timeout_s": 0.2,
                },
                "es": {"type": "elasticsearch", "hosts": [f"http://{CLOSED}"]},
                "mongo": {"type": "mongodb", "uri": f"mongodb://{CLOSED}/"},
            },
            "views": {
                "t": {
                    "table": "public.t",
                    "sinks": ["redis", "es", "mongo"],
                    "sink_options": {"redis": {"indexes": {"status": "eq"}}},
                }
            },
        }
    )
    with ReadClient(cfg, freshness=FreshnessCache(cfg.kafka, "cp")) as c:
        yield c


@pytest.mark.parametrize(
    "bad",
    [
        {"$where": "sleep(1000)"},
        {"a": {"$ne": 1}},
        {"a": {"$gt": 1}},
        {"a.b": 1},
        {"a$b": 1},
        {"a": {"gte": {"$ne": 1}}},
        {"a": {"gte": "1"}},
        {"a": {"gte": True}},
        {"a": {}},
        {"a": [1, 2]},
        {"a": None},
        {"a": float("nan")},
        {"a": 10**30},  # beyond 64 bits: MongoDB's driver raises on it
        {"a": -(2**63) - 1},
        {"a": {"gte": 10**400}},  # float() of it raises OverflowError
        {"a": {"gte": "0001-01-01T00:00:00+01:00"}},  # before year 1 in UTC
        {"_deleted": True},
        {"": 1},
        {1: 1},
        {},
    ],
)
def test_filter_injection_refused_before_store(client: Any, bad: Any) -> None:
    with pytest.raises(QueryError):
        client.filter("t", bad)


@pytest.mark.parametrize("limit", [0, -1, 1001, 10**9, "10", True])
def test_filter_bad_limit_refused(client: Any, limit: Any) -> None:
    with pytest.raises(QueryError) as info:
        client.filter("t", {"status": "open"}, limit=limit)
    assert info.value.reason == "size"


@pytest.mark.parametrize(
    "kwargs",
    [
        {"size": 1001},
        {"size": 10**9},
        {"size": 0},
        {"page": 0},
        {"page": 100, "size": 1000},
        {"filters": {"$script": 1}},
        {"filters": {"a": {"script": "x"}}},
        {"filters": {"a.b": 1}},
        {"filters": {"a": []}},
        {"filters": {"a": [{"$ne": 1}]}},
        {"sort": ["$x"]},
        {"sort": "a"},
        {"sort": [{"a": {"script": 1}}]},
        {"query": {"script": "x"}},
        {"query": "x" * 5000},
    ],
)
def test_search_bad_input_refused_before_store(client: Any, kwargs: Any) -> None:
    with pytest.raises(QueryError):
        client.search("t", **kwargs)


@pytest.mark.parametrize(
    "ids", ["abc", [None], [""], [{"$ne": 1}], ["x"] * 1001, [10**600]]
)
def test_get_many_bad_ids_refused(client: Any, ids: Any) -> None:
    with pytest.raises(QueryError):
        client.get_many("t", ids)


def test_unknown_view_refused(client: Any) -> None:
    with pytest.raises(UnknownView) as info:
        client.get("nope", "1")
    assert info.value.status == 404


def test_mongo_query_plain_values_and_ranges_tombstones_excluded() -> None:
    got = mongo_query(where({"status": "open", "price": {"gte": 1, "lt": 5}}))
    assert got == {
        "status": "open",
        "price": {"$gte": 1.0, "$lt": 5.0},
        "_deleted": {"$ne": True},
    }


def test_es_body_no_leading_wildcard_tombstones_excluded() -> None:
    body = es_body("foo*", {"status": "open", "tag": ["a", "b"]}, [("price", "desc")])
    qs = body["query"]["bool"]["must"][0]["query_string"]
    assert qs["allow_leading_wildcard"] is False
    assert body["query"]["bool"]["must_not"] == [{"term": {"_deleted": True}}]
    assert body["query"]["bool"]["filter"] == [
        {"term": {"status": "open"}},
        {"terms": {"tag": ["a", "b"]}},
    ]
    assert body["sort"] == [{"price": {"order": "desc"}}]
    assert "script" not in repr(body)


def test_read_order_default_and_custom(client: Any) -> None:
    assert client.ordered_sinks("t") == ["redis", "mongo", "es"]
    client.read_order = ("elasticsearch", "redis")
    assert client.ordered_sinks("t") == ["es", "redis"]


def test_range_bounds_take_dates_and_timestamps_in_readsides_form() -> None:
    got = where(
        {
            "day": {"gte": "2024-03-01"},
            "at": {"lt": "2024-03-01T12:00:00+02:00", "gt": "2024-02-01T00:00:00"},
        }
    )
    assert got["day"] == Range((("gte", "2024-03-01"),))
    assert got["at"] == Range(
        (("lt", "2024-03-01T10:00:00+00:00"), ("gt", "2024-02-01T00:00:00+00:00"))
    )


@pytest.mark.parametrize(
    "bad",
    [
        {"a": {"gte": "yesterday"}},
        {"a": {"gte": "2024-13-01"}},
        {"a": {"gte": 1, "lt": "2024-03-01"}},
        {"a": {"gte": "2024-03-01" + "0" * 40}},
    ],
)
def test_range_bad_instants_refused(bad: Any) -> None:
    with pytest.raises(QueryError) as info:
        where(bad)
    assert info.value.reason == "value"
