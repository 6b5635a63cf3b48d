"""Numerics as Decimal128 in MongoDB (``numeric: decimal128``): written at
the shape's numeric paths, read back as readside's exact text, through the
real BSON codec; filters compare exactly."""

from __future__ import annotations

import bson
from bson.decimal128 import Decimal128

from connectors.mongodb.decimals import from_decimal128, query_number, to_decimal128
from connectors.mongodb.reads import mongo_query
from query.validate import where

DOC = {
    "id": 1,
    "price": "8.20",
    "name": "8.20",
    "decs": ["1.50", None, "0.00000001"],
    "huge": "123456789012345678901234567890123456.5",
    "special": "NaN",
    "lines": [{"amount": "0.125", "qty": 2}, {"amount": None}],
    "owner": {"credit": "-0.10"},
}
PATHS = [
    ("price",),
    ("decs",),
    ("huge",),
    ("special",),
    ("lines", "amount"),
    ("owner", "credit"),
]


def test_to_decimal128_converts_numeric_paths_only() -> None:
    got = to_decimal128(DOC, PATHS)
    assert got["price"] == Decimal128("8.20")
    assert got["name"] == "8.20"  # text, not in the paths
    assert got["decs"] == [Decimal128("1.50"), None, Decimal128("1E-8")]
    assert got["huge"] == DOC["huge"]  # 37 digits: stays exact text
    assert got["lines"][0] == {"amount": Decimal128("0.125"), "qty": 2}
    assert got["lines"][1] == {"amount": None}
    assert got["owner"]["credit"] == Decimal128("-0.10")
    assert DOC["price"] == "8.20"  # the input is not changed


def test_decimal128_round_trip_through_bson_gives_the_same_document() -> None:
    stored = bson.decode(bson.encode(to_decimal128(DOC, PATHS)))
    assert isinstance(stored["price"], Decimal128)
    assert from_decimal128(stored) == DOC


def test_mongo_query_with_decimal128_compares_numbers_exactly() -> None:
    got = mongo_query(where({"price": {"gte": 8.2, "lt": 100}, "qty": 2}), True)
    assert got["price"] == {"$gte": Decimal128("8.2"), "$lt": Decimal128("100.0")}
    assert got["qty"] == 2
    assert query_number(True) is True
    plain = mongo_query(where({"price": {"gte": 8.2}}))
    assert plain["price"] == {"$gte": 8.2}


def test_mongo_query_date_bounds_compare_with_dates_and_timestamps() -> None:
    got = mongo_query(
        where(
            {
                "day": {"gt": "2024-03-01", "lt": "2024-03-05"},
                "at": {"lte": "2024-03-02"},
            }
        )
    )
    assert got["day"] == {"$gt": "2024-03-01T00:00:00+00:00", "$lt": "2024-03-05"}
    assert got["at"] == {"$lte": "2024-03-02T00:00:00+00:00"}
