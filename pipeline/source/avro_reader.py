"""Avro binary datums read by a reader made once from their writer schema.

fastavro's ``schemaless_reader`` walks the schema for every datum: each
value costs a dispatch on its type. A Debezium envelope has about forty
values (two row images, the source block, the op and timestamps), so on the
worker's Avro path that walk was more than half of the decode time
(``python -m bench``). :func:`compile_reader` walks the schema once instead,
into one of two readers of exactly that schema:

- the native one (:func:`compile_native_reader`), when the C extension
  ``pipeline.source._avroread`` is built: the schema becomes a flat table of
  nodes (:func:`native_table`), which the extension turns into C structs
  once; each datum is then read in C, several times faster than the
  generated Python. ``pip install`` builds the extension when a C compiler
  is there (``setup.py``; the build is optional);
- otherwise the generated Python (:func:`compile_python_reader`):
  straight-line code per record, the one-byte varint (most ints, lengths and
  union indexes) read inline, each named record a function of its own (so
  recursive schemas work).

The values are those fastavro returns for the same schema (the unit tests
check both readers against fastavro over every Avro type, and the native
one against the Python one on corrupted datums): ``int``/``long`` as int,
``float`` as the float32's exact value, ``bytes``/``fixed`` as bytes,
``enum`` as its symbol, records as dicts in field order, unions as the
branch's value. Logical types are not applied (the caller strips them, see
:func:`pipeline.source.avro_schema.reader_schema`). An out-of-range union
branch, enum index, negative length, block count longer than the datum or
over-long varint raises ``ValueError`` (the same message from both). A
datum that ends early raises: the native reader ``EOFError`` wherever it
ends; the Python one ``IndexError`` or ``struct.error``, except that a
string, bytes or fixed cut short is read short and the reader returns a
position past the end (which the converter refuses). The native reader
reads untrusted bytes without reading past them, and refuses datums that
nest records, arrays and maps deeper than ``_avroread.MAX_DEPTH`` (a
recursive schema's datum cannot overflow the C stack).

The generated source holds only names it makes itself and ``repr()`` of the
schema's field names: a schema from the registry cannot inject code.
"""

from __future__ import annotations

import functools
import logging
import struct
import sys
from collections.abc import Callable, Mapping
from types import ModuleType
from typing import Any

logger = logging.getLogger(__name__)

_native: ModuleType | None
_why_not_native = ""
try:
    from pipeline.source import _avroread as _native
except ImportError as exc:  # not built (no C compiler at install): the Python reader
    _native = None
    _why_not_native = str(exc)

#: Whether :func:`compile_reader` returns the native reader.
NATIVE = _native is not None

#: Reads one datum of ``buf`` from ``pos``: the value and the position after it.
Reader = Callable[[bytes, int], tuple[Any, int]]

_FLOAT = struct.Struct("<f").unpack_from
_DOUBLE = struct.Struct("<d").unpack_from
_NAMED_KINDS = ("record", "enum", "fixed")
#: Deeper nesting of arrays and maps than this is left to fastavro: each
#: level is two nested loops, and Python allows 20 nested blocks.
MAX_LOOP_DEPTH = 8
#: A node of :func:`native_table`: its kind, then what that kind needs.
Node = tuple[Any, ...]


class Unsupported(ValueError):
    """A schema this compiler leaves to fastavro."""


def _unrolled_varint() -> Callable[[bytes, int], tuple[int, int]]:
    """The reader of an unsigned varint whose first byte has the high bit
    set (the generated code reads the one-byte case inline): the value, zigzag
    not undone, and the position after it. Generated unrolled, one step per
    byte: the long varints are timestamps and LSNs, several in every Debezium
    record, and a loop costs twice this."""
    lines = [
        "def varint(buf, pos):",
        "    n = buf[pos] & 0x7F",
    ]
    for i in range(1, 9):
        lines += [
            f"    b = buf[pos + {i}]",
            f"    n |= (b & 0x7F) << {7 * i}",
            f"    if b < 0x80: return n, pos + {i + 1}",
        ]
    lines += [
        "    b = buf[pos + 9]",
        "    if b > 1: raise ValueError('varint beyond 64 bits')",
        "    return n | b << 63, pos + 10",
    ]
    scope: dict[str, Any] = {}
    exec(compile("\n".join(lines), "<avro varint>", "exec"), scope)  # noqa: S102
    varint: Callable[[bytes, int], tuple[int, int]] = scope["varint"]
    return varint


_varint = _unrolled_varint()


def _bad_branch(raw: int, count: int) -> ValueError:
    index = (raw >> 1) ^ -(raw & 1)
    return ValueError(f"union branch {index} of a {count}-branch union")


def _bad_symbol(index: int, count: int) -> ValueError:
    return ValueError(f"enum index {index} of {count} symbols")


