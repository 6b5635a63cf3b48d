"""Debezium's redeliveries, recognised so that they are not applied twice.

When Kafka Connect stops without committing its source offset (kill -9, a
lost host, a task restarted after an error), Debezium starts again from the
last offset Connect committed and sends every change after it once more: the
same change events, at new, higher Kafka offsets. A table view's version is
the record's offset (docs/design.md, the version rule), so such a copy of an
older change outranks the newer changes of its row that came before it, and
every store serves the older state until the copies of those come too (or
for as long as Connect is down again, if it dies before it re-sent them).
The copy of a delete is worse: it deletes a row that was inserted again
after it, and the insert's own copy is no help once it is recognised.

A change is identified by its row key (the record key's bytes), its LSN,
its transaction id and its operation: two different changes never share all
four, and a copy shares them with its original. Per partition, the worker
remembers the identities of the last ``worker.redelivery_window`` changes it
read and the offset it read each at; a change seen before at a lower offset
is a copy and is skipped, and so is the tombstone that follows the copy of a
delete. A change read again at its own offset (a batch given up and read
again, a replay) is applied again, as always.

A worker that was just assigned a partition has read none of it yet. So
that it still recognises the copies it reads first, the offsets it commits
carry the highest stream position (``source.sequence``) read up to them.
Positions grow along the stream except at a redelivery, so a change whose
position is not above that mark is *suspect*: the worker then reads the
window's worth of records before where it started and looks for the
original there. The mark only ever triggers that look; what skips a change
is always its identity, so a source restored from a backup (whose LSNs start
lower again) is applied as it streams.

What is not recognised is applied as before (the version rule still makes
the stores converge): a copy of a change older than the window, and snapshot
rows (``op=r``, whose LSN is the snapshot's). The window must hold the
changes Connect sends per partition between two commits of its source
offset (its ``offset.flush.interval.ms``; the local stack commits every
100 ms); each entry is about 200 bytes.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Iterable, Iterator
from typing import Any, Protocol

from confluent_kafka import TopicPartition

from pipeline import kafkaclient, metrics
from pipeline.errors import BadRecord
from pipeline.events import ChangeEvent, Op
from pipeline.source.json_converter import JsonConverter
from pipeline.source.records import Converter

logger = logging.getLogger(__name__)

#: the longest one read back may take (the worker does not poll meanwhile)
READ_BACK_S = 10.0

Part = tuple[str, int]
Key = bytes | str | None
Identity = tuple[Key, int, int | None, str]
StreamPos = tuple[int, int]


class PartitionLog(Protocol):
    """What the window reads back from Kafka."""

    def mark(self, part: Part) -> str | None:
        """The metadata committed with the group's offset of ``part``."""
        ...

    def records(
        self, part: Part, start: int, end: int
    ) -> Iterator[tuple[Key, ChangeEvent]]:
        """The change events of ``part`` from ``start`` up to ``end``."""
        ...


def mark_text(pos: StreamPos | None, snapshot_lsn: int | None = None) -> str:
    """The mark committed with an offset: the highest stream position read,
    then after an ``@`` the LSN of the last table snapshot read
    (:mod:`pipeline.retaken`)."""
    stream = "" if pos is None else f"{pos[0]}/{pos[1]}"
    return stream if snapshot_lsn is None else f"{stream}@{snapshot_lsn}"


def parse_mark(text: str | None) -> StreamPos | None:
    try:
        a, b = (text or "").split(";")[0].split("@")[0].split("/")
        return (int(a), int(b))
    except ValueError:
        return None  # none committed, or written by another tool


def parse_snapshot_lsn(text: str | None) -> int | None:
    """The snapshot LSN of :func:`mark_text` (None: none written)."""
    _stream, sep, lsn = (text or "").split(";")[0].partition("@")
    try:
        return int(lsn) if sep else None
    except ValueError:
        return None


def commit_metadata(mark: str, commit_lsn: int | None) -> str:
    """What a worker commits with an offset: the redelivery mark, then after
    a ``;`` the highest last-commit LSN (``source.sequence[0]``) among the
    records below the offset, which the read-your-writes watermark reads
    (query/watermark.py)."""
    return mark if commit_lsn is None else f"{mark};{commit_lsn}"


