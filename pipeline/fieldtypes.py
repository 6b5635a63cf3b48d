"""What each field of a view's documents holds, from its source column's type.

A view's *shape* maps each field of its documents to a :class:`FieldType`:
the kind of value readside writes there (:mod:`pipeline.jsonforms`: a
numeric is its exact text, a timestamp ISO 8601 text...) and, for the
nested levels of an aggregate view, the shape of the level. Stores derive
their native types from it: Elasticsearch its index mappings
(:mod:`connectors.elasticsearch.mapping`), MongoDB its ``Decimal128``
numerics. The shape is read from the source's catalog
(:mod:`pipeline.aggregate.shape`); this module holds only the data and the
rule from a PostgreSQL type to a kind. ``docs/types.md`` lists both.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

#: kind -> the PostgreSQL type names (``pg_type.typname``) of that kind
_KINDS: dict[str, tuple[str, ...]] = {
    "numeric": ("numeric", "money"),
    "smallint": ("int2",),
    "integer": ("int4",),
    "bigint": ("int8", "oid"),
    "real": ("float4",),
    "double": ("float8",),
    "boolean": ("bool", "bit"),
    "timestamp": ("timestamptz", "timestamp"),
    "date": ("date",),
    "text": ("text", "varchar", "bpchar", "citext", "name", "tsvector", "xml"),
    "keyword": (
        "uuid",
        "time",
        "timetz",
        "interval",
        "inet",
        "cidr",
        "macaddr",
        "macaddr8",
        "ltree",
    ),
    "json": ("json", "jsonb"),
    "object": ("hstore",),
    "binary": ("bytea",),
}
_BY_NAME = {name: kind for kind, names in _KINDS.items() for name in names}


@dataclass(frozen=True)
class FieldType:
    """The values of one field of a view's documents.

    Attributes:
        kind: ``numeric`` (exact decimal text), ``smallint``, ``integer``,
            ``bigint``, ``real``, ``double``, ``boolean``, ``timestamp``
            (ISO 8601 text with offset), ``date``, ``text``, ``keyword``
            (uuid, times, intervals, addresses), ``enum``, ``json``,
            ``object`` (hstore), ``binary`` (base64), ``level`` (a nested
            level of an aggregate view) or ``unknown``.
        array: the field holds a list of such values (a PostgreSQL array,
            or the rows of a one-to-many or many-to-many level).
        scale: a numeric's declared scale (``numeric(10,2)``: 2), else None.
        fields: the shape of a nested level.
        pg: the PostgreSQL type it comes from (``numeric``, ``_text``...).
    """

    kind: str
    array: bool = False
    scale: int | None = None
    fields: Mapping[str, FieldType] = field(default_factory=dict)
    pg: str = ""


Shape = Mapping[str, FieldType]
"""The fields of a view's documents (or of one nested level) and their types."""


def numeric_scale(typmod: int) -> int | None:
    """The scale a numeric typmod declares (``None``: unconstrained)."""
    if typmod < 4:
        return None
    scale = (typmod - 4) & 0x7FF  # 11 bits, signed since PostgreSQL 15
    return scale - 0x800 if scale > 0x3FF else scale


def column_type(
    scalar: str, array: bool = False, enum: bool = False, typmod: int = -1
) -> FieldType:
    """The field type of a column whose scalar type is named ``scalar``
    (an array's element type, a domain's base type)."""
    name = scalar.lstrip("_") if scalar.startswith("_") and array else scalar
    kind = "enum" if enum else _BY_NAME.get(name, "unknown")
    if name == "bit" and typmod != 1:
        kind = "unknown"  # bit(n > 1) is not mapped (docs/types.md)
    scale = numeric_scale(typmod) if name == "numeric" else None
    if name == "money":
        scale = 2
    return FieldType(kind, array, scale, pg=scalar + ("[]" if array else ""))


def level(fields: Shape, array: bool) -> FieldType:
    """A nested level of an aggregate view: an object, or an array of them."""
    return FieldType("level", array, fields=dict(fields))


def numeric_paths(shape: Shape) -> list[tuple[str, ...]]:
    """The paths of every numeric field, nested levels included."""
    out: list[tuple[str, ...]] = []
    for name, ft in shape.items():
        if ft.kind == "numeric":
            out.append((name,))
        elif ft.kind == "level":
            out += [(name, *rest) for rest in numeric_paths(ft.fields)]
    return out
