"""The compiled Avro reader against fastavro's, the reference, on every type.

Each case writes values with ``fastavro.schemaless_writer`` and expects the
compiled reader to return exactly what ``fastavro.schemaless_reader`` does,
and to end where the datum ends. Then the datums fastavro's writer never
writes (negative block counts, long varints for small numbers) and broken
ones (truncated, out-of-range branches and symbols, over-long varints).
"""

from __future__ import annotations

import io
import math
import random
import struct
from typing import Any

import fastavro
import pytest

from pipeline.decode import FakeMessage
from pipeline.errors import BadRecord
from pipeline.source.avro_converter import AvroConverter, datum_reader
from pipeline.source.avro_reader import MAX_LOOP_DEPTH, Unsupported, compile_reader

pytestmark = pytest.mark.unit

_READ_ERRORS = (IndexError, EOFError, ValueError, struct.error)

EVERY_TYPE = {
    "type": "record",
    "name": "ns.Every",
    "fields": [
        {"name": "n", "type": "null"},
        {"name": "b", "type": "boolean"},
        {"name": "i", "type": "int"},
        {"name": "l", "type": "long"},
        {"name": "f", "type": "float"},
        {"name": "d", "type": "double"},
        {"name": "s", "type": "string"},
        {"name": "y", "type": "bytes"},
        {
            "name": "e",
            "type": {"type": "enum", "name": "Mood", "symbols": ["a", "b", "c"]},
        },
        {"name": "x", "type": {"type": "fixed", "name": "Four", "size": 4}},
        {"name": "opt", "type": ["null", "long"]},
        {"name": "multi", "type": ["null", "long", "string", "Mood", "Four"]},
        {"name": "arr", "type": {"type": "array", "items": ["null", "string"]}},
        {
            "name": "m",
            "type": {"type": "map", "values": {"type": "array", "items": "int"}},
        },
        {
            "name": "inner",
            "type": {
                "type": "record",
                "name": "Inner",
                "fields": [
                    {"name": "k", "type": "long"},
                    {"name": "t", "type": "string"},
                ],
            },
        },
        {"name": "inners", "type": {"type": "array", "items": "Inner"}},
        {"name": "again", "type": ["null", "Inner"]},
        {"name": "nulls", "type": {"type": "array", "items": "null"}},
    ],
}

INT_EDGES = [0, -1, 1, 63, -64, 64, -65, 2**31 - 1, -(2**31)]
LONG_EDGES = [*INT_EDGES, 2**53 + 1, 2**62, 2**63 - 1, -(2**63), 1717171717000000000]
FLOAT_EDGES = [
    0.0,
    -0.0,
    1.5,
    3.4028234663852886e38,
    1e-45,
    math.inf,
    -math.inf,
    math.nan,
]
TEXT_EDGES = ["", "a", "é☃𝄞", "x" * 63, "y" * 64, "z" * 300, "'\"\\\n{}"]


def _value(rng: random.Random, n: int) -> dict[str, Any]:
    pick = rng.choice
    return {
        "n": None,
        "b": n % 2 == 0,
        "i": pick(INT_EDGES),
        "l": pick(LONG_EDGES),
        "f": pick(FLOAT_EDGES),
        "d": pick([*FLOAT_EDGES, 0.1, 1e308, 5e-324]),
        "s": pick(TEXT_EDGES),
        "y": bytes(rng.randrange(256) for _ in range(rng.randrange(0, 200))),
        "e": pick(["a", "b", "c"]),
        "x": bytes([255, 0, n % 256, 128]),
        "opt": pick([None, *LONG_EDGES]),
        "multi": pick([None, 7, -(2**40), "text", "c", b"\x00\x01\x02\x03"]),
        "arr": [pick([None, *TEXT_EDGES]) for _ in range(rng.randrange(0, 150))],
        "m": {
            pick(TEXT_EDGES) + str(k): [pick(INT_EDGES)] * k
            for k in range(rng.randrange(4))
        },
        "inner": {"k": pick(LONG_EDGES), "t": pick(TEXT_EDGES)},
        "inners": [{"k": k, "t": str(k)} for k in range(rng.randrange(3))],
        "again": pick([None, {"k": -5, "t": "again"}]),
        "nulls": [None] * rng.randrange(5),
    }


