"""A root an aggregate view's transform refuses dead-letters the change that
named it, not whichever change came last in its batch.

Two changes of one transaction land in one batch (one partition per topic,
so both arrive in one fetch after the worker restarts on the backlog): the
first names root A, which the transform refuses, the second a healthy root
B. The dead letter must carry A's record: replaying B's would re-read B, and
the operator would look for the fault in the wrong row. Roots named directly
(a root row) and roots found by SQL (an item, two levels down) both.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from confluent_kafka import Consumer, TopicPartition
from shop_model import SCHEMA, TABLES, VIEW
from test_aggregate_races import SEED

from pipeline import dlq

pytestmark = pytest.mark.integration

HERE = Path(__file__).resolve().parent


def _offset_of(p: Any, table: str, ident: int, field: str, value: Any) -> int:
    """Offset of the (only) partition-0 record of ``table`` whose row ``ident``
    has ``field`` = ``value`` in its ``after`` image."""
    topic = p.config.source.topic(table)
    consumer = Consumer(
        {
            **p.config.kafka.client_conf(),
            "group.id": f"{p.config.kafka.group_id}-peek",
            "enable.auto.commit": False,
        }
    )
    try:
        end = consumer.get_watermark_offsets(TopicPartition(topic, 0), timeout=10)[1]
        consumer.assign([TopicPartition(topic, 0, 0)])
        found: list[int] = []
        seen = -1
        while seen < end - 1:
            msg = consumer.poll(10)
            assert msg is not None, f"{topic} ended before offset {end}"
            assert msg.error() is None, msg.error()
            seen = msg.offset()
            payload = json.loads(msg.value() or b"null")
            after = (payload or {}).get("payload", {}).get("after") or {}
            if after.get("id") == ident and after.get(field) == value:
                found.append(msg.offset())
        assert len(found) == 1, found
        return found[0]
    finally:
        consumer.close()


def test_aggregate_refused_root_dead_letters_the_change_that_named_it(
    make_pipeline,
):
    view = {
        **VIEW,
        "transforms": [{"type": "python", "path": "test_aggregate_views:picky"}],
    }
    p = make_pipeline(SCHEMA, TABLES, {"customers": view})
    p.rewrite(lambda data: data["kafka"].update(partitions=1))
    p.sql(SEED)
    env = {"PYTHONPATH": str(HERE)}
    p.apply_connector()
    worker = p.start_worker(env=env)
    p.wait_drained()
    assert worker.terminate() == 0

    # A root row names itself: customer 1 (refused), then customer 2 (fine).
    with p.connect() as conn, conn.transaction():
        conn.execute("UPDATE customers SET name = 'POISON' WHERE id = 1")
        conn.execute("UPDATE customers SET name = 'fine' WHERE id = 2")
    worker = p.start_worker(env=env)
    p.wait_drained()
    (dead,) = p.dead_letters()
    customers = p.config.source.topic("public.customers")
    want = _offset_of(p, "public.customers", 1, "name", "POISON")
    assert dead.origin == (customers, 0, want)
    assert "root 1:" in dead.headers[dlq.H_MESSAGE]
    assert worker.terminate() == 0

    # An item names its root only through SQL (item -> order -> customer):
    # item 100 of customer 1's order 10, then item 102 of customer 2's order 30.
    with p.connect() as conn, conn.transaction():
        conn.execute("UPDATE items SET qty = 41 WHERE id = 100")
        conn.execute("UPDATE items SET qty = 42 WHERE id = 102")
    p.start_worker(env=env)
    p.wait_drained()
    first, second = p.dead_letters()
    assert first == dead
    items = p.config.source.topic("public.items")
    assert second.origin == (items, 0, _offset_of(p, "public.items", 100, "qty", 41))
    assert "root 1:" in second.headers[dlq.H_MESSAGE]
    # Customer 2 followed both changes everywhere.
    for d in p.verify():
        assert d.missing == [], d.describe()
        assert d.differing == [], d.describe()
        assert d.extra == ["1"], d.describe()