def parse_commit_lsn(text: str | None) -> int | None:
    """The last-commit LSN of :func:`commit_metadata` (None: none written)."""
    _mark, sep, lsn = (text or "").partition(";")
    try:
        return int(lsn) if sep else None
    except ValueError:
        return None


class Redeliveries:
    """The identities of the changes recently read, per partition."""

    def __init__(self, window: int, log: PartitionLog | None = None) -> None:
        self.window = window
        self.log = log
        #: per partition: identity -> the offset it was first read at, oldest first
        self._seen: dict[Part, dict[Identity, int]] = {}
        #: per partition: the key of the last delete skipped as a copy, and the
        #: offset of the tombstone skipped after it (None: not read yet)
        self._tomb: dict[Part, tuple[Key, int | None]] = {}
        #: per partition: the highest stream position read (or committed)
        self._mark: dict[Part, StreamPos | None] = {}
        #: per partition: the LSN of the last table snapshot read (or
        #: committed): :meth:`read_whole_again`
        self._snapshot: dict[Part, int | None] = {}
        #: partitions whose committed mark was read
        self._loaded: set[Part] = set()
        #: per partition: the first offset read since it was assigned
        self._first: dict[Part, int] = {}
        self._primed: set[Part] = set()

    def is_copy(self, key: Key, event: ChangeEvent) -> bool:
        """Whether ``event`` (whose record key is ``key``) is a copy of a change
        read before; remembers it otherwise."""
        pos = event.position
        part = (pos.topic, pos.partition)
        if self.window <= 0:
            self._advance(part, event.stream_pos)  # for read_whole_again
            return False
        if event.op is Op.TOMBSTONE:
            return self._tombstone_of_copy(part, key, pos.offset)
        if event.lsn is None or event.snapshot or event.op is Op.READ:
            return False
        ident = (key, event.lsn, event.txid, event.op.value)
        seen = self._seen.setdefault(part, {})
        self._first.setdefault(part, pos.offset)
        first = seen.get(ident)
        if first is None and self._suspect(part, event.stream_pos):
            seen = self._prime(part)
            first = seen.get(ident)
        self._advance(part, event.stream_pos)
        if first is None:
            seen[ident] = pos.offset
            if len(seen) > self.window:
                del seen[next(iter(seen))]
            return False
        if first >= pos.offset:
            return False  # the original, read again
        if event.op is Op.DELETE:
            self._tomb[part] = (key, None)
        metrics.REDELIVERED.labels(pos.topic).inc()
        return True

    def read_whole_again(self, part: Part, lsn: int) -> int | None:
        """For a row of a table snapshot taken at ``lsn`` (Debezium's initial
        or blocking one) read in ``part``: the highest LSN the partition
        read before it (changes, or the rows of an earlier snapshot) when
        that is lower, so that this snapshot read its table whole again
        (:mod:`pipeline.retaken`); else None, and the snapshot is noted.
        Read from the committed mark when this worker read nothing of the
        partition yet.

        A snapshot read again is not noted: :meth:`note_snapshot` does it
        once the loss is reported, so that a batch given up finds it again.
        """
        last = self._snapshot.get(part)
        if last == lsn:  # the next row of the snapshot read before: most are
            return None
        self._load(part)
        mark, last = self._mark.get(part), self._snapshot.get(part)
        before = max(mark[1] if mark else -1, last if last is not None else -1)
        if before < 0 or lsn <= before:
            if last is None or lsn > last:
                self._snapshot[part] = lsn
            return None
        return before

    def note_snapshot(self, part: Part, lsn: int) -> None:
        """The snapshot at ``lsn`` of ``part`` was reported read again."""
        self._snapshot[part] = max(lsn, self._snapshot.get(part) or lsn)

    def metadata(self, part: Part) -> str:
        """What to commit with the offset of ``part``: the highest stream
        position read up to it, and the LSN of the last snapshot read."""
        return mark_text(self._mark.get(part), self._snapshot.get(part))

    def _load(self, part: Part) -> None:
        """Read the mark committed with the group's offset of ``part``, once."""
        if part in self._loaded or self.log is None:
            return
        self._loaded.add(part)
        text = self.log.mark(part)
        if part not in self._mark:
            self._mark[part] = parse_mark(text)
        if part not in self._snapshot:
            self._snapshot[part] = parse_snapshot_lsn(text)

    def _suspect(self, part: Part, at: StreamPos | None) -> bool:
        if at is None or part in self._primed or self.log is None:
            return False
        self._load(part)
        mark = self._mark.get(part)
        return mark is not None and at <= mark

    def _advance(self, part: Part, at: StreamPos | None) -> None:
        if at is None:
            return
        mark = self._mark.get(part)
        if mark is None or at > mark:
            self._mark[part] = at

    def _prime(self, part: Part) -> dict[Identity, int]:
        """Remember the window's worth of changes before where this worker
        started reading ``part`` (read by someone of its group before)."""
        self._primed.add(part)
        seen = self._seen[part]
        room = self.window - len(seen)
        end = self._first[part]
        if room <= 0 or end <= 0 or self.log is None:
            return seen
        older: dict[Identity, int] = {}
        for key, ev in self.log.records(part, max(0, end - room), end):
            if ev.lsn is None or ev.snapshot or ev.op in (Op.READ, Op.TOMBSTONE):
                continue
            older.setdefault((key, ev.lsn, ev.txid, ev.op.value), ev.position.offset)
        logger.info(
            "redelivery suspected: window primed topic=%s partition=%d "
            "records=%d before_offset=%d",
            part[0],
            part[1],
            len(older),
            end,
        )
        older.update((i, o) for i, o in seen.items() if i not in older)
        self._seen[part] = older
        return older

    def _tombstone_of_copy(self, part: Part, key: Key, offset: int) -> bool:
        pending = self._tomb.get(part)
        if pending is None or pending[0] != key:
            return False
        if pending[1] is None:
            self._tomb[part] = (key, offset)
            return True
        return pending[1] == offset  # read again after a batch was given up

    def record_before(self, part: Part, offset: int) -> tuple[Key, ChangeEvent] | None:
        """The change event at ``offset - 1`` of ``part`` (None: none there,
        or nothing to read it with)."""
        if self.log is None or offset <= 0:
            return None
        return next(iter(self.log.records(part, offset - 1, offset)), None)

    def forget(self, parts: Iterable[Part]) -> None:
        """Drop what was read of partitions this worker no longer reads."""
        for part in parts:
            self._seen.pop(part, None)
            self._tomb.pop(part, None)
            self._mark.pop(part, None)
            self._snapshot.pop(part, None)
            self._loaded.discard(part)
            self._first.pop(part, None)
            self._primed.discard(part)


