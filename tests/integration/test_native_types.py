"""Store-native types without hand-written mappings, on the real stack.

A table view and an aggregate view (with a nested level) of a table with
numeric, timestamp, date, text, enum, boolean, integer and array columns go
to Elasticsearch, Redis and MongoDB without any mapping in the config. Then:
the Elasticsearch index's mapping is derived from the column types (nested
level included) while the documents keep readside's exact text (``"8.20"``);
a numeric range and sort and a date range answer in Elasticsearch (search),
Redis (range indexes) and MongoDB (instants: ISO text compares in order);
every view still equals its SQL definition.
"""

from __future__ import annotations

import uuid
from typing import Any

import elasticsearch
import pytest
from apiserver import start_server
from harness import mongodb_sink

from connectors.base import ViewTarget
from connectors.mongodb import MongoSinkConfig
from connectors.mongodb.sink import MongoSink
from pipeline.errors import FatalError
from pipeline.events import Upsert
from pipeline.fieldtypes import FieldType
from query import ReadClient

pytestmark = pytest.mark.integration

SCHEMA = """
CREATE TYPE mood AS ENUM ('sad', 'ok', 'happy');
CREATE TABLE items (
    id         integer PRIMARY KEY,
    name       text NOT NULL,
    price      numeric(10, 2),
    weight     double precision,
    qty        integer,
    big        bigint,
    active     boolean,
    created_at timestamptz,
    local_at   timestamp,
    day        date,
    feeling    mood,
    tags       text[],
    ref        uuid
);
CREATE TABLE lines (
    id      integer PRIMARY KEY,
    item_id integer NOT NULL REFERENCES items (id),
    amount  numeric(12, 3),
    at      timestamptz
);
ALTER TABLE lines REPLICA IDENTITY FULL;
INSERT INTO items VALUES
 (1, 'red widget', 8.20, 1.5, 3, 9000000000, true, '2024-03-01 10:15:30.25+00',
  '2024-03-01 10:15:30', '2024-03-01', 'ok', '{a,b}',
  'a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11'),
 (2, 'blue widget', 10.05, 2.5, 1, 1, false, '2024-03-02 00:00:00+00',
  '2024-03-02 00:00:00', '2024-03-02', 'happy', '{b}', NULL),
 (3, 'green gadget', 100.00, 0.5, 7, 2, true, '2024-03-05 08:00:00+02',
  '2024-03-05 06:00:00', '2024-03-05', 'sad', '{}', NULL),
 (4, 'grey gadget', 0.50, NULL, NULL, NULL, NULL, '2023-12-31 23:59:59+00',
  NULL, '2023-12-31', NULL, NULL, NULL);
INSERT INTO lines VALUES (1, 1, 8.200, '2024-03-01 11:00+00'),
                         (2, 1, 0.125, '2024-03-01 12:00+00'),
                         (3, 3, 99.990, '2024-03-06 00:00+00');
"""

VIEWS: dict[str, Any] = {
    "items": {
        "table": "public.items",
        "sink_options": {
            "redis": {"indexes": {"price": "range", "created_at": "range"}},
        },
    },
    "item_lines": {
        "kind": "aggregate",
        "table": "public.items",
        "fields": ["id", "name", "price", "created_at"],
        "embed": {
            "lines": {"children": "public.lines", "on": {"item_id": "id"}},
        },
        "sinks": ["elasticsearch"],
    },
}

EXACT = {"type": "keyword", "ignore_above": 256}


def _mapping(p: Any, view: str) -> dict[str, Any]:
    es = elasticsearch.Elasticsearch("http://127.0.0.1:19200")
    alias = f"it-{p.suffix}-{view}"
    found = es.indices.get_mapping(index=alias).body
    (index,) = found.values()
    props: dict[str, Any] = index["mappings"]["properties"]
    es.close()
    return props


def _ids(answer: Any) -> list[str]:
    return list(answer.docs)


