"""The stack's sinks, as a benchmark finds them in the stack's configuration.

Every benchmark runs against the local stack and copies the settings of its
stores (URLs, hosts, URIs) into configurations of its own. :func:`find_sink` and
:func:`need_sink` give the settings of the stack's sink of one kind, typed as that
kind's config model (``RedisSinkConfig``, ``ElasticsearchSinkConfig``,
``MongoSinkConfig``).
"""

from __future__ import annotations

from typing import TypeVar

from pipeline.config import Config
from pipeline.sinktypes import SinkConfig

S = TypeVar("S", bound=SinkConfig)


def find_sink(cfg: Config, model: type[S]) -> S | None:
    """The settings of the first sink of ``cfg`` of kind ``model``, or None."""
    return next((s for s in cfg.sinks.values() if isinstance(s, model)), None)


def need_sink(cfg: Config, model: type[S]) -> S:
    """The settings of the first sink of ``cfg`` of kind ``model``.

    Raises:
        RuntimeError: ``cfg`` has no such sink.
    """
    found = find_sink(cfg, model)
    if found is None:
        raise RuntimeError(f"the stack's config has no sink of {model.__name__}")
    return found
