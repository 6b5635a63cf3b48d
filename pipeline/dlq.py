"""The dead-letter topic: records the pipeline could not apply, with the reason.

Each dead letter keeps the original key and value; headers say where the
record came from and why it failed. ``readside dlq replay`` decodes them again
with their original position, so the versions they write are the versions
they would have written the first time (a newer document is never
overwritten by a replayed old one).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

from confluent_kafka import Consumer, Producer, TopicPartition

from pipeline.errors import TransientError
from pipeline.processor import DeadLetter, position_of

logger = logging.getLogger(__name__)

H_TOPIC = "readside.topic"
H_PARTITION = "readside.partition"
H_OFFSET = "readside.offset"
H_REASON = "readside.reason"
H_CLASS = "readside.error.class"
H_MESSAGE = "readside.error.message"
H_VIEW = "readside.view"
H_TIME = "readside.failed_at_ms"


class DeadLetterQueue:
    """Produces dead letters; ``flush`` must succeed before offsets are committed."""

    def __init__(self, producer: Producer, topic: str) -> None:
        self.producer = producer
        self.topic = topic
        self.sent = 0
        self._errors: list[str] = []

    def send(self, dead: DeadLetter) -> None:
        msg = dead.message
        pos = position_of(msg)
        headers: list[tuple[str, str | bytes | None]] = [
            (H_TOPIC, pos.topic.encode()),
            (H_PARTITION, str(pos.partition).encode()),
            (H_OFFSET, str(pos.offset).encode()),
            (H_REASON, dead.reason.encode()),
            (H_CLASS, dead.error_class.encode()),
            (H_MESSAGE, dead.error[:4000].encode(errors="replace")),
            (H_TIME, str(int(time.time() * 1000)).encode()),
        ]
        if dead.view:
            headers.append((H_VIEW, dead.view.encode()))
        self.producer.produce(
            self.topic,
            key=msg.key(),
            value=msg.value(),
            headers=headers,
            on_delivery=self._delivered,
        )
        self.sent += 1
        logger.warning(
            "dead letter topic=%s partition=%d offset=%d reason=%s error=%s",
            pos.topic,
            pos.partition,
            pos.offset,
            dead.reason,
            dead.error[:200],
        )

    def _delivered(self, err: Any, _msg: Any) -> None:
        if err is not None:
            self._errors.append(str(err))

    def flush(self, timeout: float = 30.0) -> None:
        left = self.producer.flush(timeout)
        if left or self._errors:
            errors, self._errors = self._errors, []
            raise TransientError(
                f"dead-letter topic {self.topic}: {left} undelivered, "
                f"errors: {errors[:3]}"
            )


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
    bootstrap: str, topic: str, timeout_s: float = 10.0, group: str | None = None
) -> Iterator[tuple[DeadRecord, Any]]:
    """Every dead letter from the beginning (or from ``group``'s committed offsets).

    Yields ``(record, kafka_message)``; stops at the end of the topic.
    """
    conf: dict[str, Any] = {
        "bootstrap.servers": bootstrap,
        "enable.auto.commit": False,
        "group.id": group or "readside-dlq-reader",
        "auto.offset.reset": "earliest",
        "enable.partition.eof": True,
    }
    consumer = Consumer(conf)
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
