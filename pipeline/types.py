"""One mapping from PostgreSQL values to JSON, shared by every kind of view.

Table views decode Debezium's Kafka Connect JSON (:func:`struct_converter`
builds, once per schema, a function that maps one row); aggregate views read
rows with psycopg (:func:`pg_value_to_json`). Both give the same JSON-ready
values, so one row serialises to byte-identical JSON through either path.
``docs/types.md`` is the reference table. An unchanged TOASTed column
(Debezium's unavailable-value placeholder in any of its typed forms) becomes
:data:`~pipeline.events.UNCHANGED`.

The canonical forms themselves (decimals, floats, timestamps, times,
durations) are in :mod:`pipeline.jsonforms`; this module holds the two
readers that end in them.
"""

from __future__ import annotations

import base64
import enum
import functools
import hashlib
import ipaddress
import json
import uuid
from collections.abc import Callable, Mapping
from datetime import date, datetime, time, timedelta
from decimal import Decimal
from typing import Any

import orjson

from pipeline.events import UNCHANGED
from pipeline.jsonforms import (
    clock,
    decimal_text,
    format_datetime,
    format_decimal,
    format_duration,
    format_float,
    format_time,
    interval_micros,
    timedelta_micros,
)

Converter = Callable[[Any], Any]
"""Maps one non-null value of a field to its JSON form."""

RowConverter = Callable[[Any], dict[str, Any]]
"""Maps one struct (a row or a key) to a new dict of JSON forms."""

#: Debezium's default ``unavailable.value.placeholder``.
PLACEHOLDER = "__debezium_unavailable_value"
_PLACEHOLDER_BYTES = PLACEHOLDER.encode()
#: The placeholder of a bytea column under ``binary.handling.mode=base64``.
PLACEHOLDER_BASE64 = base64.b64encode(_PLACEHOLDER_BYTES).decode()
# The typed forms Debezium uses for unchanged TOASTed arrays and hstore.
_ARRAY_PLACEHOLDERS: tuple[list[Any], ...] = (
    [PLACEHOLDER],
    [PLACEHOLDER_BASE64],
    list(_PLACEHOLDER_BYTES),
    [str(uuid.UUID(bytes=hashlib.md5(_PLACEHOLDER_BYTES).digest(), version=3))],  # noqa: S324 - Java's UUID.nameUUIDFromBytes
)
_HSTORE_PLACEHOLDER = {PLACEHOLDER: PLACEHOLDER}
_IP_TYPES = (
    ipaddress.IPv4Address,
    ipaddress.IPv6Address,
    ipaddress.IPv4Network,
    ipaddress.IPv6Network,
)

_EPOCH_DATE = date(1970, 1, 1)
_US_PER_DAY = 86_400_000_000
_FLOAT_SPECIALS = frozenset({"NaN", "Infinity", "-Infinity"})
_NUMERIC_SOURCE_TYPES = frozenset({"NUMERIC", "DECIMAL", "MONEY"})
_SOURCE_TYPE_PARAM = "__debezium.source.column.type"


class SchemaError(ValueError):
    """A Kafka Connect schema that readside cannot interpret."""


# --- Debezium (Kafka Connect JSON) -----------------------------------------


def _text(v: Any) -> Any:
    if v == PLACEHOLDER or v == PLACEHOLDER_BASE64:
        return UNCHANGED
    return v


def _numeric_text(v: Any) -> Any:
    if v == PLACEHOLDER:
        return UNCHANGED
    return decimal_text(v)


def _float(v: Any) -> Any:
    if isinstance(v, str):
        if v in _FLOAT_SPECIALS:
            return v
        raise ValueError(f"not a float: {v!r}")
    return format_float(v)


def _zoned_timestamp(v: str) -> str:
    if v in ("infinity", "-infinity"):
        return v
    value = datetime.fromisoformat(v)
    if v[-1] == "Z":  # Debezium's form: in UTC already
        return value.isoformat()
    return format_datetime(value)


