"""Avro writer schemas as Kafka Connect schemas, Avro values as JSON ones.

Apicurio's ``AvroConverter`` maps a Connect schema to Avro the way
Confluent's ``AvroData`` does: optional fields become ``["null", T]`` unions,
``int8``/``int16`` an ``int`` with ``connect.type``, a named type (Debezium's
``io.debezium.time.*``, ``io.debezium.data.*``, Connect's logical types) keeps
its name in ``connect.name`` and its parameters (``__debezium.source.column.type``)
in ``connect.parameters``. :func:`connect_schema` reverses that, so the
struct converters of :mod:`pipeline.types` serve both formats.

The values fastavro reads differ from JsonConverter's in two ways only, which
:func:`avro_struct` evens out before those converters run: ``bytes`` come raw
(JSON carries base64 text) and a ``float`` (float32) comes as the exact
binary value (JSON, like PostgreSQL, prints the shortest decimal that reads
back as the same float32). Logical types are stripped from the schema given
to fastavro (:func:`reader_schema`), so dates, times and decimals arrive as
the numbers and bytes JsonConverter carries too.
"""

from __future__ import annotations

import base64
import math
import struct
from collections.abc import Callable, Mapping
from typing import Any

from pipeline.types import RowConverter, SchemaError, struct_converter

_PRIMITIVES = {
    "null": "null",
    "boolean": "boolean",
    "int": "int32",
    "long": "int64",
    "float": "float",
    "double": "double",
    "bytes": "bytes",
    "string": "string",
}

Normalize = Callable[[Any], Any]


def reader_schema(schema: Any) -> Any:
    """``schema`` without ``logicalType`` anywhere: fastavro then returns the
    underlying ints and bytes, as JsonConverter writes them."""
    if isinstance(schema, list):
        return [reader_schema(s) for s in schema]
    if isinstance(schema, dict):
        return {k: reader_schema(v) for k, v in schema.items() if k != "logicalType"}
    return schema


def _fullname(
    schema: Mapping[str, Any], namespace: str | None
) -> tuple[str, str | None]:
    name = str(schema["name"])
    if "." in name:
        return name, name.rsplit(".", 1)[0]
    space = schema.get("namespace", namespace)
    return (f"{space}.{name}" if space else name), space


def connect_schema(
    avro: Any,
    names: dict[str, dict[str, Any]] | None = None,
    namespace: str | None = None,
) -> dict[str, Any]:
    """The Kafka Connect schema (as JsonConverter writes it) of an Avro schema.

    Raises:
        SchemaError: a union of more than one non-null type, or a type name
            that is neither primitive nor defined before.
    """
    names = {} if names is None else names
    if isinstance(avro, list):
        branches = [b for b in avro if b != "null"]
        if len(branches) != 1:
            raise SchemaError(f"union of several types is not a Connect type: {avro}")
        return connect_schema(branches[0], names, namespace)
    if isinstance(avro, str):
        if avro in _PRIMITIVES:
            return {"type": _PRIMITIVES[avro]}
        found = names.get(avro) or names.get(f"{namespace}.{avro}")
        if found is None:
            raise SchemaError(f"unknown Avro type {avro!r}")
        return found
    if not isinstance(avro, Mapping):
        raise SchemaError(f"not an Avro schema: {avro!r}")
    kind = avro.get("type")
    if isinstance(kind, list | Mapping):
        return connect_schema(kind, names, namespace)
    out: dict[str, Any]
    if kind == "record":
        full, space = _fullname(avro, namespace)
        out = {"type": "struct", "name": avro.get("connect.name", full), "fields": []}
        names[full] = out
        for f in avro.get("fields", ()):
            field = connect_schema(f["type"], names, space)
            out["fields"].append({**field, "field": f["name"]})
        return out
    if kind == "array":
        out = {
            "type": "array",
            "items": connect_schema(avro["items"], names, namespace),
        }
    elif kind == "map":
        out = {
            "type": "map",
            "values": connect_schema(avro["values"], names, namespace),
        }
    elif kind in ("enum", "fixed"):
        full, _ = _fullname(avro, namespace)
        names[full] = {"type": "string" if kind == "enum" else "bytes"}
        out = dict(names[full])
    elif kind in _PRIMITIVES:
        out = {"type": avro.get("connect.type", _PRIMITIVES[kind])}
    else:
        raise SchemaError(f"unknown Avro type {kind!r}")
    if "connect.name" in avro:
        out["name"] = avro["connect.name"]
    if isinstance(avro.get("connect.parameters"), Mapping):
        out["parameters"] = dict(avro["connect.parameters"])
    return out


def _b64(v: bytes) -> str:
    return base64.b64encode(v).decode("ascii")


_F32 = struct.Struct("<f")


def _float32(v: float) -> float:
    """The shortest decimal that reads back as the same float32."""
    if not math.isfinite(v):
        return v
    for digits in range(6, 10):
        short = float(f"{v:.{digits}g}")
        if _F32.unpack(_F32.pack(short))[0] == v:
            return short
    return v


def _normalizer(schema: Mapping[str, Any]) -> Normalize | None:
    """What turns a value fastavro read into JsonConverter's form, or
    ``None`` when they are already alike."""
    kind = schema.get("type")
    if kind == "bytes":
        return _b64
    if kind in ("float", "float32"):
        return _float32
    if kind in ("array", "map"):
        inner = _normalizer(schema["items" if kind == "array" else "values"])
        if inner is None:
            return None
        if kind == "array":
            return lambda v: [None if x is None else inner(x) for x in v]
        return lambda v: {k: None if x is None else inner(x) for k, x in v.items()}
    if kind == "struct":
        return _struct_normalizer(schema)
    return None


def _field_normalizers(schema: Mapping[str, Any]) -> dict[str, Normalize]:
    return {
        f["field"]: fn
        for f in schema.get("fields", ())
        if (fn := _normalizer(f)) is not None
    }


def _struct_normalizer(schema: Mapping[str, Any]) -> Normalize | None:
    fields = list(_field_normalizers(schema).items())
    if not fields:
        return None

    def normalize(row: Any) -> Any:
        if not isinstance(row, dict):
            return row
        out = dict(row)
        for name, fn in fields:
            value = out.get(name)
            if value is not None:
                out[name] = fn(value)
        return out

    return normalize


def avro_struct(schema: Mapping[str, Any]) -> RowConverter:
    """:func:`pipeline.types.struct_converter` for values fastavro read: each
    field's normalizer runs first, in the same pass."""
    return struct_converter(schema, first=_field_normalizers(schema))
