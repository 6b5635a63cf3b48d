"""The compiled Avro readers against fastavro's, the reference, on every type.

Each case runs against both readers, the native one (the C extension
``pipeline.source._avroread``, skipped where it is not built) and the
generated Python one. Each writes values with ``fastavro.schemaless_writer``
and expects the reader to return exactly what ``fastavro.schemaless_reader``
does, and to end where the datum ends. Then the datums fastavro's writer
never writes (negative block counts, long varints for small numbers) and
broken ones (truncated, out-of-range branches and symbols, over-long
varints). Then the native reader alone on hostile input: thousands of
truncated and corrupted datums read as the Python reader reads them or
refused, datums nesting deeper than the C stack allows, huge counts and
lengths, malformed node tables, and references not leaked on errors.
"""

from __future__ import annotations

import gc
import io
import math
import random
import shutil
import struct
import sys
import time
import tracemalloc
from collections.abc import Callable
from typing import Any

import fastavro
import pytest

import pipeline.source.avro_converter
from pipeline.decode import FakeMessage
from pipeline.errors import BadRecord
from pipeline.source import avro_reader
from pipeline.source.avro_converter import AvroConverter, datum_reader
from pipeline.source.avro_reader import (
    MAX_LOOP_DEPTH,
    Reader,
    Unsupported,
    compile_native_reader,
    compile_python_reader,
    native_table,
)

try:
    from pipeline.source import _avroread
except ImportError:  # not built here: the native cases skip
    _avroread = None  # type: ignore[assignment]  # the module is optional

pytestmark = pytest.mark.unit

_READ_ERRORS = (IndexError, EOFError, ValueError, struct.error)
Compile = Callable[[Any], Reader]

needs_native = pytest.mark.skipif(
    _avroread is None, reason="pipeline.source._avroread is not built"
)


@pytest.fixture(
    params=[
        pytest.param(compile_native_reader, id="native", marks=needs_native),
        pytest.param(compile_python_reader, id="python"),
    ]
)
def compile_reader(request: pytest.FixtureRequest) -> Compile:
    """Each reader in turn: the native one, the generated Python one."""
    compile_: Compile = request.param
    return compile_


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


def test_reads_every_type_as_fastavro_does(compile_reader: Compile) -> None:
    parsed = fastavro.parse_schema(EVERY_TYPE)
    read = compile_reader(parsed)
    rng = random.Random(5)
    for n in range(400):
        datum = _write(parsed, _value(rng, n))
        value, end = read(datum, 0)
        assert end == len(datum)
        assert _same(value, _fastavro(parsed, datum)), n


def test_reads_from_an_offset_and_stops_at_the_datum_end(
    compile_reader: Compile,
) -> None:
    parsed = fastavro.parse_schema(["null", "string"])
    datum = b"HEADR" + _write(parsed, "text") + b"trailing"
    assert compile_reader(parsed)(datum, 5) == ("text", len(datum) - len(b"trailing"))


def test_recursive_record(compile_reader: Compile) -> None:
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


def test_negative_block_counts_and_long_varints_fastavro_reads_too(
    compile_reader: Compile,
) -> None:
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


def test_every_truncation_is_refused_or_reads_past_the_end(
    compile_reader: Compile,
) -> None:
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
        (
            {"type": "map", "values": "long"},
            _zigzag(-(2**63)) + _zigzag(0) + b"\x00",
            "block of 9223372036854775808 items",
        ),
        ("string", _zigzag(2) + b"a\xff", "can't decode byte 0xff in position 1"),
    ],
)
def test_broken_datums_raise_value_error(
    compile_reader: Compile, schema: Any, datum: bytes, message: str
) -> None:
    with pytest.raises(ValueError, match=message):
        compile_reader(fastavro.parse_schema(schema))(datum, 0)


def test_field_names_are_data_not_code(compile_reader: Compile) -> None:
    name = "a'] = 1; import os  # \"\n"
    schema = {"type": "record", "name": "R", "fields": [{"name": name, "type": "long"}]}
    assert compile_reader(schema)(_zigzag(42), 0) == ({name: 42}, 1)


def _nested(depth: int) -> Any:
    schema: Any = "long"
    for _ in range(depth):
        schema = {"type": "array", "items": schema}
    return schema


