"""Debezium's redeliveries never take a document back in time.

When Kafka Connect dies (kill -9, a lost host), Debezium starts again from
the last source offset Connect committed and sends the changes after it once
more: the same change events, at new, higher Kafka offsets. A table view's
version is the record's offset, so a copy of an older change outranks the
newer changes it follows; until the copies of those come too, every store
serves the older state (the fault suite's ``connect`` kind saw it: 12
versions that went back, 2 deleted documents that came back). If Connect
dies again before it re-sent them, the older state stays for as long as it
is down.

Here the topic gets copies of one round of changes, produced at its end the
way Connect produces them after such a restart (same key, value and
headers), while the rounds after it stay where they are: the stores must
keep equalling the source, and the round's delete and tombstone must not
delete the row inserted again after them.
"""

from __future__ import annotations

from typing import Any

import pytest
from confluent_kafka import Consumer, Producer, TopicPartition

pytestmark = pytest.mark.integration

SCHEMA = """
CREATE TABLE items (id integer PRIMARY KEY, n integer NOT NULL);
INSERT INTO items SELECT i, 0 FROM generate_series(1, 30) i;
"""
VIEWS = {"flat": {"table": "public.items"}}
AGAIN = 7  # deleted in round 3, inserted again in round 4


def _records(p, start: dict[Any, int], end: dict[Any, int]) -> list[Any]:
    """The records of the view topic between two sets of offsets."""
    consumer = Consumer(
        {
            **p.config.kafka.client_conf(),
            "group.id": f"{p.config.kafka.group_id}.copy",
            "enable.auto.commit": False,
        }
    )
    out = []
    try:
        consumer.assign([TopicPartition(t, n, o) for (t, n), o in start.items()])
        want = sum(end[k] - start[k] for k in start)
        while len(out) < want:
            msg = consumer.poll(10)
            assert msg is not None, f"read {len(out)} of {want} records"
            assert msg.error() is None, msg.error()
            if msg.offset() < end[(msg.topic(), msg.partition())]:
                out.append(msg)
    finally:
        consumer.close()
    return out


def _produce(p, copies: list[Any]) -> None:
    """Produce ``copies`` at the end of their partitions, as Connect does."""
    producer = Producer(p.config.kafka.client_conf())
    for m in copies:
        producer.produce(
            m.topic(), m.value(), m.key(), partition=m.partition(), headers=m.headers()
        )
    assert producer.flush(30) == 0


def _five_rounds(p) -> list[Any]:
    """Five rounds of updates (round 3 deletes AGAIN, round 4 inserts it
    again); the records of round 3."""
    topic = p.config.source.topic("public.items")
    p.apply_connector()
    p.start_worker()
    for _ in range(2):
        p.sql("UPDATE items SET n = n + 1")
    p.wait_drained(timeout=180)
    before = {k: o for k, o in p.high_watermarks().items() if k[0] == topic}

    p.sql("UPDATE items SET n = n + 1")  # round 3
    p.sql("DELETE FROM items WHERE id = %s", (AGAIN,))
    p.wait_drained(timeout=180)
    after = {k: o for k, o in p.high_watermarks().items() if k[0] == topic}

    p.sql("UPDATE items SET n = n + 1")  # rounds 4 and 5
    p.sql("INSERT INTO items VALUES (%s, 100)", (AGAIN,))
    p.sql("UPDATE items SET n = n + 1")
    p.wait_drained(timeout=180)
    p.assert_converged()
    copies = _records(p, before, after)
    assert sum(1 for m in copies if m.value() is None) == 1  # the tombstone
    return copies


def test_redelivered_changes_never_take_a_document_back(make_pipeline):
    p = make_pipeline(SCHEMA, ["public.items"], VIEWS)
    _produce(p, _five_rounds(p))
    p.wait_drained(timeout=180)
    assert p.sql("SELECT n FROM items WHERE id = %s", (AGAIN,)) == [(101,)]
    p.assert_converged()


def test_redelivered_changes_read_first_by_a_new_worker_are_recognised(
    make_pipeline,
):
    """The worker that applied the originals is gone: its successor starts
    at the copies, with nothing read yet. The mark committed with the offsets
    makes it look back for the originals."""
    p = make_pipeline(SCHEMA, ["public.items"], VIEWS)
    copies = _five_rounds(p)
    (worker,) = p.workers
    assert worker.terminate() == 0, worker.tail()
    _produce(p, copies)
    successor = p.start_worker()
    p.wait_drained(timeout=180)
    p.assert_converged()
    assert "redelivery suspected" in successor.log_text()
