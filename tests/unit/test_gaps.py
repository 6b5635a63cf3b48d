"""Records a partition dropped before the worker read them (pipeline.gaps);
tests/integration/test_retention_gap.py drives it on the stack."""

from __future__ import annotations

from typing import Any

import pytest
from confluent_kafka import TopicPartition

from pipeline.decode import FakeMessage
from pipeline.gaps import Gap, Gaps, said
from pipeline.metrics import Health
from pipeline.partitions import Partitions

pytestmark = pytest.mark.unit

T = "db.public.items"


def records(partition: int, *offsets: int) -> list[FakeMessage]:
    return [
        FakeMessage.of_json(T, None, {}, partition=partition, offset=o) for o in offsets
    ]


class Consumer:
    """The group's committed offsets, and each partition's first offset as
    the consumer's last fetch saw it (``None``: not fetched yet)."""

    def __init__(
        self, committed: dict[int, int], starts: dict[int, int | None]
    ) -> None:
        self.committed_at = committed
        self.starts = starts
        self.asked: list[str] = []

    def committed(self, parts: list[TopicPartition], timeout: float) -> list[Any]:
        self.asked.append("committed")
        return [
            TopicPartition(
                tp.topic, tp.partition, self.committed_at.get(tp.partition, -1001)
            )
            for tp in parts
        ]

    def get_watermark_offsets(
        self, tp: TopicPartition, timeout: float | None = None, cached: bool = False
    ) -> tuple[int, int]:
        start = self.starts[tp.partition]
        if cached:
            return (-1001, -1001) if start is None else (start, 100)
        self.asked.append("watermarks")
        return (start if start is not None else 0), 100


def read(gaps: Gaps, msgs: list[FakeMessage], consumer: Consumer) -> list[Gap]:
    """A batch of ``msgs`` as the worker reads it (pipeline.partitions):
    the gaps before it, then read through."""
    first: dict[tuple[str, int], int] = {}
    nexts: dict[tuple[str, int], int] = {}
    for m in msgs:
        key = (m.topic(), m.partition())
        first.setdefault(key, m.offset())
        nexts[key] = m.offset() + 1
    found = gaps.check(first, consumer)
    gaps.advance(nexts)
    return found


def assigned(*parts: int) -> Gaps:
    gaps = Gaps()
    gaps.assign([TopicPartition(T, p) for p in parts])
    return gaps


def test_a_partition_read_on_from_its_committed_offset_has_no_gap() -> None:
    consumer = Consumer({0: 5}, {0: 0})
    gaps = assigned(0)
    assert read(gaps, records(0, 5, 6, 7), consumer) == []
    assert read(gaps, records(0, 8), consumer) == []


def test_records_dropped_after_the_committed_offset_are_a_gap() -> None:
    """Stopped at offset 5; retention dropped 5-8: the consumer jumped to 9."""
    consumer = Consumer({0: 5, 1: 3}, {0: 9, 1: 0})
    gaps = assigned(0, 1)
    found = read(gaps, [*records(0, 9, 10), *records(1, 3)], consumer)
    assert found == [Gap(T, 0, 5, 9)]
    assert said(found) == (
        f"topic {T} dropped records 5-8 of partition 0 (its retention) before "
        "the worker read them: the changes in them are in no store"
    )
    two = [Gap(T, 1, 4, 5), Gap(T, 2, 10, 17)]
    assert said(two) == (
        f"topic {T} dropped record 4 of partition 1 and records 10-16 of "
        "partition 2 (its retention) before the worker read them: the changes "
        "in them are in no store"
    )
    assert read(gaps, records(0, 11), consumer) == []  # said once


def test_a_later_record_of_a_compacted_partition_is_no_gap() -> None:
    """Compaction removed 5-8 (and a transaction marker takes an offset):
    the partition still begins at 0, nothing was dropped."""
    consumer = Consumer({0: 5}, {0: 0})
    gaps = assigned(0)
    assert read(gaps, records(0, 9), consumer) == []
    assert read(gaps, records(0, 12), consumer) == []


def test_records_dropped_while_the_worker_runs_are_a_gap() -> None:
    consumer = Consumer({0: 0}, {0: 0})
    gaps = assigned(0)
    assert read(gaps, records(0, 0, 1, 2), consumer) == []
    consumer.starts[0] = 40  # the worker fell behind retention
    assert read(gaps, records(0, 40), consumer) == [Gap(T, 0, 3, 40)]


