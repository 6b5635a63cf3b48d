"""The next batch, read and decoded while the sinks write the one in hand.

The worker commits a batch only once every sink acknowledged it, and reads
on only after that commit. Most of that wait is the stores' (their CPU, the
network), while decoding the records is the largest share of the worker's
own CPU per record. So once a batch's write (or source read) is on its way
on the helper thread (:meth:`pipeline.partitions.Partitions.run_alive`), the
worker takes from the consumer the records it has already fetched, without
waiting for more, and decodes them: the next batch is ready when the commit
is done.

Only decoding runs early. Decoding reads nothing but the record (and the
schema registry's schemas, by id), so its result does not depend on when it
runs. Everything that keeps state (redelivery and snapshot checks, gaps,
tombstones, the views, TOAST values, dead letters) runs when the batch is
handled, in order, after the batch before it was committed; a record whose
decoding needs a service that is down is decoded in its batch, which waits
the outage out as before.

The records read ahead are the next batch unless a rebalance took one of
their partitions since they were read (eager rebalancing takes them all).
They are then given back, nothing of them applied: a partition still held is
sought back to its first record read ahead, one that was taken and came back
to the group's committed offset, where its new assignment started (it may
have been read from there already). A batch given up gives its read-ahead
back the same way before it is rewound itself, and a stop leaves both
unread: the next owner reads them from the committed offsets.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

from confluent_kafka import KafkaException

from pipeline.partitions import Part, Partitions
from pipeline.processor import Decoded, Processor

logger = logging.getLogger(__name__)


@dataclass
class _Read:
    """Records read ahead: as consumed (errors too), the decoded records."""

    raw: list[Any] = field(default_factory=list)
    decoded: list[Decoded] = field(default_factory=list)
    #: their partitions a rebalance took since they were read
    moved: set[Part] = field(default_factory=set)


class ReadAhead:
    """At most one batch read ahead of the one in hand."""

    def __init__(
        self,
        parts: Partitions,
        processor: Processor,
        size: int,
        stopping: Callable[[], bool],
    ) -> None:
        self.parts = parts
        self.processor = processor
        self.size = size
        self.stopping = stopping
        self._read: _Read | None = None

    @property
    def pending(self) -> bool:
        """Whether records were read ahead and not taken yet."""
        return self._read is not None and bool(self._read.raw)

    def partitions(self) -> set[Part]:
        """The partitions of the records read ahead and not taken yet."""
        if self._read is None:
            return set()
        return {(m.topic(), m.partition()) for m in self._read.raw}

    def read(self) -> None:
        """Take the records the consumer has fetched, up to a batch, and
        decode them; once per batch in hand (its later writes and reads do
        nothing), never during a stop."""
        if self._read is not None or self.stopping():
            return
        # Registered before the consume: a rebalance it serves is recorded.
        self._read = ahead = _Read()
        try:
            ahead.raw = list(self.parts.consumer.consume(self.size, 0))
        except KafkaException as exc:  # the loop's next consume meets it again
            logger.warning("reading ahead failed error=%s", exc)
            return
        ahead.decoded = self.processor.decode_ahead(
            [m for m in ahead.raw if m.error() is None]
        )
        logger.debug("read ahead records=%d", len(ahead.raw))

    def moved(self, parts: Iterable[Part]) -> None:
        """A rebalance took ``parts``: records of theirs read ahead are given
        back when the loop comes to them."""
        if self._read is not None:
            self._read.moved.update(parts)

    def take(self) -> tuple[list[Any], list[Decoded]] | None:
        """The records read ahead, topped up to a batch with those fetched
        since, and the decoded ones (the first of those without an error), as
        the next batch; None when none were read ahead, or they were given
        back because a rebalance took their partitions.

        Raises:
            KafkaException: see :meth:`give_back`.
        """
        ahead = self._read
        if ahead is None or not ahead.raw:
            self._read = None
            return None
        if len(ahead.raw) < self.size:
            # What came during the write joins them, as it would have joined
            # a batch consumed now (decoded in the batch); a rebalance served
            # by this consume is recorded as during the read.
            ahead.raw += self.parts.consumer.consume(self.size - len(ahead.raw), 0)
        self._read = None
        if ahead.moved and ahead.moved & {
            (m.topic(), m.partition()) for m in ahead.raw
        }:
            self._unread(ahead)
            return None
        return ahead.raw, ahead.decoded

    def give_back(self) -> None:
        """Give the records read ahead back unread (the batch in hand was
        given up; it is rewound after this).

        Raises:
            KafkaException: the committed offsets of partitions a rebalance
                took and gave back could not be read.
        """
        ahead, self._read = self._read, None
        if ahead is not None and ahead.raw:
            self._unread(ahead)

    def _unread(self, ahead: _Read) -> None:
        count = self.parts.unread(ahead.raw, ahead.moved)
        logger.info(
            "records read ahead given back records=%d partitions=%d",
            len(ahead.raw),
            count,
        )
