"""The attacks of ``test_attacks``: what each parameter is tried with.

Each table says what the server must answer: refused (400 and the reason),
or, for values that are only text to every store, nothing found.
"""

from __future__ import annotations

from typing import Any

#: ids are any text a store holds (a row's key may hold ``*``): refused are
#: control characters and overlong ones; patterns and separators are plain
#: text, read by exact key (``1*`` must not find ``1`` or ``10``)
BAD_IDS = ["a\x00b", "x" * 513]
LITERAL_IDS = [
    *("*", "?", "1*", "[1-9]", "\\*"),
    *("1:2", ":1", "1#idx:status:open", "#v:1", "@gen", "1~2", "$where", "é" * 300),
]
#: filter conditions: operators, paths and non-scalars are refused
BAD_WHERE: list[tuple[dict[str, Any], str]] = [
    ({"$where": "sleep(100)"}, "field"),
    ({"$or": [{"status": "open"}]}, "field"),
    ({"status.$ne": 1}, "field"),
    ({"a.b": 1}, "field"),
    ({"_id": "1"}, "field"),
    ({"_deleted": True}, "field"),
    ({"status": {"$gt": ""}}, "operator"),
    ({"status": {"$ne": "x"}}, "operator"),
    ({"name": {"$regex": ".*"}}, "operator"),
    ({"price": {"gte": {"$gt": 1}}}, "value"),
    ({"status": ["open", "sold"]}, "value"),
    ({"status": None}, "value"),
    ({"name": {"script": {"source": "1"}}}, "operator"),
    ({"name": 10**30}, "value"),  # above 64 bits: no store holds it
    ({"price": 10**30}, "value"),
    ({"price": {"gte": 10**400}}, "value"),
    ({"price": {"gte": "0001-01-01T00:00:00+01:00"}}, "value"),  # before year 1 in UTC
    ({"price": {"lt": "9999-12-31T23:59:59-01:00"}}, "value"),
    ({"price": {"gte": "2024-03-01", "lt": 5}}, "value"),
]
#: filter bodies beyond ``where``
BAD_FILTER_BODIES: list[tuple[dict[str, Any], str]] = [
    ({"where": {"status": "open"}, "sort": ["_script"]}, "field"),
    ({"where": {"status": "open"}, "sort": ["price.$x"]}, "field"),
    ({"where": {"status": "open"}, "sort": [{"$natural": 1}]}, "request"),
    ({"where": {"status": "open"}, "$where": "1"}, "request"),
]
#: filter values that are only text to every store: nothing matches
LITERAL_WHERE = [
    {"status": "*"},
    {"status": "open*"},
    {"status": "[o]pen"},
    {"status": "open:x"},
    {"status": "x#idx:price"},
    {"status": '{"$gt": ""}'},
    {"name": "*"},
    {"name": "$where"},
    {"name": '{"$ne": null}'},
]
BAD_SEARCH: list[tuple[str, dict[str, Any], str]] = [
    ("POST", {"json": {"script": {"source": "1"}}}, "request"),
    ("POST", {"json": {"query": {"script": {"source": "1"}}}}, "request"),
    ("POST", {"json": {"filters": {"price": {"script": {"source": "1"}}}}}, "operator"),
    ("POST", {"json": {"filters": {"_source": "x"}}}, "field"),
    ("POST", {"json": {"filters": {"$where": "1"}}}, "field"),
    ("POST", {"json": {"filters": {"status": [{"$gt": ""}]}}}, "value"),
    ("POST", {"json": {"sort": ["_script"]}}, "field"),
    ("POST", {"json": {"sort": [{"_script": {"script": "1"}}]}}, "sort"),
    ("POST", {"json": {"query": "name:*dget"}}, "query"),
    ("POST", {"json": {"query": "x" * 2001}}, "query"),
    ("GET", {"params": {"script": "doc['price']"}}, "parameter"),
    ("GET", {"params": {"filter": "_id:1"}}, "field"),
    ("GET", {"params": {"filter": "price.$gt:1"}}, "field"),
    ("GET", {"params": {"sort": "_script"}}, "field"),
    ("GET", {"params": {"range": "price:$gt:1"}}, "operator"),
    ("GET", {"params": {"range": "_id:gte:1"}}, "field"),
    ("GET", {"params": {"range": "price:gte:inf"}}, "value"),
    ("GET", {"params": {"range": "price:gte:nan"}}, "value"),
    ("GET", {"params": {"range": "price:gte"}}, "filters"),
    ("GET", {"params": {"range": "price:gte:9999-12-31T23:59:59-01:00"}}, "value"),
    ("POST", {"json": {"filters": {"price": {"$gt": 1}}}}, "operator"),
    ("POST", {"json": {"filters": {"price": {"gte": {"script": "1"}}}}}, "value"),
]
#: query_string text reaching no tombstone, no script and no store error
SEARCH_TEXT = [
    '{"script": {"source": "1"}}',
    "_deleted:true",
    "id:7",
    "_id:7",
    "name:/.*/",
    "*:*",
    "name:(",
    "status:open OR _deleted:true",
]

BAD_LSN = [
    "zz/1",
    "-5",
    "",
    " ",
    "1/2/3",
    "1/",
    "/1",
    "0x10",
    "1e5",
    "FFFFFFFFF/0",
    "18446744073709551616",
    "99999999999999999999999",
    "0/0;DROP TABLE products",
    '{"$gt": ""}',
    "*",
    "\u00b2",  # a digit to str.isdigit, not to int()
    "\u0661\u0662",  # Arabic-Indic digits
    "\uff10/\uff10",  # full-width
]
