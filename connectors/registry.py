"""Build the sinks of a configuration, each by the kind its ``type`` names.

A kind (:class:`connectors.base.SinkKind`) is found through the entry-point
group ``readside.sinks`` (:mod:`pipeline.sinktypes`), so each driver is
imported only when a configuration uses its store.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from connectors.base import Sink, SinkKind, StoreSink, ViewTarget
from pipeline.aggregate.shape import ShapeReader
from pipeline.config import Config
from pipeline.errors import ConfigError
from pipeline.sinktypes import SinkConfig, UnknownSinkType, kind


def kind_of(name: str, cfg: SinkConfig) -> SinkKind[Any]:
    """The kind of sink ``name``.

    Raises:
        ConfigError: its type is unknown or is not a :class:`SinkKind`.
    """
    try:
        found = kind(cfg.type)
    except UnknownSinkType as exc:
        raise ConfigError(f"sinks.{name}.type: {exc}") from exc
    if not isinstance(found, SinkKind):
        raise ConfigError(f"sinks.{name}.type: {cfg.type!r} is not a SinkKind")
    return found


def build_sink(name: str, cfg: SinkConfig, targets: Mapping[str, ViewTarget]) -> Sink:
    """Return the (unopened) sink ``name`` described by ``cfg``.

    Raises:
        ConfigError: the configuration names an unknown kind of sink.
    """
    return kind_of(name, cfg).build(name, cfg, targets)


def targets_for(cfg: Config, sink_name: str) -> dict[str, ViewTarget]:
    """The views a sink holds, with their per-view options."""
    out: dict[str, ViewTarget] = {}
    for view_name, view in cfg.effective_views().items():
        if sink_name not in view.sinks:
            continue
        opts = view.sink_options.get(sink_name)
        extra: dict[str, Any] = dict(opts.model_extra or {}) if opts else {}
        if view.distribution_key and "routing_field" not in extra:
            extra["routing_field"] = view.distribution_key
        name = (opts.target if opts and opts.target else None) or view_name
        out[view_name] = ViewTarget(
            view_name,
            name,
            extra,
            ShapeReader(cfg, view_name),
            transformed=bool(view.transforms),
        )
    return out


def build_sinks(cfg: Config, names: Sequence[str]) -> dict[str, Sink]:
    """The (unopened) sinks ``names`` of ``cfg``, with their targets."""
    return {n: build_sink(n, cfg.sinks[n], targets_for(cfg, n)) for n in names}


def reserved_problems(cfg: Config) -> list[str]:
    """Each view whose documents would carry a field one of its stores keeps
    for itself (:meth:`~connectors.base.StoreSink.reserved_refusals`), as the
    message the store's sink refuses it with when it opens."""
    used = sorted({s for view in cfg.effective_views().values() for s in view.sinks})
    return [
        str(refusal)
        for sink in build_sinks(cfg, used).values()
        if isinstance(sink, StoreSink)
        for refusal in sink.reserved_refusals()
    ]
