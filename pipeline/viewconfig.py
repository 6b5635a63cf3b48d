"""The ``views`` section: table views, aggregate views and their relations.

A table view (:class:`TableViewConfig`) makes one document per row of a
table; an aggregate view (:class:`AggregateViewConfig`) one document per root
row with its related rows nested (:class:`RelationConfig`, recursively).
:data:`ViewConfig` is either, by ``kind``. Both name their sinks, per-sink
options (:class:`ViewSinkOptions`) and a transform chain
(:class:`TransformConfig`). Whether the sinks and tables they name exist is
checked by the top-level configuration (:mod:`pipeline.config`).
"""

from __future__ import annotations

import re
from typing import Annotated, Any, Literal

from pydantic import (
    BaseModel,
    ConfigDict,
    Discriminator,
    Field,
    Tag,
    field_validator,
    model_validator,
)

from pipeline.sourceconfig import check_table


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class TransformConfig(_Model):
    """One step of a view's transform chain; options depend on ``type``."""

    model_config = ConfigDict(extra="allow", frozen=True)
    type: str


class ViewSinkOptions(_Model):
    """Per-view settings of one sink (all optional)."""

    model_config = ConfigDict(extra="allow", frozen=True)
    target: str | None = None  # index / collection / key prefix override


class _ViewBase(_Model):
    """What every kind of view has: its stores and how documents are finished."""

    sinks: list[str] = Field(min_length=1)
    transforms: list[TransformConfig] = Field(default_factory=list)
    distribution_key: str | None = None
    sink_options: dict[str, ViewSinkOptions] = Field(default_factory=dict)


class TableViewConfig(_ViewBase):
    """One document per row of ``table``, built from the event alone."""

    kind: Literal["table"] = "table"
    table: str
    fields: list[str] | None = None
    exclude: list[str] = Field(default_factory=list)
    filter: str | None = None  # focus row filter, an expression on the row

    @field_validator("table")
    @classmethod
    def _qualified(cls, table: str) -> str:
        return check_table(table)

    def tables(self) -> list[str]:
        return [self.table]

    def table_fields(self) -> list[tuple[str, str]]:
        """(field path, table) of every table the view reads."""
        return [("table", self.table)]


_COLUMN = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")


def _check_columns(cols: list[str]) -> list[str]:
    for c in cols:
        if not _COLUMN.match(c):
            raise ValueError(f"{c!r} is not a plain column name")
    return cols


def _check_on(on: dict[str, str]) -> dict[str, str]:
    if not on:
        raise ValueError("needs at least one column pair")
    _check_columns([*on, *on.values()])
    return on


class _Level(_Model):
    """Field selection, renames and nested relations of one level."""

    fields: list[str] | None = None
    exclude: list[str] = Field(default_factory=list)
    rename: dict[str, str] = Field(default_factory=dict)
    embed: dict[str, RelationConfig] = Field(default_factory=dict)

    @field_validator("fields", "exclude")
    @classmethod
    def _columns(cls, cols: list[str] | None) -> list[str] | None:
        return None if cols is None else _check_columns(cols)


