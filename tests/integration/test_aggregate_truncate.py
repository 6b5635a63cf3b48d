"""A TRUNCATE of a table an aggregate view embeds re-reads every root.

Its rows are gone, so no image names the roots they were part of: the view
must read every root again (in chunks: ``worker.reread_chunk_roots`` is 2
here, for 4 roots). The truncate record is written into the table's topic as
Debezium writes one (``op: t``, the truncating transaction's id and LSN, no
row) when ``skipped.operations`` lets it through; the connector setting is
not this test's subject.
"""

from __future__ import annotations

import copy
import json
import time
from typing import Any

import pytest
from confluent_kafka import Consumer, Producer, TopicPartition
from shop_model import SCHEMA, TABLES, VIEW
from test_aggregate_races import SEED

pytestmark = pytest.mark.integration


def _a_record(p: Any, topic: str) -> tuple[bytes, dict[str, Any]]:
    """The key and the value of some change record of ``topic``."""
    consumer = Consumer(
        {
            **p.config.kafka.client_conf(),
            "group.id": f"{p.config.kafka.group_id}-peek",
            "enable.auto.commit": False,
        }
    )
    try:
        parts = range(p.config.kafka.partitions)
        consumer.assign([TopicPartition(topic, n, 0) for n in parts])
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            msg = consumer.poll(1)
            if msg is not None and msg.error() is None and msg.value():
                return msg.key(), json.loads(msg.value())
        raise AssertionError(f"no record in {topic}")
    finally:
        consumer.close()


def _truncate(p: Any, table: str) -> None:
    """TRUNCATE ``table``, then write its truncate record as Debezium would."""
    with p.connect() as conn, conn.transaction():
        conn.execute(f"TRUNCATE {table}")
        xid = conn.execute("SELECT pg_current_xact_id()::text::bigint").fetchone()[0]
    lsn = p.sql("SELECT pg_current_wal_lsn() - '0/0'::pg_lsn")[0][0]
    topic = p.config.source.topic(f"public.{table}")
    key, value = _a_record(p, topic)
    record = copy.deepcopy(value)
    payload = record["payload"]
    payload.update(op="t", before=None, after=None, ts_ms=int(time.time() * 1000))
    payload["source"].update(
        txId=xid % 2**32, lsn=int(lsn), snapshot="false", ts_ms=int(time.time() * 1000)
    )
    producer = Producer(p.config.kafka.client_conf())
    producer.produce(topic, key=key, value=json.dumps(record).encode())
    assert producer.flush(30) == 0


@pytest.mark.parametrize("table", ["customer_tags", "items"])
def test_aggregate_truncate_of_related_table_rereads_every_root(make_pipeline, table):
    p = make_pipeline(
        SCHEMA, TABLES, {"customers": VIEW}, worker={"reread_chunk_roots": 2}
    )
    p.sql(SEED)
    p.apply_connector()
    p.start_worker()
    p.wait_drained()
    p.assert_converged()
    _truncate(p, table)
    p.wait_drained()
    p.assert_converged()
    assert p.sql(f"SELECT count(*) FROM {table}") == [(0,)]
    assert not p.dead_letters()
