"""The safe watermark of each view: an LSN below which every change is readable.

Definition: a view's watermark ``W`` means every source transaction whose
commit is at or before LSN ``W`` has been applied to every sink of the view
(or dead-lettered). A site that read ``pg_current_wal_lsn()`` after its commit
(:func:`query.lsn.commit_lsn`) sees its write once ``W >= that LSN``.

How it is derived, one *sample* at a time:

1. ``S`` = the replication slot's ``confirmed_flush_lsn``. Debezium confirms
   an LSN to PostgreSQL only in ``commitOffset``, which Kafka Connect calls
   after it committed the source offsets, and Connect commits a source offset
   only once the producer has had every record up to it acknowledged by
   Kafka. The LSN flushed is the commit LSN kept in that offset: the last
   transaction whose commit Debezium had processed before the record, whose
   events all precede the record. So every change of a transaction that
   committed at or before ``S`` is already stored in its topic.
2. Then (strictly after reading ``S``) ``E_p`` = the end offset (high
   watermark) of every partition ``p`` of the view's topic. The records of
   step 1 were acknowledged before ``S`` was read, so they all sit below
   ``E_p``.
3. The sample ``(S, E)`` is kept until the view's committed offset
   ``C_p >= E_p`` for every partition: the highest offset committed by a
   consumer group whose workers apply the view (:mod:`pipeline.groups`).
   The worker commits an offset only after every sink of the batch
   acknowledged the writes (docs/design.md: the commit order), so at
   that moment every record below ``E_p`` - and so every change committed
   at or before ``S`` - is in every sink. The watermark becomes ``S``.

4. Beside the samples, per partition: the workers commit with each offset
   the highest last-commit LSN ``M_p`` (``source.sequence[0]``) among the
   records below it (:func:`pipeline.redelivery.commit_metadata`). Debezium
   sends transactions whole, in commit order, and Connect's producer keeps
   each partition's order, so every change of a transaction committed at or
   before ``M_p`` that went to ``p`` lies below the record that carried it,
   and so was applied. Each partition is applied up to the higher of its two
   facts; the topic's watermark is the least over its partitions. With
   ``api.watermark_from_stream: false`` only the samples count.

Each fact used is a point in time that precedes the next, so the watermark
can lag (by Connect's offset flush interval, the worker's batch and the
sampling interval) but never run ahead of the stores. Committed offsets only
grow in normal operation, and the version rule keeps applied documents from
going back, so a watermark once reached stays true. Samples are taken in
time order, so their ``S`` and ``E`` grow together: the oldest pending sample
is always the next one to be satisfied.

Caveats, also in docs/query-api.md: Elasticsearch makes writes searchable at its
next refresh, so a search with ``min_lsn`` refreshes the index once the
watermark is reached (reads by id are real-time); a record that a sink
refused goes to the dead-letter topic and is counted as handled; the
watermark follows the consumer groups that apply the view, so it is the same
for every sink of a view.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import deque
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from confluent_kafka import KafkaException, TopicCollection, TopicPartition
from confluent_kafka.admin import AdminClient, OffsetSpec  # type: ignore[attr-defined]

from pipeline.config import Config
from pipeline.groups import AppliedOffsets
from query.errors import NotYetFresh
from query.failures import FailureRun

logger = logging.getLogger(__name__)

Part = tuple[str, int]
#: per view, a figure of each partition (applied offsets, last-commit LSNs)
PerView = dict[str, dict[Part, int]]

_LATEST = OffsetSpec.latest()  # type: ignore[no-untyped-call] # untyped in the library
_EARLIEST = OffsetSpec.earliest()  # type: ignore[no-untyped-call]


@dataclass(frozen=True, slots=True)
class Sample:
    """The slot's confirmed LSN and the end offsets read just after it."""

    lsn: int
    ends: dict[Part, int]


