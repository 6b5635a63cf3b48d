"""Focuses in the config: named slices of a view, each kept in its own stores.

A focus ``eu`` of view ``customers``::

    focuses:
      eu:
        view: customers
        where: "country IN ('DE', 'FR')"   # SQL on the root (aggregate view)
        targets: {redis: "shop:customers-eu"}  # optional, per sink

is materialized as a *derived view* named ``customers.eu``: a copy of the
base view whose row filter is the base's filter AND the focus's ``where``
(SQL for an aggregate view, a readside expression for a table view), with
the same sinks and sink options except the target, which defaults to the
base view's target followed by ``.eu``. A derived view is an ordinary view
for the worker, snapshots, verify and status (see
:meth:`pipeline.config.Config.effective_views`); only its stores differ, so a
site bound to one focus cannot read another focus's documents.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from pipeline.expr import compile_expression
from pipeline.sinktypes import SinkConfig

#: Lower case so the derived target is a valid Elasticsearch index name.
FOCUS_NAME = re.compile(r"^[a-z0-9][a-z0-9_-]{0,62}$")


class FocusConfig(BaseModel):
    """One focus: a base view, a row filter on its root and target overrides."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    view: str
    where: str = Field(min_length=1)
    targets: dict[str, str] = Field(default_factory=dict)
    #: ``where`` definitions applied before (any order). ``focus apply``
    #: backfills only the roots the new ``where`` adds when the definition
    #: it last recorded is one of these (or the current one); otherwise it
    #: loads the whole slice. The recorded definition is only compared with
    #: what the config says, never run as SQL.
    previous: list[str] = Field(default_factory=list)


def derived_name(view: str, focus: str) -> str:
    """The name of the view that materializes ``focus`` of ``view``."""
    return f"{view}.{focus}"


def _and(first: str | None, second: str, word: str) -> str:
    return second if not first else f"({first}) {word} ({second})"


def _check_target(where: str, sink: SinkConfig, target: str) -> None:
    if not target or target != target.strip():
        raise ValueError(f"{where}: target must be a non-empty name without spaces")
    problem = sink.target_problem(target)
    if problem is not None:
        raise ValueError(f"{where}: {problem}")


def derive(
    name: str,
    focus: FocusConfig,
    base: Any,
    sinks: Mapping[str, SinkConfig],
    options_cls: Any,
) -> Any:
    """The derived view config of ``focus`` (``base`` is its base view config).

    Raises:
        ValueError: a bad name, sink, target or ``where`` (names the field).
    """
    field = f"focuses.{name}"
    if not FOCUS_NAME.match(name):
        raise ValueError(
            f"{field}: focus names are lower-case letters, digits, '_' and '-' "
            "(they become part of index, collection and key names)"
        )
    if base.kind == "aggregate":
        for n, where in enumerate([focus.where, *focus.previous]):
            if ";" in where:
                at = "where" if n == 0 else f"previous[{n - 1}]"
                raise ValueError(f"{field}.{at}: must be one SQL predicate (no ';')")
    if base.kind == "table":
        try:
            compile_expression(focus.where)
        except Exception as exc:  # noqa: BLE001 (reported with the field's name)
            raise ValueError(f"{field}.where: {exc}") from None
    for sink in focus.targets:
        if sink not in base.sinks:
            raise ValueError(
                f"{field}.targets: {sink!r} is not a sink of view {focus.view} "
                f"(its sinks: {', '.join(base.sinks)})"
            )
    options = {}
    for sink in base.sinks:
        opts = base.sink_options.get(sink)
        own = (opts.target if opts is not None else None) or focus.view
        target = focus.targets.get(sink) or f"{own}.{name}"
        _check_target(f"{field}.targets.{sink}", sinks[sink], target)
        extra = dict(opts.model_extra or {}) if opts is not None else {}
        options[sink] = options_cls(target=target, **extra)
    update: dict[str, Any] = {"sink_options": options}
    key = "where" if base.kind == "aggregate" else "filter"
    update[key] = derived_filter(base, focus.where)
    return base.model_copy(update=update)


def derived_filter(base: Any, where: str) -> str:
    """The whole filter of a derived view whose focus says ``where``: the
    base view's own filter (if any) and ``where``."""
    if base.kind == "aggregate":
        return _and(base.where, where, "AND")
    return _and(base.filter, where, "and")


def store_locations(views: Mapping[str, Any]) -> list[tuple[str, str, str]]:
    """(sink, target, view) of every view of ``views`` in every sink."""
    out: list[tuple[str, str, str]] = []
    for view_name, view in views.items():
        for sink in view.sinks:
            opts = view.sink_options.get(sink)
            target = (opts.target if opts is not None else None) or view_name
            out.append((sink, target, view_name))
    return out


def expand(
    focuses: Mapping[str, FocusConfig],
    views: Mapping[str, Any],
    sinks: Mapping[str, SinkConfig],
    options_cls: Any,
) -> dict[str, Any]:
    """Base views followed by every focus's derived view.

    Raises:
        ValueError: unknown base view, a derived name that is taken, or two
            views that would share a store location (names the field).
    """
    out = dict(views)
    derived: set[str] = set()
    for name, focus in focuses.items():
        if focus.view not in views:
            raise ValueError(
                f"focuses.{name}.view: unknown view {focus.view!r} "
                f"(known: {', '.join(sorted(views))})"
            )
        view_name = derived_name(focus.view, name)
        if view_name in out:
            raise ValueError(
                f"focuses.{name}: derived view name {view_name!r} is already a view"
            )
        out[view_name] = derive(name, focus, views[focus.view], sinks, options_cls)
        derived.add(view_name)
    seen = store_locations(out)
    for i, (sink, target, view) in enumerate(seen):
        for other_sink, other_target, other in seen[i + 1 :]:
            if sink != other_sink or not ({view, other} & derived):
                continue
            if sinks[sink].targets_overlap(target, other_target):
                raise ValueError(
                    f"focuses: views {view} and {other} would share the store "
                    f"location {target!r} / {other_target!r} in sink {sink}; set "
                    "distinct targets"
                )
    return out
