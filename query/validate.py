"""Checks of every caller-supplied name and value, before any store is asked.

Field names and values reach MongoDB filters, Elasticsearch queries and Redis
key names, so they are accepted only in a small, explicit shape: no operator
can be smuggled in as a field name (``$where``), as a nested dict
(``{"$ne": 1}``) or as a path (``a.b``). Everything here raises
:class:`~query.errors.QueryError`.
"""

from __future__ import annotations

import math
import unicodedata
from collections.abc import Mapping
from datetime import date, datetime
from typing import Any

from connectors.reads import Bound, Condition, Eq, Range, Scalar, SearchFilter
from pipeline.jsonforms import format_datetime
from query.errors import QueryError

MAX_SIZE = 1000
MAX_WINDOW = 10_000  # Elasticsearch's default index.max_result_window
MAX_QUERY_CHARS = 2000
MAX_TERMS = 1000
RANGE_OPS = ("gt", "gte", "lt", "lte")
RESERVED = ("_id", "_v", "_deleted")
#: the integers every store holds (MongoDB's and Elasticsearch's 64 bits)
INT_MIN, INT_MAX = -(2**63), 2**63 - 1


def field_name(name: object) -> str:
    """A plain top-level field name, or QueryError."""
    if not isinstance(name, str) or not name:
        raise QueryError("field", f"field name {name!r} must be a non-empty string")
    if "$" in name or "." in name:
        raise QueryError("field", f"field name {name!r} may not contain '$' or '.'")
    if name.startswith("_"):
        # _id, _v, _deleted are readside's; _script, _source, _index are
        # Elasticsearch's (a sort on _script would run a script).
        raise QueryError("field", f"field name {name!r} may not start with '_'")
    if name in RESERVED or len(name) > 200 or not name.isprintable():
        raise QueryError("field", f"field name {name!r} is not allowed")
    return name


def _int_in_range(value: int, where: str) -> int:
    if not INT_MIN <= value <= INT_MAX:
        raise QueryError("value", f"{where}: integer beyond 64 bits")
    return value


def scalar(value: object, where: str) -> Scalar:
    """A string, bool, 64-bit integer or finite number, or QueryError."""
    if isinstance(value, bool | str):
        return value
    if isinstance(value, int):
        return _int_in_range(value, where)
    if isinstance(value, float) and math.isfinite(value):
        return value
    raise QueryError(
        "value", f"{where}: {value!r} is not a scalar (string, number or bool)"
    )


def number(value: object, where: str) -> float:
    """A finite 64-bit int or float (not a bool), or QueryError."""
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise QueryError("value", f"{where}: {value!r} is not a number")
    if isinstance(value, int):
        return float(_int_in_range(value, where))
    if not math.isfinite(value):
        raise QueryError("value", f"{where}: {value!r} is not finite")
    return float(value)


def where(conditions: object) -> dict[str, Condition]:
    """Validate a ``filter`` condition mapping: field -> scalar or range dict."""
    if not isinstance(conditions, Mapping) or not conditions:
        raise QueryError("where", "where must be a non-empty mapping of fields")
    out: dict[str, Condition] = {}
    for raw_name, raw in conditions.items():
        name = field_name(raw_name)
        if isinstance(raw, Mapping):
            out[name] = _range(name, raw)
        else:
            out[name] = Eq(scalar(raw, name))
    return out


def instant(value: object, where: str) -> str:
    """An ISO 8601 date (``2024-03-01``) or timestamp, as readside writes it:
    a date as is, a timestamp in UTC with ``+00:00`` (without an offset it is
    taken to be UTC, as readside writes ``timestamp`` columns); else
    QueryError."""
    if not isinstance(value, str) or not 10 <= len(value) <= 40:
        raise QueryError("value", f"{where}: {value!r} is not a date or timestamp")
    try:
        if len(value) == 10:
            return date.fromisoformat(value).isoformat()
        return format_datetime(datetime.fromisoformat(value))
    except (ValueError, OverflowError):  # (in UTC before year 1 or after 9999)
        raise QueryError(
            "value", f"{where}: {value!r} is not an ISO 8601 date or timestamp"
        ) from None


def _bound(value: object, where: str) -> Bound:
    if isinstance(value, str):
        return instant(value, where)
    return number(value, where)


def _range(name: str, ops: Mapping[Any, Any]) -> Range:
    if not ops:
        raise QueryError("operator", f"{name}: empty operator mapping")
    bounds: list[tuple[str, Bound]] = []
    for op, value in ops.items():
        if op not in RANGE_OPS:
            raise QueryError(
                "operator",
                f"{name}: operator {op!r} is not one of {', '.join(RANGE_OPS)}",
            )
        bounds.append((str(op), _bound(value, f"{name}.{op}")))
    kinds = {isinstance(b, str) for _op, b in bounds}
    if len(kinds) > 1:
        raise QueryError("value", f"{name}: bounds mix numbers and instants")
    return Range(tuple(bounds))


