"""From a batch of Kafka records to the document ops each sink must write.

This is the part of the worker that needs no broker and no store: decode,
route to views, build ops, coalesce. It never raises for one bad record; the
record comes back as a dead letter with its reason.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field, replace

from pipeline.aggregate.pending import Pending
from pipeline.errors import BadRecord
from pipeline.events import (
    UNCHANGED,
    ChangeEvent,
    Document,
    DocumentOp,
    Op,
    Position,
    Upsert,
)
from pipeline.redelivery import Redeliveries
from pipeline.retaken import Retaken
from pipeline.source.json_converter import JsonConverter
from pipeline.source.records import Converter, Heartbeat, RawMessage
from pipeline.views import View

#: Given the events that feed a table view, the row image of each that lacks
#: values (unchanged TOAST values, generated columns), read from the source;
#: None for a row gone (:meth:`pipeline.toast.SourceRows.fill`).
Fill = Callable[[Sequence[ChangeEvent]], dict[Position, "Document | None"]]

#: One record decoded ahead of its batch (:meth:`Processor.decode_ahead`):
#: its event, the reason it cannot be used, or None (decode it in the batch).
Decoded = ChangeEvent | Heartbeat | BadRecord | None

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class DeadLetter:
    """A record the pipeline could not apply, and why."""

    message: RawMessage
    reason: str  # decode | contract | transform | toast | sink:<name>
    error_class: str
    error: str
    view: str | None = None


@dataclass
class Batch:
    """What one batch of records turned into."""

    ops: dict[str, list[DocumentOp]] = field(default_factory=dict)  # by view
    dead: list[DeadLetter] = field(default_factory=list)
    heartbeats: list[Heartbeat] = field(default_factory=list)
    events: int = 0
    copies: int = 0  # Debezium's redeliveries, skipped (pipeline.redelivery)
    gone: int = 0  # events of rows gone from the source (pipeline.toast), skipped
    # Last event per (view, topic, partition), for checkpoints.
    last: dict[tuple[str, str, int], ChangeEvent] = field(default_factory=dict)
    messages: dict[Position, RawMessage] = field(default_factory=dict)
    # Roots each view that re-reads must read back (the batch handler does).
    pending: dict[str, Pending] = field(default_factory=dict)
    #: per partition, the highest last-commit LSN (``source.sequence[0]``) of
    #: the batch's change events: committed with the offsets, it is what the
    #: read-your-writes watermark reads (query/watermark.py)
    commit_lsns: dict[tuple[str, int], int] = field(default_factory=dict)
    #: per partition, the first row of a table read whole again after the
    #: partition had read further (:mod:`pipeline.retaken`)
    retaken: dict[tuple[str, int], Retaken] = field(default_factory=dict)


def position_of(msg: RawMessage) -> Position:
    """Where a consumed record sits (consumed records always have all three)."""
    topic, partition, offset = msg.topic(), msg.partition(), msg.offset()
    if topic is None or partition is None or offset is None:
        raise ValueError("a consumed record without topic, partition or offset")
    return Position(topic, partition, offset)


def coalesce(ops: Iterable[DocumentOp]) -> list[DocumentOp]:
    """Keep the newest op per document id.

    When the newest is an upsert with unchanged (TOAST) fields and an older
    upsert of the same batch has their values, they are carried forward.
    """
    newest: dict[tuple[str, str], DocumentOp] = {}
    for op in ops:
        key = (op.view, op.doc_id)
        have = newest.get(key)
        if have is None:
            newest[key] = op
            continue
        older, newer = (have, op) if have.version <= op.version else (op, have)
        if (
            isinstance(newer, Upsert)
            and isinstance(older, Upsert)
            and newer.has_unchanged
        ):
            doc = {
                k: (older.doc.get(k, UNCHANGED) if v is UNCHANGED else v)
                for k, v in newer.doc.items()
            }
            newer = Upsert(
                newer.view,
                newer.doc_id,
                newer.version,
                doc,
                newer.lsn,
                newer.commit_ts_ms,
                newer.position,
            )
        newest[key] = newer
    return list(newest.values())


class Processor:
    """Decodes records and routes them to the views fed by their topic."""

    def __init__(
        self,
        views: dict[str, View],
        topics: dict[str, list[str]],
        heartbeat_topics: set[str] | frozenset[str] = frozenset(),
        redeliveries: Redeliveries | None = None,
        converter: Converter | None = None,
    ) -> None:
        self.views = views
        #: decodes the records (``kafka.format``; JSON when not given)
        self.converter = converter or JsonConverter()
        self.topics = topics  # topic -> view names
        #: recognises Debezium's copies of changes read before (a worker's
        #: consumer; a command that applies records it picked has none)
        self.redeliveries = redeliveries
        #: per partition, the last delete read (its record key and offset):
        #: a tombstone without it lost its delete to compaction
        self._deletes: dict[tuple[str, int], tuple[object, int]] = {}
        #: per partition, the offset of the last record read
        self._last: dict[tuple[str, int], int] = {}
        # Rows of the heartbeat table (written by the connector's heartbeat
        # action query) carry a real LSN and commit time: source marks.
        self.heartbeat_topics = heartbeat_topics
        #: per topic, whether a table view reads it (its events may lack
        #: values the source row holds)
        self._feeds_table_view: dict[str, bool] = {}

    def decode_ahead(self, messages: Sequence[RawMessage]) -> list[Decoded]:
        """Decode ``messages`` before their batch is processed (the worker
        does it while the sinks write the batch before): decoding only reads
        the records, so its result is the same whenever it runs.

        The list is in the order of ``messages``; it ends early at the first
        record that would ask a service first (a schema not fetched from the
        registry yet, :meth:`Converter.fetches
        <pipeline.source.records.Converter.fetches>`), or whose decoding
        raised anything but :class:`BadRecord`: :meth:`process` decodes that
        one and the rest itself, and meets a registry that does not answer
        where it always does, once. So the batch in hand never waits for a
        registry on the next batch's behalf before its commit.
        """
        out: list[Decoded] = []
        fetches = self.converter.fetches
        for msg in messages:
            if msg.error() is None and fetches(msg):
                break
            try:
                out.append(self._decode(msg))
            except Exception:  # noqa: BLE001 (process() meets it again)
                break
        return out

    def _decode(self, msg: RawMessage) -> ChangeEvent | Heartbeat | BadRecord:
        """One record decoded, or why it cannot be (a dead letter's reason)."""
        try:
            return self.converter.decode(msg)
        except BadRecord as exc:
            return exc

    def process(
        self,
        messages: Sequence[RawMessage],
        fill: Fill | None = None,
        ahead: Sequence[Decoded] = (),
    ) -> Batch:
        """Decode ``messages`` and turn them into the views' ops.

        Args:
            fill: reads the values a row image lacks (unchanged TOAST
                columns, generated columns) from the source, for events that
                feed a table view (:mod:`pipeline.toast`); without it the
                sinks fill unchanged TOAST values from the stored documents.
            ahead: what :meth:`decode_ahead` made of the first of
                ``messages`` (the rest are decoded here).
        """
        batch = Batch()
        raw_ops: dict[str, list[DocumentOp]] = {}
        events: list[tuple[RawMessage, ChangeEvent]] = []
        #: per record, the offset this processor read before it in its
        #: partition (None: none, since it started)
        previous: dict[Position, int | None] = {}
        early = iter(ahead)
        for msg in messages:
            pos = position_of(msg)
            batch.messages[pos] = msg
            previous[pos] = self._last.get((pos.topic, pos.partition))
            self._last[(pos.topic, pos.partition)] = pos.offset
            got = next(early, None)
            if got is None:
                got = self._decode(msg)
            if isinstance(got, BadRecord):
                batch.dead.append(DeadLetter(msg, got.reason, "BadRecord", str(got)))
                continue
            decoded = got
            if isinstance(decoded, Heartbeat):
                batch.heartbeats.append(decoded)
                continue
            if decoded.stream_pos is not None:
                part = (pos.topic, pos.partition)
                seen = batch.commit_lsns.get(part)
                if seen is None or decoded.stream_pos[0] > seen:
                    batch.commit_lsns[part] = decoded.stream_pos[0]
            if pos.topic in self.heartbeat_topics:
                if decoded.commit_ts_ms is not None:
                    batch.heartbeats.append(
                        Heartbeat(decoded.commit_ts_ms, pos, decoded.lsn)
                    )
                continue
            if self.redeliveries is not None:
                if decoded.whole_read:
                    self._retaken(batch, decoded)
                elif self.redeliveries.is_copy(msg.key(), decoded):
                    batch.copies += 1
                    continue
            events.append((msg, decoded))
        filled = self._fill(fill, [ev for _m, ev in events])
        for msg, decoded in events:
            pos = decoded.position
            batch.events += 1
            for view_name in self.topics.get(pos.topic, ()):
                view = self.views.get(view_name)
                if view is None:
                    continue
                if not view.rereads and pos in filled:
                    after = filled[pos]
                    if after is None:
                        # Row gone: its delete, a later record, removes the
                        # document (a rebuild's catch-up goes on to it:
                        # pipeline/snapshot/rebuild.py).
                        batch.gone += 1
                        continue
                    decoded = replace(decoded, after=after)
                try:
                    # Ops now, or (a view that re-reads) the roots to read
                    # back once the batch is decoded: the caller reads them.
                    ops = view.route(decoded, batch.pending)
                except BadRecord as exc:
                    batch.dead.append(
                        DeadLetter(msg, exc.reason, "BadRecord", str(exc), view_name)
                    )
                    continue
                raw_ops.setdefault(view_name, []).extend(ops)
                if decoded.op is Op.TOMBSTONE and view.blind_to_tombstones(
                    decoded.table
                ):
                    pending = batch.pending.get(view_name)
                    if (
                        pending is None or pending.every_root is None
                    ) and not self._delete_read(msg.key(), pos, previous[pos]):
                        view.read_every_root(decoded, batch.pending)
                if decoded.lsn is not None:
                    batch.last[(view_name, pos.topic, pos.partition)] = decoded
            if decoded.op is Op.DELETE:
                self._deletes[(pos.topic, pos.partition)] = (msg.key(), pos.offset)
        batch.ops = {v: coalesce(ops) for v, ops in raw_ops.items()}
        return batch

    def _retaken(self, batch: Batch, event: ChangeEvent) -> None:
        """Note ``event``, a snapshot's row, in ``batch.retaken`` when its
        partition read changes or another snapshot at lower LSNs before it."""
        pos = event.position
        part = (pos.topic, pos.partition)
        if event.lsn is None or part in batch.retaken:
            return
        before = self.redeliveries.read_whole_again(part, event.lsn)  # type: ignore[union-attr]
        if before is not None:
            batch.retaken[part] = Retaken(
                pos.topic, pos.partition, pos.offset, event.lsn, before
            )

    def _delete_read(self, key: object, pos: Position, previous: int | None) -> bool:
        """Whether the delete this tombstone follows (the record right before
        it) was read: by this processor, else by whoever read that offset."""
        if previous == pos.offset - 1:  # read here, in order
            return self._deletes.get((pos.topic, pos.partition)) == (key, previous)
        if self.redeliveries is None:
            return False
        before = self.redeliveries.record_before((pos.topic, pos.partition), pos.offset)
        return before is not None and before[0] == key and before[1].op is Op.DELETE

    def _fill(
        self, fill: Fill | None, events: list[ChangeEvent]
    ) -> dict[Position, Document | None]:
        if fill is None:
            return {}
        feeds = self._feeds_table_view
        wanted = []
        for ev in events:
            topic = ev.position.topic
            table_view = feeds.get(topic)
            if table_view is None:
                table_view = feeds[topic] = any(
                    not view.rereads
                    for v in self.topics.get(topic, ())
                    if (view := self.views.get(v)) is not None
                )
            if table_view and ev.after:
                wanted.append(ev)
        return fill(wanted) if wanted else {}


def ops_for_sink(batch: Batch, sink_views: Iterable[str]) -> list[DocumentOp]:
    out: list[DocumentOp] = []
    for view in sink_views:
        out.extend(batch.ops.get(view, ()))
    return out