class RelationConfig(_Level):
    """One nested relation of an aggregate view, named by the field it fills.

    Exactly one of ``children`` (one-to-many: an array), ``parent``
    (many-to-one: an object or null) and ``many_to_many`` (an array of the
    rows reached through ``through``) names the related table. ``on`` maps
    columns of the related table (of ``through`` for many-to-many) to columns
    of the enclosing level; ``target_on`` maps columns of the many-to-many
    target to columns of ``through``.
    """

    children: str | None = None
    parent: str | None = None
    many_to_many: str | None = None
    through: str | None = None
    on: dict[str, str]
    target_on: dict[str, str] | None = None
    order_by: list[str] = Field(default_factory=list)
    limit: int | None = Field(None, ge=1)
    #: one column of the related rows: an array of its values (children,
    #: many_to_many) or its value (parent) instead of objects
    value: str | None = None
    #: a parent's fields (and its own embeds) go into the enclosing level
    lift: bool = False

    @model_validator(mode="before")
    @classmethod
    def _bare_on(cls, data: Any) -> Any:
        """YAML 1.1 reads a bare ``on:`` key as ``true``; take it as ``on``."""
        if isinstance(data, dict) and True in data and "on" not in data:
            data = {("on" if k is True else k): v for k, v in data.items()}
        return data

    @field_validator("children", "parent", "many_to_many", "through")
    @classmethod
    def _qualified(cls, table: str | None) -> str | None:
        return None if table is None else check_table(table)

    @field_validator("on", "target_on")
    @classmethod
    def _pairs(cls, on: dict[str, str] | None) -> dict[str, str] | None:
        return None if on is None else _check_on(on)

    @field_validator("value")
    @classmethod
    def _value(cls, value: str | None) -> str | None:
        return None if value is None else _check_columns([value])[0]

    @field_validator("order_by")
    @classmethod
    def _order(cls, cols: list[str]) -> list[str]:
        for c in cols:
            name, _, direction = c.partition(" ")
            _check_columns([name])
            if direction.strip().lower() not in ("", "asc", "desc"):
                raise ValueError(f"order_by {c!r}: direction must be asc or desc")
        return cols

    @model_validator(mode="after")
    def _one_kind(self) -> RelationConfig:
        kinds = [k for k in ("children", "parent", "many_to_many") if getattr(self, k)]
        if len(kinds) != 1:
            raise ValueError(
                "set exactly one of children, parent, many_to_many "
                f"(got {', '.join(kinds) or 'none'})"
            )
        m2m = self.many_to_many is not None
        if m2m and (self.through is None or self.target_on is None):
            raise ValueError("many_to_many needs through and target_on")
        if not m2m and (self.through is not None or self.target_on is not None):
            raise ValueError("through and target_on belong to many_to_many only")
        if self.parent is not None and (self.order_by or self.limit):
            raise ValueError("order_by and limit apply to arrays, not to a parent")
        return self._shape()

    def _shape(self) -> RelationConfig:
        if self.lift and self.parent is None:
            raise ValueError("lift applies to a parent (many-to-one) only")
        if self.lift and self.value is not None:
            raise ValueError("set lift or value, not both")
        shaping = [
            k for k in ("fields", "exclude", "rename", "embed") if getattr(self, k)
        ]
        if self.value is not None and (shaping or self.fields is not None):
            raise ValueError(
                "value takes one column: fields, exclude, rename and embed "
                f"do not apply (got {', '.join(shaping or ['fields'])})"
            )
        return self

    @property
    def kind(self) -> str:
        return "children" if self.children else "parent" if self.parent else "m2m"

    @property
    def table(self) -> str:
        table = self.children or self.parent or self.many_to_many
        assert table is not None  # _one_kind
        return table

    def tables(self) -> list[str]:
        return [t for _, t in self.table_fields()]

    def table_fields(self) -> list[tuple[str, str]]:
        kind = "many_to_many" if self.kind == "m2m" else self.kind
        out = [(kind, self.table)]
        if self.through:
            out.append(("through", self.through))
        for key, rel in self.embed.items():
            out += [(f"embed.{key}.{p}", t) for p, t in rel.table_fields()]
        return out


class AggregateViewConfig(_ViewBase, _Level):
    """One document per root row with its related rows nested, read by SQL."""

    kind: Literal["aggregate"]
    table: str
    where: str | None = None  # focus row filter on the root, an SQL predicate

    @field_validator("table")
    @classmethod
    def _qualified(cls, table: str) -> str:
        return check_table(table)

    @field_validator("where")
    @classmethod
    def _where(cls, where: str | None) -> str | None:
        if where is not None and ";" in where:
            raise ValueError("must be one SQL predicate (no ';')")
        return where

    def tables(self) -> list[str]:
        return [t for _, t in self.table_fields()]

    def table_fields(self) -> list[tuple[str, str]]:
        out = [("table", self.table)]
        for key, rel in self.embed.items():
            out += [(f"embed.{key}.{p}", t) for p, t in rel.table_fields()]
        return out


def _view_kind(value: Any) -> str:
    if isinstance(value, dict):
        return str(value.get("kind", "table"))
    return str(getattr(value, "kind", "table"))


ViewConfig = Annotated[
    Annotated[TableViewConfig, Tag("table")]
    | Annotated[AggregateViewConfig, Tag("aggregate")],
    Discriminator(_view_kind),
]