def _bad_count(count: int) -> ValueError:
    return ValueError(f"block of {count} items is longer than the datum")


def _fixed_size(schema: Mapping[str, Any]) -> int:
    size = int(schema["size"])
    if not 0 <= size <= sys.maxsize:
        raise Unsupported(f"fixed of size {size}")
    return size


def _empty(
    names: Mapping[str, Any], schema: Any, seen: frozenset[str] = frozenset()
) -> bool:
    """Whether a value of ``schema`` can take no bytes (``names``: the named
    types seen so far)."""
    if isinstance(schema, str):
        if schema in seen:
            return False  # a record holding itself, unless it ends, is not empty
        seen = seen | {schema}
        schema = names.get(schema, {"type": schema})
    if isinstance(schema, list):
        return False  # the branch index takes a byte
    kind = schema.get("type") if isinstance(schema, Mapping) else None
    if isinstance(kind, list | Mapping):
        return _empty(names, kind, seen)
    if kind == "fixed":
        return int(schema["size"]) == 0
    if kind == "record":
        name = schema.get("name")
        seen = seen | {name} if isinstance(name, str) else seen
        return all(_empty(names, f["type"], seen) for f in schema.get("fields", ()))
    return kind == "null"


def _resolve(names: dict[str, Mapping[str, Any]], schema: Any) -> Any:
    """``schema`` as both readers walk it: a list (a union), or a mapping
    whose ``type`` is a str, a name standing for the named type of that name
    seen before (else for ``{"type": name}``), ``{"type": <list or
    mapping>}`` for that type; a named type is recorded in ``names``.

    Raises:
        Unsupported: not an Avro schema.
    """
    while True:
        if isinstance(schema, list):
            return schema
        if isinstance(schema, str):
            schema = names.get(schema, {"type": schema})
        if not isinstance(schema, Mapping):
            raise Unsupported(f"not an Avro schema: {schema!r}")
        kind = schema.get("type")
        if not isinstance(kind, list | Mapping):
            break
        schema = kind
    if kind in _NAMED_KINDS and isinstance(schema.get("name"), str):
        names.setdefault(schema["name"], schema)
    return schema


