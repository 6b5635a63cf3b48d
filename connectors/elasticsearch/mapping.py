"""The mapping of a view's index, derived from its source column types.

Without it Elasticsearch would map each field from the first value it sees:
a numeric, written as its exact text (``"8.20"``), would become ``text``
and ``keyword``, and range filters, sorts and aggregations on it would
compare text. From the view's shape (:mod:`pipeline.fieldtypes`) each field
gets its native type instead; the document keeps the exact text readside
writes (Elasticsearch parses numeric and date strings into numeric and date
fields, and ``_source`` is returned as written), so a document reads back
equal to its SQL definition.

========================  =============================================
field kind                mapping
========================  =============================================
numeric                   ``double`` (or ``scaled_float`` with factor
                          10^scale, ``numeric: scaled_float``), the exact
                          text in the sub-field ``exact`` (``keyword``)
smallint/integer/bigint   ``short`` / ``integer`` / ``long``
real/double               ``float`` / ``double``
boolean                   ``boolean``
timestamp, date           ``date`` (ISO 8601, as readside writes them)
text, varchar...          ``text`` with the sub-field ``keyword``
enum, uuid, time...       ``keyword``
hstore                    ``flattened`` (a leaf over 8,191 characters
                          kept, not indexed)
bytea                     ``binary``
json, jsonb               dynamic (``json: flattened`` or ``disabled``)
nested levels             ``object`` with the level's properties
========================  =============================================

Numbers and dates that Elasticsearch cannot parse (``"NaN"``,
``"infinity"``) are kept in ``_source`` and left out of the index
(``ignore_malformed``), never refused. A user's ``mappings`` win field by
field (:func:`merge`).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from pipeline.fieldtypes import FieldType, Shape

Mapping_ = dict[str, Any]

#: the largest scaling factor scaled_float keeps exactly (a long holds the
#: scaled value: 15 significant digits in all are safe in a double too)
_MAX_SCALE = 15
_DATE = {
    "type": "date",
    "format": "strict_date_optional_time||epoch_millis",
    "ignore_malformed": True,
}
_TEXT = {
    "type": "text",
    "fields": {"keyword": {"type": "keyword", "ignore_above": 256}},
}
#: A flattened field indexes each leaf as a keyword, and Lucene refuses a
#: term over 32,766 bytes: a longer leaf refused the whole document. Leaves
#: over 8,191 characters (4 bytes each at most) are kept in ``_source`` and
#: left out of the index, as a text column's keyword sub-field does.
_FLATTENED = {"type": "flattened", "ignore_above": 8191}
_SIMPLE: dict[str, Mapping_] = {
    "smallint": {"type": "short", "ignore_malformed": True},
    "integer": {"type": "integer", "ignore_malformed": True},
    "bigint": {"type": "long", "ignore_malformed": True},
    "real": {"type": "float", "ignore_malformed": True},
    "double": {"type": "double", "ignore_malformed": True},
    "boolean": {"type": "boolean"},
    "timestamp": _DATE,
    "date": _DATE,
    "text": _TEXT,
    "keyword": {"type": "keyword", "ignore_above": 1024},
    "enum": {"type": "keyword"},
    "object": _FLATTENED,
    "binary": {"type": "binary"},
}
_JSON: dict[str, Mapping_ | None] = {
    "dynamic": None,
    "flattened": _FLATTENED,
    "disabled": {"type": "object", "enabled": False},
}


def numeric_mapping(scale: int | None, numeric: str) -> Mapping_:
    """A numeric field: a number, and its exact text in the sub-field ``exact``."""
    exact = {"exact": {"type": "keyword", "ignore_above": 256}}
    if numeric == "scaled_float" and scale is not None and 0 <= scale <= _MAX_SCALE:
        return {
            "type": "scaled_float",
            "scaling_factor": 10**scale,
            "ignore_malformed": True,
            "fields": exact,
        }
    return {"type": "double", "ignore_malformed": True, "fields": exact}


def field_mapping(
    ft: FieldType, numeric: str = "double", json: str = "dynamic"
) -> Mapping_ | None:
    """The mapping of one field, or ``None`` to leave it to dynamic mapping.

    An array maps as its elements (Elasticsearch has no array type).
    """
    if ft.kind == "level":
        return {"type": "object", "properties": derived(ft.fields, numeric, json)}
    if ft.kind == "numeric":
        return numeric_mapping(ft.scale, numeric)
    if ft.kind == "json":
        return _JSON[json]
    found = _SIMPLE.get(ft.kind)
    return None if found is None else dict(found)


def derived(shape: Shape, numeric: str = "double", json: str = "dynamic") -> Mapping_:
    """The properties of a view's (or a nested level's) fields."""
    out: Mapping_ = {}
    for name, ft in shape.items():
        mapping = field_mapping(ft, numeric, json)
        if mapping is not None:
            out[name] = mapping
    return out


def merge(derived_props: Mapping_, user: Mapping_) -> Mapping_:
    """The properties ``derived_props`` with the user's ``properties`` over
    them, field by field: a user's field replaces the derived one, except
    that two objects' properties are merged the same way."""
    out = dict(derived_props)
    for name, theirs in user.items():
        ours = out.get(name)
        if (
            isinstance(ours, Mapping)
            and isinstance(theirs, Mapping)
            and "properties" in ours
            and "properties" in theirs
            and theirs.get("type", "object") == "object"
        ):
            merged = {**ours, **theirs}
            merged["properties"] = merge(ours["properties"], theirs["properties"])
            out[name] = merged
        else:
            out[name] = theirs
    return out


def index_mappings(
    shape: Shape,
    user: Mapping_ | None,
    numeric: str = "double",
    json: str = "dynamic",
) -> Mapping_:
    """The ``mappings`` of a new index: the user's, with the derived
    properties beneath theirs (dynamic unless they say otherwise)."""
    mappings = dict(user or {"dynamic": True})
    props = merge(derived(shape, numeric, json), dict(mappings.get("properties") or {}))
    mappings["properties"] = props
    return mappings
