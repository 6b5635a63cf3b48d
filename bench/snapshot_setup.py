"""The throwaway source of ``python -m bench snapshot``: database, views, connectors.

One PostgreSQL database ``benchsnap_<hex>`` holds

* ``catalog`` (N rows) and ``catalog_small`` (M rows, for FerretDB): product
  rows of about 0.7 KB, like :mod:`bench.events`; each is a table view;
* ``customers`` (roots), ``orders`` (per root), ``order_lines`` (one per
  order) and ``products`` (many-to-one): the aggregate view ``customers``,
  a customer with its orders, their lines and each line's product.

Two configs share the database and the stack's stores: the table pipeline's
connector takes Debezium's initial snapshot of the catalog tables (timed);
the aggregate pipeline's connector streams changes only (``no_data``), for
the coalescing runs. Every name carries the run's prefix, and
:meth:`BenchSource.close` removes connectors, slots, topics, groups, store
targets and the database.
"""

from __future__ import annotations

import logging
import time
import uuid
from collections.abc import Callable
from functools import partial
from pathlib import Path
from typing import Any

import psycopg
import pymongo
import yaml
from confluent_kafka import TopicPartition

from bench.scenario import kafka_access, plain
from bench.sinks import find_sink
from connectors import debezium
from connectors.elasticsearch import ElasticsearchSinkConfig
from connectors.mongodb import MongoSinkConfig
from connectors.redis import RedisSinkConfig
from pipeline import config as config_mod
from pipeline import kafkaclient
from pipeline.checkpoints import ensure_topics
from pipeline.config import Config
from pipeline.worker import build_sinks

logger = logging.getLogger(__name__)

TABLE_VIEW, SMALL_VIEW, AGG_VIEW = "catalog", "catalog_small", "customers"
ORDERS_PER_ROOT = 5  # and one order line per order: 10 child rows per root

_CATALOG = """
CREATE TABLE {name} (
    id bigint PRIMARY KEY, sku text NOT NULL, name text NOT NULL,
    price numeric(10, 2) NOT NULL, tags text[] NOT NULL, attributes jsonb NOT NULL,
    description text, stock integer NOT NULL, active boolean NOT NULL,
    created_at timestamptz NOT NULL, updated_at timestamp, available_from date,
    ref uuid NOT NULL);
INSERT INTO {name} SELECT i, 'SKU-' || lpad(i::text, 9, '0'), 'product ' || i,
    (i % 100000) / 100.0 + 0.99, ARRAY['alpha', 'tag' || (i % 50), 'kilo'],
    jsonb_build_object('color', 'c' || (i % 17), 'weight', i % 1000,
                       'dims', jsonb_build_array(i % 7, i % 11, i % 13)),
    repeat('lorem ipsum dolor sit amet ', 14) || i, i % 5000, i % 3 <> 0,
    timestamptz '2024-01-01 00:00:00+00' + i * interval '1 second',
    timestamp '2024-06-01' + i * interval '1 minute', date '2024-01-01' + i % 365,
    md5(i::text)::uuid
FROM generate_series(1, {rows}) AS i;
"""

_AGGREGATE = """
CREATE TABLE products (id integer PRIMARY KEY, name text NOT NULL,
    price numeric(10, 2) NOT NULL);
INSERT INTO products SELECT i, 'product ' || i, i / 10.0 + 0.5
FROM generate_series(1, 1000) AS i;
CREATE TABLE customers (id integer PRIMARY KEY, name text NOT NULL,
    tier text NOT NULL, email text NOT NULL, since timestamptz NOT NULL);
INSERT INTO customers SELECT i, 'customer ' || i, (ARRAY['gold', 'silver', 'basic'])
    [1 + i % 3], 'c' || i || '@example.com',
    timestamptz '2020-01-01 00:00:00+00' + i * interval '1 minute'
FROM generate_series(1, {roots}) AS i;
CREATE TABLE orders (id integer PRIMARY KEY, customer_id integer NOT NULL,
    status text NOT NULL, placed integer NOT NULL, total numeric(12, 2) NOT NULL);
INSERT INTO orders SELECT i, 1 + (i - 1) / {per}, (ARRAY['new', 'paid', 'sent'])
    [1 + i % 3], i % 1000, (i % 5000) / 10.0
FROM generate_series(1, {roots} * {per}) AS i;
CREATE TABLE order_lines (id integer PRIMARY KEY, order_id integer NOT NULL,
    product_id integer NOT NULL, qty integer NOT NULL);
INSERT INTO order_lines SELECT i, i, 1 + i % 1000, 1 + i % 9
FROM generate_series(1, {roots} * {per}) AS i;
CREATE INDEX ON orders (customer_id);
CREATE INDEX ON order_lines (order_id);
ALTER TABLE orders REPLICA IDENTITY FULL;
ALTER TABLE order_lines REPLICA IDENTITY FULL;
ANALYZE;
"""

