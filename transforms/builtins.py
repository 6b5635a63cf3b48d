"""The built-in transforms: rename, drop, include, cast, compute, filter.

Each entry of :data:`BUILTINS` is a factory that validates a step's options
(raising :class:`~pipeline.errors.ConfigError` naming the field) and returns
the transform. Transforms return new documents and never modify their input.
An ``UNCHANGED`` value (unchanged TOASTed column) passes through rename, drop,
include and cast untouched; compute and filter refuse to read it.
"""

from __future__ import annotations

import json
import string
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import UTC, date, datetime
from decimal import Decimal, InvalidOperation
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from pipeline.errors import BadRecord, ConfigError
from pipeline.events import UNCHANGED, Document
from pipeline.jsonforms import (
    decimal_text,
    format_datetime,
    format_decimal,
    format_float,
)
from transforms.base import Transform
from transforms.expr import Expression, compile_expression


class _Options(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


def _validate(model: type[_Options], options: Mapping[str, Any]) -> Any:
    try:
        return model.model_validate(dict(options))
    except ValidationError as exc:
        problems = []
        for err in exc.errors():
            loc = ".".join(str(p) for p in err["loc"]) or "<options>"
            problems.append(f"field {loc}: {err['msg']}")
        raise ConfigError("; ".join(problems)) from None


# --- rename, drop, include -------------------------------------------------


class RenameOptions(_Options):
    fields: dict[str, str] = Field(min_length=1)

    @model_validator(mode="after")
    def _distinct_targets(self) -> RenameOptions:
        targets = list(self.fields.values())
        if len(set(targets)) != len(targets) or not all(targets):
            raise ValueError("new names must be distinct and non-empty")
        return self


@dataclass(frozen=True, slots=True)
class Rename:
    """Rename fields (old -> new); a renamed field replaces one already named new."""

    mapping: Mapping[str, str]

    def __call__(self, doc: Document) -> Document:
        mapping = self.mapping
        source = {new: old for old, new in mapping.items()}
        out: Document = {}
        for key, value in doc.items():
            if key in mapping:
                out[mapping[key]] = value
            elif key not in source or source[key] not in doc:
                out[key] = value
        return out


class FieldsOptions(_Options):
    fields: list[str] = Field(min_length=1)


@dataclass(frozen=True, slots=True)
class Drop:
    """Remove the named fields."""

    fields: frozenset[str]

    def __call__(self, doc: Document) -> Document:
        return {k: v for k, v in doc.items() if k not in self.fields}


@dataclass(frozen=True, slots=True)
class Include:
    """Keep only the named fields (those the document has)."""

    fields: frozenset[str]

    def __call__(self, doc: Document) -> Document:
        return {k: v for k, v in doc.items() if k in self.fields}


# --- cast ------------------------------------------------------------------

CastType = Literal["int", "float", "str", "bool", "decimal", "iso-date", "iso-datetime"]
_TRUE = frozenset({"true", "t", "yes", "y", "on", "1"})
_FALSE = frozenset({"false", "f", "no", "n", "off", "0"})


def _to_int(v: Any) -> int:
    if isinstance(v, bool | int):
        return int(v)
    if isinstance(v, float) and v.is_integer():
        return int(v)
    if isinstance(v, str):
        d = Decimal(v.strip())
        if d == d.to_integral_value():
            return int(d)
    raise ValueError(f"{v!r} is not a whole number")


def _to_float(v: Any) -> float | str:
    if isinstance(v, bool) or not isinstance(v, int | float | str):
        raise TypeError(f"{v!r} is not a number")
    return format_float(float(v))


def _to_str(v: Any) -> str:
    if isinstance(v, str):
        return v
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, dict | list):
        return json.dumps(v, separators=(",", ":"), sort_keys=True)
    return str(v)


def _to_bool(v: Any) -> bool:
    if isinstance(v, bool):
        return v
    if isinstance(v, int | float):
        return v != 0
    if isinstance(v, str):
        text = v.strip().lower()
        if text in _TRUE:
            return True
        if text in _FALSE:
            return False
    raise ValueError(f"{v!r} is not a boolean")


def _to_decimal(v: Any) -> str:
    if isinstance(v, str):
        return decimal_text(v.strip())
    if isinstance(v, int) and not isinstance(v, bool):
        return str(v)
    if isinstance(v, float):
        return format_decimal(Decimal(repr(v)))
    raise ValueError(f"{v!r} is not a number")


def _parse_instant(v: Any) -> datetime:
    if not isinstance(v, str):
        raise TypeError(f"{v!r} is not an ISO 8601 string")
    text = v.strip()
    if len(text) == 10:
        return datetime.combine(date.fromisoformat(text), datetime.min.time(), UTC)
    return datetime.fromisoformat(text)


def _to_iso_date(v: Any) -> str:
    instant = _parse_instant(v)
    if instant.tzinfo is not None:
        instant = instant.astimezone(UTC)
    return instant.date().isoformat()


def _to_iso_datetime(v: Any) -> str:
    return format_datetime(_parse_instant(v))


CASTS: dict[str, Callable[[Any], Any]] = {
    "int": _to_int,
    "float": _to_float,
    "str": _to_str,
    "bool": _to_bool,
    "decimal": _to_decimal,
    "iso-date": _to_iso_date,
    "iso-datetime": _to_iso_datetime,
}


