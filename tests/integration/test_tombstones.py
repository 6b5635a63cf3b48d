"""A tombstone alone deletes its key (docs/design.md: tombstones and deletes).

Compaction removes a deleted row's ``op=d`` record and keeps the tombstone
that follows it (for ``delete.retention.ms``). A worker that was stopped
while that happened, or a ``snapshot`` replay of the compacted topic, then
sees only the tombstone; the stores must still forget the row. The tests
force compaction on the pipeline's table topic and read the topic until only
tombstones are left for the deleted keys.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable
from typing import Any

import pytest
from confluent_kafka import Consumer, KafkaError, TopicPartition
from harness import Pipeline, wait_for

from pipeline.decode import JsonDecoder
from pipeline.events import ChangeEvent, Op

pytestmark = pytest.mark.integration

SCHEMA = "CREATE TABLE notes (id integer PRIMARY KEY, body text NOT NULL);"
VIEWS = {"notes": {"table": "public.notes"}}

#: Topic settings that let the log cleaner compact everything but the active
#: segment within seconds, while keeping tombstones for a day.
EAGER_COMPACTION = {
    "segment.ms": "100",
    "min.compaction.lag.ms": "0",
    "min.cleanable.dirty.ratio": "0.01",
    "delete.retention.ms": str(24 * 3600 * 1000),
}


def compact_eagerly(p: Pipeline, topic: str) -> None:
    """Set :data:`EAGER_COMPACTION` on ``topic`` (incrementally)."""
    p.set_topic_configs(topic, EAGER_COMPACTION)


def topic_events(p: Pipeline, topic: str) -> list[ChangeEvent]:
    """Every change event now in ``topic``, read from the start of each partition."""
    consumer = Consumer(
        {
            **p.config.kafka.client_conf(),
            "group.id": f"read-{uuid.uuid4().hex}",
            "enable.auto.commit": False,
            "enable.partition.eof": True,
        }
    )
    parts = range(p.config.kafka.partitions)
    decoder = JsonDecoder()
    events: list[ChangeEvent] = []
    try:
        consumer.assign([TopicPartition(topic, n, 0) for n in parts])
        pending = set(parts)
        wait_for(
            lambda: _read_some(consumer, decoder, events, pending) or not pending,
            60,
            f"the end of every partition of {topic}",
            interval=0,
        )
    finally:
        consumer.close()
    return events


def _read_some(
    consumer: Consumer,
    decoder: JsonDecoder,
    events: list[ChangeEvent],
    pending: set[int],
) -> bool:
    for msg in consumer.consume(500, 1.0):
        err = msg.error()
        if err is not None:
            if err.code() == KafkaError._PARTITION_EOF:
                pending.discard(msg.partition())
            continue
        decoded = decoder.decode(msg)
        if isinstance(decoded, ChangeEvent):
            events.append(decoded)
    return False


def _drain_connector(p: Pipeline) -> None:
    lsn = p.sql("SELECT pg_current_wal_lsn()::text")[0][0]
    wait_for(lambda: p.connector_caught_up(lsn), 120, f"connector at {lsn}")


def compact_until(
    p: Pipeline,
    topic: str,
    roll: Callable[[], None],
    done: Callable[[list[ChangeEvent]], bool],
    what: str,
) -> None:
    """Compact ``topic`` until ``done`` holds for the events left in it.

    The cleaner never touches the active segment, so each round calls
    ``roll``, which must write a change on every partition of ``topic``
    (their new records roll the segments).
    """
    compact_eagerly(p, topic)
    progress: dict[str, Any] = {}
    before = p.high_watermarks()
    roll()
    _drain_connector(p)
    after = p.high_watermarks()
    idle = [k for k in after if k[0] == topic and after[k] == before[k]]
    assert not idle, f"roll() wrote nothing on {idle}: their segments would never roll"

    def compacted() -> bool:
        roll()
        events = topic_events(p, topic)
        progress["events"] = len(events)
        return done(events)

    try:
        wait_for(compacted, 240, f"compaction of {topic} ({what})", interval=2)
    except AssertionError as exc:
        raise AssertionError(f"{exc}; events left: {progress}") from None


def compact_until_only_tombstones(
    p: Pipeline, topic: str, deleted: set[int], kept: list[int]
) -> None:
    """Compact ``topic`` until each deleted id has only tombstones left
    (``kept`` must have rows on every partition)."""

    def roll() -> None:
        p.sql("UPDATE notes SET body = body || '.' WHERE id = ANY(%s)", (kept,))

    def only_tombstones(events: list[ChangeEvent]) -> bool:
        ops: dict[int, list[Op]] = {}
        for ev in events:
            ops.setdefault(ev.key["id"], []).append(ev.op)
        return all(ops.get(k) and set(ops[k]) == {Op.TOMBSTONE} for k in deleted)

    compact_until(p, topic, roll, only_tombstones, "only tombstones of deleted ids")


@pytest.mark.parametrize("reader", ["worker", "replay"])
def test_tombstone_after_compaction_deletes_the_row_in_every_store(
    make_pipeline, reader
):
    """The stores held rows; while no worker ran, the rows were deleted and
    compaction left only their tombstones. A worker resuming from its
    committed offsets, or a ``snapshot`` replay of the topic, must delete
    them."""
    p = make_pipeline(SCHEMA, ["public.notes"], VIEWS)
    topic = p.config.source.topic("public.notes")
    p.apply_connector()
    worker = p.start_worker()
    p.sql("INSERT INTO notes SELECT g, 'note ' || g FROM generate_series(1, 60) g")
    p.wait_drained(timeout=180)
    p.assert_converged()
    assert worker.terminate() == 0, worker.tail()

    deleted = set(range(1, 61, 3))
    kept = [i for i in range(1, 61) if i not in deleted]
    p.sql("DELETE FROM notes WHERE id = ANY(%s)", (sorted(deleted),))
    _drain_connector(p)
    compact_until_only_tombstones(p, topic, deleted, kept)
    _drain_connector(p)

    if reader == "worker":
        p.start_worker()
        p.wait_drained(timeout=180)
    else:
        p.run_cli("snapshot", "notes")
    p.assert_converged()
