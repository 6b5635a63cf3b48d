"""One benchmark scenario's config, topics and cleanup, shared by the modes
of ``python -m bench``: its own topic prefix, consumer group and store
targets, the stack's stores."""

from __future__ import annotations

import argparse
import logging
from typing import Any

from confluent_kafka.admin import (  # type: ignore[attr-defined]  # no __all__
    AdminClient,
    NewTopic,
)
from psycopg.conninfo import make_conninfo
from pydantic import BaseModel, SecretStr
from pydantic_core import to_jsonable_python

from bench import events
from pipeline.config import Config

logger = logging.getLogger(__name__)


def _revealed(value: Any) -> Any:
    if isinstance(value, SecretStr):
        return value.get_secret_value()
    if isinstance(value, dict):
        return {k: _revealed(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_revealed(v) for v in value]
    return value


def plain(model: BaseModel) -> dict[str, Any]:
    """A settings model (a sink's) as config data, secrets revealed and paths
    as text: a config the bench writes logs in as the base config does."""
    return dict(to_jsonable_python(_revealed(model.model_dump())))


def kafka_access(base: Config) -> dict[str, Any]:
    """The ``kafka`` settings by which the base config reaches its brokers
    (``bootstrap_servers``, ``client``: TLS, SASL ...), secrets revealed,
    for a config the bench writes."""
    kafka = plain(base.kafka)
    return {k: kafka[k] for k in ("bootstrap_servers", "client")}


def source_dsn(base: Config) -> str:
    """The configured source's server, in its ``postgres`` database."""
    return make_conninfo(base.source.dsn.get_secret_value(), dbname="postgres")


def bench_config(
    base: Config,
    prefix: str,
    scenario: str,
    sinks: list[str],
    kafka: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """A config of one scenario: its own group and targets, the stack's stores;
    ``kafka``: the record format's settings (:attr:`Format.kafka`)."""
    by_type = {s.type: plain(s) for s in base.sinks.values()}
    sink_cfgs = {t: by_type[t] for t in sinks}
    if "elasticsearch" in sink_cfgs:
        sink_cfgs["elasticsearch"]["index_prefix"] = "bench-"
    if "mongodb" in sink_cfgs:
        sink_cfgs["mongodb"]["database"] = "readside_bench"
    target = f"{prefix}-{scenario}-items".lower()
    return {
        "source": {
            # The stack's PostgreSQL, in its maintenance database (always
            # there: the configured one, the demo's, may not be created yet,
            # and a store that reads the catalog would wait for it), which
            # has no such table: the stores that derive native types from the
            # source's catalog (an Elasticsearch index's mapping) find none
            # and map dynamically, as the raw writes do.
            "dsn": source_dsn(base),
            "tables": [events.TABLE],
            "topic_prefix": prefix,
        },
        "kafka": {
            **kafka_access(base),
            "group_id": f"{prefix}-{scenario}",
            "partitions": 3,
            "dlq_topic": f"{prefix}.dlq",
            "checkpoint_topic": f"{prefix}.checkpoints",
            **(kafka or {}),
        },
        "sinks": sink_cfgs,
        "views": {
            "items": {
                "table": events.TABLE,
                "sinks": sinks,
                "sink_options": {s: {"target": target} for s in sinks},
            }
        },
        "worker": {**base.worker.model_dump(), "metrics_port": 0},
    }


def create_topics(admin: AdminClient, create: list[str], parts: int) -> None:
    futures = admin.create_topics(
        [NewTopic(t, num_partitions=parts, replication_factor=1) for t in create]
    )
    for fut in futures.values():
        fut.result()


def cleanup(admin: AdminClient, prefix: str) -> None:
    topics = [t for t in admin.list_topics(timeout=10).topics if t.startswith(prefix)]
    if topics:
        for fut in admin.delete_topics(topics, operation_timeout=30).values():
            fut.result()
    groups = [
        g.group_id
        for g in admin.list_consumer_groups().result().valid
        if g.group_id.startswith(prefix)
    ]
    if groups:
        for fut in admin.delete_consumer_groups(groups).values():
            try:
                fut.result()
            except Exception as exc:  # noqa: BLE001 - cleanup goes on
                logger.warning("group not deleted error=%s", exc)


def add_admin_dsn(parser: argparse.ArgumentParser) -> None:
    """The ``--admin-dsn`` option of the modes that make a database."""
    parser.add_argument(
        "--admin-dsn",
        default=None,
        help="a superuser of the source (default: the config's source.dsn, "
        "on database postgres: the stack's superuser, with its password)",
    )


def admin_dsn(base: Config, given: str | None) -> str:
    """``--admin-dsn`` as given, or ``base``'s ``source.dsn`` on database
    ``postgres``, as a URI (the modes name their own database after its
    last ``/``)."""
    if given:
        return given
    dsn = base.source.dsn.get_secret_value()
    if not dsn.startswith(("postgresql://", "postgres://")):
        raise SystemExit("--admin-dsn is needed: source.dsn is not a postgresql:// URI")
    return dsn.split("?", 1)[0].rsplit("/", 1)[0] + "/postgres"