@functools.lru_cache(maxsize=4096)
def _date_text(day: int) -> str:
    """``YYYY-MM-DD`` of a day since 1970-01-01 (a row's dates and
    timestamps mostly fall on few days: the text is made once per day).

    Raises:
        OverflowError: outside years 1-9999.
    """
    return (_EPOCH_DATE + timedelta(days=day)).isoformat()


def _epoch(micros: int) -> str:
    """``datetime.isoformat()`` of the UTC timestamp ``micros`` after the
    epoch, without making the datetime (this runs for every timestamp)."""
    day, rest = divmod(micros, _US_PER_DAY)
    try:
        text = _date_text(day)
    except OverflowError:
        return "infinity" if micros > 0 else "-infinity"
    seconds, fraction = divmod(rest, 1_000_000)
    hours, seconds = divmod(seconds, 3600)
    minutes, seconds = divmod(seconds, 60)
    if fraction:
        return f"{text}T{hours:02d}:{minutes:02d}:{seconds:02d}.{fraction:06d}+00:00"
    return f"{text}T{hours:02d}:{minutes:02d}:{seconds:02d}+00:00"


def _days(v: int) -> str:
    try:
        return _date_text(v)
    except OverflowError:
        return "infinity" if v > 0 else "-infinity"


def _time_micros(v: int) -> str:
    secs, micros = divmod(v, 1_000_000)
    return clock(secs, micros)


def _zoned_time(v: str) -> str:
    return format_time(time.fromisoformat(v))


def _interval(v: str) -> str:
    return format_duration(interval_micros(v))


def _uuid(v: str) -> Any:
    return UNCHANGED if v == PLACEHOLDER else v.lower()


def loads_json(data: str | bytes | memoryview) -> Any:
    """``orjson``'s parse, several times faster than the standard library's;
    where orjson refuses what Python's ``json`` takes (integers beyond 64 bits,
    ``NaN``), the standard library decides, so the result is always its."""
    try:
        return orjson.loads(data)
    except orjson.JSONDecodeError:
        return json.loads(data.tobytes() if isinstance(data, memoryview) else data)


def _json(v: str) -> Any:
    if v == PLACEHOLDER:
        return UNCHANGED
    parsed = loads_json(v)
    return UNCHANGED if parsed == _HSTORE_PLACEHOLDER else parsed


def _connect_decimal(scale: int) -> Converter:
    def convert(v: str) -> Any:
        if v == PLACEHOLDER_BASE64:
            return UNCHANGED
        unscaled = int.from_bytes(base64.b64decode(v), "big", signed=True)
        return format_decimal(Decimal(unscaled).scaleb(-scale))

    return convert


def _variable_scale_decimal(v: Mapping[str, Any]) -> str:
    unscaled = int.from_bytes(base64.b64decode(v["value"]), "big", signed=True)
    return format_decimal(Decimal(unscaled).scaleb(-int(v["scale"])))


