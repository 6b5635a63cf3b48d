"""Kinds of sink, found by the ``type:`` of each ``sinks:`` entry.

A kind of store is one module under ``connectors/`` (or in a user's package)
whose ``KIND`` (a :class:`connectors.base.SinkKind`) holds its config model
and its sink. Kinds are registered under the entry-point group
:data:`GROUP`, by their type name::

    [project.entry-points."readside.sinks"]
    redis = "connectors.redis:KIND"

This module is on the ground floor: it imports no store module. A kind is
loaded when a configuration names its type (:data:`AnySinkConfig` validates
each ``sinks:`` entry with its kind's model), so the config schema knows no
store and a deployment loads only the drivers of the stores it uses.
"""

from __future__ import annotations

import functools
import importlib.metadata
from typing import Annotated, Any, Protocol, cast

from pydantic import (
    BaseModel,
    ConfigDict,
    SerializeAsAny,
    ValidationError,
    ValidatorFunctionWrapHandler,
    WrapValidator,
)
from pydantic_core import InitErrorDetails, PydanticCustomError

GROUP = "readside.sinks"

#: The kinds readside ships, as pyproject.toml declares them in :data:`GROUP`.
#: Listed here too so that a checkout run in place, whose installed metadata
#: may predate them, finds them; they win over entry points of the same name.
SHIPPED = {
    "elasticsearch": "connectors.elasticsearch:KIND",
    "memory": "connectors.memory:KIND",
    "mongodb": "connectors.mongodb:KIND",
    "opensearch": "connectors.opensearch:KIND",
    "redis": "connectors.redis:KIND",
}


class SinkConfig(BaseModel):
    """The base of every sink's config model: one entry of ``sinks:``.

    A kind's model narrows ``type`` to its name (``Literal["redis"]``) and
    adds its settings; unknown settings are refused.
    """

    model_config = ConfigDict(extra="forbid", frozen=True)
    type: str

    def target_problem(self, target: str) -> str | None:
        """Why ``target`` cannot name a view's place in this store (an index,
        a collection, a key prefix), or ``None`` when it can."""
        return None

    def targets_overlap(self, a: str, b: str) -> bool:
        """Whether views whose targets are ``a`` and ``b`` would share
        storage in this store."""
        return a == b


class Kind(Protocol):
    """What the config schema needs of a kind (see connectors.base.SinkKind)."""

    @property
    def name(self) -> str: ...

    @property
    def config(self) -> type[SinkConfig]: ...


class UnknownSinkType(LookupError):
    """No kind is registered under the type name (or it cannot be loaded)."""


def _entry_points() -> dict[str, importlib.metadata.EntryPoint]:
    found = {
        ep.name: ep
        for ep in importlib.metadata.entry_points(group=GROUP)
        if ep.name not in SHIPPED
    }
    for name, value in SHIPPED.items():
        found[name] = importlib.metadata.EntryPoint(name, value, GROUP)
    return found


def known() -> list[str]:
    """Every registered type name, sorted."""
    return sorted(_entry_points())


@functools.cache
def kind(type_name: str) -> Kind:
    """The kind registered as ``type_name`` (loaded once).

    Raises:
        UnknownSinkType: no such type, or its module cannot be imported (the
            message says which, and lists the known types).
    """
    ep = _entry_points().get(type_name)
    if ep is None:
        raise UnknownSinkType(
            f"unknown sink type {type_name!r} (known: {', '.join(known())})"
        )
    try:
        loaded: Any = ep.load()
    except Exception as exc:
        raise UnknownSinkType(
            f"sink type {type_name!r} cannot be loaded from {ep.value}: "
            f"{type(exc).__name__}: {exc}"
        ) from exc
    config = getattr(loaded, "config", None)
    if getattr(loaded, "name", None) != type_name or not (
        isinstance(config, type) and issubclass(config, SinkConfig)
    ):
        raise UnknownSinkType(
            f"sink type {type_name!r}: {ep.value} is not a sink kind "
            "(connectors.base.SinkKind) of that type"
        )
    return cast(Kind, loaded)


def _type_error(value: dict[str, Any], message: str) -> ValidationError:
    error = PydanticCustomError("sink_type", message)
    return ValidationError.from_exception_data(
        "sink", [InitErrorDetails(type=error, loc=("type",), input=value)]
    )


def _by_type(value: Any, handler: ValidatorFunctionWrapHandler) -> Any:
    """Validate one ``sinks:`` entry with the model of the kind its ``type``
    names. Errors read ``sinks.<name>.type: ...`` or, from the model,
    ``sinks.<name>.<type>.<field>: ...``."""
    if isinstance(value, SinkConfig) or not isinstance(value, dict):
        return handler(value)
    type_name = value.get("type")
    if type_name is None:
        raise _type_error(value, f"Field required (known: {', '.join(known())})")
    try:
        model = kind(str(type_name)).config
    except UnknownSinkType as exc:
        raise _type_error(value, str(exc)) from None
    try:
        return model.model_validate(value)
    except ValidationError as exc:
        details = [
            InitErrorDetails(
                type=e["type"],
                loc=(str(type_name), *e["loc"]),
                input=e["input"],
                ctx=e.get("ctx", {}),
            )
            for e in exc.errors()
        ]
        raise ValidationError.from_exception_data(exc.title, details) from None


#: One entry of ``sinks:``: the model of the kind named by its ``type``.
AnySinkConfig = Annotated[SerializeAsAny[SinkConfig], WrapValidator(_by_type)]
