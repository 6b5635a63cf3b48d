"""One batch of records, from bytes to acknowledged writes: the one batch path.

Every command that applies Kafka records to the stores goes through
:class:`BatchHandler`: the worker loop, a rebuild's catch-up (which runs the
worker loop on pinned sinks) and ``readside dlq replay``. The steps, in this
order::

    decode -> route to views -> re-read aggregate roots (one snapshot per
    chunk) -> coalesce per document -> write every sink (version-guarded,
    retried while the source or a store is down) -> settle rejections into
    dead letters

What happens after (deliver the dead letters, commit offsets, write
checkpoints) belongs to the caller, which owns the consumer; the order is
always "every sink acknowledged -> every dead letter acknowledged -> commit".
A fix or a guarantee of any step lands here once, for every caller.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from functools import partial
from typing import TypeVar

import psycopg

from connectors.base import Sink
from pipeline import metrics
from pipeline.aggregate import prepare_views
from pipeline.aggregate.pending import Pending
from pipeline.aggregate.reader import Reader
from pipeline.config import WorkerConfig
from pipeline.decode import RawMessage
from pipeline.dlq import DeadLetterQueue
from pipeline.errors import FatalError, TransientError
from pipeline.events import ChangeEvent, Document, DocumentOp, Position
from pipeline.processor import (
    Batch,
    DeadLetter,
    Decoded,
    Processor,
    coalesce,
    ops_for_sink,
)
from pipeline.sinkwriter import (
    Abandoned,
    Backoff,
    Rejection,
    Runner,
    SinkWriter,
    direct,
)
from pipeline.toast import SourceRows
from pipeline.views import View

T = TypeVar("T")

#: what the source says of a statement naming a column or table a migration
#: took, or comparing a column whose type it changed
MIGRATED = (
    psycopg.errors.UndefinedColumn,
    psycopg.errors.UndefinedTable,
    psycopg.errors.DatatypeMismatch,
)

logger = logging.getLogger(__name__)


@dataclass
class Pacer:
    """How a caller waits while the source or a store is down.

    The worker waits with its partitions paused while polling (so the group
    keeps it) and gives a batch up when its partitions were revoked; a
    command without a consumer group just sleeps and never gives up.
    """

    wait: Callable[[float], None] = time.sleep
    should_abandon: Callable[[], bool] = lambda: False
    on_backoff: Callable[[bool], None] = lambda _on: None
    #: runs each sink write and source read; the worker's runs them on a
    #: helper thread and keeps polling meanwhile, so that however slow a
    #: store is, the worker keeps its place in the group
    run: Runner = direct


@dataclass
class Applied:
    """What one batch left to its caller: dead letters to deliver, then commit."""

    batch: Batch
    dead: list[DeadLetter] = field(default_factory=list)


class BatchHandler:
    """Applies batches of records to every sink of the views they feed."""

    def __init__(
        self,
        views: Mapping[str, View],
        sinks: Mapping[str, Sink],
        processor: Processor,
        reader: Reader,
        settings: WorkerConfig,
        pacer: Pacer | None = None,
    ) -> None:
        self.views = views
        self.sinks = sinks
        self.processor = processor
        self.reader = reader
        self.source_rows = SourceRows(reader)
        self.settings = settings
        self.pacer = pacer or Pacer()
        self.writer = SinkWriter(
            sinks,
            self._backoff(),
            wait=self.pacer.wait,
            should_abandon=self.pacer.should_abandon,
            on_backoff=self.pacer.on_backoff,
            run=self.pacer.run,
        )

    def _backoff(self) -> Backoff:
        return Backoff.of(self.settings)

    def apply(
        self, msgs: Sequence[RawMessage], ahead: Sequence[Decoded] = ()
    ) -> Applied:
        """Apply ``msgs`` to every sink until each acknowledged; ``ahead`` is
        what :meth:`Processor.decode_ahead` made of them before.

        Returns the batch (for checkpoints) and its dead letters, which the
        caller must deliver before it commits the batch's offsets.

        Raises:
            Abandoned: the pacer asked to give the batch up while the source
                or a store was down; nothing of it may be committed.
        """
        batch = self._process(msgs, ahead)
        self._reread(batch)
        for topic in {m.topic() for m in msgs}:
            metrics.EVENTS.labels(topic).inc(sum(1 for m in msgs if m.topic() == topic))
        per_sink = {
            name: ops_for_sink(
                batch, [v for v in self.views if name in self.views[v].cfg.sinks]
            )
            for name in self.sinks
        }
        rejections = self.writer.write(per_sink)
        return Applied(batch, self._settle(batch, rejections))

    def _process(self, msgs: Sequence[RawMessage], ahead: Sequence[Decoded]) -> Batch:
        """Decode and route ``msgs``, waiting out an outage of what decoding
        needs (the schema registry of ``kafka.format: avro``): a record is
        never dead-lettered because a service was down.

        Raises:
            Abandoned: the pacer asked to give the batch up meanwhile.
        """
        backoff = self._backoff()
        while True:
            try:
                return self.processor.process(msgs, self._fill, ahead)
            except TransientError as exc:
                delay = backoff.next_delay()
                logger.warning("decoding failed retry_in_s=%.2f error=%s", delay, exc)
                if self._pause(delay):
                    raise Abandoned("batch abandoned while decoding failed") from exc

    def deliver(self, dlq: DeadLetterQueue, dead: Sequence[DeadLetter]) -> None:
        """Send ``dead`` to the dead-letter topic and wait until the broker
        acknowledged every one; only then may the caller commit the offsets
        of their records. A refused dead letter is produced again after each
        backoff, however long that takes.

        Raises:
            Abandoned: the pacer asked to give the batch up before every dead
                letter was delivered; nothing of it may be committed.
        """
        if not dead:
            return
        for d in dead:
            dlq.send(d)
            metrics.DEAD_LETTERS.labels(d.reason).inc()
        backoff = self._backoff()
        while True:
            try:
                dlq.flush()
                return
            except TransientError as exc:
                delay = backoff.next_delay()
                logger.warning(
                    "dead-letter flush failed retry_in_s=%.2f error=%s", delay, exc
                )
                if self._pause(delay):
                    dlq.discard()
                    raise Abandoned("dead letters undelivered") from exc

    def _pause(self, delay: float) -> bool:
        """Wait ``delay`` seconds as a backoff (the worker reports it); whether
        the pacer then asks to give the batch up."""
        self.pacer.on_backoff(True)
        try:
            self.pacer.wait(delay)
        finally:
            self.pacer.on_backoff(False)
        return self.pacer.should_abandon()

    # ------------------------------------------------------------ source reads
    def through_outages(self, what: str, work: Callable[[], T]) -> T:
        """``work()`` (run by the pacer), waiting out the outages of what it
        reaches (it raises :class:`TransientError`) with backoff.

        Raises:
            Abandoned: the pacer asked to give the batch up meanwhile.
        """
        backoff = self._backoff()
        while True:
            try:
                return self.pacer.run(work)
            except TransientError as exc:
                delay = backoff.next_delay()
                logger.warning("%s failed retry_in_s=%.2f error=%s", what, delay, exc)
                if self._pause(delay):
                    raise Abandoned(f"batch abandoned while {what} failed") from exc

    def _from_source(self, what: str, read: Callable[[], T]) -> T:
        """``read()``, a source read, waiting out source outages."""
        return self.through_outages(f"source read for {what}", read)

    def _fill(self, events: Sequence[ChangeEvent]) -> dict[Position, Document | None]:
        """The values table-view events lack (unchanged TOAST values,
        generated columns), from the source rows; nothing asked of the
        source (nor of the pacer) when every image is whole."""
        if self.source_rows.whole(events):
            return {}
        return self._from_source(
            "values the row images lack", partial(self.source_rows.fill, events)
        )

    def _reread(self, batch: Batch) -> None:
        """Read back the roots of aggregate views, waiting out source outages."""
        for name, pending in batch.pending.items():
            view = self.views[name]
            read = self._from_source(
                f"view {name}", partial(self._read_roots, view, pending)
            )
            batch.ops[name] = coalesce(read)
            metrics.REREADS.labels(name).inc()
            self._dead_roots(batch, name, pending)

    def _read_roots(self, view: View, pending: Pending) -> list[DocumentOp]:
        """Every root ``pending`` names, read a chunk of
        ``worker.reread_chunk_roots`` roots per snapshot.

        A statement the source refuses because a migration took a column
        or a table it names, or gave a column another type, compiles the
        view again from the catalog and reads again, once: the worker goes
        on with the source as it is now (a column the config names that is
        gone is a :class:`ConfigError`). So does a migration that changed
        the columns of its tables in a way no statement fails on (a column
        added): looked at before each read.
        """
        if view.columns_moved(self.reader):
            logger.warning(
                "view %s: a migration changed the columns of its tables; "
                "compiling it again from the catalog",
                view.name,
            )
            prepare_views({view.name: view}, self.reader.dsn)
        try:
            return self._chunks(view, pending)
        except MIGRATED as exc:
            logger.warning(
                "view %s: the source refused its statement (%s): a migration "
                "changed its tables; compiling it again from the catalog",
                view.name,
                str(exc).splitlines()[0],
            )
        prepare_views({view.name: view}, self.reader.dsn)
        try:
            return self._chunks(view, pending)
        except MIGRATED as exc:
            raise FatalError(
                f"view {view.name}: the source refuses its statement, compiled "
                f"again from the catalog: {str(exc).splitlines()[0]}"
            ) from exc

    def _chunks(self, view: View, pending: Pending) -> list[DocumentOp]:
        chunks = view.reread_chunks(
            self.reader, pending, self.settings.reread_chunk_roots
        )
        return [op for ops in chunks for op in ops]

    @staticmethod
    def _dead_roots(batch: Batch, view: str, pending: Pending) -> None:
        """Dead-letter a change that led to a root a transform refused."""
        for ident, exc in pending.failures:
            logger.error("transform refused view=%s id=%s error=%s", view, ident, exc)
            pos = pending.blamed(ident)
            msg = batch.messages.get(pos) if pos else None
            if msg is not None:
                batch.dead.append(
                    DeadLetter(
                        msg, exc.reason, "BadRecord", f"root {ident}: {exc}", view
                    )
                )
        pending.failures.clear()

    # ------------------------------------------------------------ settle
    @staticmethod
    def _settle(batch: Batch, rejections: Sequence[Rejection]) -> list[DeadLetter]:
        """The batch's dead letters: bad records, then store rejections (one
        dead letter per record, whatever number of its documents were refused)."""
        dead = list(batch.dead)
        seen = {
            (d.message.topic(), d.message.partition(), d.message.offset()) for d in dead
        }
        for rej in rejections:
            pos = rej.op.position
            if pos is None or (pos.topic, pos.partition, pos.offset) in seen:
                continue
            seen.add((pos.topic, pos.partition, pos.offset))
            dead.append(
                DeadLetter(
                    batch.messages[pos],
                    f"sink:{rej.sink}",
                    "Rejected",
                    rej.reason,
                    rej.op.view,
                )
            )
        return dead


def rejected_only(dead: Sequence[DeadLetter]) -> list[DeadLetter]:
    """Of a batch's dead letters, those of documents a store rejected; the
    records the views could not use are logged, not sent: a rebuild's
    catch-up leaves them to the live workers, which send them."""
    for d in dead:
        if d.error_class == "Rejected":
            continue
        logger.warning(
            "not sent to the dead-letter topic (the live workers do) "
            "topic=%s partition=%d offset=%d reason=%s",
            d.message.topic(),
            d.message.partition(),
            d.message.offset(),
            d.reason,
        )
    return [d for d in dead if d.error_class == "Rejected"]