def _write(schema: Any, value: Any) -> bytes:
    out = io.BytesIO()
    fastavro.schemaless_writer(out, schema, value)
    return out.getvalue()


def _fastavro(schema: Any, datum: bytes) -> Any:
    return fastavro.schemaless_reader(io.BytesIO(datum), schema, None)


def _same(a: Any, b: Any) -> bool:
    """Equal, with NaN equal to NaN and 0.0 told from -0.0."""
    if isinstance(a, float) and isinstance(b, float):
        return struct.pack("<d", a) == struct.pack("<d", b)
    if isinstance(a, dict) and isinstance(b, dict):
        return list(a) == list(b) and all(_same(a[k], b[k]) for k in a)
    if isinstance(a, list) and isinstance(b, list):
        return len(a) == len(b) and all(_same(x, y) for x, y in zip(a, b, strict=True))
    return type(a) is type(b) and a == b


def test_reads_every_type_as_fastavro_does() -> None:
    parsed = fastavro.parse_schema(EVERY_TYPE)
    read = compile_reader(parsed)
    rng = random.Random(5)
    for n in range(400):
        datum = _write(parsed, _value(rng, n))
        value, end = read(datum, 0)
        assert end == len(datum)
        assert _same(value, _fastavro(parsed, datum)), n


def test_reads_from_an_offset_and_stops_at_the_datum_end() -> None:
    parsed = fastavro.parse_schema(["null", "string"])
    datum = b"HEADR" + _write(parsed, "text") + b"trailing"
    assert compile_reader(parsed)(datum, 5) == ("text", len(datum) - len(b"trailing"))


def test_recursive_record() -> None:
    parsed = fastavro.parse_schema(
        {
            "type": "record",
            "name": "Node",
            "fields": [
                {"name": "v", "type": "long"},
                {"name": "next", "type": ["null", "Node"]},
                {"name": "kids", "type": {"type": "array", "items": "Node"}},
            ],
        }
    )
    value = {
        "v": 1,
        "next": {"v": 2, "next": None, "kids": []},
        "kids": [{"v": 3, "next": None, "kids": [{"v": 4, "next": None, "kids": []}]}],
    }
    datum = _write(parsed, value)
    assert compile_reader(parsed)(datum, 0) == (value, len(datum))


def _varint(n: int) -> bytes:
    out = bytearray()
    while True:
        out.append((n & 0x7F) | (0x80 if n > 0x7F else 0))
        n >>= 7
        if not n:
            return bytes(out)


def _zigzag(n: int) -> bytes:
    return _varint((n << 1) ^ (n >> 63))


def test_negative_block_counts_and_long_varints_fastavro_reads_too() -> None:
    """Blocks with a byte size (negative count) and non-minimal varints are
    valid Avro that fastavro's writer never produces."""
    parsed = fastavro.parse_schema(
        {"type": "map", "values": {"type": "array", "items": ["null", "long"]}}
    )
    items = _zigzag(1) + _zigzag(300) + _zigzag(0)  # branch 1: 300; branch 0: null
    array = _zigzag(-2) + _zigzag(len(items)) + items + _zigzag(0)
    datum = (
        _zigzag(-1)
        + _zigzag(len(array) + 2)  # a map block of one, with its size
        + _zigzag(1)
        + b"k"
        + array
        + b"\x82\x00"  # a count of one in a two-byte varint
        + _zigzag(2)
        + b"zz"
        + _zigzag(0)  # an empty array
        + _zigzag(0)
    )
    expected = _fastavro(parsed, datum)
    assert expected == {"k": [300, None], "zz": []}
    assert compile_reader(parsed)(datum, 0) == (expected, len(datum))


