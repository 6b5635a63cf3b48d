"""The next batch read and decoded while the sinks write the one in hand
(pipeline.readahead): what it decodes early, and what it gives back after a
rebalance or a batch given up. tests/integration/test_read_ahead.py runs it
on the stack."""

from __future__ import annotations

import threading
from typing import Any

import pytest
from confluent_kafka import OFFSET_BEGINNING, TopicPartition
from test_avro_converter import StubRegistry, as_avro, load
from test_processor import TOPIC, event, make_processor

from pipeline.decode import FakeMessage
from pipeline.errors import BadRecord, TransientError
from pipeline.metrics import Health
from pipeline.partitions import Partitions
from pipeline.processor import Processor
from pipeline.readahead import ReadAhead
from pipeline.source.avro_converter import AvroConverter

pytestmark = pytest.mark.unit


class Consumer:
    """Hands out queued records; remembers seeks; the group committed
    ``committed`` (partition -> offset, -1001 where it committed nothing)."""

    def __init__(self, queued: list[Any], committed: dict[int, int] | None = None):
        self.queued = list(queued)
        self.committed_at = committed or {}
        self.seeks: list[tuple[str, int, int]] = []
        #: run inside the next consume, as librdkafka serves a rebalance there
        self.during_consume: Any = None

    def consume(self, num: int, timeout: float) -> list[Any]:
        if self.during_consume is not None:
            self.during_consume()
            self.during_consume = None
        got, self.queued = self.queued[:num], self.queued[num:]
        return got

    def seek(self, tp: TopicPartition) -> None:
        self.seeks.append((tp.topic, tp.partition, tp.offset))

    def committed(self, parts: list[TopicPartition], timeout: float) -> list:
        return [
            TopicPartition(tp.topic, tp.partition, self.committed_at.get(tp.partition))
            for tp in parts
        ]


def setup(
    queued: list[Any], committed: dict[int, int] | None = None, size: int = 10
) -> tuple[ReadAhead, Partitions, Consumer, Processor]:
    consumer = Consumer(queued, committed)
    parts = Partitions(Health(), lambda: False, consumer)
    parts.assign([TopicPartition(TOPIC, 0), TopicPartition(TOPIC, 1)])
    processor = make_processor()
    return ReadAhead(parts, processor, size, lambda: False), parts, consumer, processor


def rows(partition: int, *offsets: int) -> list[FakeMessage]:
    return [
        event(o, "c", o, {"title": f"t{o}", "body": "b"}, partition=partition)
        for o in offsets
    ]


def test_records_read_ahead_are_the_next_batch_decoded_as_the_batch_would():
    records = rows(0, 5, 6, 7)
    ahead, _parts, consumer, processor = setup(records)
    ahead.read()
    ahead.read()  # once per batch in hand: the second call reads nothing
    assert ahead.pending
    taken = ahead.take()
    assert taken is not None
    raw, decoded = taken
    assert raw == records
    fresh = make_processor()
    assert decoded == [fresh.converter.decode(m) for m in records]
    # The batch built from them is the batch built from the records alone.
    assert processor.process(raw, ahead=decoded) == fresh.process(records)
    assert not ahead.pending
    assert ahead.take() is None
    assert consumer.seeks == []


def test_a_record_that_cannot_be_decoded_ahead_is_dead_lettered_in_its_batch():
    bad = FakeMessage(TOPIC, b"{not json", b'{"id":1}', 0, 8)
    records = [*rows(0, 6, 7), bad]
    ahead, _parts, _consumer, processor = setup(records)
    ahead.read()
    _raw, decoded = ahead.take() or ([], [])
    assert isinstance(decoded[2], BadRecord)
    batch = processor.process(records, ahead=decoded)
    assert [(d.message, d.reason) for d in batch.dead] == [(bad, "decode")]
    assert batch.events == 2


def test_decoding_ahead_stops_at_a_service_outage_and_the_batch_decodes_the_rest():
    records = rows(0, 1, 2, 3)
    processor = make_processor()
    decode = processor.converter.decode
    down = [True]

    def registry_down_at_2(msg: Any) -> Any:
        if msg.offset() == 2 and down[0]:
            raise TransientError("schema registry unreachable")
        return decode(msg)

    processor.converter.decode = registry_down_at_2  # type: ignore[method-assign]
    decoded = processor.decode_ahead(records)
    assert len(decoded) == 1  # record 1; 2 and 3 are left to the batch
    with pytest.raises(TransientError):  # the batch meets the outage itself
        processor.process(records, ahead=decoded)
    down[0] = False
    batch = processor.process(records, ahead=decoded)
    assert batch.events == 3
    assert sorted(op.doc_id for op in batch.ops["docs"]) == ["1", "2", "3"]


