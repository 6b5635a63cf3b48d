"""A worker's partitions: what a rebalance takes from the batch in hand."""

from __future__ import annotations

import pytest
from confluent_kafka import TopicPartition

from pipeline.decode import FakeMessage
from pipeline.metrics import Health
from pipeline.partitions import Partitions

pytestmark = pytest.mark.unit


def record(partition: int, offset: int) -> FakeMessage:
    return FakeMessage.of_json("t", None, {}, partition=partition, offset=offset)


def test_partitions_revoke_of_a_batch_partition_abandons_the_batch():
    parts = Partitions(Health(), lambda: False)
    parts.assign([TopicPartition("t", 0), TopicPartition("t", 1)])
    parts.begin_batch([record(0, 5)])
    parts.revoke([TopicPartition("t", 1)])
    assert not parts.should_abandon()
    assert parts.revoke([TopicPartition("t", 0)]) == {("t", 0)}
    assert parts.should_abandon()
    assert parts.health.assigned == 0


def test_partitions_new_batch_forgets_earlier_revocations():
    parts = Partitions(Health(), lambda: False)
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