_NAMED: dict[str, Converter] = {
    "io.debezium.time.ZonedTimestamp": _zoned_timestamp,
    "io.debezium.time.MicroTimestamp": _epoch,
    "io.debezium.time.Timestamp": lambda v: _epoch(v * 1000),
    "org.apache.kafka.connect.data.Timestamp": lambda v: _epoch(v * 1000),
    "io.debezium.time.NanoTimestamp": lambda v: _epoch(v // 1000),
    "io.debezium.time.Date": _days,
    "org.apache.kafka.connect.data.Date": _days,
    "io.debezium.time.MicroTime": _time_micros,
    "io.debezium.time.Time": lambda v: _time_micros(v * 1000),
    "org.apache.kafka.connect.data.Time": lambda v: _time_micros(v * 1000),
    "io.debezium.time.NanoTime": lambda v: _time_micros(v // 1000),
    "io.debezium.time.ZonedTime": _zoned_time,
    "io.debezium.time.Interval": _interval,
    "io.debezium.time.MicroDuration": format_duration,
    "io.debezium.data.Uuid": _uuid,
    "io.debezium.data.Json": _json,
    "io.debezium.data.VariableScaleDecimal": _variable_scale_decimal,
}


def _is_numeric_source(schema: Mapping[str, Any]) -> bool:
    params = schema.get("parameters")
    if not isinstance(params, Mapping):
        return False
    source_type = str(params.get(_SOURCE_TYPE_PARAM, "")).upper().lstrip("_")
    return source_type in _NUMERIC_SOURCE_TYPES


def field_converter(schema: Mapping[str, Any]) -> Converter | None:
    """The converter of one field schema, or ``None`` when values pass as is.

    Raises:
        SchemaError: the schema is not a Kafka Connect schema.
    """
    if not isinstance(schema, Mapping):
        raise SchemaError(f"field schema is not an object: {schema!r}")
    kind = schema.get("type")
    name = schema.get("name")
    if name == "org.apache.kafka.connect.data.Decimal":
        params = schema.get("parameters") or {}
        return _connect_decimal(int(params.get("scale", 0)))
    if isinstance(name, str) and name in _NAMED:
        return _NAMED[name]
    if kind == "string":
        return _numeric_text if _is_numeric_source(schema) else _text
    if kind == "bytes":
        return _text
    if kind in ("float32", "float64", "double", "float"):
        return _float
    if kind in ("int8", "int16", "int32", "int64", "boolean"):
        return None
    if kind == "array":
        items = schema.get("items") or {}
        numeric = _is_numeric_source(schema) and items.get("type") == "string"
        return _array_converter(_numeric_text if numeric else field_converter(items))
    if kind == "map":
        return _map_converter(field_converter(schema.get("values") or {}))
    if kind == "struct":
        return struct_converter(schema)
    raise SchemaError(f"unknown Connect schema type {kind!r}")


def _array_converter(element: Converter | None) -> Converter:
    if element is _text:
        # An unchanged TOASTed array is the whole placeholder array above;
        # its text elements pass as they are.
        element = None

    def convert(v: list[Any]) -> Any:
        if len(v) in (1, 28) and v in _ARRAY_PLACEHOLDERS:
            return UNCHANGED
        if element is None:
            return v
        return [None if x is None else element(x) for x in v]

    return convert


def _map_converter(value: Converter | None) -> Converter:
    def convert(v: dict[str, Any]) -> Any:
        if v == _HSTORE_PLACEHOLDER:
            return UNCHANGED
        if value is None:
            return v
        return {k: None if x is None else value(x) for k, x in v.items()}

    return convert


class FieldError(ValueError):
    """A value that does not fit its field's schema; names the field."""

    def __init__(self, path: str, cause: BaseException) -> None:
        super().__init__(f"column {path}: {type(cause).__name__}: {cause}")
        self.path = path


def _chain(first: Converter, then: Converter | None) -> Converter:
    if then is None:
        return first
    return lambda v: then(first(v))


def struct_converter(
    schema: Mapping[str, Any], first: Mapping[str, Converter] | None = None
) -> RowConverter:
    """Build the function that maps one struct value (a row) to JSON forms.

    Built once per schema and cached by the decoder. The returned function
    raises :class:`FieldError` naming the column when a value does not fit.
    ``first`` maps a field to what turns another format's form of its values
    into JsonConverter's (:mod:`pipeline.source.avro_schema`), run before
    the field's converter.

    Raises:
        SchemaError: the schema is not a Connect struct schema.
    """
    fields = schema.get("fields") if isinstance(schema, Mapping) else None
    if schema.get("type") != "struct" or not isinstance(fields, list):
        raise SchemaError("expected a struct schema with a list of fields")
    convs: dict[str, Converter | None] = {}
    for f in fields:
        if not isinstance(f, Mapping) or not isinstance(f.get("field"), str):
            raise SchemaError(f"struct field without a name: {f!r}")
        convs[f["field"]] = field_converter(f)
    for name, pre in (first or {}).items():
        if name in convs:
            convs[name] = _chain(pre, convs[name])
    return _generated_converter(convs)


#: The errors of a field's converter that make a bad value of that field.
_VALUE_ERRORS = (ValueError, TypeError, ArithmeticError, KeyError)


def _not_row(row: Any) -> FieldError:
    return FieldError("<row>", TypeError(f"expected an object, got {row!r}"))


def _nested(key: str, exc: FieldError) -> FieldError:
    """A nested field's error (of a struct or array), under ``key``."""
    return FieldError(f"{key}.{exc.path}", exc.__cause__ or exc)


def _generated_converter(convs: Mapping[str, Converter | None]) -> RowConverter:
    """The row converter of fields ``convs`` (name -> converter, ``None``:
    as is), generated as straight-line Python: a line or two per converting
    field instead of a loop over them (this runs for every row image of
    every event). A text field only checks for Debezium's placeholder,
    inline; a field of no converter is not looked at. The field names are
    names the generated code looks up (``K0``, ``K1``, ...), never code."""
    scope: dict[str, Any] = {
        "FieldError": FieldError,
        "NOT_ROW": _not_row,
        "NESTED": _nested,
        "ERRORS": _VALUE_ERRORS,
        "P": PLACEHOLDER,
        "PB": PLACEHOLDER_BASE64,
        "UNCHANGED": UNCHANGED,
        "isinstance": isinstance,
        "dict": dict,
    }
    lines = [
        "def convert(row):",
        "    if not isinstance(row, dict):",
        "        raise NOT_ROW(row)",
        "    out = dict(row)",
    ]
    for n, (name, fn) in enumerate(convs.items()):
        if fn is None:
            continue
        key = f"K{n}"
        scope[key] = name
        lines.append(f"    v = out.get({key})")
        if fn is _text:
            lines.append(f"    if v == P or v == PB: out[{key}] = UNCHANGED")
            continue
        scope[f"F{n}"] = fn
        lines += [
            "    if v is not None:",
            "        try:",
            f"            out[{key}] = F{n}(v)",
            "        except FieldError as exc:",
            f"            raise NESTED({key}, exc) from exc",
            "        except ERRORS as exc:",
            f"            raise FieldError({key}, exc) from exc",
        ]
    lines.append("    return out")
    exec(compile("\n".join(lines), "<row converter>", "exec"), scope)  # noqa: S102
    convert: RowConverter = scope["convert"]
    return convert


# --- psycopg ---------------------------------------------------------------


def pg_value_to_json(value: Any) -> Any:
    """Map a value psycopg returns to the same JSON form a table view decodes.

    Query money as ``money::numeric`` and ranges or other exotic types as
    ``::text``: psycopg returns money as locale-formatted text.

    Raises:
        TypeError: a Python type without a defined mapping.
    """
    if value is None or isinstance(value, bool | int | str):
        return value
    if isinstance(value, float):
        return format_float(value)
    if isinstance(value, Decimal):
        return format_decimal(value)
    if isinstance(value, datetime):
        return format_datetime(value)
    if isinstance(value, date):
        return value.isoformat()
    if isinstance(value, time):
        return format_time(value)
    if isinstance(value, timedelta):
        return format_duration(timedelta_micros(value))
    if isinstance(value, uuid.UUID):
        return str(value)
    if isinstance(value, bytes | bytearray | memoryview):
        return base64.b64encode(value).decode("ascii")
    if isinstance(value, list | tuple):
        return [pg_value_to_json(v) for v in value]
    if isinstance(value, dict):
        return {str(k): pg_value_to_json(v) for k, v in value.items()}
    if isinstance(value, enum.Enum):
        return value.value if isinstance(value.value, str) else value.name
    if isinstance(value, _IP_TYPES):  # inet (interfaces subclass addresses), cidr
        return str(value)
    raise TypeError(
        f"no JSON mapping for {type(value).__name__}; cast the column to text in SQL"
    )


def pg_row_to_json(row: Mapping[str, Any]) -> dict[str, Any]:
    """Apply :func:`pg_value_to_json` to every column of a row."""
    return {k: pg_value_to_json(v) for k, v in row.items()}
