"""Aggregate documents without services: the values' shortcuts and the nodes
built once, checked against psycopg's loaders and the one type mapping."""

from __future__ import annotations

import json
from typing import Any

import psycopg
import pytest
from psycopg.pq import Format

from pipeline.aggregate.catalog import Column, TableInfo
from pipeline.aggregate.documents import (
    JSON_OID,
    Converter,
    DocumentLoader,
    Values,
)
from pipeline.aggregate.tree import Node
from pipeline.types import pg_value_to_json

pytestmark = pytest.mark.unit


class Context:
    """The global type adapters, as a connection offers its own."""

    adapters = psycopg.adapters
    connection = None


#: (oid, SQL type, type name, texts as PostgreSQL prints them)
CASES: list[tuple[int, str, str, list[str]]] = [
    (25, "text", "text", ["", "héllo", 'a "quoted" \\ text', "1", "true"]),
    (1043, "character varying(20)", "varchar", ["x", " padded "]),
    (1042, "character(4)", "bpchar", ["ab  ", "abcd"]),
    (19, "name", "name", ["relname"]),
    (18, '"char"', "char", ["r"]),
    (
        1700,
        "numeric(30,10)",
        "numeric",
        [
            "0",
            "1.50",
            "-0.0000010000",
            "123456789012345678901234567890.1234567890",
            "0.0000000001",
            "100000000000000000000",
            "NaN",
            "Infinity",
            "-Infinity",
        ],
    ),
    (21, "smallint", "int2", ["0", "-32768", "32767"]),
    (23, "integer", "int4", ["-5", "2147483647"]),
    (20, "bigint", "int8", ["9223372036854775807", "-9223372036854775808"]),
    (26, "oid", "oid", ["3", "4294967295"]),
    (16, "boolean", "bool", ["true", "false"]),
    (
        1184,
        "timestamp with time zone",
        "timestamptz",
        ["2020-01-01 00:01:00+00", "2024-02-29 23:59:59.5+00"],
    ),
    (1082, "date", "date", ["2024-01-01"]),
    (2950, "uuid", "uuid", ["a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11"]),
    (3802, "jsonb", "jsonb", ['{"a": [1, 2.5, null]}', "12345678901234567890123"]),
    (1007, "integer[]", "_int4", ["{1,2,NULL}"]),
]


def reference(column: Column, text: str) -> Any:
    """What the loader and the mapping make of ``text``: the definition."""
    cls = psycopg.adapters.get_loader(column.oid, Format.TEXT)
    loaded = cls(column.oid, None).load(text.encode()) if cls is not None else text
    return pg_value_to_json(loaded)


@pytest.mark.parametrize(("oid", "sql_type", "name", "texts"), CASES)
def test_values_every_type_equals_loader_and_mapping(oid, sql_type, name, texts):
    column = Column("c", oid, sql_type, name)
    values = Values(Context())
    for text in texts:
        got = values.value(column, text)
        assert got == reference(column, text)
        assert type(got) is type(reference(column, text))
    assert values.value(column, None) is None


def test_values_bit1_is_debezium_boolean():
    column = Column("flag", 1560, "bit(1)", "bit")
    values = Values(Context())
    assert values.value(column, "1") is True
    assert values.value(column, "0") is False


def test_values_array_of_a_type_without_loader_is_a_list_of_texts():
    # an enum's array (its OID is the database's own): the labels, as a
    # table view's decoded event holds them, never the array's literal text
    column = Column("perks", 16390, "perk[]", "_perk", "perk", enum=True, array=True)
    values = Values(Context())
    assert values.value(column, '{"meet & greet",drink,NULL}') == [
        "meet & greet",
        "drink",
        None,
    ]
    assert values.value(column, "{}") == []


def _table(*columns: Column) -> TableInfo:
    return TableInfo("public.t", {c.name: c for c in columns}, [columns[0].name], "d")


def _node(kind: str, fields: list[tuple[str, Column]], alias: str = "t0") -> Node:
    table = _table(*(c for _, c in fields))
    return Node("views.x", alias, table, kind, {}, None, list(fields))


ID = Column("id", 23, "integer", "int4")
NAME = Column("name", 25, "text", "text")
PRICE = Column("price", 1700, "numeric(10,2)", "numeric")
ACTIVE = Column("active", 16, "boolean", "bool")
SINCE = Column("since", 1184, "timestamp with time zone", "timestamptz")


def test_converter_node_of_json_forms_is_its_own_document():
    line = _node("children", [("id", ID), ("price", PRICE), ("active", ACTIVE)], "t1")
    root = _node("root", [("id", ID), ("name", NAME)])
    root.relations.append(("lines", line))
    raw = {
        "id": 1,
        "name": "a",
        "lines": [{"id": 2, "price": "1.50", "active": True}],
    }
    converter = Converter(Context(), root)
    assert converter.document(root, raw) is raw


