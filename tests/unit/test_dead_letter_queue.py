"""DeadLetterQueue: a dead letter stays pending until the broker acknowledged it.

The producer here is a stand-in that delivers or refuses each record at
``flush`` as the test says; the real broker refusing dead letters is tested in
tests/integration/test_dlq_delivery.py.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import pytest
from confluent_kafka import KafkaError, KafkaException

from pipeline import dlq
from pipeline.decode import FakeMessage
from pipeline.errors import FatalError, TransientError
from pipeline.processor import DeadLetter

pytestmark = pytest.mark.unit

TOO_LARGE = KafkaError(KafkaError.MSG_SIZE_TOO_LARGE)
TIMED_OUT = KafkaError(KafkaError._MSG_TIMED_OUT)


@dataclass
class Record:
    key: Any
    value: Any
    headers: dict[str, Any]


@dataclass
class StubProducer:
    """Queues records; ``flush`` answers each with the next planned outcome."""

    outcomes: list[KafkaError | None] = field(default_factory=list)
    raises: list[BaseException] = field(default_factory=list)
    produced: list[Record] = field(default_factory=list)
    _queue: list[Any] = field(default_factory=list)

    def produce(self, topic: str, **kw: Any) -> None:
        if self.raises:
            raise self.raises.pop(0)
        self.produced.append(Record(kw["key"], kw["value"], dict(kw["headers"])))
        self._queue.append(kw["on_delivery"])

    def flush(self, _timeout: float = 0) -> int:
        for callback in self._queue:
            callback(self.outcomes.pop(0) if self.outcomes else None, None)
        self._queue.clear()
        return 0


def letter(value: bytes | None = b"x" * 100, offset: int = 7) -> DeadLetter:
    msg = FakeMessage("app.public.docs", value, b'{"id":1}', 2, offset)
    return DeadLetter(msg, "decode", "BadRecord", "not json")


def queue(producer: StubProducer, **kw: Any) -> dlq.DeadLetterQueue:
    return dlq.DeadLetterQueue(producer, "app.dlq", **kw)  # type: ignore[arg-type]


def test_dlq_flush_refused_delivery_raises_then_resends_until_acked():
    producer = StubProducer(outcomes=[TIMED_OUT, TIMED_OUT])
    q = queue(producer)
    q.send(letter())
    for _ in range(2):
        with pytest.raises(TransientError, match="1 of 1 dead letter"):
            q.flush()
        assert q.pending == 1
    q.flush()
    assert q.pending == 0
    first, *again = producer.produced
    assert len(again) == 2
    assert all(r == first for r in again)  # same origin, reason, failure time
    assert first.headers[dlq.H_OFFSET] == b"7"
    q.flush()  # nothing pending: nothing produced again
    assert len(producer.produced) == 3


def test_dlq_flush_one_refused_of_two_resends_only_that_one():
    producer = StubProducer(outcomes=[None, TIMED_OUT])
    q = queue(producer)
    q.send(letter(offset=1))
    q.send(letter(offset=2))
    with pytest.raises(TransientError, match="1 of 2"):
        q.flush()
    q.flush()
    offsets = [r.headers[dlq.H_OFFSET] for r in producer.produced]
    assert offsets == [b"1", b"2", b"2"]


def test_dlq_send_over_limit_sent_without_value_with_its_size():
    producer = StubProducer()
    q = queue(producer, max_bytes=10_000)
    q.send(letter(b"y" * 20_000))
    q.send(letter(b"z" * 100))
    q.flush()
    big, small = producer.produced
    assert big.value is None
    assert big.key == b'{"id":1}'
    assert big.headers[dlq.H_VALUE_DROPPED] == b"size"
    assert big.headers[dlq.H_VALUE_SIZE] == b"20000"
    assert big.headers[dlq.H_REASON] == b"decode"
    assert small.value == b"z" * 100
    assert dlq.H_VALUE_DROPPED not in small.headers


def test_dlq_flush_size_refusal_rereads_limit_value_kept_once_it_fits():
    # lowered below the letter (its value dropped: the rest fits), then raised
    limits = [10_000, 1_000_000]
    producer = StubProducer(outcomes=[TOO_LARGE, TOO_LARGE])
    q = queue(producer, max_bytes=1_000_000, read_limit=lambda: limits.pop(0))
    big = b"x" * 20_000
    q.send(letter(big))
    for _ in range(2):
        with pytest.raises(TransientError, match="MSG_SIZE_TOO_LARGE"):
            q.flush()
    q.flush()
    assert [r.value for r in producer.produced] == [big, None, big]
    assert q.pending == 0


def test_dlq_limit_below_even_the_headers_drops_nothing():
    """A limit no dead letter fits (one being changed, say): dropping the
    value would not make it fit, so the letter is sent whole, refused until
    the limit is raised, and then delivered with its value."""
    limits = [10, 1_000_000]
    producer = StubProducer(outcomes=[TOO_LARGE, TOO_LARGE])
    q = queue(producer, max_bytes=1_000_000, read_limit=lambda: limits.pop(0))
    q.send(letter())
    for _ in range(2):
        with pytest.raises(TransientError, match="MSG_SIZE_TOO_LARGE"):
            q.flush()
    q.flush()
    assert [r.value for r in producer.produced] == [b"x" * 100] * 3
    assert all(dlq.H_VALUE_DROPPED not in r.headers for r in producer.produced)
    assert q.pending == 0


def test_dlq_send_producer_raises_locally_produced_again_at_flush():
    producer = StubProducer(
        raises=[BufferError("queue full"), KafkaException(TOO_LARGE)]
    )
    q = queue(producer)
    q.send(letter(offset=1))
    q.send(letter(offset=2))
    assert q.pending == 2
    assert producer.produced == []
    q.flush()
    assert q.pending == 0
    assert [r.headers[dlq.H_OFFSET] for r in producer.produced] == [b"1", b"2"]


def test_dlq_flush_fatal_producer_error_raises_fatal():
    fatal = KafkaError(KafkaError._FATAL, "fenced", fatal=True)
    q = queue(StubProducer(outcomes=[fatal]))
    q.send(letter())
    with pytest.raises(FatalError):
        q.flush()


def test_dlq_discard_forgets_pending_letters():
    producer = StubProducer(outcomes=[TIMED_OUT])
    q = queue(producer)
    q.send(letter())
    with pytest.raises(TransientError):
        q.flush()
    q.discard()
    q.flush()
    assert q.pending == 0
    assert len(producer.produced) == 1


def test_dlq_flush_limit_unreadable_retries_with_old_limit():
    def unreadable() -> int:
        raise KafkaException(KafkaError(KafkaError._TRANSPORT))

    producer = StubProducer(outcomes=[TOO_LARGE])
    q = queue(producer, max_bytes=1_000_000, read_limit=unreadable)
    q.send(letter())
    with pytest.raises(TransientError):
        q.flush()
    q.flush()
    assert q.max_bytes == 1_000_000
    assert [r.value for r in producer.produced] == [b"x" * 100] * 2
