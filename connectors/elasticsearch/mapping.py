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


#: fields a view's index takes beyond its derived ones, for those mapped
#: dynamically (json columns, a transform's): Elasticsearch's own allowance
DYNAMIC_FIELDS = 1000


def field_count(props: Mapping_) -> int:
    """The fields ``props`` (a ``properties`` mapping) holds as Elasticsearch
    counts them against ``index.mapping.total_fields.limit``: each field and
    object, each sub-field (``fields``), the properties of each object."""
    count = 0
    for field in props.values():
        if not isinstance(field, Mapping):
            continue
        count += 1 + len(field.get("fields") or {})
        count += field_count(field.get("properties") or {})
    return count


def index_settings(mappings: Mapping_, user: Mapping_ | None) -> Mapping_:
    """The settings of a new index: one shard, no replica, and a total
    fields limit that holds the derived mapping with :data:`DYNAMIC_FIELDS`
    to spare; the user's ``settings`` over them (nested or dotted keys).

    Elasticsearch's limit (1,000 unless set) refused the index of a wide
    table (500 text columns map 1,000 fields with their keyword sub-fields)
    and with it the worker's start."""
    limit = field_count(mappings.get("properties") or {}) + DYNAMIC_FIELDS
    settings: Mapping_ = {
        "index.number_of_shards": 1,
        "index.number_of_replicas": 0,
        "index.mapping.total_fields.limit": limit,
    }
    settings.update(_dotted(user or {}))
    return settings


def _dotted(settings: Mapping[str, Any], prefix: str = "") -> Mapping_:
    """``settings`` as flat ``index.``-prefixed keys (Elasticsearch takes
    ``{"index": {"refresh_interval": ...}}``, ``refresh_interval`` and
    ``index.refresh_interval`` alike)."""
    out: Mapping_ = {}
    for key, value in settings.items():
        name = f"{prefix}{key}"
        if isinstance(value, Mapping):
            out.update(_dotted(value, f"{name}."))
        else:
            out[name if name.startswith("index.") else f"index.{name}"] = value
    return out