def test_a_partition_the_group_never_read_has_no_gap_here() -> None:
    """A first read of a partition is pipeline.loaded's to judge."""
    consumer = Consumer({}, {0: 30})
    gaps = assigned(0)
    assert read(gaps, records(0, 30), consumer) == []


def test_a_rewind_sets_the_next_record() -> None:
    consumer = Consumer({0: 5}, {0: 0})
    gaps = assigned(0)
    read(gaps, records(0, 5, 6, 7), consumer)
    gaps.seek((T, 0), 5)  # the batch was given up
    assert read(gaps, records(0, 5), consumer) == []
    consumer.starts[0] = 9  # dropped before the worker read them again
    gaps.seek((T, 0), 6)
    assert read(gaps, records(0, 9), consumer) == [Gap(T, 0, 6, 9)]


def test_an_assignment_at_an_offset_is_checked_from_it() -> None:
    """A rebuild's catch-up assigns each partition at an offset it sampled."""
    consumer = Consumer({}, {0: 12})
    gaps = Gaps()
    gaps.assign([TopicPartition(T, 0, 4)])
    assert read(gaps, records(0, 12), consumer) == [Gap(T, 0, 4, 12)]
    assert consumer.asked == []  # no committed offset read, no request


def test_the_broker_is_asked_when_the_consumer_kept_no_first_offset() -> None:
    consumer = Consumer({0: 2}, {0: None})
    gaps = assigned(0)
    assert read(gaps, records(0, 6), consumer) == []
    # at the assignment, then at the later record
    assert consumer.asked == ["committed", "watermarks", "watermarks"]


def test_an_assigned_partition_that_lost_its_records_is_a_gap_without_one() -> None:
    """Retention dropped every record after the committed offset of
    partition 1, which brings no record for now: the batch of partition 0
    finds its gap all the same, once."""
    consumer = Consumer({0: 4, 1: 6}, {0: 0, 1: 11})
    gaps = assigned(0, 1)
    assert read(gaps, records(0, 4), consumer) == [Gap(T, 1, 6, 11)]
    assert read(gaps, records(0, 5), consumer) == []
    assert read(gaps, records(1, 11), consumer) == []  # where it went on


def test_a_partition_assigned_again_reads_its_committed_offset_again() -> None:
    consumer = Consumer({0: 5}, {0: 0})
    gaps = assigned(0)
    read(gaps, records(0, 5, 6), consumer)
    gaps.revoke([(T, 0)])
    consumer.committed_at[0], consumer.starts[0] = 20, 30  # another worker's
    gaps.assign([TopicPartition(T, 0)])
    assert read(gaps, records(0, 30), consumer) == [Gap(T, 0, 20, 30)]


def test_a_batch_given_up_finds_its_gap_again() -> None:
    """The marks were not taken away (a store was down, then a stop or a
    rebalance gave the batch up): the next read of the partition reports
    the gap again, though it resumes after it."""
    consumer = Consumer({0: 5}, {0: 9})
    parts = Partitions(Health(), lambda: False)
    parts.consumer = SeekingConsumer(consumer)
    parts.assign([TopicPartition(T, 0)])
    batch = records(0, 9, 10)
    found = parts.begin_batch(batch)
    assert found == [Gap(T, 0, 5, 9)]
    parts.rewind(batch, found)
    assert parts.consumer.sought == [(0, 9)]
    assert parts.begin_batch(batch) == found


class SeekingConsumer:
    def __init__(self, inner: Consumer) -> None:
        self.inner = inner
        self.sought: list[tuple[int, int]] = []

    def seek(self, tp: TopicPartition) -> None:
        self.sought.append((tp.partition, tp.offset))

    def __getattr__(self, name: str) -> Any:
        return getattr(self.inner, name)


def test_a_gap_without_a_record_of_its_own_is_committed_with_the_batch() -> None:
    """The partition resumes past its gap and brings no record: its offset
    is committed with the batch (its lag reads right), once the worker
    reported the gap."""
    consumer = Consumer({0: 4, 1: 6}, {0: 0, 1: 11})
    parts = Partitions(Health(), lambda: False)
    parts.consumer = consumer
    parts.assign([TopicPartition(T, 0), TopicPartition(T, 1)])
    batch = records(0, 4, 5)
    assert parts.begin_batch(batch) == [Gap(T, 1, 6, 11)]
    offsets = parts.offsets(batch, {}, None)
    assert {(tp.partition, tp.offset) for tp in offsets} == {(0, 6), (1, 11)}
    parts.begin_batch(records(0, 6))
    assert [tp.partition for tp in parts.offsets(records(0, 6), {}, None)] == [0]