class CastOptions(_Options):
    fields: dict[str, CastType] = Field(min_length=1)


@dataclass(frozen=True, slots=True)
class Cast:
    """Convert fields to a type; null and unchanged values stay as they are.

    ``iso-date`` and ``iso-datetime`` read ISO 8601 strings and write the
    canonical UTC forms of :mod:`pipeline.types` (a naive value is UTC).
    """

    fields: Mapping[str, str]

    def __call__(self, doc: Document) -> Document:
        out = dict(doc)
        for name, kind in self.fields.items():
            value = out.get(name)
            if value is None or value is UNCHANGED:
                continue
            try:
                out[name] = CASTS[kind](value)
            except (ValueError, TypeError, ArithmeticError, InvalidOperation) as exc:
                raise BadRecord(
                    "transform", f"cannot cast field {name!r} to {kind}: {exc}"
                ) from exc
        return out


# --- compute and filter ----------------------------------------------------


class ComputeOptions(_Options):
    field: str = Field(min_length=1)
    expression: str | None = None
    template: str | None = None

    @model_validator(mode="after")
    def _one_source(self) -> ComputeOptions:
        if (self.expression is None) == (self.template is None):
            raise ValueError("give exactly one of expression or template")
        return self


def _jsonable(value: Any) -> Any:
    if isinstance(value, Decimal):
        return format_decimal(value)
    if isinstance(value, float):
        return format_float(value)
    if isinstance(value, tuple | set | frozenset):
        return [_jsonable(v) for v in value]
    return value


@dataclass(frozen=True, slots=True)
class Template:
    """``"{first_name} {last_name}"``: fields by name, null renders as ``""``."""

    text: str
    parts: tuple[tuple[str, str | None], ...]

    @classmethod
    def parse(cls, text: str) -> Template:
        parts: list[tuple[str, str | None]] = []
        try:
            parsed = list(string.Formatter().parse(text))
        except ValueError as exc:
            raise ConfigError(f"template {text!r}: {exc}") from exc
        for literal, name, spec, conversion in parsed:
            if name is not None and (
                not name.isidentifier() or spec or conversion is not None
            ):
                raise ConfigError(
                    f"template {text!r}: {{{name}}} must be a plain field name "
                    "(no attributes, indexes, conversions or format specs)"
                )
            parts.append((literal, name))
        return cls(text, tuple(parts))

    def render(self, doc: Document) -> str:
        out: list[str] = []
        for literal, name in self.parts:
            out.append(literal)
            if name is None:
                continue
            if name not in doc:
                raise BadRecord("transform", f"template field {name!r} is missing")
            value = doc[name]
            if value is UNCHANGED:
                raise BadRecord(
                    "transform",
                    f"template field {name!r} is an unchanged TOASTed column",
                )
            out.append("" if value is None else _to_str(value))
        return "".join(out)


@dataclass(frozen=True, slots=True)
class Compute:
    """Set ``field`` to the value of an expression or a template."""

    field: str
    expression: Expression | None
    template: Template | None

    def __call__(self, doc: Document) -> Document:
        out = dict(doc)
        if self.expression is not None:
            out[self.field] = _jsonable(self.expression.evaluate(doc))
        elif self.template is not None:
            out[self.field] = self.template.render(doc)
        return out


class FilterOptions(_Options):
    expression: str = Field(min_length=1)


@dataclass(frozen=True, slots=True)
class Filter:
    """Keep the document when the expression is true, drop it otherwise."""

    expression: Expression

    def __call__(self, doc: Document) -> Document | None:
        return doc if self.expression.evaluate(doc) else None


# --- factories -------------------------------------------------------------


def _rename(options: Mapping[str, Any]) -> Transform:
    return Rename(dict(_validate(RenameOptions, options).fields))


def _drop(options: Mapping[str, Any]) -> Transform:
    return Drop(frozenset(_validate(FieldsOptions, options).fields))


def _include(options: Mapping[str, Any]) -> Transform:
    return Include(frozenset(_validate(FieldsOptions, options).fields))


def _cast(options: Mapping[str, Any]) -> Transform:
    return Cast(dict(_validate(CastOptions, options).fields))


def _compute(options: Mapping[str, Any]) -> Transform:
    opts: ComputeOptions = _validate(ComputeOptions, options)
    try:
        if opts.expression is not None:
            return Compute(opts.field, compile_expression(opts.expression), None)
        return Compute(opts.field, None, Template.parse(opts.template or ""))
    except ConfigError as exc:
        which = "expression" if opts.expression is not None else "template"
        raise ConfigError(f"field {which}: {exc}") from exc


def _filter(options: Mapping[str, Any]) -> Transform:
    opts: FilterOptions = _validate(FilterOptions, options)
    try:
        return Filter(compile_expression(opts.expression))
    except ConfigError as exc:
        raise ConfigError(f"field expression: {exc}") from exc


#: Built-in transform types and their factories (options -> transform).
BUILTINS: dict[str, Callable[[Mapping[str, Any]], Transform]] = {
    "rename": _rename,
    "drop": _drop,
    "include": _include,
    "cast": _cast,
    "compute": _compute,
    "filter": _filter,
}
