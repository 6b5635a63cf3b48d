"""The partitions a worker holds, and how it waits with them paused.

A worker keeps its place in the consumer group only while it polls. When a
batch must wait (a store or the source is down, a sink write is slow) the
worker pauses every partition it holds and keeps polling, so the group keeps
it however long the wait, and no record is read meanwhile. What a poll of a
paused consumer still returns (a record fetched before the pause) is read
again afterwards: the partition is sought back to it.

A rebalance may take partitions during the wait: the batch that read them is
then given up (nothing of it is committed) and the partitions this worker
still holds are sought back to the batch's first record, for the next poll.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from concurrent.futures import TimeoutError as FutureTimeout
from dataclasses import dataclass, field
from typing import Any, TypeVar

from confluent_kafka import (
    OFFSET_BEGINNING,
    KafkaError,
    KafkaException,
    TopicPartition,
)

from pipeline import metrics
from pipeline.errors import FatalError
from pipeline.gaps import Gap, Gaps
from pipeline.redelivery import commit_metadata
from pipeline.sinkwriter import Abandoned

logger = logging.getLogger(__name__)

T = TypeVar("T")

#: How long a sink write or source read may run before the worker starts
#: polling (partitions paused) while it waits for it.
KEEPALIVE_AFTER_S = 1.0
#: How long one poll waits for a first record when none is queued (the loop
#: then turns: stop requests, layout checks, liveness).
IDLE_POLL_S = 0.2


def next_batch(consumer: Any, size: int, linger_s: float) -> list[Any]:
    """Up to ``size`` records: what the consumer has queued, else the first
    to come within :data:`IDLE_POLL_S` and what comes within ``linger_s``
    more (a batch that fills returns at once).

    Records that were queued arrived while the last batch was applied: they
    have waited already, so the batch leaves with them at once, and its size
    follows the load (the longer a batch takes, the more the next one holds;
    under a backlog the queue fills it). Only a batch that starts from an
    idle consumer waits up to ``linger_s`` for company, so a change waits at
    most that long before it is applied (the read-your-writes latency,
    docs/query-api.md).
    """
    msgs = list(consumer.consume(size, 0))
    if msgs:
        return msgs
    msgs = list(consumer.consume(1, IDLE_POLL_S))
    if msgs and size > 1:
        msgs.extend(consumer.consume(size - 1, linger_s))
    return msgs


Part = tuple[str, int]


@dataclass
class Partitions:
    """What one worker holds: its assignment, what a rebalance took from the
    batch in hand, and the pause state of a wait.

    Args:
        health: the worker's health (assigned count, loop turns).
        stopping: whether a stop was asked.
    """

    health: metrics.Health
    stopping: Callable[[], bool]
    #: the worker's consumer, once it made one
    consumer: Any = None
    assigned: set[Part] = field(default_factory=set)
    #: a sink write or source read still running when a stop gave its batch
    #: up (the process may exit without waiting for it)
    in_flight: Future[Any] | None = None
    _revoked: set[Part] = field(default_factory=set)
    _batch: set[Part] = field(default_factory=set)
    #: per partition, the first record a paused poll returned (read again)
    _replay_from: dict[Part, int] = field(default_factory=dict)
    #: partitions assigned since the loop last set their pause state
    _fresh: list[TopicPartition] = field(default_factory=list)
    #: inside :meth:`wait_paused`: every assigned partition stays paused
    _waiting: bool = False
    _helper: ThreadPoolExecutor = field(
        default_factory=lambda: ThreadPoolExecutor(1, "readside-io")
    )
    #: per partition held, the highest last-commit LSN applied (committed
    #: with its offsets: :func:`pipeline.redelivery.commit_metadata`)
    _commit_lsns: dict[Part, int] = field(default_factory=dict)
    #: where each partition's next record must be: records dropped unread
    gaps: Gaps = field(default_factory=Gaps)
    #: of the batch in hand, where reading went on after each gap: committed
    #: with it, for a partition that brings no record of its own
    _resumed: dict[Part, int] = field(default_factory=dict)
    #: what the worker does on its own thread while :meth:`run_alive`'s work
    #: runs on the helper (:mod:`pipeline.readahead`)
    meanwhile: Callable[[], None] = lambda: None

    # ------------------------------------------------------------ rebalance
    def assign(self, parts: Iterable[TopicPartition]) -> None:
        parts = list(parts)
        self.assigned |= {(p.topic, p.partition) for p in parts}
        self._fresh.extend(parts)
        self.gaps.assign(parts)
        self.health.assigned = len(self.assigned)

    def revoke(self, parts: Iterable[TopicPartition]) -> set[Part]:
        """Forget ``parts``; the set of them, as (topic, partition)."""
        gone = {(p.topic, p.partition) for p in parts}
        for part in gone:
            self._commit_lsns.pop(part, None)
        self.gaps.revoke(gone)
        self._revoked |= gone
        self.assigned -= gone
        self.health.assigned = len(self.assigned)
        return gone

    def offsets(
        self, msgs: Iterable[Any], commit_lsns: Mapping[Part, int], marks: Any
    ) -> list[TopicPartition]:
        """What to commit after a batch of ``msgs`` whose change events
        carried ``commit_lsns`` (:class:`pipeline.processor.Batch`): each
        partition's next offset, with the redelivery mark of ``marks``
        (:class:`pipeline.redelivery.Redeliveries`, or None) and the highest
        last-commit LSN applied so far."""
        for part, lsn in commit_lsns.items():
            self._commit_lsns[part] = max(lsn, self._commit_lsns.get(part, lsn))
        nexts: dict[Part, int] = {}
        for m in msgs:
            key = (m.topic(), m.partition())
            nexts[key] = max(nexts.get(key, 0), m.offset() + 1)
        for key, offset in self._resumed.items():
            if key in self.assigned:
                nexts[key] = max(nexts.get(key, 0), offset)
        self.gaps.advance(nexts)
        return [
            TopicPartition(
                *part,
                offset,
                metadata=commit_metadata(
                    marks.metadata(part) if marks else "", self._commit_lsns.get(part)
                ),
            )
            for part, offset in nexts.items()
        ]

    def reached(
        self,
        until: Mapping[Part, int] | None,
        assignment: Iterable[TopicPartition] | None,
    ) -> bool:
        """Whether every partition of ``until`` was read up to its offset
        (never, without ``until``); a partition not fetched yet stands where
        ``assignment`` put it."""
        if until is None:
            return False
        starts = {(tp.topic, tp.partition): tp.offset for tp in assignment or ()}
        parts = [TopicPartition(t, p) for (t, p) in until]
        for tp in self.consumer.position(parts):
            key = (tp.topic, tp.partition)
            # No position yet (nothing fetched): where it was assigned.
            at = tp.offset if tp.offset >= 0 else starts.get(key, -1)
            if at < until[key]:
                return False
        return True

    # ------------------------------------------------------------ one batch
    def begin_batch(self, msgs: Sequence[Any]) -> list[Gap]:
        """A batch of ``msgs`` starts: it is given up if a rebalance takes
        one of its partitions before it is committed. Returns the records
        its partitions dropped before the worker read them."""
        first: dict[Part, int] = {}
        for m in msgs:
            key = (m.topic(), m.partition())
            if key not in first:
                first[key] = m.offset()
        self._batch = set(first)
        self._revoked.clear()
        self._replay_from = {}
        gaps = self.gaps.check(first, self.consumer)
        self._resumed = {(g.topic, g.partition): g.resumed for g in gaps}
        return gaps

    def should_abandon(self) -> bool:
        return self.stopping() or bool(self._batch & self._revoked)

    def rewind(self, msgs: list[Any], gaps: Iterable[Gap] = ()) -> None:
        """Seek still-owned partitions back to the start of the abandoned
        batch, whose ``gaps`` are found again at the next read."""
        count = self.unread(msgs)
        for gap in gaps:
            if (gap.topic, gap.partition) in self.assigned:
                self.gaps.seek((gap.topic, gap.partition), gap.first)
        logger.warning("batch abandoned records=%d partitions=%d", len(msgs), count)

    def unread(self, msgs: Iterable[Any], moved: Iterable[Part] = frozenset()) -> int:
        """Give ``msgs`` back to the consumer, read but not applied: each
        partition this worker holds is sought back to its first record of
        them (a stop leaves them as they are). A partition in ``moved``, one
        a rebalance took since they were read and that came back, instead
        goes back to the group's committed offset, where its new assignment
        started: whether its records in ``msgs`` were read before it was
        taken or after it came back, none is skipped. Returns the number of
        partitions of ``msgs``.

        Raises:
            KafkaException: the committed offsets of ``moved`` could not be
                read (the worker exits; nothing past them was committed).
        """
        first: dict[Part, int] = {}
        for m in msgs:
            if m.error() is not None:
                continue
            key = (m.topic(), m.partition())
            first[key] = min(first.get(key, m.offset()), m.offset())
        if self.stopping():
            return len(first)
        back = {part for part in moved if part in first and part in self.assigned}
        if back:
            committed = self.consumer.committed(
                [TopicPartition(t, p) for t, p in sorted(back)], timeout=10
            )
            for tp in committed:
                if tp.error is not None:
                    raise KafkaException(tp.error)
                # never committed: from the start (auto.offset.reset earliest)
                at = tp.offset if tp.offset >= 0 else OFFSET_BEGINNING
                first[(tp.topic, tp.partition)] = at
        for (topic, part), offset in first.items():
            if (topic, part) in self.assigned:
                self.consumer.seek(TopicPartition(topic, part, offset))
                if offset >= 0:  # else the group's offset is read at the next batch
                    self.gaps.seek((topic, part), offset)
        return len(first)

    # ------------------------------------------------------------ waiting
    def run_alive(self, work: Callable[[], T]) -> T:
        """Run ``work`` on the helper thread; if it takes more than a moment,
        poll with every partition paused until it is done, so the group keeps
        this worker however slow a store is. A revocation waits for it; a
        stop does not: the batch is given up (nothing of it is committed)
        and the work is left in flight (:attr:`in_flight`).

        Raises:
            Abandoned: a stop was asked while the work ran.
        """
        future = self._helper.submit(work)
        self.meanwhile()
        try:
            return future.result(timeout=KEEPALIVE_AFTER_S)
        except FutureTimeout:
            pass
        self.wait_paused(float("inf"), until=lambda: future.done() or self.stopping())
        if not future.done():
            self.in_flight = future
            raise Abandoned("stop asked while a store was slow")
        return future.result()

    def wait_paused(
        self, seconds: float, until: Callable[[], bool] | None = None
    ) -> None:
        """Sleep with every partition paused, polling so the group keeps us:
        for ``seconds`` or a stop request, or else until ``until()``."""
        assignment = self.consumer.assignment()
        self.consumer.pause(assignment)
        self._waiting = True
        try:
            deadline = time.monotonic() + seconds
            while not (until() if until else self.stopping()):
                if time.monotonic() >= deadline:
                    break
                self.health.turn()
                msg = self.consumer.poll(
                    min(0.2, max(0.0, deadline - time.monotonic()))
                )
                self.settle_fresh()
                if msg is not None and msg.error() is None:
                    key = (msg.topic(), msg.partition())
                    self._replay_from.setdefault(key, msg.offset())
        finally:
            self._waiting = False
            self._fresh.clear()
            self.consumer.resume(self.consumer.assignment())
        for (topic, part), offset in self._replay_from.items():
            if (topic, part) in self.assigned:
                self.consumer.seek(TopicPartition(topic, part, offset))
                self.gaps.seek((topic, part), offset)
        self._replay_from.clear()

    def settle_fresh(self) -> None:
        """Give the partitions assigned by the last poll the loop's pause
        state: paused inside :meth:`wait_paused`, else resumed.

        librdkafka keeps a partition's pause flag in the process across
        revocations: a partition paused during an outage, revoked, and later
        assigned to this worker again would come back paused, and be read by
        no one while the worker idles (``resume`` of the assignment at the
        end of the wait cannot reach a partition assigned after it).
        """
        if not self._fresh:
            return
        fresh, self._fresh = self._fresh, []
        if self._waiting:
            self.consumer.pause(fresh)
        else:
            self.consumer.resume(fresh)


def usable(msg: Any) -> bool:
    """Whether a consumed message is a record (not an end-of-partition event
    or a consumer error, which is logged; a fatal one raises).

    Raises:
        FatalError: the consumer hit a fatal error.
    """
    err = msg.error()
    if err is None:
        return True
    if err.code() == KafkaError._PARTITION_EOF:
        return False
    if err.fatal():
        raise FatalError(f"Kafka consumer: {err.str()}")
    logger.warning("consumer error=%s", err.str())
    return False


def fmt(parts: Iterable[TopicPartition]) -> str:
    return ",".join(f"{p.topic}[{p.partition}]" for p in parts)
