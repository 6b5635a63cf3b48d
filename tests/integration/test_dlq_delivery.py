"""Dead letters are delivered before their offsets are committed, and kept.

Three faults of the dead-letter path, each forced on the real broker:

* the broker refuses the dead letter (the dead-letter topic's
  ``max.message.bytes`` lowered by the test under a running worker): the
  offset of the poison record must not be committed until the dead letter is
  in the topic; once the test raises the limit again it arrives, with its
  value, and only then is the offset committed;
* a poison record larger than the producer's and the dead-letter topic's
  default limits (a source topic configured for large rows): the worker must
  not crash; the dead letter keeps its value when the topic can hold it, and
  goes without its value (headers say so, and its size) when it cannot;
* retention: the dead-letter topic keeps its records until they are replayed
  or purged on purpose, also when it existed before with a finite retention.
"""

from __future__ import annotations

import json
from typing import Any

import pytest
from confluent_kafka import Producer
from confluent_kafka.admin import (  # type: ignore[attr-defined]  # re-exported at runtime
    AdminClient,
    NewTopic,
)
from harness import Pipeline, wait_for

from pipeline import dlq, kafkaclient
from pipeline.replay import replay_dead_letters

pytestmark = pytest.mark.integration

SCHEMA = "CREATE TABLE products (id integer PRIMARY KEY, name text NOT NULL);"
VIEWS: dict[str, Any] = {"products": {"table": "public.products", "sinks": ["redis"]}}
KEY_SCHEMA = {
    "type": "struct",
    "optional": False,
    "name": "key",
    "fields": [{"field": "id", "type": "int32", "optional": False}],
}
FLUSH_FAILED = "dead-letter flush failed"


def _admin(p: Pipeline) -> AdminClient:
    return AdminClient(p.config.kafka.client_conf())


def _topic_config(p: Pipeline, topic: str) -> dict[str, str]:
    return kafkaclient.topic_configs(_admin(p), [topic])[topic]


def _set_topic_config(p: Pipeline, topic: str, **values: str) -> None:
    p.set_topic_configs(topic, {k.replace("_", "."): v for k, v in values.items()})


def _produce(p: Pipeline, ident: int, value: bytes, partition: int = 0) -> int:
    """Write one undecodable record into the view's topic; its offset."""
    topic = p.config.source.topic("public.products")
    key = json.dumps({"schema": KEY_SCHEMA, "payload": {"id": ident}}).encode()
    offsets: list[int] = []

    def delivered(err: Any, msg: Any) -> None:
        assert err is None, err
        offsets.append(msg.offset())

    producer = Producer(
        {
            **p.config.kafka.client_conf(),
            "message.max.bytes": 100_000_000,
        }
    )
    producer.produce(
        topic, key=key, value=value, partition=partition, on_delivery=delivered
    )
    assert producer.flush(60) == 0
    (offset,) = offsets
    return offset


def _insert(p: Pipeline, ids: range) -> None:
    with p.connect() as conn, conn.cursor() as cur:
        cur.executemany(
            "INSERT INTO products VALUES (%s, %s)", [(i, f"p{i}") for i in ids]
        )


def _dead_at(p: Pipeline, offset: int, partition: int = 0) -> list[dlq.DeadRecord]:
    topic = p.config.source.topic("public.products")
    return [r for r in p.dead_letters() if r.origin == (topic, partition, offset)]


def _started(p: Pipeline) -> None:
    """Connector running, one worker in its group with the topics it created."""
    p.apply_connector()
    worker = p.start_worker()
    _insert(p, range(1, 11))
    p.wait_drained()
    assert worker.alive()


def test_dlq_delivery_refused_offset_committed_only_after_delivery(make_pipeline):
    p = make_pipeline(SCHEMA, ["public.products"], VIEWS)
    _started(p)
    (worker,) = p.workers
    topic = p.config.source.topic("public.products")
    dlq_topic = p.config.kafka.dlq_topic
    limit = _topic_config(p, dlq_topic)["max.message.bytes"]
    # Smaller than any record batch: the broker refuses every dead letter
    # (MSG_SIZE_TOO_LARGE), even one without its value.
    _set_topic_config(p, dlq_topic, max_message_bytes="64")
    poison = b"\x00\xffnot json"
    at = _produce(p, 900, poison)

    def settled() -> bool:
        moved = p.committed()[(topic, 0)] > at
        return moved or worker.log_text().count(FLUSH_FAILED) >= 3

    wait_for(settled, 60, "the poison's offset committed or 3 refused deliveries")
    committed, dead = p.committed()[(topic, 0)], _dead_at(p, at)
    lost = (
        f"offset committed past an undelivered dead letter: committed={committed} "
        f"poison offset={at} dead letters there={len(dead)}"
    )
    assert committed <= at, lost
    assert not dead, lost
    assert worker.alive(), worker.tail()

    _set_topic_config(p, dlq_topic, max_message_bytes=limit)
    wait_for(lambda: p.committed()[(topic, 0)] > at, 60, "the poison's offset")
    (delivered,) = _dead_at(p, at)
    assert delivered.value == poison
    assert delivered.headers[dlq.H_REASON] == "decode"
    _insert(p, range(11, 21))
    p.wait_drained()
    p.assert_converged()


