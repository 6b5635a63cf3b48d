"""A worker's partitions: what a rebalance takes from the batch in hand."""

from __future__ import annotations

import pytest
from confluent_kafka import TopicPartition

from pipeline.decode import FakeMessage
from pipeline.metrics import Health
from pipeline.partitions import IDLE_POLL_S, Partitions, next_batch

pytestmark = pytest.mark.unit


def record(partition: int, offset: int) -> FakeMessage:
    return FakeMessage.of_json("t", None, {}, partition=partition, offset=offset)


class NeverCommitted:
    """A group that committed nothing (no gap is looked for)."""

    def committed(self, parts: list[TopicPartition], timeout: float) -> list:
        return [TopicPartition(tp.topic, tp.partition, -1001) for tp in parts]


def test_partitions_revoke_of_a_batch_partition_abandons_the_batch():
    parts = Partitions(Health(), lambda: False, NeverCommitted())
    parts.assign([TopicPartition("t", 0), TopicPartition("t", 1)])
    parts.begin_batch([record(0, 5)])
    parts.revoke([TopicPartition("t", 1)])
    assert not parts.should_abandon()
    assert parts.revoke([TopicPartition("t", 0)]) == {("t", 0)}
    assert parts.should_abandon()
    assert parts.health.assigned == 0


def test_partitions_new_batch_forgets_earlier_revocations():
    parts = Partitions(Health(), lambda: False, NeverCommitted())
    parts.assign([TopicPartition("t", 0)])
    parts.revoke([TopicPartition("t", 0)])
    parts.assign([TopicPartition("t", 0)])
    parts.begin_batch([record(0, 9)])
    assert not parts.should_abandon()


def test_partitions_stop_abandons_the_batch():
    stopping = [False]
    parts = Partitions(Health(), lambda: stopping[0])
    parts.begin_batch([record(0, 1)])
    stopping[0] = True
    assert parts.should_abandon()


class QueueConsumer:
    """Returns queued records; records each consume call's (num, timeout)."""

    def __init__(self, queued: int, arriving: int = 0) -> None:
        self.queued, self.arriving = queued, arriving
        self.calls: list[tuple[int, float]] = []

    def consume(self, num: int, timeout: float) -> list[int]:
        self.calls.append((num, timeout))
        if not self.queued and timeout > 0:  # what arrives while it waits
            self.queued, self.arriving = self.arriving, 0
        got = min(num, self.queued)
        self.queued -= got
        return list(range(got))


def test_next_batch_leaves_with_what_is_queued_and_lingers_only_after_idle():
    full = QueueConsumer(queued=600)
    assert len(next_batch(full, 500, 0.02)) == 500
    assert full.calls == [(500, 0)]  # a full batch never waits
    some = QueueConsumer(queued=30, arriving=5)
    assert len(next_batch(some, 500, 0.02)) == 30
    assert some.calls == [(500, 0)]  # queued records have waited already
    idle = QueueConsumer(queued=0, arriving=4)
    assert len(next_batch(idle, 500, 0.02)) == 4
    assert idle.calls == [(500, 0), (1, IDLE_POLL_S), (499, 0.02)]
    assert next_batch(QueueConsumer(queued=0), 500, 0.02) == []
    one = QueueConsumer(queued=0, arriving=3)
    assert len(next_batch(one, 1, 0.02)) == 1  # a batch of one never lingers
    assert one.calls == [(1, 0), (1, IDLE_POLL_S)]