class WatermarkTracker:
    """Samples the slot and the topics, and keeps each topic's safe watermark.

    Thread-safe. ``sample`` does the I/O (one SQL query, one end-offset
    request per partition, one committed-offsets request); ``refresh`` and
    ``wait`` call it at most once per ``min_interval_s`` however many callers
    wait at once.

    Args:
        config: the pipeline's configuration (source DSN and slot, Kafka,
            views and their topics).
        min_interval_s: the least time between two samples.
        timeout_s: the most one Kafka or SQL call may take.
        max_pending: samples kept while waiting for the workers; the oldest
            go first (dropping one only delays the watermark).
    """

    def __init__(
        self,
        config: Config,
        min_interval_s: float = 0.02,
        timeout_s: float = 5.0,
        max_pending: int = 2000,
    ) -> None:
        self.config = config
        self.min_interval_s = min_interval_s
        self.timeout_s = timeout_s
        #: Every topic a view reads (an aggregate view reads one per table).
        self.topics: dict[str, list[str]] = {
            name: [config.source.topic(t) for t in dict.fromkeys(view.tables())]
            for name, view in config.effective_views().items()
        }
        #: Samples waiting per (view, topic): each view follows the consumer
        #: groups that apply it (:mod:`pipeline.groups`).
        self._pending: dict[tuple[str, str], deque[Sample]] = {
            (v, t): deque(maxlen=max_pending)
            for v, ts in self.topics.items()
            for t in ts
        }
        self._marks: dict[tuple[str, str], int] = {}
        #: per (view, topic), per partition: the newest sample's LSN its
        #: committed offset reached
        self._reached: dict[tuple[str, str], dict[Part, int]] = {}
        self.ends: dict[Part, int] = {}
        #: (view, topic, partition) -> offset applied by the view's groups
        self.committed: dict[tuple[str, str, int], int] = {}
        self._offsets: AppliedOffsets | None = None
        self.slot_lsn: int | None = None
        self.sampled_at = 0.0  # time.monotonic() of the last good sample
        self.tried_at = 0.0  # and of the last attempt, good or not
        self.failures = FailureRun(logger, "watermark sample", "the watermark stays")
        self._lock = threading.Lock()
        self._io_lock = threading.Lock()
        self._conn: Any = None

    # -- reading ---------------------------------------------------------------

    def watermark(self, view: str) -> int | None:
        """The view's safe watermark as of the last sample (no I/O)."""
        with self._lock:
            marks = [self._marks.get((view, t)) for t in self.topics[view]]
        if any(m is None for m in marks):
            return None
        return min(m for m in marks if m is not None)

    def refresh(self, max_age_s: float | None = None) -> None:
        """Sample unless a sample younger than ``max_age_s`` exists.

        Never raises: a failed sample is logged (:class:`FailureRun`: one
        traceback per run of failures) and the watermark stays.
        """
        age = self.min_interval_s if max_age_s is None else max_age_s
        with self._io_lock:
            if time.monotonic() - self.sampled_at < age:
                return
            self.tried_at = time.monotonic()
            if not self.failures.attempt(self._sample):
                self._drop_connections()  # the watermark stays; callers time out

    def wait(self, view: str, lsn: int, timeout_s: float) -> int:
        """Block until the view's watermark reaches ``lsn``; returns it.

        Raises:
            NotYetFresh: ``timeout_s`` passed first (carries the watermark).
        """
        start = time.monotonic()
        while True:
            mark = self.watermark(view)
            if mark is not None and mark >= lsn:
                return mark
            waited = time.monotonic() - start
            if waited >= timeout_s:
                raise NotYetFresh(view, lsn, mark, waited)
            self.refresh()
            mark = self.watermark(view)
            if mark is None or mark < lsn:  # until the next sample may be taken
                last = max(self.sampled_at, self.tried_at)  # a failed one too
                next_at = last + self.min_interval_s - time.monotonic()
                left = timeout_s - (time.monotonic() - start)
                time.sleep(max(0.001, min(next_at, left)))

    def close(self) -> None:
        with self._io_lock:
            self._drop_connections()

    # -- sampling --------------------------------------------------------------

    def _sample(self) -> None:
        slot_lsn = self._slot_lsn()  # 1. before the end offsets, always
        offsets = self._applied()
        try:
            known, ends, lows, applied, commit_lsns = self._ask_kafka(offsets)
        except Exception:
            # Whatever the broker left unanswered, a new admin client asks
            # next time: after a broker restart, librdkafka's admin client
            # was never answered again on some asks (AppliedOffsets), and
            # the watermark stood still.
            offsets.drop_admin()
            raise
        with self._lock:
            self.slot_lsn, self.ends = slot_lsn, ends
            self.sampled_at = time.monotonic()
            for (view, topic), pending in self._pending.items():
                # Nothing committed on a partition: nothing applied past its
                # start.
                committed = {
                    part: applied[view].get(part, low)
                    for part, low in lows.items()
                    if part[0] == topic
                }
                self.committed.update(
                    {(view, *part): off for part, off in committed.items()}
                )
                self._advance(
                    (view, topic),
                    pending,
                    slot_lsn if topic in known else None,
                    ends,
                    committed,
                    commit_lsns[view] if self.config.api.watermark_from_stream else {},
                )

    def _ask_kafka(
        self, offsets: AppliedOffsets
    ) -> tuple[set[str], dict[Part, int], dict[Part, int], PerView, PerView]:
        """The topics known, the end and start offset of every partition, and
        the groups' applied offsets and last-commit LSNs per view."""
        parts = self._partitions(offsets.admin)
        known = {topic for topic, _ in parts}
        # 2. the end and start offsets of every partition, asked together
        wanted = [TopicPartition(t, p) for t, p in parts]
        ask = offsets.admin.list_offsets
        high = ask({tp: _LATEST for tp in wanted}, **self._timeout())
        low = ask({tp: _EARLIEST for tp in wanted}, **self._timeout())
        # 3. the groups' commits, asked while the offsets are on their way
        applied, commit_lsns = offsets.applied(parts)
        ends: dict[Part, int] = {
            (tp.topic, tp.partition): f.result().offset for tp, f in high.items()
        }
        lows: dict[Part, int] = {
            (tp.topic, tp.partition): f.result().offset for tp, f in low.items()
        }
        return known, ends, lows, applied, commit_lsns

    def _advance(
        self,
        key: tuple[str, str],
        pending: deque[Sample],
        slot_lsn: int | None,
        ends: dict[Part, int],
        committed: dict[Part, int],
        commit_lsns: dict[Part, int],
    ) -> None:
        """Move the mark of ``key`` (view, topic): per partition, the higher
        of the newest sample its committed offset reached and the last-commit
        LSN committed with it; the topic's mark is the least of these."""
        topic = key[1]
        mark = self._marks.get(key)
        if slot_lsn is not None and (mark is None or slot_lsn > mark):
            if not pending or slot_lsn > pending[-1].lsn:
                mine = {k: v for k, v in ends.items() if k[0] == topic}
                pending.append(Sample(slot_lsn, mine))
        reached = self._reached.setdefault(key, {})
        for part, offset in committed.items():
            for sample in pending:  # their ends grow: stop at the first not reached
                if offset < sample.ends.get(part, 0):
                    break
                reached[part] = max(sample.lsn, reached.get(part, sample.lsn))
        while pending and all(
            committed.get(part, -1) >= end for part, end in pending[0].ends.items()
        ):
            pending.popleft()
        new = partition_floor(committed, reached, commit_lsns)
        if new is not None and (mark is None or new > mark):
            self._marks[key] = new

    def _applied(self) -> AppliedOffsets:
        if self._offsets is None:
            self._offsets = AppliedOffsets(self.config, self.timeout_s)
        return self._offsets

    def _slot_lsn(self) -> int | None:
        import psycopg

        if self._conn is None or self._conn.closed:
            dsn = self.config.api.watermark_dsn or self.config.source.dsn
            self._conn = psycopg.connect(
                dsn.get_secret_value(),
                autocommit=True,
                connect_timeout=max(1, int(self.timeout_s)),
            )
        row = self._conn.execute(
            "SELECT confirmed_flush_lsn - '0/0'::pg_lsn FROM pg_replication_slots "
            "WHERE slot_name = %s",
            (self.config.source.slot,),
        ).fetchone()
        return None if row is None or row[0] is None else int(row[0])

    def _timeout(self) -> dict[str, float]:
        return {"request_timeout": self.timeout_s}

    def _partitions(self, admin: AdminClient) -> list[Part]:
        """Every partition of the views' topics, asked anew every sample (they
        may grow); a topic without metadata is left out of this sample."""
        topics = sorted({t for ts in self.topics.values() for t in ts})
        described = admin.describe_topics(TopicCollection(topics), **self._timeout())
        parts: list[Part] = []
        for topic, future in described.items():
            try:
                found = future.result()
            except KafkaException as exc:  # not created yet, or not visible
                logger.debug("no metadata for %s: %s", topic, exc)
                continue
            parts.extend((topic, p.id) for p in found.partitions)
        return sorted(parts)

    def _drop_connections(self) -> None:
        if self._conn is not None:
            try:
                self._conn.close()
            except Exception:  # closing a broken connection
                logger.debug("closing the watermark connection failed", exc_info=True)
            self._conn = None


def partition_floor(
    parts: Iterable[Part], reached: dict[Part, int], commit_lsns: dict[Part, int]
) -> int | None:
    """The LSN every partition of ``parts`` is applied up to: per partition
    the higher of the two facts known of it (None: some partition has none)."""
    floor: int | None = None
    for part in parts:
        known = [x for x in (reached.get(part), commit_lsns.get(part)) if x is not None]
        if not known:
            return None
        floor = max(known) if floor is None else min(floor, max(known))
    return floor
