"""Field types from PostgreSQL column types, and the Elasticsearch mappings
derived from them (docs/types.md)."""

from __future__ import annotations

from connectors.elasticsearch import mapping
from connectors.elasticsearch.reads import es_body
from pipeline.aggregate.catalog import Column, TableInfo
from pipeline.aggregate.shape import table_shape
from pipeline.fieldtypes import FieldType, column_type, level, numeric_paths
from pipeline.viewconfig import TableViewConfig
from query import validate


def test_column_type_numeric_keeps_scale_and_array_flag() -> None:
    typmod = (10 << 16) + 2 + 4  # numeric(10,2)
    assert column_type("numeric", typmod=typmod) == FieldType(
        "numeric", scale=2, pg="numeric"
    )
    assert column_type("numeric").scale is None
    assert column_type("numeric", array=True, typmod=typmod).array
    assert column_type("money").scale == 2


def test_column_type_kinds_of_common_types() -> None:
    kinds = {
        name: column_type(name).kind
        for name in (
            "int2",
            "int4",
            "int8",
            "float4",
            "float8",
            "bool",
            "timestamptz",
            "timestamp",
            "date",
            "text",
            "varchar",
            "uuid",
            "interval",
            "jsonb",
            "hstore",
            "bytea",
            "point",
        )
    }
    assert kinds == {
        "int2": "smallint",
        "int4": "integer",
        "int8": "bigint",
        "float4": "real",
        "float8": "double",
        "bool": "boolean",
        "timestamptz": "timestamp",
        "timestamp": "timestamp",
        "date": "date",
        "text": "text",
        "varchar": "text",
        "uuid": "keyword",
        "interval": "keyword",
        "jsonb": "json",
        "hstore": "object",
        "bytea": "binary",
        "point": "unknown",
    }
    assert column_type("mood", enum=True).kind == "enum"
    assert column_type("bit", typmod=1).kind == "boolean"
    assert column_type("bit", typmod=8).kind == "unknown"


SHAPE = {
    "id": FieldType("integer"),
    "price": FieldType("numeric", scale=2),
    "at": FieldType("timestamp"),
    "name": FieldType("text"),
    "mood": FieldType("enum"),
    "attrs": FieldType("json"),
    "shape": FieldType("unknown"),
    "lines": level(
        {"amount": FieldType("numeric", scale=3), "day": FieldType("date")},
        array=True,
    ),
}


def test_derived_mapping_per_kind_nested_levels_included() -> None:
    props = mapping.derived(SHAPE)
    assert props["price"] == {
        "type": "double",
        "ignore_malformed": True,
        "fields": {"exact": {"type": "keyword", "ignore_above": 256}},
    }
    assert props["at"]["type"] == "date"
    assert props["name"]["fields"]["keyword"]["type"] == "keyword"
    assert props["mood"] == {"type": "keyword"}
    assert "attrs" not in props  # json stays dynamic unless asked
    assert "shape" not in props
    lines = props["lines"]
    assert lines["type"] == "object"
    assert lines["properties"]["amount"]["type"] == "double"
    assert lines["properties"]["day"]["type"] == "date"


def test_derived_mapping_options_scaled_float_and_json() -> None:
    props = mapping.derived(SHAPE, numeric="scaled_float", json="flattened")
    assert props["price"]["type"] == "scaled_float"
    assert props["price"]["scaling_factor"] == 100
    assert props["lines"]["properties"]["amount"]["scaling_factor"] == 1000
    # a leaf over Lucene's 32,766-byte term is kept, not indexed
    assert props["attrs"] == {"type": "flattened", "ignore_above": 8191}
    unscaled = mapping.derived({"n": FieldType("numeric")}, numeric="scaled_float")
    assert unscaled["n"]["type"] == "double"  # no scale: no factor to use
    disabled = mapping.derived(SHAPE, json="disabled")
    assert disabled["attrs"] == {"type": "object", "enabled": False}


def test_user_mappings_win_field_by_field() -> None:
    user = {
        "dynamic": False,
        "properties": {
            "price": {"type": "keyword"},
            "lines": {"properties": {"amount": {"type": "float"}}},
        },
    }
    got = mapping.index_mappings(SHAPE, user)
    assert got["dynamic"] is False
    props = got["properties"]
    assert props["price"] == {"type": "keyword"}
    assert props["at"]["type"] == "date"
    assert props["lines"]["properties"]["amount"] == {"type": "float"}
    assert props["lines"]["properties"]["day"]["type"] == "date"
    assert mapping.index_mappings({}, None) == {"dynamic": True, "properties": {}}


def test_numeric_paths_reach_nested_levels() -> None:
    assert numeric_paths(SHAPE) == [("price",), ("lines", "amount")]


def test_search_range_filters_reach_elasticsearch_as_range_queries() -> None:
    filters = validate.search_filters(
        {"price": {"gte": 9, "lt": 100}, "day": {"lte": "2024-03-02"}, "s": "x"}
    )
    body = es_body(None, filters, [("price", "desc")])
    assert body["query"]["bool"]["filter"] == [
        {"range": {"price": {"gte": 9.0, "lt": 100.0}}},
        {"range": {"day": {"lte": "2024-03-02T00:00:00+00:00"}}},
        {"term": {"s": "x"}},
    ]


def test_table_shape_follows_the_views_field_selection() -> None:
    cols = {
        "id": Column("id", 23, "integer", "int4", "int4"),
        "price": Column(
            "price", 1700, "numeric(10,2)", "numeric", "numeric", typmod=(10 << 16) + 6
        ),
        "secret": Column("secret", 25, "text", "text", "text"),
        "tags": Column("tags", 1009, "text[]", "_text", "text", array=True),
    }
    info = TableInfo("public.t", cols, ["id"], "d")
    cfg = TableViewConfig(table="public.t", sinks=["s"], exclude=["secret"])
    got = table_shape(info, cfg)
    assert list(got) == ["id", "price", "tags"]
    assert got["price"] == FieldType("numeric", scale=2, pg="numeric")
    assert got["tags"] == FieldType("text", array=True, pg="text[]")
    only = table_shape(
        info, TableViewConfig(table="public.t", sinks=["s"], fields=["id"])
    )
    assert list(only) == ["id"]


def test_an_index_takes_its_derived_fields_with_a_thousand_to_spare() -> None:
    props = mapping.derived(SHAPE)
    # a text column: the text and its keyword; a level: itself and its own
    assert mapping.field_count({"name": props["name"]}) == 2
    assert mapping.field_count({"lines": props["lines"]}) == 1 + mapping.field_count(
        props["lines"]["properties"]
    )
    wide = {f"t{i}": {"type": "text", "fields": {"keyword": {}}} for i in range(600)}
    settings = mapping.index_settings({"properties": wide}, None)
    assert settings == {
        "index.number_of_shards": 1,
        "index.number_of_replicas": 0,
        "index.mapping.total_fields.limit": 2200,
    }
    # the user's settings win, nested or dotted, with or without "index."
    for user in (
        {"index": {"mapping": {"total_fields": {"limit": 5000}}}},
        {"mapping.total_fields.limit": 5000},
        {"index.mapping.total_fields.limit": 5000},
    ):
        got = mapping.index_settings(
            {"properties": wide}, {**user, "number_of_replicas": 1}
        )
        assert got["index.mapping.total_fields.limit"] == 5000, user
        assert got["index.number_of_replicas"] == 1