def test_nesting_too_deep_to_compile_is_read_by_fastavro(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The generated Python reader's limit; the native one has none."""
    monkeypatch.setattr(
        pipeline.source.avro_converter, "compile_reader", compile_python_reader
    )
    with pytest.raises(Unsupported):
        compile_python_reader(_nested(MAX_LOOP_DEPTH + 1))
    parsed = fastavro.parse_schema(_nested(MAX_LOOP_DEPTH + 1))
    value: Any = [5, -6]
    for _ in range(MAX_LOOP_DEPTH):
        value = [value, []]
    datum = b"\x00" * 5 + _write(parsed, value)
    assert datum_reader(parsed, "deep")(datum, 5) == (value, len(datum))
    shallow = fastavro.parse_schema(_nested(MAX_LOOP_DEPTH))
    assert compile_python_reader(shallow)(_write(shallow, []), 0) == ([], 1)


@needs_native
def test_native_reader_compiles_any_nesting() -> None:
    parsed = fastavro.parse_schema(_nested(40))
    value: Any = [5, -6]
    for _ in range(39):
        value = [value, []]
    datum = _write(parsed, value)
    assert compile_native_reader(parsed)(datum, 0) == (value, len(datum))


@pytest.mark.parametrize(
    "schema",
    [
        5,
        "decimal",
        {"type": "decimal"},
        {"type": "record", "name": "R", "fields": [{"name": "a", "type": "nope"}]},
        ["null", {"type": "map", "values": "Unknown"}],
        {"type": "fixed", "name": "F", "size": -1},
        {"type": "fixed", "name": "F", "size": 2**64},
    ],
)
def test_both_readers_refuse_the_same_schemas(
    compile_reader: Compile, schema: Any
) -> None:
    with pytest.raises(Unsupported):
        compile_reader(schema)


class _Registry:
    def __init__(self, schemas: dict[int, Any]) -> None:
        self.schemas = schemas

    def schema(self, sid: int) -> Any:
        return self.schemas[sid]


def test_converter_refuses_a_value_cut_inside_a_string(
    compile_reader: Compile, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The cut leaves a string short: the native reader raises EOFError; the
    Python one ends past the bytes, which the converter reports, as
    fastavro's EOFError was."""
    monkeypatch.setattr(
        pipeline.source.avro_converter, "compile_reader", compile_reader
    )
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


# --- the native reader ------------------------------------------------------


def test_native_reader_is_built_where_there_is_a_c_compiler() -> None:
    """CI has a compiler: the native reader is the one readside uses there."""
    if _avroread is None and (shutil.which("cc") or shutil.which("gcc")):
        pytest.fail(
            "pipeline.source._avroread does not import though a C compiler is "
            "here: reinstall (pip install -e '.[dev]') and read the build's "
            "warning"
        )
    if _avroread is not None:
        assert avro_reader.NATIVE
        assert isinstance(avro_reader.compile_reader("long"), _avroread.Reader)


def _outcome(read: Reader, datum: bytes) -> tuple[Any, ...]:
    try:
        value, end = read(datum, 0)
    except _READ_ERRORS as exc:
        return ("error", exc)
    return ("value", value, end)


def _agree(native: Reader, python: Reader, datum: bytes) -> str:
    """Assert that the native reader reads ``datum`` as the Python one does
    or refuses it where the Python one cannot read it whole; return which."""
    ours, theirs = _outcome(native, datum), _outcome(python, datum)
    whole = theirs[0] == "value" and theirs[2] <= len(datum)
    if ours[0] == "value":
        assert whole, (datum, theirs)
        assert ours[2] == theirs[2], datum
        assert _same(ours[1], theirs[1]), datum
        return "read"
    error = ours[1]
    assert not whole, (datum, error)
    assert isinstance(error, EOFError | ValueError), repr(error)
    if isinstance(error, ValueError):
        # a corrupt datum: the Python reader finds the same fault first
        assert theirs[0] == "error", datum
        assert type(theirs[1]) is type(error), (datum, error, theirs[1])
        assert str(theirs[1]) == str(error), datum
    return "refused"


@needs_native
def test_native_reader_agrees_on_truncated_datums() -> None:
    parsed = fastavro.parse_schema(EVERY_TYPE)
    native, python = compile_native_reader(parsed), compile_python_reader(parsed)
    rng = random.Random(11)
    for n in range(20):
        datum = _write(parsed, _value(rng, n))
        for cut in range(len(datum)):
            assert _agree(native, python, datum[:cut]) == "refused", (n, cut)


@needs_native
def test_native_reader_agrees_on_corrupted_datums() -> None:
    """Random byte changes of valid datums: each is read as the Python reader
    reads it, or refused with a read error; never a crash."""
    parsed = fastavro.parse_schema(EVERY_TYPE)
    native, python = compile_native_reader(parsed), compile_python_reader(parsed)
    rng = random.Random(12)
    datums = [_write(parsed, _value(rng, n)) for n in range(50)]
    seen = {"read": 0, "refused": 0}
    for _ in range(6000):
        broken = bytearray(rng.choice(datums))
        for _ in range(rng.choice([1, 1, 2, 3])):
            at = rng.randrange(len(broken))
            if rng.random() < 0.5:
                broken[at] = rng.randrange(256)
            else:
                broken[at] ^= 1 << rng.randrange(8)
        if rng.random() < 0.3:
            del broken[rng.randrange(len(broken)) :]
        seen[_agree(native, python, bytes(broken))] += 1
    assert seen["read"] > 100
    assert seen["refused"] > 100


@needs_native
def test_native_reader_agrees_on_random_bytes() -> None:
    parsed = fastavro.parse_schema(EVERY_TYPE)
    native, python = compile_native_reader(parsed), compile_python_reader(parsed)
    rng = random.Random(13)
    for _ in range(3000):
        datum = bytes(rng.randrange(256) for _ in range(rng.randrange(80)))
        _agree(native, python, datum)


NODE = {
    "type": "record",
    "name": "Node",
    "fields": [
        {"name": "next", "type": ["null", "Node"]},
        {"name": "kids", "type": {"type": "array", "items": "Node"}},
        {"name": "named", "type": {"type": "map", "values": "Node"}},
    ],
}


@needs_native
@pytest.mark.parametrize(
    ("step", "end"),
    [
        (b"\x02", b"\x00\x00\x00"),  # next: branch 1, a Node
        (b"\x00\x02", b"\x00\x00\x00\x00"),  # kids: one Node
        (b"\x00\x00\x02\x02k", b"\x00\x00\x00\x00"),  # named: {"k": Node}
    ],
)
def test_native_reader_refuses_a_datum_nesting_too_deep(
    step: bytes, end: bytes
) -> None:
    read = compile_native_reader(fastavro.parse_schema(NODE))
    with pytest.raises(ValueError, match="deeper than"):
        read(step * 100_000 + end, 0)


@needs_native
def test_native_reader_nests_up_to_its_limit() -> None:
    assert _avroread is not None
    depth = _avroread.MAX_DEPTH
    read = compile_native_reader(fastavro.parse_schema(NODE))
    # records nest depth - 1 deep, the innermost one's array and map one more
    datum = b"\x02" * (depth - 2) + b"\x00" * 3 + b"\x00\x00" * (depth - 2)
    value, end = read(datum, 0)
    assert end == len(datum)
    for _ in range(depth - 2):
        value = value["next"]
    assert value == {"next": None, "kids": [], "named": {}}
    with pytest.raises(ValueError, match="deeper than"):
        read(b"\x02" * (depth - 1) + b"\x00" * 3 + b"\x00\x00" * (depth - 1), 0)


@needs_native
@pytest.mark.parametrize(
    ("schema", "datum", "error"),
    [
        ({"type": "array", "items": "long"}, _zigzag(2**62), ValueError),
        ({"type": "array", "items": "long"}, _zigzag(2**63 - 1), ValueError),
        ({"type": "array", "items": "string"}, _zigzag(-(2**63)) + b"\x00", ValueError),
        # null values can be empty, not the keys: the keys run out
        ({"type": "map", "values": "null"}, _zigzag(2**62) + b"\x02k", EOFError),
        ("string", _zigzag(2**62) + b"abc", EOFError),
        ("string", _zigzag(2**63 - 1) + b"abc", EOFError),
        ("bytes", _zigzag(2**63 - 1), EOFError),
        ({"type": "fixed", "name": "F", "size": 2**40}, b"abc", EOFError),
        ("long", b"\x80" * 9, EOFError),
        ("long", b"\x80" * 9 + b"\x02", ValueError),
        ("double", b"\x00" * 7, EOFError),
        ("float", b"\x00" * 3, EOFError),
        ("boolean", b"", EOFError),
    ],
)
def test_native_reader_refuses_huge_counts_and_lengths_at_once(
    schema: Any, datum: bytes, error: type[Exception]
) -> None:
    read = compile_native_reader(fastavro.parse_schema(schema))
    started = time.perf_counter()
    with pytest.raises(error):
        read(datum, 0)
    # not a speed figure but a hang guard: a count or length taken on trust
    # would loop or allocate for minutes (a read takes microseconds)
    assert time.perf_counter() - started < 5


@needs_native
def test_native_reader_reads_long_varints_and_extremes() -> None:
    read = compile_native_reader("long")
    assert read(b"\x80\x00", 0) == (0, 2)
    assert read(b"\x80" * 9 + b"\x00", 0) == (0, 10)
    assert read(b"\xfe" + b"\xff" * 8 + b"\x01", 0) == (2**63 - 1, 10)
    assert read(b"\xff" * 9 + b"\x01", 0) == (-(2**63), 10)
    assert read(b"\x81\x01", 0) == (-65, 2)
    assert compile_native_reader("boolean")(b"\x02", 0) == (True, 1)
    nan = compile_native_reader("float")(b"\x01\x00\xc0\x7f", 0)[0]
    assert struct.pack("<d", nan) == struct.pack(
        "<d", struct.unpack("<f", b"\x01\x00\xc0\x7f")[0]
    )


@needs_native
def test_native_reader_takes_any_bytes_like_buffer_and_checks_its_arguments() -> None:
    assert _avroread is not None
    parsed = fastavro.parse_schema(EVERY_TYPE)
    read = _avroread.Reader(*native_table(parsed))
    datum = _write(parsed, _value(random.Random(3), 3))
    expected = read(datum, 0)
    assert _same(read(bytearray(datum), 0)[0], expected[0])
    assert _same(read(memoryview(datum), 0)[0], expected[0])
    assert read(memoryview(b"xx" + datum)[2:], 0)[1] == expected[1]
    for buf in ["text", None, 5, [1, 2], memoryview(datum)[::2]]:
        with pytest.raises((TypeError, BufferError)):
            read(buf, 0)  # type: ignore[arg-type]  # what is refused
    for pos in [-1, len(datum) + 1, 2**70]:
        with pytest.raises((IndexError, OverflowError)):
            read(datum, pos)
    with pytest.raises(TypeError):
        read(datum, 1.0)  # type: ignore[arg-type]  # not an index
    with pytest.raises(TypeError):
        read(datum)  # type: ignore[call-arg]  # no position
    with pytest.raises(TypeError):
        read(buf=datum, pos=0)  # type: ignore[call-arg]  # positional only
    null = compile_native_reader("null")
    assert null(b"ab", 2) == (None, 2)
    assert null(b"", 0) == (None, 0)


@needs_native
@pytest.mark.parametrize(
    ("nodes", "root"),
    [
        ((), 0),
        ((("long",),), 1),
        ((("long",),), -1),
        ((("long",),), 2**70),
        ((("long",),), "0"),
        ([("long",)], 0),
        ((["long"],), 0),
        (("long",), 0),
        (((),), 0),
        (((5,),), 0),
        ((("decimal",),), 0),
        ((("long", 1),), 0),
        ((("fixed",),), 0),
        ((("fixed", -1),), 0),
        ((("fixed", "4"),), 0),
        ((("fixed", 2**70),), 0),
        ((("enum", ["a"]),), 0),
        ((("record", ("a",), (1,)),), 0),
        ((("record", ("a",), (-1,)),), 0),
        ((("record", ("a",), (2**64,)),), 0),
        ((("record", ("a", "b"), (0,)),), 0),
        ((("record", (b"a",), (0,)),), 0),
        ((("record", (type("S", (str,), {})("a"),), (0,)),), 0),
        ((("record", ["a"], [0]),), 0),
        ((("record", ("a",), ("0",)),), 0),
        ((("record", ("a",), (True,)),), 0),
        ((("union", (0, 5)),), 0),
        ((("array", 0, 1)), 0),
        ((("array", 0, 1),), 0),
        ((("array", 3, True),), 0),
        ((("map", 0, True),), 0),
        ((("map", 0, 9, True), ("string",)), 0),
    ],
)
def test_native_reader_refuses_a_malformed_node_table(nodes: Any, root: int) -> None:
    assert _avroread is not None
    with pytest.raises((TypeError, ValueError)):
        _avroread.Reader(nodes, root)


@needs_native
def test_native_reader_survives_a_table_with_cycles_that_read_nothing() -> None:
    assert _avroread is not None
    record = _avroread.Reader((("record", ("self",), (0,)),), 0)
    with pytest.raises(ValueError, match="deeper than"):
        record(b"", 0)
    union = _avroread.Reader((("union", (0,)),), 0)
    with pytest.raises(EOFError):
        union(b"\x00" * 10_000, 0)


@needs_native
def test_native_reader_leaks_no_references() -> None:
    """Keys, symbols and values are released on every path, errors too."""
    assert _avroread is not None
    parsed = fastavro.parse_schema(EVERY_TYPE)
    nodes, root = native_table(parsed)
    read = _avroread.Reader(nodes, root)
    key = nodes[root][1][0]
    symbol = next(n for n in nodes if n[0] == "enum")[1][0]
    rng = random.Random(4)
    datums = [_write(parsed, _value(rng, n)) for n in range(10)]
    broken = [d[: len(d) // 2] for d in datums] + [
        d[:40] + b"\xff" * 12 + d[52:] for d in datums
    ]

    def run() -> None:
        for _ in range(500):
            for datum in datums:
                read(datum, 0)
            for datum in broken:
                try:
                    read(datum, 0)
                except _READ_ERRORS:
                    pass

    run()
    gc.collect()
    counts = sys.getrefcount(key), sys.getrefcount(symbol), sys.getrefcount(read)
    tracemalloc.start()
    try:
        before = tracemalloc.get_traced_memory()[0]
        run()
        gc.collect()
        grown = tracemalloc.get_traced_memory()[0] - before
    finally:
        tracemalloc.stop()
    assert (sys.getrefcount(key), sys.getrefcount(symbol), sys.getrefcount(read)) == (
        counts
    )
    assert grown < 64_000


@needs_native
def test_native_reader_frees_its_nodes() -> None:
    """Readers made and dropped, and tables refused half-way, free what the
    construction allocated."""
    assert _avroread is not None
    nodes, root = native_table(fastavro.parse_schema(EVERY_TYPE))
    bad = (*nodes, ("union", (0, len(nodes) + 5)))

    def run() -> None:
        for _ in range(2000):
            _avroread.Reader(nodes, root)
            with pytest.raises(ValueError):
                _avroread.Reader(bad, root)

    run()
    gc.collect()
    tracemalloc.start()
    try:
        before = tracemalloc.get_traced_memory()[0]
        run()
        gc.collect()
        grown = tracemalloc.get_traced_memory()[0] - before
    finally:
        tracemalloc.stop()
    assert grown < 64_000


def test_a_datum_nesting_too_deep_is_a_bad_record_for_either_reader(
    compile_reader: Compile,
) -> None:
    """The generated Python reader recurses once per nested record: a
    recursive schema's datum nesting deeper than Python's limit raises
    RecursionError, which must be a bad record (dead-lettered), not the
    worker's end; the native one refuses it by its own limit."""
    read = compile_reader(fastavro.parse_schema(NODE))
    datum = b"\x00" * 5 + b"\x02" * 100_000 + b"\x00" * 3
    with pytest.raises(BadRecord, match="not a valid Avro datum"):
        pipeline.source.avro_converter._read(datum, read, "value")


def test_without_the_native_reader_the_python_one_reads_and_says_so_once(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    monkeypatch.setattr(avro_reader, "_native", None)
    monkeypatch.setattr(avro_reader, "_why_not_native", "No module named x")
    avro_reader._say_python_reader.cache_clear()
    try:
        with caplog.at_level("WARNING", logger=avro_reader.__name__):
            reads = [avro_reader.compile_reader("long") for _ in range(3)]
    finally:
        avro_reader._say_python_reader.cache_clear()
    assert all(r(b"\x04", 0) == (2, 1) for r in reads)
    if _avroread is not None:
        assert not any(isinstance(r, _avroread.Reader) for r in reads)
    said = [r.getMessage() for r in caplog.records]
    assert len(said) == 1, said
    assert "generated Python reader" in said[0]
    assert "No module named x" in said[0]
