"""The JSON text of a document as the Redis and Elasticsearch sinks write it:
the same value json would write, or the same refusal."""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from datetime import date, datetime

import pytest

from connectors.redis.keys import to_json
from pipeline.errors import BadRecord
from pipeline.events import UNCHANGED
from pipeline.jsonforms import document_json

pytestmark = pytest.mark.unit

DOCS = [
    {"id": 1, "title": "ü ✓ 字", "price": "12.50", "tags": ["a", "b"], "ok": True},
    {"nested": {"lines": [{"qty": 2, "note": None}], "empty": {}}, "f": 1e16},
    {"big": 2**70, "small": -(2**63)},  # beyond 64 bits: json writes it
    {"floats": [0.1, -2.5e-300, 1.7976931348623157e308], "t": (1, "x")},
    {1: "an integer key", "k": "v"},  # json writes the key as a string
    {"quote": 'a "b" \\ c\n\t', "ctrl": "\x00\x1f"},
]


@pytest.mark.parametrize("doc", DOCS)
def test_the_same_value_json_writes(doc):
    text = document_json(doc)
    assert json.loads(text) == json.loads(json.dumps(doc))


@pytest.mark.parametrize("doc", DOCS)
def test_redis_values_are_the_same_text_in_utf8(doc):
    """Redis's values go as bytes (orjson's own, or json's text encoded):
    the same bytes a client would send for the text."""
    assert to_json(doc) == document_json(doc).encode("utf-8")


@pytest.mark.parametrize(
    "value", [math.nan, math.inf, -math.inf, [1.0, math.nan], {"x": {"y": math.inf}}]
)
def test_a_float_json_has_no_number_for_is_refused(value):
    with pytest.raises(ValueError, match="NaN or infinity"):
        document_json({"v": value, "n": None})
    with pytest.raises(BadRecord, match="not JSON serializable"):
        to_json({"v": value})


def test_a_null_alone_is_written():
    assert document_json({"v": None, "w": [None]}) == '{"v":null,"w":[null]}'


@dataclass
class _Row:
    a: int


@pytest.mark.parametrize(
    "value", [datetime(2026, 1, 1), date(2026, 1, 1), _Row(1), UNCHANGED, {1, 2}]
)
def test_what_json_refuses_is_refused(value):
    with pytest.raises(TypeError):
        json.dumps({"v": value})
    with pytest.raises(TypeError):
        document_json({"v": value})
    with pytest.raises(BadRecord, match="not JSON serializable"):
        to_json({"v": value})
