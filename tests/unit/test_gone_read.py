"""How ``snapshot --from-source`` reads a topic to the ends it sampled
(pipeline.snapshot.gone); tests/integration/test_publication_drift.py runs
it on the stack."""

from __future__ import annotations

from typing import Any

import pytest
from confluent_kafka import TopicPartition

from pipeline.errors import TransientError
from pipeline.snapshot import gone

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

    def consume(self, _n: int, _timeout: float) -> list[Msg]:
        batch = self.batches.pop(0) if self.batches else []
        for m in batch:
            self.pos[m.partition()] = m.then
        return batch

    def assignment(self) -> list[TopicPartition]:
        return [TopicPartition("t", p) for p in self.pos]

    def position(self, parts: list[TopicPartition]) -> list[TopicPartition]:
        return [
            TopicPartition("t", tp.partition, self.pos[tp.partition]) for tp in parts
        ]


def _offsets(msgs: Any) -> list[tuple[int, int]]:
    return [(m.partition(), m.offset()) for m in msgs]


def test_records_below_the_ends_only_and_a_compacted_end_is_reached() -> None:
    consumer = Consumer(
        [
            # partition 1: compaction left offset 3 of 0..4, its batch ends at 4
            [Msg(0, 0), Msg(0, 1), Msg(1, 3, then=5)],
            [Msg(0, 2), Msg(0, 3)],  # 3 is past partition 0's sampled end
        ],
        [0, 1],
    )
    read = _offsets(gone._read(consumer, {0: 3, 1: 5}))
    assert read == [(0, 0), (0, 1), (1, 3), (0, 2)]


def test_a_topic_that_stops_answering_is_a_transient_error(monkeypatch) -> None:
    monkeypatch.setattr(gone, "_STALL_S", 0.0)
    with pytest.raises(TransientError, match="not read to its end"):
        list(gone._read(Consumer([], [0]), {0: 4}))
