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

What is not recognised is applied as before (the version rule still makes the
stores converge): a copy of a change older than the window, snapshot rows
(``op=r``, whose LSN is the snapshot's), and the copies a worker reads first
after it was assigned the partition (the window starts empty then). The
window must hold the changes Connect sends per partition between two commits
of its source offset (its ``offset.flush.interval.ms``; the local stack
commits every second); each entry is about 200 bytes.
"""

from __future__ import annotations

from collections.abc import Iterable

from pipeline import metrics
from pipeline.events import ChangeEvent, Op

Part = tuple[str, int]
Key = bytes | str | None
Identity = tuple[Key, int, int | None, str]


class Redeliveries:
    """The identities of the changes recently read, per partition."""

    def __init__(self, window: int) -> None:
        self.window = window
        #: per partition: identity -> the offset it was first read at, oldest first
        self._seen: dict[Part, dict[Identity, int]] = {}
        #: per partition: the key of the last delete skipped as a copy, and the
        #: offset of the tombstone skipped after it (None: not read yet)
        self._tomb: dict[Part, tuple[Key, int | None]] = {}

    def is_copy(self, key: Key, event: ChangeEvent) -> bool:
        """Whether ``event`` (whose record key is ``key``) is a copy of a change
        read before; remembers it otherwise."""
        if self.window <= 0:
            return False
        pos = event.position
        part = (pos.topic, pos.partition)
        if event.op is Op.TOMBSTONE:
            return self._tombstone_of_copy(part, key, pos.offset)
        if event.lsn is None or event.snapshot or event.op is Op.READ:
            return False
        ident = (key, event.lsn, event.txid, event.op.value)
        seen = self._seen.setdefault(part, {})
        first = seen.get(ident)
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

    def _tombstone_of_copy(self, part: Part, key: Key, offset: int) -> bool:
        pending = self._tomb.get(part)
        if pending is None or pending[0] != key:
            return False
        if pending[1] is None:
            self._tomb[part] = (key, offset)
            return True
        return pending[1] == offset  # read again after a batch was given up

    def forget(self, parts: Iterable[Part]) -> None:
        """Drop what was read of partitions this worker no longer reads."""
        for part in parts:
            self._seen.pop(part, None)
            self._tomb.pop(part, None)