def test_decoding_ahead_asks_no_registry_for_a_schema_it_has_not_fetched():
    # The registry is down. Reading ahead must not wait on it (that would
    # hold the commit of the batch in hand): it stops before the first record
    # of a new schema, and the batch meets the outage once, itself.
    fixture = load("customers_create.json")
    schemas: dict[int, Any] = {}
    first = as_avro(fixture, schemas)
    down = StubRegistry({})
    converter = AvroConverter(down)
    processor = make_processor()
    processor.converter = converter
    decoded = processor.decode_ahead([first])
    assert decoded == []
    assert down.fetched == []
    with pytest.raises(BadRecord):  # the batch asks (this stub: unknown id)
        converter.decode(first)
    assert down.fetched == [1]
    # With the schemas fetched, the records after are decoded ahead.
    converter = AvroConverter(StubRegistry(schemas))
    processor = make_processor()
    processor.converter = converter
    converter.decode(first)
    again = FakeMessage(first.topic(), first.value(), first.key(), 0, 11)
    decoded = processor.decode_ahead([again])
    assert [type(d).__name__ for d in decoded] == ["ChangeEvent"]


def test_a_rebalance_gives_the_records_back_where_each_partition_resumes():
    # Partition 0 stays held; partition 1 is taken during the read and comes
    # back; a third partition is taken for good. The group committed 1:20.
    records = [*rows(0, 5, 6), *rows(1, 30, 31)]
    ahead, parts, consumer, _p = setup(records, committed={1: 20})
    parts.assign([TopicPartition(TOPIC, 2)])
    records.append(rows(2, 40)[0])
    consumer.queued.append(records[-1])

    def rebalance() -> None:
        gone = parts.revoke([TopicPartition(TOPIC, 1), TopicPartition(TOPIC, 2)])
        ahead.moved(gone)
        parts.assign([TopicPartition(TOPIC, 1)])

    consumer.during_consume = rebalance
    ahead.read()
    assert ahead.take() is None  # not applied: given back
    assert sorted(consumer.seeks) == [
        (TOPIC, 0, 5),  # held throughout: its first record read ahead
        (TOPIC, 1, 20),  # taken and back: where its new assignment started
    ]  # partition 2 is another worker's, from the group's offset


def test_a_partition_back_that_the_group_never_committed_is_read_from_its_start():
    ahead, parts, consumer, _p = setup(rows(1, 0, 1), committed={1: -1001})

    def rebalance() -> None:
        ahead.moved(parts.revoke([TopicPartition(TOPIC, 1)]))
        parts.assign([TopicPartition(TOPIC, 1)])

    consumer.during_consume = rebalance
    ahead.read()
    assert ahead.take() is None
    assert consumer.seeks == [(TOPIC, 1, OFFSET_BEGINNING)]


def test_records_fetched_during_the_write_join_the_records_read_ahead():
    ahead, _parts, consumer, processor = setup(rows(0, 1, 2), size=4)
    ahead.read()
    later = rows(0, 3, 4, 5)
    consumer.queued += later
    raw, decoded = ahead.take() or ([], [])
    assert [m.offset() for m in raw] == [1, 2, 3, 4]  # up to a batch
    assert len(decoded) == 2  # 3 and 4 are decoded in their batch
    assert processor.process(raw, ahead=decoded).events == 4
    assert consumer.queued == [later[2]]


def test_a_rebalance_served_while_topping_up_gives_every_record_back():
    # The consume that tops the batch up serves a rebalance: what it returns
    # may already come from the partition's new assignment.
    ahead, parts, consumer, _p = setup(rows(0, 5, 6), committed={0: 3})
    ahead.read()
    consumer.queued += rows(0, 3, 4)

    def rebalance() -> None:
        ahead.moved(parts.revoke([TopicPartition(TOPIC, 0)]))
        parts.assign([TopicPartition(TOPIC, 0)])

    consumer.during_consume = rebalance
    assert ahead.take() is None
    assert consumer.seeks == [(TOPIC, 0, 3)]


def test_a_rebalance_of_other_partitions_leaves_the_read_ahead_as_it_is():
    records = rows(0, 5, 6)
    ahead, parts, consumer, _p = setup(records)
    ahead.read()
    ahead.moved(parts.revoke([TopicPartition(TOPIC, 1)]))
    taken = ahead.take()
    assert taken is not None
    assert taken[0] == records
    assert consumer.seeks == []


def test_a_batch_given_up_gives_its_read_ahead_back_before_it_is_rewound():
    ahead, parts, consumer, _p = setup([*rows(0, 9, 10), *rows(1, 3)])
    batch = rows(0, 5, 6, 7, 8)
    ahead.read()
    ahead.give_back()
    parts.rewind(batch)
    # The batch's own seek comes last: partition 0 reads 5 next, not 9.
    assert consumer.seeks == [(TOPIC, 0, 9), (TOPIC, 1, 3), (TOPIC, 0, 5)]
    assert not ahead.pending


def test_a_stop_reads_nothing_ahead():
    consumer = Consumer(rows(0, 1, 2))
    parts = Partitions(Health(), lambda: True, consumer)
    ahead = ReadAhead(parts, make_processor(), 10, lambda: True)
    ahead.read()
    assert not ahead.pending
    assert len(consumer.queued) == 2


def test_the_worker_reads_ahead_while_the_helper_thread_works():
    parts = Partitions(Health(), lambda: False, Consumer([]))
    started = threading.Event()
    seen: list[bool] = []

    def meanwhile() -> None:
        seen.append(started.wait(5))  # the work runs while this does

    def work() -> str:
        started.set()
        return "written"

    parts.meanwhile = meanwhile
    assert parts.run_alive(work) == "written"
    assert seen == [True]