@pytest.fixture
def drained(make_pipeline):
    p = make_pipeline(SCHEMA, ["public.items", "public.lines"], VIEWS)
    p.apply_connector()
    p.start_worker()
    p.wait_drained(timeout=120)
    assert not p.dead_letters()
    es = elasticsearch.Elasticsearch("http://127.0.0.1:19200")
    es.indices.refresh(index=f"it-{p.suffix}-*")
    es.close()
    return p


def test_native_types_elasticsearch_mapping_is_derived_from_column_types(drained):
    p = drained
    props = _mapping(p, "items")
    assert props["price"] == {
        "type": "double",
        "ignore_malformed": True,
        "fields": {"exact": EXACT},
    }
    assert props["weight"]["type"] == "double"
    assert props["qty"]["type"] == "integer"
    assert props["big"]["type"] == "long"
    assert props["active"] == {"type": "boolean"}
    for name in ("created_at", "local_at", "day"):
        assert props[name]["type"] == "date", name
    assert props["name"]["type"] == "text"
    assert props["name"]["fields"]["keyword"]["type"] == "keyword"
    assert props["feeling"] == {"type": "keyword"}
    assert props["tags"]["type"] == "text"
    assert props["ref"]["type"] == "keyword"
    nested = _mapping(p, "item_lines")
    assert nested["price"]["type"] == "double"
    lines = nested["lines"]["properties"]
    assert lines["amount"]["type"] == "double"
    assert lines["amount"]["fields"] == {"exact": EXACT}
    assert lines["at"]["type"] == "date"
    assert lines["item_id"]["type"] == "integer"
    # The documents keep readside's exact text: equal to the SQL definition.
    with ReadClient(str(p.config_path), read_order=["elasticsearch"]) as client:
        doc = client.get("items", "1").doc
        assert doc["price"] == "8.20"
        assert doc["created_at"] == "2024-03-01T10:15:30.250000+00:00"
        agg = client.get("item_lines", "1").doc
        assert [line["amount"] for line in agg["lines"]] == ["8.200", "0.125"]
    p.assert_converged()


def test_native_types_numeric_and_date_ranges_and_sorts_in_every_store(drained):
    p = drained
    with ReadClient(str(p.config_path)) as client:
        # Elasticsearch: range filters and sorts in search.
        hits = client.search("items", filters={"price": {"gte": 9}}, sort=["-price"])
        assert _ids(hits) == ["3", "2"]
        assert hits.total == 2
        hits = client.search("items", sort=["price"])
        assert _ids(hits) == ["4", "1", "2", "3"]
        hits = client.search(
            "items",
            filters={"created_at": {"gte": "2024-03-02", "lt": "2024-03-05T06:00:00Z"}},
            sort=["created_at"],
        )
        assert _ids(hits) == ["2"]
        hits = client.search(
            "items", filters={"day": {"lte": "2024-03-02"}}, sort=["-day"]
        )
        assert _ids(hits) == ["2", "1", "4"]
        hits = client.search("item_lines", filters={"price": {"lt": 10}})
        assert sorted(_ids(hits)) == ["1", "4"]
        # Redis: its range indexes hold numerics and instants.
        got = client.filter("items", {"price": {"gt": 0.5, "lte": 10.05}})
        assert got.store == "redis"
        assert sorted(got.docs) == ["1", "2"]
        got = client.filter("items", {"created_at": {"gte": "2024-03-02"}})
        assert got.store == "redis"
        assert sorted(got.docs) == ["2", "3"]
        got = client.filter("items", {"price": {"gte": 0}}, sort=["-price"])
        assert got.store == "redis"
        assert _ids(got) == ["3", "2", "1", "4"]
        got = client.filter(
            "items", {"created_at": {"lt": "2024-03-05"}}, sort=["created_at"]
        )
        assert got.store == "redis"
        assert _ids(got) == ["4", "1", "2"]
        # MongoDB: instants compare in order as readside's ISO text.
        got = client.filter("items", {"day": {"gt": "2024-03-01"}})
        assert got.store == "mongodb"
        assert sorted(got.docs) == ["2", "3"]
        got = client.filter("items", {"created_at": {"lte": "2024-03-02"}})
        assert sorted(got.docs) == ["1", "2", "4"]
        got = client.filter("items", {"created_at": {"gt": "2024-03-02T00:00:00Z"}})
        assert sorted(got.docs) == ["3"]
        got = client.filter("items", {"active": True}, sort=["-created_at"])
        assert got.store == "mongodb"
        assert _ids(got) == ["3", "1"]
        got = client.filter("items", {"day": {"gte": "2023-01-01"}}, sort=["day"])
        assert _ids(got) == ["4", "1", "2", "3"]