class _Compiler:
    def __init__(self) -> None:
        self.names: dict[str, Mapping[str, Any]] = {}
        self.functions: dict[str, str] = {}  # record name -> function name
        self.sources: list[str] = []
        self.consts: dict[str, Any] = {}
        self.count = 0

    def var(self, prefix: str) -> str:
        self.count += 1
        return f"{prefix}{self.count}"

    def const(self, value: Any) -> str:
        name = f"C{len(self.consts)}"
        self.consts[name] = value
        return name

    # --- the code of one value -------------------------------------------

    def value(
        self, schema: Any, out: list[str], ind: str, target: str, depth: int
    ) -> None:
        """Append to ``out`` the lines that read ``schema`` into ``target``."""
        schema = _resolve(self.names, schema)
        if isinstance(schema, list):
            self.union(schema, out, ind, target, depth)
            return
        kind = schema.get("type")
        if kind == "null":
            out.append(f"{ind}{target} = None")
        elif kind == "boolean":
            out.append(f"{ind}{target} = buf[pos] != 0; pos += 1")
        elif kind in ("int", "long"):
            self.long(out, ind, target)
        elif kind == "float":
            out.append(f"{ind}{target}, = _FLOAT(buf, pos); pos += 4")
        elif kind == "double":
            out.append(f"{ind}{target}, = _DOUBLE(buf, pos); pos += 8")
        elif kind in ("string", "bytes"):
            length = self.var("n")
            self.long(out, ind, length)
            out.append(f"{ind}if {length} < 0: raise ValueError('negative length')")
            out.append(f"{ind}end = pos + {length}")
            read = "buf[pos:end].decode()" if kind == "string" else "buf[pos:end]"
            out.append(f"{ind}{target} = {read}; pos = end")
        elif kind == "fixed":
            size = _fixed_size(schema)
            out.append(f"{ind}{target} = buf[pos:pos + {size}]; pos += {size}")
        elif kind == "enum":
            symbols = tuple(schema["symbols"])
            index = self.var("i")
            self.long(out, ind, index)
            out.append(f"{ind}if not 0 <= {index} < {len(symbols)}:")
            out.append(f"{ind}    raise _bad_symbol({index}, {len(symbols)})")
            out.append(f"{ind}{target} = {self.const(symbols)}[{index}]")
        elif kind == "record":
            out.append(f"{ind}{target}, pos = {self.record(schema)}(buf, pos)")
        elif kind in ("array", "map"):
            self.block(schema, kind, out, ind, target, depth)
        else:
            raise Unsupported(f"unknown Avro type {kind!r}")

    def long(self, out: list[str], ind: str, target: str) -> None:
        out.append(f"{ind}b = buf[pos]")
        out.append(f"{ind}if b < 128: {target} = (b >> 1) ^ -(b & 1); pos += 1")
        out.append(f"{ind}else:")
        out.append(f"{ind}    b, pos = _varint(buf, pos)")
        out.append(f"{ind}    {target} = (b >> 1) ^ -(b & 1)")

    def union(
        self, branches: list[Any], out: list[str], ind: str, target: str, depth: int
    ) -> None:
        raw = self.var("u")  # the branch index, still zigzag-encoded
        out.append(f"{ind}{raw} = buf[pos]")
        out.append(f"{ind}if {raw} < 128: pos += 1")
        out.append(f"{ind}else: {raw}, pos = _varint(buf, pos)")
        for n, branch in enumerate(branches):
            out.append(f"{ind}{'if' if n == 0 else 'elif'} {raw} == {2 * n}:")
            self.value(branch, out, ind + "    ", target, depth)
        out.append(f"{ind}else: raise _bad_branch({raw}, {len(branches)})")

    def block(
        self,
        schema: Mapping[str, Any],
        kind: str,
        out: list[str],
        ind: str,
        target: str,
        depth: int,
    ) -> None:
        if depth >= MAX_LOOP_DEPTH:
            raise Unsupported(f"arrays and maps nested deeper than {MAX_LOOP_DEPTH}")
        count, item = self.var("c"), self.var("x")
        inner = ind + "        "
        out.append(f"{ind}{target} = {'[]' if kind == 'array' else '{}'}")
        self.long(out, ind, count)
        out.append(f"{ind}while {count}:")
        out.append(f"{ind}    if {count} < 0:")
        out.append(f"{ind}        {count} = -{count}")
        self.long(out, inner, "_")  # the block's size in bytes, not needed
        if not _empty(self.names, schema["items" if kind == "array" else "values"]):
            # every item takes a byte at least: a longer count is corrupt
            out.append(
                f"{ind}    if {count} > len(buf) - pos: raise _bad_count({count})"
            )
        out.append(f"{ind}    for _ in range({count}):")
        if kind == "array":
            self.value(schema["items"], out, inner, item, depth + 1)
            out.append(f"{inner}{target}.append({item})")
        else:
            key = self.var("k")
            self.value("string", out, inner, key, depth + 1)
            self.value(schema["values"], out, inner, item, depth + 1)
            out.append(f"{inner}{target}[{key}] = {item}")
        self.long(out, ind + "    ", count)

    # --- one function per record -----------------------------------------

    def record(self, schema: Mapping[str, Any]) -> str:
        name = schema.get("name")
        key = name if isinstance(name, str) else f"<anonymous {id(schema)}>"
        if key in self.functions:
            return self.functions[key]
        function = self.var("record")
        self.functions[key] = function  # before the fields: recursion calls it
        lines = [f"def {function}(buf, pos):"]
        fields = []
        for field in schema.get("fields", ()):
            target = self.var("v")
            fields.append(f"{str(field['name'])!r}: {target}")
            self.value(field["type"], lines, "    ", target, 0)
        lines.append(f"    return {{{', '.join(fields)}}}, pos")
        self.sources.append("\n".join(lines))
        return function


def compile_python_reader(schema: Any) -> Reader:
    """The generated Python reader of datums written with ``schema`` (parsed:
    named types by full name, as :func:`fastavro.parse_schema` returns it).

    Raises:
        Unsupported: a type it does not know, or nesting too deep to compile.
    """
    compiler = _Compiler()
    body: list[str] = []
    try:
        compiler.value(schema, body, "    ", "value", 0)
    except RecursionError as exc:
        raise Unsupported(f"schema nested too deeply to compile: {exc}") from exc
    source = "\n\n".join(
        [
            *compiler.sources,
            "def read(buf, pos):\n" + "\n".join(body) + "\n    return value, pos",
        ]
    )
    scope: dict[str, Any] = {
        "_FLOAT": _FLOAT,
        "_DOUBLE": _DOUBLE,
        "_varint": _varint,
        "_bad_branch": _bad_branch,
        "_bad_symbol": _bad_symbol,
        "_bad_count": _bad_count,
        **compiler.consts,
    }
    try:
        exec(compile(source, "<avro reader>", "exec"), scope)  # noqa: S102
    except (SyntaxError, RecursionError, MemoryError) as exc:
        raise Unsupported(f"schema too large to compile: {exc}") from exc
    read: Reader = scope["read"]
    return read


# --- the native reader's node table ---------------------------------------

_PRIMITIVES = {
    "null": "null",
    "boolean": "boolean",
    "int": "long",
    "long": "long",
    "float": "float",
    "double": "double",
    "string": "string",
    "bytes": "bytes",
}


