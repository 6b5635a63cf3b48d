"""Resetting what the demo owns: connector, database, topics and consumer group.

The connector is stopped and its offsets reset (Kafka Connect's ``/stop`` and
``DELETE /offsets``, so Debezium takes a new initial snapshot), the replication
slots of the database are dropped, the database is recreated from ``shop.sql``
and loaded, and the pipeline's topics and consumer group are deleted. The
shared snapshot-progress topic (``kafka.snapshot_topic``) is left alone; the
demo's snapshot load starts over instead of resuming.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable

import psycopg
from confluent_kafka import KafkaException
from confluent_kafka.admin import NewTopic  # type: ignore[attr-defined]  # no __all__
from psycopg import sql
from psycopg.conninfo import conninfo_to_dict, make_conninfo

from connectors import debezium
from pipeline import kafkaclient
from pipeline.config import Config
from pipeline.demo import data
from pipeline.errors import FatalError

logger = logging.getLogger(__name__)


def stop_connector(cfg: Config) -> bool:
    """Stop the connector and reset its offsets; False when it does not exist."""
    client = debezium.ConnectClient.of(cfg.connect)
    base = f"/connectors/{cfg.connect.connector}"
    if client.request("GET", base) is None:
        return False
    client.request("PUT", f"{base}/stop")
    _until(
        lambda: _connector_state(client, base) == "STOPPED",
        60.0,
        "connector did not stop",
    )
    client.request("DELETE", f"{base}/offsets")
    return True


def _connector_state(client: debezium.ConnectClient, base: str) -> str | None:
    st = client.request("GET", f"{base}/status")
    return None if st is None else str(st["connector"]["state"])


def _until(check: Callable[[], bool], timeout_s: float, failure: str) -> None:
    deadline = time.monotonic() + timeout_s
    while not check():
        if time.monotonic() > deadline:
            raise FatalError(f"{failure} within {timeout_s:.0f}s")
        time.sleep(0.3)


def rebuild_database(cfg: Config, seed: int, sizes: data.Sizes) -> dict[str, int]:
    """Drop the database (and its inactive slots), recreate it and load it."""
    dsn = cfg.source.dsn.get_secret_value()
    dbname = str(conninfo_to_dict(dsn).get("dbname") or "postgres")
    admin_dsn = make_conninfo(dsn, dbname="postgres")
    with psycopg.connect(admin_dsn, autocommit=True) as conn:

        def slots_idle() -> bool:
            got = conn.execute(
                "SELECT count(*) FROM pg_replication_slots "
                "WHERE database = %s AND active",
                (dbname,),
            ).fetchone()
            return got is not None and got[0] == 0

        _until(slots_idle, 30.0, f"replication slots of {dbname} still in use")
        conn.execute(
            "SELECT pg_drop_replication_slot(slot_name) "
            "FROM pg_replication_slots WHERE database = %s",
            (dbname,),
        )
        name = sql.Identifier(dbname)
        conn.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(name))
        conn.execute(sql.SQL("CREATE DATABASE {}").format(name))
    with psycopg.connect(dsn) as conn:
        data.create_schema(conn)
        return data.load(conn, seed, sizes)


def pipeline_topics(cfg: Config) -> list[str]:
    src = cfg.source
    tables = [*src.tables, src.heartbeat_table, src.signal_table]
    return [
        *(src.topic(t) for t in tables),
        f"__debezium-heartbeat.{src.topic_prefix}",
        src.transaction_topic,
        cfg.kafka.dlq_topic,
        cfg.kafka.checkpoint_topic,
    ]


def reset_kafka(cfg: Config) -> None:
    """Delete the consumer group and every topic of the pipeline."""
    admin = kafkaclient.admin(cfg.kafka)
    for fut in admin.delete_consumer_groups([cfg.kafka.group_id]).values():
        try:
            fut.result()
        except KafkaException as exc:
            if exc.args[0].name() == "GROUP_ID_NOT_FOUND":
                continue
            raise FatalError(
                f"cannot delete consumer group {cfg.kafka.group_id} "
                f"(are other workers running?): {exc}"
            ) from exc
    names = set(pipeline_topics(cfg))
    doomed = sorted(names & set(admin.list_topics(timeout=10).topics))
    if doomed:
        for fut in admin.delete_topics(doomed, operation_timeout=30).values():
            fut.result()
    _until(
        lambda: not names & set(admin.list_topics(timeout=10).topics),
        60.0,
        "topics were not deleted",
    )


def create_topics(cfg: Config) -> None:
    """Create the topics the workers read, as the connector would create them.

    Done before the connector starts, so that workers can subscribe at once.
    """
    settings = debezium.connector_config(cfg)
    prefix = "topic.creation.default."
    topic_cfg = {
        k.removeprefix(prefix): v for k, v in settings.items() if k.startswith(prefix)
    }
    parts = int(topic_cfg.pop("partitions"))
    replication = int(topic_cfg.pop("replication.factor"))
    src = cfg.source
    names = [src.topic(t) for t in [*src.tables, src.heartbeat_table]]
    admin = kafkaclient.admin(cfg.kafka)
    deadline = time.monotonic() + 30
    while names:
        new = [
            NewTopic(
                n,
                num_partitions=parts,
                replication_factor=replication,
                config=topic_cfg,
            )
            for n in names
        ]
        failed = []
        for name, fut in admin.create_topics(new).items():
            try:
                fut.result()
            except KafkaException as exc:
                if exc.args[0].name() != "TOPIC_ALREADY_EXISTS":
                    if time.monotonic() > deadline:
                        raise
                    failed.append(name)  # still being deleted: try again
        names = failed
        if names:
            time.sleep(0.5)


def start_connector(cfg: Config, existed: bool) -> None:
    """Register (stopped, with no offsets) or update the connector, then run it."""
    client = debezium.ConnectClient.of(cfg.connect)
    base = f"/connectors/{cfg.connect.connector}"
    if not existed:
        # A connector of this name deleted earlier may have left offsets.
        client.request(
            "POST",
            "/connectors",
            {
                "name": cfg.connect.connector,
                "config": debezium.connector_config(cfg),
                "initial_state": "STOPPED",
            },
        )
        client.request("DELETE", f"{base}/offsets")
    debezium.apply(cfg)
    client.request("PUT", f"{base}/resume")
    debezium.wait_running(cfg)
