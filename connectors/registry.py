"""Build a sink from its configuration, importing only the driver it needs."""

from __future__ import annotations

from collections.abc import Mapping

from connectors.base import Sink, ViewTarget
from pipeline.config import (
    ElasticsearchSinkConfig,
    MongoSinkConfig,
    RedisSinkConfig,
    SinkConfig,
)
from pipeline.errors import ConfigError


def build_sink(name: str, cfg: SinkConfig, targets: Mapping[str, ViewTarget]) -> Sink:
    """Return the (unopened) sink ``name`` described by ``cfg``.

    Each driver is imported here, on first use, so a deployment needs only the
    client libraries of the stores it uses.

    Raises:
        ConfigError: the configuration names an unknown kind of sink.
    """
    if isinstance(cfg, RedisSinkConfig):
        from connectors.redis_sink import RedisSink

        return RedisSink(name, cfg, targets)
    if isinstance(cfg, ElasticsearchSinkConfig):
        from connectors.elasticsearch_sink import ElasticsearchSink

        return ElasticsearchSink(name, cfg, targets)
    if isinstance(cfg, MongoSinkConfig):
        from connectors.mongodb_sink import MongoSink

        return MongoSink(name, cfg, targets)
    raise ConfigError(f"sinks.{name}: unknown sink type {type(cfg).__name__}")
