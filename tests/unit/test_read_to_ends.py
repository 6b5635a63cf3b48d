"""How a replay and ``snapshot --from-source`` read a topic to the ends they
sampled (pipeline.snapshot.replay.read_to_ends);
tests/integration/test_snapshot_replay.py and test_publication_drift.py run
it on the stack."""

from __future__ import annotations

from typing import Any

import pytest
from confluent_kafka import TopicPartition

from pipeline.errors import TransientError
from pipeline.snapshot.replay import read_to_ends

pytestmark = pytest.mark.unit


class Msg:
    def __init__(self, partition: int, offset: int, then: int | None = None) -> None:
        self._p, self._o = partition, offset
        #: the position after it: past the records compaction removed after it
        self.then = offset + 1 if then is None else then

    def error(self) -> None:
        return None

    def partition(self) -> int:
        return self._p

    def offset(self) -> int:
        return self._o


class Consumer:
    """Hands out ``batches`` in turn; positions follow what it handed out."""

    def __init__(self, batches: list[list[Msg]], parts: list[int]) -> None:
        self.batches = batches
        self.pos = dict.fromkeys(parts, -1001)
        self.paused: list[int] = []

    def consume(self, _n: int, _timeout: float) -> list[Msg]:
        batch = self.batches.pop(0) if self.batches else []
        for m in batch:
            self.pos[m.partition()] = m.then
        return batch

    def pause(self, parts: list[TopicPartition]) -> None:
        self.paused += [tp.partition for tp in parts]

    def assignment(self) -> list[TopicPartition]:
        return [TopicPartition("t", p) for p in self.pos]

    def position(self, parts: list[TopicPartition]) -> list[TopicPartition]:
        return [
            TopicPartition("t", tp.partition, self.pos[tp.partition]) for tp in parts
        ]


def _offsets(batches: Any) -> list[tuple[int, int]]:
    return [(m.partition(), m.offset()) for batch in batches for m in batch]


def test_records_below_the_ends_only_and_a_compacted_end_is_reached() -> None:
    consumer = Consumer(
        [
            # partition 1: compaction left offset 3 of 0..4, its batch ends at 4
            [Msg(0, 0), Msg(0, 1), Msg(1, 3, then=5)],
            [Msg(0, 2), Msg(0, 3)],  # 3 is past partition 0's sampled end
        ],
        [0, 1],
    )
    ends = {0: 3, 1: 5}
    read = _offsets(read_to_ends(consumer, "t", ends, 100, stall_s=60))
    assert read == [(0, 0), (0, 1), (1, 3), (0, 2)]
    assert ends == {}
    assert consumer.paused == [0]  # reached by a record; 1 by its position


def test_a_stop_ends_the_read_between_batches() -> None:
    consumer = Consumer([[Msg(0, 0)], [Msg(0, 1)]], [0])
    asked = iter([False, True])
    read = read_to_ends(consumer, "t", {0: 5}, 100, lambda: next(asked))
    assert _offsets(read) == [(0, 0)]


def test_a_topic_that_stops_answering_is_a_transient_error() -> None:
    with pytest.raises(TransientError, match="topic t not read to its end"):
        list(read_to_ends(Consumer([], [0]), "t", {0: 4}, 100, stall_s=0.0))
