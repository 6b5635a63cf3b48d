"""A pipeline into OpenSearch, on the real stack (``stack up --with
opensearch``): a table view and an aggregate view with a nested level, kept
through inserts, updates and deletes, equal to their SQL definitions; the
index mapping derived from the column types; reads and searches (a numeric
range, a sort, a date range) through ReadClient and the HTTP API.
"""

from __future__ import annotations

import uuid
from typing import Any

import pytest
from apiserver import start_server
from harness import opensearch_client, opensearch_sink

from connectors.base import Stored, ViewTarget
from connectors.opensearch import OpenSearchSinkConfig
from connectors.opensearch.sink import OpenSearchSink
from connectors.reads import Range
from connectors.registry import build_sink
from pipeline.events import Upsert
from pipeline.fieldtypes import FieldType
from query import ReadClient

pytestmark = pytest.mark.integration

SCHEMA = """
CREATE TABLE items (
    id         integer PRIMARY KEY,
    name       text NOT NULL,
    price      numeric(10, 2),
    qty        integer,
    created_at timestamptz,
    attrs      jsonb
);
CREATE TABLE lines (
    id      integer PRIMARY KEY,
    item_id integer NOT NULL REFERENCES items (id),
    amount  numeric(12, 3)
);
ALTER TABLE lines REPLICA IDENTITY FULL;
INSERT INTO items VALUES
 (1, 'red widget', 8.20, 3, '2024-03-01 10:15:30.25+00', '{"c": "red"}'),
 (2, 'blue widget', 10.05, 1, '2024-03-02 00:00:00+00', NULL),
 (3, 'green gadget', 100.00, 7, '2024-03-05 08:00:00+02', '{"c": "green"}'),
 (4, 'grey gadget', 0.50, NULL, '2023-12-31 23:59:59+00', NULL);
INSERT INTO lines VALUES (1, 1, 8.200), (2, 1, 0.125), (3, 3, 99.990);
"""

VIEWS: dict[str, Any] = {
    "items": {"table": "public.items", "sinks": ["opensearch"]},
    "item_lines": {
        "kind": "aggregate",
        "table": "public.items",
        "fields": ["id", "name", "price"],
        "embed": {"lines": {"children": "public.lines", "on": {"item_id": "id"}}},
        "sinks": ["opensearch"],
    },
}


def test_opensearch_pipeline_converges_and_answers_reads_and_searches(
    make_pipeline: Any,
) -> None:
    p = make_pipeline(SCHEMA, ["public.items", "public.lines"], VIEWS)
    p.apply_connector()
    p.start_worker()
    p.wait_drained(timeout=120)
    p.sql("UPDATE items SET price = 9.99, name = 'red widget 2' WHERE id = 1")
    p.sql("DELETE FROM lines WHERE id = 2")
    p.sql("INSERT INTO lines VALUES (4, 2, 1.500)")
    p.sql("DELETE FROM items WHERE id = 4")
    p.wait_drained(timeout=120)
    assert not p.dead_letters()
    p.assert_converged()

    client = opensearch_client()
    try:
        alias = f"it-{p.suffix}-items"
        (index,) = client.indices.get_alias(name=alias).body
        assert index == f"{alias}-000001"
        props = client.request("GET", f"/{alias}/_mapping")[index]["mappings"][
            "properties"
        ]
    finally:
        client.close()
    assert props["price"]["type"] == "double"
    assert props["created_at"]["type"] == "date"
    assert props["qty"]["type"] == "integer"
    assert props["name"]["fields"]["keyword"]["type"] == "keyword"
    assert props["_deleted"] == {"type": "boolean"}

    with ReadClient(str(p.config_path)) as rc:
        one = rc.get("items", "1")
        assert one.store == "opensearch"
        assert one.doc is not None
        assert one.doc["price"] == "9.99"  # readside's exact text
        assert rc.get("items", "4").doc is None  # a tombstone reads as deleted
        agg = rc.get("item_lines", "1").doc
        assert agg is not None
        assert [line["amount"] for line in agg["lines"]] == ["8.200"]
        hits = rc.search("items", filters={"price": {"gte": 9}}, sort=["-price"])
        assert list(hits.docs) == ["3", "2", "1"]
        assert hits.total == 3
        hits = rc.search(
            "items", filters={"created_at": {"lt": "2024-03-02"}}, sort=["id"]
        )
        assert list(hits.docs) == ["1"]
        hits = rc.search("items", "gadget")
        assert list(hits.docs) == ["3"]

    server = start_server(p, {"anonymous": True})
    try:
        with server.client() as http:
            got = http.post(
                "/v1/views/items/search",
                json={"filters": {"price": {"gt": 1}}, "sort": ["price"]},
            )
            assert got.status_code == 200, got.text
            assert got.headers["X-Readside-Store"] == "opensearch"
            assert [h["id"] for h in got.json()["hits"]] == ["1", "2", "3"]
            got = http.get("/v1/views/items/docs/2")
            assert got.status_code == 200, got.text
            assert got.json()["doc"]["name"] == "blue widget"
    finally:
        server.stop()


def test_opensearch_derived_mapping_scaled_float_and_flat_object() -> None:
    """The node's mapper-extras module gives ``numeric: scaled_float``;
    hstore and ``json: flattened`` fields are ``flat_object``."""
    shape = {
        "price": FieldType("numeric", scale=2),
        "attrs": FieldType("object", pg="hstore"),
        "meta": FieldType("json", pg="jsonb"),
    }
    name = f"types-{uuid.uuid4().hex[:12]}"
    target = ViewTarget(
        "v", name, {"numeric": "scaled_float", "json": "flattened"}, lambda: shape
    )
    cfg = OpenSearchSinkConfig(
        type="opensearch", **opensearch_sink(), index_prefix="rs-test-", refresh=True
    )
    sink = build_sink("os-types", cfg, {"v": target})
    assert isinstance(sink, OpenSearchSink)
    sink.open()
    try:
        docs = {
            "1": {"price": "8.20", "attrs": {"a": "1"}, "meta": {"x": {"y": "z"}}},
            "2": {"price": "10.05", "attrs": {"b": "2"}, "meta": {"x": "w"}},
        }
        ops = [Upsert("v", k, 1, d) for k, d in docs.items()]
        assert sink.write(ops).applied == 2
        alias = sink.alias("v")
        found = sink._os_client().request("GET", f"/{alias}/_mapping")
        (index,) = found.values()
        props = index["mappings"]["properties"]
        assert props["price"]["type"] == "scaled_float"
        assert props["price"]["scaling_factor"] == 100
        assert props["attrs"] == {"type": "flat_object"}
        assert props["meta"] == {"type": "flat_object"}
        hits, total = sink.search("v", None, {"price": Range((("gte", 9),))}, [], 1, 10)
        assert (list(hits), total) == (["2"], 1)
        assert sink.fetch("v", ["1"])["1"] == Stored(1, docs["1"])
    finally:
        sink.drop("v")
        sink.close()