class _Tabler:
    """Walks a schema into the node table of ``_avroread.Reader``, by the
    rules of :func:`_resolve`, as :class:`_Compiler` does."""

    def __init__(self) -> None:
        self.names: dict[str, Mapping[str, Any]] = {}
        self.nodes: list[Node] = []
        self.records: dict[str, int] = {}  # record name -> its node
        self.primitives: dict[str, int] = {}  # kind -> its one node

    def add(self, node: Node) -> int:
        self.nodes.append(node)
        return len(self.nodes) - 1

    def node(self, schema: Any) -> int:
        """The index of the node that reads ``schema``, added if new."""
        schema = _resolve(self.names, schema)
        if isinstance(schema, list):
            return self.add(("union", tuple(self.node(b) for b in schema)))
        kind = schema.get("type")
        if isinstance(kind, str) and kind in _PRIMITIVES:
            primitive = _PRIMITIVES[kind]
            if primitive not in self.primitives:
                self.primitives[primitive] = self.add((primitive,))
            return self.primitives[primitive]
        if kind == "fixed":
            return self.add(("fixed", _fixed_size(schema)))
        if kind == "enum":
            return self.add(("enum", tuple(schema["symbols"])))
        if kind == "record":
            return self.record(schema)
        if kind == "array":
            empty = _empty(self.names, schema["items"])
            return self.add(("array", self.node(schema["items"]), empty))
        if kind == "map":
            empty = _empty(self.names, schema["values"])
            keys = self.node("string")
            return self.add(("map", keys, self.node(schema["values"]), empty))
        raise Unsupported(f"unknown Avro type {kind!r}")

    def record(self, schema: Mapping[str, Any]) -> int:
        name = schema.get("name")
        key = name if isinstance(name, str) else f"<anonymous {id(schema)}>"
        if key in self.records:
            return self.records[key]
        index = self.add(("record", (), ()))  # its fields follow
        self.records[key] = index  # before the fields: recursion refers to it
        keys: list[str] = []
        fields: list[int] = []
        for field in schema.get("fields", ()):
            keys.append(sys.intern(str(field["name"])))
            fields.append(self.node(field["type"]))
        self.nodes[index] = ("record", tuple(keys), tuple(fields))
        return index


def native_table(schema: Any) -> tuple[tuple[Node, ...], int]:
    """The node table of ``schema`` for ``_avroread.Reader``, and its root.

    Each node is a tuple, its kind first; children are indexes into the
    table: ``("null",)``, ``("boolean",)``, ``("long",)`` (int and long),
    ``("float",)``, ``("double",)``, ``("string",)``, ``("bytes",)``,
    ``("fixed", size)``, ``("enum", symbols)``, ``("record", keys, fields)``
    (a tuple of interned field names, a tuple of their nodes),
    ``("union", branches)``, ``("array", items, empty)``,
    ``("map", keys, values, empty)`` (``empty``: whether an item can take no
    bytes, so a block count larger than the bytes left is not corrupt).

    Raises:
        Unsupported: a type it does not know, or a schema nested too deeply
            to walk.
    """
    tabler = _Tabler()
    try:
        root = tabler.node(schema)
    except RecursionError as exc:
        raise Unsupported(f"schema nested too deeply to compile: {exc}") from exc
    return tuple(tabler.nodes), root


def compile_native_reader(schema: Any) -> Reader:
    """The native reader of datums written with ``schema`` (parsed, as for
    :func:`compile_python_reader`).

    Raises:
        Unsupported: a type it does not know.
        RuntimeError: the C extension is not built (see :data:`NATIVE`).
    """
    if _native is None:
        raise RuntimeError("pipeline.source._avroread is not built")
    nodes, root = native_table(schema)
    read: Reader = _native.Reader(nodes, root)
    return read


def compile_reader(schema: Any) -> Reader:
    """The reader of datums written with ``schema`` (parsed: named types by
    full name, as :func:`fastavro.parse_schema` returns it): the native one
    when the C extension is built, else the generated Python.

    Raises:
        Unsupported: a type it does not know, or (the Python reader) nesting
            too deep to compile; :func:`~pipeline.source.avro_converter.datum_reader`
            falls back to fastavro for such schemas.
    """
    if _native is not None:
        return compile_native_reader(schema)
    _say_python_reader()
    return compile_python_reader(schema)


@functools.cache
def _say_python_reader() -> None:
    """Say once per process that Avro is read the slow way, and why."""
    logger.warning(
        "Avro records are read by the generated Python reader, several times "
        "slower than the native one, which this install lacks (%s): install "
        "readside again where a C compiler and Python's headers are",
        _why_not_native,
    )