def test_dlq_delivery_refused_worker_stopped_next_owner_delivers(make_pipeline):
    p = make_pipeline(SCHEMA, ["public.products"], VIEWS)
    _started(p)
    (first,) = p.workers
    topic = p.config.source.topic("public.products")
    dlq_topic = p.config.kafka.dlq_topic
    limit = _topic_config(p, dlq_topic)["max.message.bytes"]
    _set_topic_config(p, dlq_topic, max_message_bytes="64")
    at = _produce(p, 900, b"\x00\xffnot json")
    wait_for(
        lambda: first.log_text().count(FLUSH_FAILED) >= 2, 60, "refused deliveries"
    )
    # SIGTERM while the dead letter is refused: the batch is given up (not
    # committed), the worker leaves at once and cleanly.
    assert first.terminate() == 0, first.tail()
    assert p.committed()[(topic, 0)] <= at
    assert not _dead_at(p, at)

    _set_topic_config(p, dlq_topic, max_message_bytes=limit)
    p.start_worker()
    wait_for(lambda: p.committed()[(topic, 0)] > at, 60, "the poison's offset")
    (delivered,) = _dead_at(p, at)
    assert delivered.headers[dlq.H_REASON] == "decode"


MIB = 1024 * 1024


def test_dlq_poison_larger_than_default_limits_worker_keeps_running(make_pipeline):
    p = make_pipeline(SCHEMA, ["public.products"], VIEWS)
    topic = p.config.source.topic("public.products")
    p.apply_connector()
    # The source topic holds rows up to 4 MiB (large jsonb documents, say):
    # more than the producer's default message.max.bytes (1,000,000) and the
    # broker's default max.message.bytes (1,048,588).
    _set_topic_config(p, topic, max_message_bytes=str(4 * MIB))
    worker = p.start_worker()
    _insert(p, range(1, 11))
    p.wait_drained()
    big = b"\xff" * (2 * MIB)
    big_at = _produce(p, 900, big)
    _insert(p, range(11, 21))
    p.wait_drained()  # fails if the worker died on the dead letter
    (dead,) = _dead_at(p, big_at)
    assert dead.value == big
    assert dlq.H_VALUE_DROPPED not in dead.headers

    # The source topic's limit raised again under the running worker: a
    # dead letter larger than what the dead-letter topic takes goes without
    # its value; its headers say where the record is and why the value is gone.
    _set_topic_config(p, topic, max_message_bytes=str(8 * MIB))
    huge = b"\xff" * (5 * MIB)
    at = _produce(p, 5, huge)  # the key of a row that exists
    _insert(p, range(21, 31))
    p.wait_drained()
    (dead,) = _dead_at(p, at)
    assert dead.value is None
    assert dead.key is not None
    assert dead.headers[dlq.H_VALUE_DROPPED] == "size"
    assert int(dead.headers[dlq.H_VALUE_SIZE]) == len(huge)
    assert dead.headers[dlq.H_REASON] == "decode"
    assert worker.alive()
    p.assert_converged()

    # A replay skips the dead letter without a value (replayed, it would read
    # as a tombstone of row 5); the 2 MiB one fails again and goes back whole.
    counts = replay_dead_letters(p.config)
    p.assert_converged()
    assert counts == (1, 1)
    *_, again = p.dead_letters()
    assert again.origin == (topic, 0, big_at)
    assert again.value == big


def _assert_kept_forever(p: Pipeline, source_topic_limit: int) -> dict[str, str]:
    got = _topic_config(p, p.config.kafka.dlq_topic)
    assert got["retention.ms"] == "-1", got["retention.ms"]
    assert got["retention.bytes"] == "-1", got["retention.bytes"]
    assert got["cleanup.policy"] == "delete", got["cleanup.policy"]
    assert int(got["max.message.bytes"]) > source_topic_limit, got["max.message.bytes"]
    return got


def test_dlq_topic_created_by_worker_never_expires(make_pipeline):
    p = make_pipeline(SCHEMA, ["public.products"], VIEWS)
    p.apply_connector()
    topic = p.config.source.topic("public.products")
    limit = int(_topic_config(p, topic)["max.message.bytes"])
    worker = p.start_worker()
    p.wait_log(worker, "worker started")
    _assert_kept_forever(p, limit)


def test_dlq_existing_topic_with_finite_retention_fixed_at_start(make_pipeline):
    p = make_pipeline(SCHEMA, ["public.products"], VIEWS)
    p.apply_connector()
    topic = p.config.source.topic("public.products")
    limit = int(_topic_config(p, topic)["max.message.bytes"])
    admin = _admin(p)
    # As an older readside created it (the broker's 7 days), then tightened.
    new = NewTopic(
        p.config.kafka.dlq_topic,
        num_partitions=1,
        replication_factor=1,
        config={
            "retention.ms": str(24 * 3600 * 1000),
            "retention.bytes": str(1 << 30),
            "cleanup.policy": "compact",
            "max.message.bytes": "100000",
        },
    )
    for fut in admin.create_topics([new]).values():
        fut.result(timeout=30)
    worker = p.start_worker()
    p.wait_log(worker, "worker started")
    _assert_kept_forever(p, limit)
    assert "dead-letter topic config changed" in worker.log_text()
