"""Records a partition lost before the worker read them.

A topic whose ``cleanup.policy`` includes ``delete`` drops its oldest
records once they are older than ``retention.ms`` (or the partition is
larger than ``retention.bytes``), whether or not a consumer group read them.
A worker that falls that far behind (stopped over a long weekend, or held
up by a store) finds its next record gone: the broker answers "offset out of
range", and the consumer jumps to the first record the partition still
holds (``auto.offset.reset``). The changes in the records it skipped are in
no store, and nothing else would ever say so.

:class:`Gaps` sees that jump. For each partition it knows the offset the
next record must have: the committed offset after an assignment, the offset
a seek went back to, or the one after the last batch. When a batch's first
record of a partition comes later than that, and the partition now begins
past it, the records in between were dropped unread. This is a
:class:`Gap`. The worker then takes the load marks of the views reading that
topic away from their stores (:meth:`pipeline.loaded.Watch.gap`), so the
loss is reported until a rebuild makes the view whole again. That holds over
restarts too, because the missing mark is itself the report.

A partition assigned at a committed offset it no longer holds is a gap
found at the next batch, whether or not it brings a record of it.

A later first record alone is no gap: compaction removes records, and
transaction markers take offsets. Only a partition whose first offset moved
past the expected one lost records. This is the log start offset, which the
consumer keeps from its fetches, so the check costs no request.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Mapping
from typing import Any, NamedTuple

from confluent_kafka import KafkaException, TopicPartition

logger = logging.getLogger(__name__)

Part = tuple[str, int]


class Gap(NamedTuple):
    """Records ``first``..``resumed - 1`` of a partition, dropped unread."""

    topic: str
    partition: int
    #: the offset the worker was to read next
    first: int
    #: the first offset the partition still held, where reading went on
    resumed: int

    def span(self) -> str:
        """Which records of which partition: ``records 4-9 of partition 2``."""
        last = self.resumed - 1
        held = f"records {self.first}-{last}" if last > self.first else f"record {last}"
        return f"{held} of partition {self.partition}"


def said(gaps: Iterable[Gap]) -> str:
    """What ``gaps`` lost, topic by topic."""
    by_topic: dict[str, list[str]] = {}
    for gap in gaps:
        by_topic.setdefault(gap.topic, []).append(gap.span())
    return "; ".join(
        f"topic {topic} dropped {' and '.join(spans)} (its retention) before the "
        "worker read them: the changes in them are in no store"
        for topic, spans in by_topic.items()
    )


class Gaps:
    """The offset each held partition's next record must have, and the
    gaps found against it (see the module's docstring).

    The consumer passed to :meth:`check` is the worker's: its committed
    offsets, and the log start offsets it keeps from its fetches, are read.
    """

    def __init__(self) -> None:
        #: per partition held, the offset of the record to come next
        self._next: dict[Part, int] = {}
        #: partitions assigned at the offset the group committed, not looked
        #: at yet
        self._unread: set[Part] = set()

    def assign(self, parts: Iterable[TopicPartition]) -> None:
        """``parts`` were assigned: at their own offset where they carry one
        (a rebuild's catch-up), else at the group's committed offset, read
        at the next batch."""
        for tp in parts:
            key = (tp.topic, tp.partition)
            if tp.offset >= 0:
                self._next[key] = tp.offset
            else:
                self._next.pop(key, None)
                self._unread.add(key)

    def revoke(self, parts: Iterable[Part]) -> None:
        for key in parts:
            self._next.pop(key, None)
            self._unread.discard(key)

    def seek(self, part: Part, offset: int) -> None:
        """The worker sought ``part`` back to ``offset``, its next record."""
        self._next[part] = offset
        self._unread.discard(part)

    def check(self, first: Mapping[Part, int], consumer: Any) -> list[Gap]:
        """The gaps before a batch whose first record of each partition is
        at ``first``; and those of every partition assigned since the last
        batch whose committed offset the partition no longer holds (it may
        bring no record for long)."""
        gaps = self._assigned(consumer) if self._unread else []
        for key, offset in first.items():
            expected = self._next.get(key)
            if expected is not None and offset > expected:
                start = _log_start(consumer, key)
                if start > expected:
                    gaps.append(Gap(key[0], key[1], expected, min(start, offset)))
        return gaps

    def advance(self, nexts: Mapping[Part, int]) -> None:
        """A batch was read up to ``nexts``: each partition's next record."""
        self._next.update(nexts)

    def _assigned(self, consumer: Any) -> list[Gap]:
        """Read the committed offsets of the partitions assigned since the
        last batch; the gaps of those the partition no longer holds. A
        partition the group never committed is read from its start: a first
        start is :mod:`pipeline.loaded`'s to judge."""
        keys, self._unread = sorted(self._unread), set()
        try:
            held = consumer.committed(
                [TopicPartition(t, p) for t, p in keys], timeout=10
            )
        except KafkaException as exc:
            logger.warning(
                "committed offsets not read, records dropped unread before "
                "this batch go unnoticed partitions=%d error=%s",
                len(keys),
                exc,
            )
            return []
        gaps = []
        for tp in held:
            if tp.error is not None or tp.offset < 0:
                continue
            key = (tp.topic, tp.partition)
            start = _log_start(consumer, key)
            if start > tp.offset:
                gaps.append(Gap(tp.topic, tp.partition, tp.offset, start))
            self._next[key] = max(start, tp.offset)
        return gaps


def _log_start(consumer: Any, key: Part) -> int:
    """The first offset ``key`` holds: the consumer's from its last fetch,
    else the broker's."""
    tp = TopicPartition(*key)
    try:
        held = consumer.get_watermark_offsets(tp, cached=True)
        if held is None or held[0] < 0:
            held = consumer.get_watermark_offsets(tp, timeout=10)
    except KafkaException as exc:
        logger.warning(
            "first offset of %s[%d] not read, a gap before it goes unnoticed error=%s",
            *key,
            exc,
        )
        return -1
    return -1 if held is None else int(held[0])