def test_native_types_mongodb_decimal128_refused_by_ferretdb_with_a_clear_error():
    """``numeric: decimal128`` needs a server that stores Decimal128. The
    stack's FerretDB v1 does not (it drops the connection on the first one):
    the sink says so when it opens instead of retrying forever, and the plain
    sink of the same server still opens and writes."""
    shape = {"price": FieldType("numeric", scale=2)}
    targets = {
        "items": ViewTarget("items", "native_items", {"numeric": "decimal128"}),
    }
    cfg = MongoSinkConfig(
        type="mongodb",
        uri=mongodb_sink()["uri"],
        database=f"rs_native_{uuid.uuid4().hex[:8]}",
        timeout_s=5,
    )
    sink = MongoSink("docs", cfg, targets)
    try:
        with pytest.raises(FatalError, match="does not store Decimal128") as info:
            sink.open()
        assert "numeric: decimal128" in str(info.value)
        # The server is still up, and the default (text) sink works on it.
        plain = MongoSink(
            "docs",
            cfg,
            {"items": ViewTarget("items", "native_items", {}, lambda: shape)},
        )
        plain.open()
        result = plain.write([Upsert("items", "1", 1, {"price": "8.20"})])
        assert result.applied == 1
        assert plain.fetch("items", ["1"])["1"].doc == {"price": "8.20"}
        plain.db.client.drop_database(cfg.database)
        plain.close()
    finally:
        sink.close()


def test_native_types_http_api_range_filters_and_sorts(drained):
    p = drained
    server = start_server(p, {"anonymous": True})
    try:
        with server.client() as http:
            base = "/v1/views/items"
            got = http.post(
                f"{base}/search",
                json={"filters": {"price": {"lt": 100}}, "sort": ["-price"]},
            )
            assert got.status_code == 200, got.text
            assert [h["id"] for h in got.json()["hits"]] == ["2", "1", "4"]
            assert got.json()["hits"][0]["doc"]["price"] == "10.05"
            got = http.get(
                f"{base}/search",
                params={"range": ["price:lt:100", "day:gte:2024-03-01"], "sort": "day"},
            )
            assert got.status_code == 200, got.text
            assert [h["id"] for h in got.json()["hits"]] == ["1", "2"]
            got = http.post(
                f"{base}/filter",
                json={"where": {"price": {"gt": 1}}, "sort": ["price"]},
            )
            assert got.status_code == 200, got.text
            assert got.headers["X-Readside-Store"] == "redis"
            assert [h["id"] for h in got.json()["hits"]] == ["1", "2", "3"]
            got = http.post(
                f"{base}/filter",
                json={"where": {"day": {"lt": "2024-03-02"}}, "sort": ["-day"]},
            )
            assert got.headers["X-Readside-Store"] == "mongodb"
            assert [h["id"] for h in got.json()["hits"]] == ["1", "4"]
            bad = http.post(f"{base}/filter", json={"where": {"day": {"lt": "soon"}}})
            assert bad.status_code == 400
            assert bad.json()["reason"] == "value"
    finally:
        server.stop()