def test_converter_loads_values_in_field_order_with_relations():
    product = _node("parent", [("name", NAME)], "t2")
    line = _node("children", [("id", ID), ("at", SINCE)], "t1")
    root = _node("root", [("since", SINCE), ("id", ID)])
    root.relations += [("lines", line), ("product", product), ("none", product)]
    raw = {
        "since": "2020-01-01 00:01:00.25+00",
        "id": 7,
        "lines": [{"id": 1, "at": None}, {"id": 2, "at": "2024-01-01 00:00:00+00"}],
        "product": {"name": "p"},
        "none": None,
    }
    doc = Converter(Context(), root).document(root, raw)
    assert list(doc) == ["since", "id", "lines", "product", "none"]
    assert doc == {
        "since": "2020-01-01T00:01:00.250000+00:00",
        "id": 7,
        "lines": [
            {"id": 1, "at": None},
            {"id": 2, "at": "2024-01-01T00:00:00+00:00"},
        ],
        "product": {"name": "p"},
        "none": None,
    }


def test_converter_empty_children_become_empty_list():
    line = _node("children", [("at", SINCE)], "t1")
    root = _node("root", [("id", ID)])
    root.relations.append(("lines", line))
    doc = Converter(Context(), root).document(root, {"id": 1, "lines": None})
    assert doc == {"id": 1, "lines": []}


@pytest.mark.parametrize(
    "text",
    [
        '{"id" : 1, "name" : "x", "orders" : [{"id" : 9223372036854775807}]}',
        '{"s" : "\\u00e9\\n\\"", "b" : true, "n" : null, "e" : {}, "a" : []}',
        '{"lo" : -9223372036854775808, "s" : "\\ud800 stays text"}',
    ],
)
def test_document_loader_parses_as_json_does(text):
    loader = DocumentLoader(JSON_OID, None)
    assert loader.load(text.encode()) == json.loads(text)


def _value_node(kind: str, column: Column, alias: str) -> Node:
    """A ``value`` level: one column's values, no fields of its own."""
    node = Node("views.x", alias, _table(column), kind, {}, None)
    node.value = column
    return node


def test_converter_value_levels_load_each_value_as_its_column():
    times = _value_node("children", SINCE, "t1")
    ids = _value_node("children", ID, "t2")
    label = _value_node("parent", SINCE, "t3")
    names = _value_node("m2m", NAME, "t4")
    root = _node("root", [("id", ID)])
    root.relations += [("at", times), ("ids", ids), ("label", label)]
    root.relations += [("none", label), ("names", names), ("empty", times)]
    raw = {
        "id": 1,
        "at": ["2024-01-01 00:00:00+00", None, "2020-01-01 00:01:00.25+00"],
        "ids": [3, None, 1],
        "label": "2024-02-29 23:59:59.5+00",
        "none": None,
        "names": ["b", "a"],
        "empty": [],
    }
    doc = Converter(Context(), root).document(root, raw)
    assert list(doc) == ["id", "at", "ids", "label", "none", "names", "empty"]
    assert doc == {
        "id": 1,
        "at": [
            "2024-01-01T00:00:00+00:00",
            None,
            "2020-01-01T00:01:00.250000+00:00",
        ],
        "ids": [3, None, 1],
        "label": reference(SINCE, "2024-02-29 23:59:59.5+00"),
        "none": None,
        "names": ["b", "a"],
        "empty": [],
    }


def test_converter_value_levels_of_json_forms_keep_the_parsed_document():
    ids = _value_node("children", ID, "t1")
    name = _value_node("parent", NAME, "t2")
    root = _node("root", [("id", ID)])
    root.relations += [("ids", ids), ("name", name)]
    raw = {"id": 1, "ids": [2, 1], "name": "x"}
    assert Converter(Context(), root).document(root, raw) is raw


def test_converter_lifted_parents_fields_join_their_level_in_output_order():
    language = _node("parent", [("language", NAME), ("since", SINCE)], "t3")
    language.lift = True
    tags = _value_node("children", SINCE, "t4")
    film = _node("parent", [("title", NAME)], "t2")
    film.relations += [("lang", language), ("tags", tags)]
    film.lift = True
    root = _node("root", [("id", ID), ("at", SINCE)])
    root.relations.append(("film", film))
    # jsonb's order, as `||` gives it: the converter restores the level's own.
    raw = {
        "at": "2024-01-01 00:00:00+00",
        "id": 1,
        "tags": ["2020-01-01 00:01:00+00"],
        "since": "2024-02-29 23:59:59.5+00",
        "title": "Alpha",
        "language": "English",
    }
    converter = Converter(Context(), root)
    doc = converter.document(root, raw)
    assert list(doc) == root.output_names()
    assert list(doc) == ["id", "at", "title", "language", "since", "tags"]
    assert doc == {
        "id": 1,
        "at": "2024-01-01T00:00:00+00:00",
        "title": "Alpha",
        "language": "English",
        "since": reference(SINCE, "2024-02-29 23:59:59.5+00"),
        "tags": [reference(SINCE, "2020-01-01 00:01:00+00")],
    }
    # No parent row: its keys are there, null (the one-row left join).
    bare = {"id": 2, "at": None, "title": None, "language": None, "since": None}
    doc = converter.document(root, {**bare, "tags": []})
    assert doc == {**bare, "tags": []}


def test_converter_lifted_parent_of_json_forms_still_orders_its_level():
    film = _node("parent", [("title", NAME)], "t1")
    film.lift = True
    root = _node("root", [("id", ID)])
    root.relations.append(("film", film))
    raw = {"title": "Alpha", "id": 1}
    doc = Converter(Context(), root).document(root, raw)
    assert list(doc) == ["id", "title"]
    assert doc == raw
