"""The last-commit LSNs a worker commits with its offsets, and how the
read-your-writes watermark combines them with the slot's samples."""

from __future__ import annotations

import pytest
from confluent_kafka import TopicPartition
from test_processor import TOPIC, event, make_processor

from pipeline.decode import FakeMessage
from pipeline.metrics import Health
from pipeline.partitions import Partitions
from pipeline.redelivery import commit_metadata, parse_commit_lsn, parse_mark
from query.watermark import partition_floor

pytestmark = pytest.mark.unit


def seq(last_commit: int, lsn: int) -> str:
    return f'["{last_commit}","{lsn}"]'


def test_a_batch_keeps_the_highest_last_commit_lsn_per_partition():
    batch = make_processor().process(
        [
            event(0, "c", 1, partition=0, sequence=seq(500, 510)),
            event(1, "u", 1, partition=0, sequence=seq(700, 710)),
            # a copy Debezium sent again after a restart: lower, ignored
            event(2, "u", 2, partition=0, sequence=seq(600, 610)),
            event(0, "c", 3, partition=1, sequence=seq(650, 660)),
            event(1, "c", 4, partition=1),  # no sequence: no fact
            event(0, "c", 5, partition=2),
        ]
    )
    assert batch.commit_lsns == {(TOPIC, 0): 700, (TOPIC, 1): 650}


def record(partition: int, offset: int) -> FakeMessage:
    return FakeMessage.of_json("t", None, {}, partition=partition, offset=offset)


def test_offsets_carry_only_what_committed_batches_held_and_forget_on_revoke():
    parts = Partitions(Health(), lambda: False)
    parts.assign([TopicPartition("t", 0), TopicPartition("t", 1)])
    first = parts.offsets([record(0, 4), record(1, 9)], {("t", 0): 100}, None)
    assert [(tp.partition, tp.offset, tp.metadata) for tp in first] == [
        (0, 5, ";100"),
        (1, 10, ""),
    ]
    # a later batch with a lower LSN (a copy) keeps the higher one
    (again,) = parts.offsets([record(0, 5)], {("t", 0): 90}, None)
    assert parse_commit_lsn(again.metadata) == 100
    parts.revoke([TopicPartition("t", 0)])
    parts.assign([TopicPartition("t", 0)])
    (fresh,) = parts.offsets([record(0, 20)], {}, None)
    assert parse_commit_lsn(fresh.metadata) is None


def test_the_metadata_keeps_the_redelivery_mark_readable():
    text = commit_metadata("10/20", 30)
    assert text == "10/20;30"
    assert parse_mark(text) == (10, 20)
    assert parse_commit_lsn(text) == 30
    assert parse_mark("10/20") == (10, 20)  # written before the LSN was added
    assert parse_commit_lsn("10/20") is None
    assert parse_commit_lsn(commit_metadata("", 7)) == 7
    assert parse_commit_lsn("x;y") is None


def test_the_floor_takes_the_better_fact_per_partition_and_the_least_over_them():
    a, b = ("t", 0), ("t", 1)
    assert partition_floor([a, b], {a: 100, b: 100}, {a: 300, b: 250}) == 250
    assert partition_floor([a, b], {a: 100, b: 400}, {a: 300}) == 300
    # a partition with no fact at all holds the watermark back
    assert partition_floor([a, b], {a: 100}, {a: 300}) is None
    assert partition_floor([], {}, {}) is None
