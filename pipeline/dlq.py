"""The dead-letter topic: records the pipeline could not apply, with the reason.

Each dead letter keeps the original key and value; headers say where the
record came from and why it failed. ``readside dlq replay`` decodes them again
with their original position, so the versions they write are the versions
they would have written the first time (a newer document is never
overwritten by a replayed old one).

Delivery: a batch's offsets are committed only after each of its dead letters
was acknowledged by the broker. A refused dead letter stays pending and is
produced again at the next :meth:`DeadLetterQueue.flush`, however often that
takes.

Size: the topic is made to hold any record of the source topics with its
headers (:func:`pipeline.dlqtopic.prepare_topic`). A dead letter still larger
than the topic's ``max.message.bytes`` (a source topic's limit raised under
running workers) is sent without its value: its headers keep the origin and
the reason, and say that the value was dropped and its size, so the pipeline
moves on and the record can be read again at its origin. A limit too low for
even the headers drops nothing: the dead letter is refused (and its batch
not committed) until the limit is raised.

Retention: dead letters are kept until replayed or purged on purpose
(:mod:`pipeline.dlqtopic`).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from functools import partial
from typing import Any

from confluent_kafka import (
    KafkaError,
    KafkaException,
    Producer,
    TopicPartition,
)

from pipeline import kafkaclient
from pipeline.dlqtopic import PRODUCER_MAX, PRODUCER_MIN
from pipeline.errors import FatalError, TransientError
from pipeline.processor import DeadLetter, position_of
from pipeline.sourceconfig import KafkaConfig

logger = logging.getLogger(__name__)

H_TOPIC = "readside.topic"
H_PARTITION = "readside.partition"
H_OFFSET = "readside.offset"
H_REASON = "readside.reason"
H_CLASS = "readside.error.class"
H_MESSAGE = "readside.error.message"
H_VIEW = "readside.view"
H_TIME = "readside.failed_at_ms"
#: ``size`` when the value was left out because the record was too large
H_VALUE_DROPPED = "readside.value.dropped"
H_VALUE_SIZE = "readside.value.size"

#: What a record costs beyond its key, value and headers (batch and record
#: framing, varints), rounded up.
_FRAMING = 1024

Headers = list[tuple[str, str | bytes | None]]


@dataclass
class _Letter:
    """One dead letter of the batch in hand, until the broker acknowledged it."""

    dead: DeadLetter
    failed_at_ms: int
    acked: bool = False
    error: KafkaError | None = None
    without_value: bool = False


class DeadLetterQueue:
    """Produces dead letters; ``flush`` must succeed before offsets are committed.

    Args:
        producer: the producer (may be shared; ``flush`` waits for all of it).
        topic: the dead-letter topic.
        max_bytes: the topic's ``max.message.bytes``; a larger dead letter is
            sent without its value.
        read_limit: reads the topic's limit again after the broker refused a
            dead letter as too large (its limit was lowered meanwhile).
    """

    def __init__(
        self,
        producer: Producer,
        topic: str,
        max_bytes: int = PRODUCER_MIN,
        read_limit: Callable[[], int] | None = None,
    ) -> None:
        self.producer = producer
        self.topic = topic
        self.max_bytes = min(max_bytes, PRODUCER_MAX)
        self.read_limit = read_limit
        self.sent = 0
        self._pending: list[_Letter] = []

    @property
    def pending(self) -> int:
        """Dead letters sent and not acknowledged yet."""
        return sum(1 for letter in self._pending if not letter.acked)

    def send(self, dead: DeadLetter) -> None:
        """Produce a dead letter; it stays pending until :meth:`flush` saw it acked."""
        letter = _Letter(dead, int(time.time() * 1000))
        self._pending.append(letter)
        self._produce(letter)
        self.sent += 1
        pos = position_of(dead.message)
        logger.warning(
            "dead letter topic=%s partition=%d offset=%d reason=%s error=%s",
            pos.topic,
            pos.partition,
            pos.offset,
            dead.reason,
            dead.error[:200],
        )

    def _record(self, letter: _Letter) -> tuple[Any, Any, Headers]:
        dead, msg = letter.dead, letter.dead.message
        pos = position_of(msg)
        raw = [
            (H_TOPIC, pos.topic.encode()),
            (H_PARTITION, str(pos.partition).encode()),
            (H_OFFSET, str(pos.offset).encode()),
            (H_REASON, dead.reason.encode()),
            (H_CLASS, dead.error_class.encode()),
            (H_MESSAGE, dead.error[:4000].encode(errors="replace")),
            (H_TIME, str(letter.failed_at_ms).encode()),
        ]
        if dead.view:
            raw.append((H_VIEW, dead.view.encode()))
        key, value = msg.key(), msg.value()
        frame = _FRAMING + len(key or b"") + sum(len(k) + len(v) for k, v in raw)
        size = len(value or b"")
        # The value is dropped only when that makes the dead letter fit: below
        # even its headers' size (a limit being changed), the whole letter is
        # sent, refused until the limit is raised, then delivered whole.
        too_large = value is not None and frame < self.max_bytes < frame + size
        if too_large and not letter.without_value:
            logger.error(
                "dead letter too large, sent without its value topic=%s partition=%d "
                "offset=%d size=%d limit=%d",
                pos.topic,
                pos.partition,
                pos.offset,
                size,
                self.max_bytes,
            )
        letter.without_value = too_large
        headers: Headers = list(raw)
        if too_large:
            headers += [(H_VALUE_DROPPED, b"size"), (H_VALUE_SIZE, str(size).encode())]
            value = None
        return key, value, headers

    def _produce(self, letter: _Letter) -> None:
        key, value, headers = self._record(letter)
        letter.error = None
        try:
            self.producer.produce(
                self.topic,
                key=key,
                value=value,
                headers=headers,
                on_delivery=partial(self._delivered, letter),
            )
        except BufferError:
            letter.error = KafkaError(KafkaError._QUEUE_FULL)
        except KafkaException as exc:
            letter.error = exc.args[0]

    @staticmethod
    def _delivered(letter: _Letter, err: KafkaError | None, _msg: Any) -> None:
        letter.error = err
        letter.acked = err is None

    def flush(self, timeout: float = 30.0) -> None:
        """Wait until every pending dead letter is acknowledged.

        Dead letters refused before are produced again first. Idempotent: call
        it again after it raised.

        Raises:
            TransientError: some dead letters are not delivered (yet); they
                stay pending.
            FatalError: the producer failed for good.
        """
        refused = [x for x in self._pending if not x.acked and x.error is not None]
        if any(_too_large(x.error) for x in refused):
            self._reread_limit()
        for letter in refused:
            self._produce(letter)
        self.producer.flush(timeout)
        left = [x for x in self._pending if not x.acked]
        if not left:
            self._pending.clear()
            return
        errors = sorted({str(x.error) for x in left if x.error is not None})
        if any(x.error is not None and x.error.fatal() for x in left):
            raise FatalError(f"dead-letter producer failed: {errors[:3]}")
        raise TransientError(
            f"dead-letter topic {self.topic}: {len(left)} of {len(self._pending)} "
            f"dead letter(s) not delivered, errors: {errors[:3]}"
        )

    def _reread_limit(self) -> None:
        if self.read_limit is None:
            return
        try:
            self.max_bytes = min(self.read_limit(), PRODUCER_MAX)
        except KafkaException as exc:  # the refusal is retried with the old limit
            logger.warning(
                "dead-letter topic limit not read topic=%s error=%s", self.topic, exc
            )

    def discard(self) -> None:
        """Forget the pending dead letters (their batch is abandoned and will
        be read again, with its dead letters, by the partitions' next owner)."""
        self._pending.clear()


def _too_large(err: KafkaError | None) -> bool:
    # librdkafka's own size check and the broker's refusal share the code.
    return err is not None and err.code() == KafkaError.MSG_SIZE_TOO_LARGE


def _bytes(raw: str | bytes | None) -> bytes | None:
    return raw.encode() if isinstance(raw, str) else raw


@dataclass(frozen=True)
class DeadRecord:
    """A dead letter read back from the topic."""

    dlq_partition: int
    dlq_offset: int
    key: bytes | None
    value: bytes | None
    headers: dict[str, str]

    @property
    def origin(self) -> tuple[str, int, int]:
        h = self.headers
        return h[H_TOPIC], int(h[H_PARTITION]), int(h[H_OFFSET])


class OriginMessage:
    """A dead letter dressed as the record it came from (for replay)."""

    def __init__(self, rec: DeadRecord) -> None:
        self._rec = rec
        self._topic, self._partition, self._offset = rec.origin

    def topic(self) -> str:
        return self._topic

    def partition(self) -> int:
        return self._partition

    def offset(self) -> int:
        return self._offset

    def key(self) -> bytes | None:
        return self._rec.key

    def value(self) -> bytes | None:
        return self._rec.value

    def headers(self) -> Any:
        return None

    def error(self) -> None:
        return None

    def timestamp(self) -> tuple[int, int]:
        return (0, 0)


def read_all(
    kafka: KafkaConfig,
    topic: str,
    timeout_s: float = 10.0,
    group: str | None = None,
) -> Iterator[tuple[DeadRecord, Any]]:
    """Every dead letter from the beginning (or from ``group``'s committed offsets).

    Yields ``(record, kafka_message)``; stops at the end of the topic.
    """
    conf: dict[str, Any] = {
        "enable.auto.commit": False,
        "group.id": group or "readside-dlq-reader",
        "auto.offset.reset": "earliest",
        "enable.partition.eof": True,
    }
    consumer = kafkaclient.consumer(kafka, conf)
    try:
        md = consumer.list_topics(topic, timeout=timeout_s)
        parts = md.topics.get(topic)
        if parts is None or parts.error is not None or not parts.partitions:
            return
        tps = [TopicPartition(topic, p) for p in parts.partitions]
        if group is None:
            tps = [TopicPartition(topic, p, 0) for p in parts.partitions]
        else:
            tps = consumer.committed(tps, timeout=timeout_s)
            tps = [TopicPartition(t.topic, t.partition, max(t.offset, 0)) for t in tps]
        ends = {}
        for tp in tps:
            _low, high = consumer.get_watermark_offsets(tp, timeout=timeout_s)
            ends[tp.partition] = high
        pending = {tp.partition for tp in tps if tp.offset < ends[tp.partition]}
        consumer.assign(tps)
        deadline = time.monotonic() + timeout_s * 3
        while pending and time.monotonic() < deadline:
            msg = consumer.poll(0.5)
            if msg is None:
                continue
            if msg.error():
                continue
            pos = position_of(msg)
            raw_headers = msg.headers() or []
            pairs = (
                raw_headers.items() if isinstance(raw_headers, dict) else raw_headers
            )
            headers = {
                k: v.decode(errors="replace") if isinstance(v, bytes) else str(v)
                for k, v in pairs
            }
            yield (
                DeadRecord(
                    pos.partition,
                    pos.offset,
                    _bytes(msg.key()),
                    _bytes(msg.value()),
                    headers,
                ),
                consumer,
            )
            if pos.offset + 1 >= ends[pos.partition]:
                pending.discard(pos.partition)
    finally:
        consumer.close()