AGG_VIEW_CFG: dict[str, Any] = {
    "kind": "aggregate",
    "table": "public.customers",
    "embed": {
        "orders": {
            "children": "public.orders",
            "on": {"customer_id": "id"},
            "exclude": ["customer_id"],
            "order_by": ["placed desc"],
            "embed": {
                "lines": {
                    "children": "public.order_lines",
                    "on": {"order_id": "id"},
                    "fields": ["id", "qty", "product_id"],
                    "embed": {
                        "product": {
                            "parent": "public.products",
                            "on": {"id": "product_id"},
                            "fields": ["name", "price"],
                        }
                    },
                }
            },
        }
    },
}


class BenchSource:
    """The database and the two pipelines of one ``bench snapshot`` run."""

    def __init__(self, base: Config, admin_dsn: str, workdir: Path) -> None:
        self.base = base
        self.admin_dsn = admin_dsn
        self.prefix = f"benchsnap{uuid.uuid4().hex[:8]}"
        self.db = self.prefix
        self.dsn = admin_dsn.rsplit("/", 1)[0] + f"/{self.db}"
        self.workdir = workdir
        self.configs: dict[str, Config] = {}
        self._connectors: list[Config] = []
        with psycopg.connect(admin_dsn, autocommit=True) as conn:
            conn.execute(f'CREATE DATABASE "{self.db}"')

    # ------------------------------------------------------------ data
    def fill(self, rows: int, small_rows: int, roots: int) -> float:
        """Create and fill every table; returns the seconds it took."""
        start = time.perf_counter()
        with psycopg.connect(self.dsn, autocommit=True) as conn:
            for name, n in ((TABLE_VIEW, rows), (SMALL_VIEW, small_rows)):
                conn.execute(_CATALOG.format(name=name, rows=n))
            conn.execute(_AGGREGATE.format(roots=roots, per=ORDERS_PER_ROOT))
        return time.perf_counter() - start

    # ------------------------------------------------------------ configs
    def _sinks(self) -> dict[str, Any]:
        out: dict[str, Any] = {}
        for s in self.base.sinks.values():
            if isinstance(s, RedisSinkConfig):
                out["redis"] = plain(s)
            elif isinstance(s, ElasticsearchSinkConfig):
                out["elasticsearch"] = {**plain(s), "index_prefix": f"{self.prefix}-"}
            elif isinstance(s, MongoSinkConfig):
                out["mongodb"] = {**plain(s), "database": self.prefix}
        return out

    def config(
        self,
        kind: str,
        views: dict[str, Any],
        tables: list[str],
        mode: str,
        kafka: dict[str, Any] | None = None,
    ) -> Config:
        """Write and load the config of one pipeline (``kind``: table/aggregate);
        ``kafka``: settings of its own (a record format's)."""
        pre = f"{self.prefix}{kind[0]}"
        sinks = self._sinks()
        full = {}
        for name, view in views.items():
            full[name] = {
                **view,
                "sinks": list(sinks),
                "sink_options": {"redis": {"target": f"{pre}:{name}"}},
            }
        data = {
            "source": {
                "dsn": self.dsn,
                "tables": tables,
                "slot": f"rs_{pre}",
                "publication": f"rs_{pre}",
                "topic_prefix": pre,
                "heartbeat_ms": 1000,
                "snapshot_mode": mode,
            },
            "kafka": {
                **kafka_access(self.base),
                "group_id": f"{pre}-group",
                "partitions": 3,
                "dlq_topic": f"{pre}.dlq",
                "checkpoint_topic": f"{pre}.checkpoints",
                "snapshot_topic": f"{pre}.snapshots",
                **(kafka or {}),
            },
            "connect": {**plain(self.base.connect), "connector": f"{pre}-pg"},
            "sinks": sinks,
            "views": full,
            "worker": {"batch_size": 2000, "batch_timeout_ms": 200, "metrics_port": 0},
        }
        path = self.workdir / f"{kind}.yaml"
        path.write_text(yaml.safe_dump(data, sort_keys=False))
        cfg = config_mod.load(path)
        self.configs[kind] = cfg
        return cfg

    def table_config(self) -> Config:
        tables = [f"public.{TABLE_VIEW}", f"public.{SMALL_VIEW}"]
        views = {
            v: {"table": t}
            for v, t in zip((TABLE_VIEW, SMALL_VIEW), tables, strict=True)
        }
        return self.config("table", views, tables, "initial")

    def aggregate_config(self) -> Config:
        tables = [f"public.{t}" for t in ("customers", "orders", "order_lines")]
        tables.append("public.products")
        return self.config("aggregate", {AGG_VIEW: AGG_VIEW_CFG}, tables, "no_data")

    # ------------------------------------------------------------ connectors
    def start_connector(self, cfg: Config) -> None:
        admin = kafkaclient.admin(cfg.kafka)
        topics = [*cfg.view_topics(), cfg.source.topic(cfg.source.heartbeat_table)]
        ensure_topics(admin, [(t, cfg.kafka.partitions, True) for t in topics])
        debezium.apply(cfg)
        self._connectors.append(cfg)
        debezium.wait_running(cfg, timeout_s=120)

    def wait_topic_rows(self, cfg: Config, want: int, timeout_s: float) -> int:
        """Wait until the view topics hold ``want`` records; returns how many."""
        consumer = kafkaclient.consumer(cfg.kafka, {"group.id": "x"})
        parts = [
            TopicPartition(t, p)
            for t in cfg.view_topics()
            for p in range(cfg.kafka.partitions)
        ]
        deadline = time.monotonic() + timeout_s
        try:
            while True:
                have = sum(consumer.get_watermark_offsets(tp, 10)[1] for tp in parts)
                if have >= want or time.monotonic() > deadline:
                    return have
                time.sleep(0.5)
        finally:
            consumer.close()

    # ------------------------------------------------------------ cleanup
    def close(self) -> None:
        """Remove everything of the run; a failing step does not stop the rest."""
        for cfg in self._connectors:
            _attempt(f"connector {cfg.connect.connector}", partial(_unplug, cfg))
        for cfg in self.configs.values():
            _attempt("store targets", partial(_drop_targets, cfg))
        _attempt("mongodb database", self._drop_mongo)
        _attempt("database", self._drop_db)
        _attempt("topics and groups", self._drop_kafka)

    def _drop_mongo(self) -> None:
        mongo = find_sink(self.base, MongoSinkConfig)
        if mongo is not None:
            uri = mongo.uri.get_secret_value()
            client: pymongo.MongoClient[dict[str, Any]] = pymongo.MongoClient(uri)
            with client:
                client.drop_database(self.prefix)

    def _drop_db(self) -> None:
        with psycopg.connect(self.admin_dsn, autocommit=True) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{self.db}" WITH (FORCE)')

    def _drop_kafka(self) -> None:
        admin = kafkaclient.admin(self.base.kafka)
        mine = [t for t in admin.list_topics(timeout=10).topics if self.prefix in t]
        if mine:
            for fut in admin.delete_topics(mine, operation_timeout=30).values():
                fut.result()
        groups = [
            g.group_id
            for g in admin.list_consumer_groups().result().valid
            if g.group_id.startswith(self.prefix)
        ]
        for fut in (admin.delete_consumer_groups(groups) if groups else {}).values():
            try:
                fut.result()
            except Exception as exc:  # noqa: BLE001 - cleanup goes on
                logger.warning("group not deleted error=%s", exc)


def _attempt(what: str, step: Callable[[], None]) -> None:
    try:
        step()
    except Exception as exc:  # noqa: BLE001 - cleanup goes on
        logger.warning("cleanup failed what=%s error=%s", what, exc)


def _unplug(cfg: Config) -> None:
    debezium.delete(cfg)
    time.sleep(2)
    debezium.drop_slot(cfg, timeout_s=60)


def _drop_targets(cfg: Config) -> None:
    for sink in build_sinks(cfg, list(cfg.sinks)).values():
        for view in cfg.views:
            getattr(sink, "drop", lambda _v: None)(view)
        sink.close()
