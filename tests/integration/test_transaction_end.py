"""A lone write reaches the replication slot without waiting for another.

A read with ``min_lsn`` after a write on a partition that receives nothing
else is proven by the slot's ``confirmed_flush_lsn`` (docs/design.md, the
read-your-writes watermark), which Debezium moves when Kafka Connect commits
the source offset of a record. The last change of a transaction carries the
*previous* transaction's commit LSN in its offset, so without a record after
the commit the slot stays before the write until the next change or
heartbeat. The connector ends each transaction with one (its END event in
``<topic.prefix>.transaction``): with heartbeats an hour apart and nothing
else written, the slot must still pass the write. The transaction topic
deletes by time: its keys, transaction ids, never repeat.
"""

from __future__ import annotations

import pytest
from confluent_kafka.admin import AdminClient
from harness import wait_for

from connectors.debezium import TRANSACTION_RETENTION_MS
from pipeline.kafkaclient import topic_configs

pytestmark = pytest.mark.integration

SCHEMA = "CREATE TABLE items (id integer PRIMARY KEY, name text NOT NULL);"


def test_a_lone_write_is_confirmed_to_the_slot_without_another_change(
    make_pipeline,
):
    p = make_pipeline(SCHEMA, ["public.items"], {"items": {"table": "public.items"}})
    p.rewrite(lambda d: d["source"].update(heartbeat_ms=3_600_000))
    p.apply_connector()
    p.wait_streaming()
    with p.connect() as conn:
        with conn.transaction():
            conn.execute("INSERT INTO items VALUES (1, 'lone')")
            # past the insert's WAL record, before the commit's
            inside = conn.execute("SELECT pg_current_wal_insert_lsn()::text")
            row = inside.fetchone()
    assert row is not None
    wait_for(
        lambda: p.connector_caught_up(row[0]),
        60,
        f"the slot to confirm past the lone write at {row[0]}",
    )

    topic = p.config.source.transaction_topic
    admin = AdminClient(p.config.kafka.client_conf())
    wait_for(lambda: topic in admin.list_topics(timeout=10).topics, 60, topic)
    assert len(admin.list_topics(topic, timeout=10).topics[topic].partitions) == 1
    settings = topic_configs(admin, [topic])[topic]
    assert settings["cleanup.policy"] == "delete"
    assert settings["retention.ms"] == str(TRANSACTION_RETENTION_MS)