def limit(value: object, name: str = "limit") -> int:
    """An int in 1..MAX_SIZE, or QueryError."""
    if isinstance(value, bool) or not isinstance(value, int):
        raise QueryError("size", f"{name} {value!r} must be an integer")
    if not 1 <= value <= MAX_SIZE:
        raise QueryError("size", f"{name} {value} must be between 1 and {MAX_SIZE}")
    return value


def page(number_: object, size: object) -> tuple[int, int]:
    """Validated (page, size); the window page*size stays within MAX_WINDOW."""
    checked_size = limit(size, "size")
    if isinstance(number_, bool) or not isinstance(number_, int) or number_ < 1:
        raise QueryError("page", f"page {number_!r} must be an integer >= 1")
    if number_ * checked_size > MAX_WINDOW:
        raise QueryError(
            "page", f"page {number_} of size {checked_size} is past {MAX_WINDOW} hits"
        )
    return number_, checked_size


def search_filters(filters: object) -> dict[str, SearchFilter]:
    """``search`` filters: field -> scalar (term), list of scalars (terms) or
    a mapping of ``gt``/``gte``/``lt``/``lte`` bounds (range)."""
    if filters is None:
        return {}
    if not isinstance(filters, Mapping):
        raise QueryError("filters", "filters must be a mapping of fields")
    out: dict[str, SearchFilter] = {}
    for raw_name, raw in filters.items():
        name = field_name(raw_name)
        if isinstance(raw, Mapping):
            out[name] = _range(name, raw)
        elif isinstance(raw, list | tuple):
            if not raw or len(raw) > MAX_TERMS:
                raise QueryError(
                    "value", f"{name}: a list needs 1 to {MAX_TERMS} values"
                )
            out[name] = [scalar(v, name) for v in raw]
        else:
            out[name] = scalar(raw, name)
    return out


def sort_keys(sort: object) -> list[tuple[str, str]]:
    """``["field", "-field"]`` -> ``[(field, "asc"), (field, "desc")]``."""
    if sort is None:
        return []
    if not isinstance(sort, list | tuple) or len(sort) > 10:
        raise QueryError("sort", "sort must be a list of at most 10 field names")
    out: list[tuple[str, str]] = []
    for key in sort:
        if not isinstance(key, str):
            raise QueryError("sort", f"sort key {key!r} must be a string")
        desc = key.startswith("-")
        out.append((field_name(key[1:] if desc else key), "desc" if desc else "asc"))
    return out


def query_text(query: object) -> str | None:
    """A query_string text of bounded length, or None."""
    if query is None:
        return None
    if not isinstance(query, str):
        raise QueryError("query", f"query {query!r} must be a string")
    if len(query) > MAX_QUERY_CHARS:
        raise QueryError("query", f"query longer than {MAX_QUERY_CHARS} characters")
    return query if query.strip() else None


MAX_ID_CHARS = 512


def doc_id(value: object) -> str:
    """A document id: a non-empty string, or an int (as its text).

    Any id a store holds is taken as it is (docs/configuration.md: document
    ids), up to :data:`MAX_ID_CHARS` characters without control characters.
    Pattern characters (``* ? [ ]``) are plain characters here: the stores
    are read by exact key (Redis ``MGET``, Elasticsearch ``mget``, MongoDB
    ``_id``), never by a pattern built from an id.
    """
    if isinstance(value, int) and not isinstance(value, bool):
        if value.bit_length() > 4 * MAX_ID_CHARS:  # not worth printing
            raise QueryError("ids", f"id longer than {MAX_ID_CHARS} characters")
        value = str(value)
    if not isinstance(value, str) or not value:
        raise QueryError("ids", f"id {value!r} must be a non-empty string")
    if len(value) > MAX_ID_CHARS:
        raise QueryError("ids", f"id longer than {MAX_ID_CHARS} characters")
    if any(unicodedata.category(c) == "Cc" for c in value):
        raise QueryError("ids", f"id {value[:40]!r} holds a control character")
    return value


def doc_ids(ids: object) -> list[str]:
    """A list of 0..MAX_SIZE ids, de-duplicated in order."""
    if isinstance(ids, str) or not isinstance(ids, list | tuple):
        raise QueryError("ids", "ids must be a list of strings")
    if len(ids) > MAX_SIZE:
        raise QueryError("size", f"at most {MAX_SIZE} ids per call")
    return list(dict.fromkeys(doc_id(i) for i in ids))