class KafkaPartitionLog:
    """:class:`PartitionLog` of a worker: its consumer's commits, and a
    consumer of its own (no group commits) for reading back, decoding with
    ``converter`` (``kafka.format``; JSON when not given)."""

    def __init__(
        self, consumer: Any, conf: dict[str, Any], converter: Converter | None = None
    ) -> None:
        self.consumer = consumer
        self.converter = converter or JsonConverter()
        self.conf = {
            **conf,
            "group.id": f"{conf['group.id']}.redelivery",
            "enable.auto.commit": False,
        }
        self._reader: Any = None

    def mark(self, part: Part) -> str | None:
        (tp,) = self.consumer.committed([TopicPartition(*part)], timeout=10)
        return str(tp.metadata) if tp.metadata else None

    def records(
        self, part: Part, start: int, end: int
    ) -> Iterator[tuple[Key, ChangeEvent]]:
        # One reader for the worker's life (a new consumer per call costs a
        # connection and a metadata round trip), each call bounded in time:
        # the worker does not poll meanwhile.
        if self._reader is None:
            self._reader = kafkaclient.new_consumer(self.conf)
        reader = self._reader
        deadline = time.monotonic() + READ_BACK_S
        try:
            reader.assign([TopicPartition(part[0], part[1], start)])
            at = start
            while at < end and time.monotonic() < deadline:
                left = deadline - time.monotonic()
                msgs = reader.consume(500, max(0.1, min(5.0, left)))
                if not msgs:
                    return  # the records before end are gone (retention)
                for msg in msgs:
                    offset = msg.offset()
                    if msg.error() is not None or offset is None:
                        continue
                    if offset >= end:
                        return
                    at = offset + 1
                    try:
                        ev = self.converter.decode(msg)
                    except BadRecord:
                        continue
                    if isinstance(ev, ChangeEvent):
                        yield msg.key(), ev
        finally:
            reader.unassign()