def test_every_truncation_is_refused_or_reads_past_the_end() -> None:
    """A datum cut short raises, or ends past the bytes it was given (what
    the converter refuses): never a value that looks whole."""
    parsed = fastavro.parse_schema(EVERY_TYPE)
    read = compile_reader(parsed)
    datum = _write(parsed, _value(random.Random(9), 1))
    for cut in range(len(datum)):
        try:
            _, end = read(datum[:cut], 0)
        except _READ_ERRORS:
            continue
        assert end > cut, cut


@pytest.mark.parametrize(
    ("schema", "datum", "message"),
    [
        (["null", "long"], _zigzag(2), "union branch 2 of a 2-branch union"),
        (["null", "long"], _zigzag(-1), "union branch -1"),
        ({"type": "enum", "name": "E", "symbols": ["a"]}, _zigzag(1), "enum index 1"),
        ({"type": "enum", "name": "E", "symbols": ["a"]}, _zigzag(-1), "enum index -1"),
        ("string", _zigzag(-3), "negative length"),
        ("long", b"\xff" * 10 + b"\x01", "beyond 64 bits"),
        (
            {"type": "array", "items": "long"},
            _zigzag(1000) + b"\x00",
            "longer than the datum",
        ),
    ],
)
def test_broken_datums_raise_value_error(
    schema: Any, datum: bytes, message: str
) -> None:
    with pytest.raises(ValueError, match=message):
        compile_reader(fastavro.parse_schema(schema))(datum, 0)


def test_field_names_are_data_not_code() -> None:
    name = "a'] = 1; import os  # \"\n"
    schema = {"type": "record", "name": "R", "fields": [{"name": name, "type": "long"}]}
    assert compile_reader(schema)(_zigzag(42), 0) == ({name: 42}, 1)


def _nested(depth: int) -> Any:
    schema: Any = "long"
    for _ in range(depth):
        schema = {"type": "array", "items": schema}
    return schema


def test_nesting_too_deep_to_compile_is_read_by_fastavro() -> None:
    with pytest.raises(Unsupported):
        compile_reader(_nested(MAX_LOOP_DEPTH + 1))
    parsed = fastavro.parse_schema(_nested(MAX_LOOP_DEPTH + 1))
    value: Any = [5, -6]
    for _ in range(MAX_LOOP_DEPTH):
        value = [value, []]
    datum = b"\x00" * 5 + _write(parsed, value)
    assert datum_reader(parsed, "deep")(datum, 5) == (value, len(datum))
    shallow = fastavro.parse_schema(_nested(MAX_LOOP_DEPTH))
    assert compile_reader(shallow)(_write(shallow, []), 0) == ([], 1)


class _Registry:
    def __init__(self, schemas: dict[int, Any]) -> None:
        self.schemas = schemas

    def schema(self, sid: int) -> Any:
        return self.schemas[sid]


def test_converter_refuses_a_value_cut_inside_a_string() -> None:
    """The cut leaves a string's slice short: the reader ends past the bytes,
    which the converter reports, as fastavro's EOFError was."""
    row = {"type": "record", "name": "Row", "fields": [{"name": "t", "type": "string"}]}
    value_schema = {
        "type": "record",
        "name": "Value",
        "fields": [
            {"name": "before", "type": ["null", row]},
            {"name": "after", "type": ["null", "Row"]},
        ],
    }
    datum = _write(value_schema, {"before": None, "after": {"t": "abcdef"}})
    whole = b"\x00\x00\x00\x00\x02" + datum
    converter = AvroConverter(_Registry({2: value_schema}))  # type: ignore[arg-type]
    msg = FakeMessage("p.public.t", whole[:-2], None, 0, 0)
    with pytest.raises(BadRecord, match="not a valid Avro datum"):
        converter.decode(msg)
