"""``readside snapshot VIEW``: (re)load a view on demand, while workers stream.

A view that can be read from the source (:meth:`pipeline.views.View.
from_source`: an aggregate view) loads straight from PostgreSQL in
keyset-paginated chunks of root keys. Each chunk is read in its own
REPEATABLE READ snapshot and carries that snapshot's version, so a chunk
never overwrites a document the stream wrote from a newer snapshot, and a
transaction still open during a chunk is re-read by the worker when its
commit arrives. After each chunk is in every sink, its last key is recorded
(:mod:`pipeline.snapshot.state`); a run that was killed resumes after that
key.

Table views never read PostgreSQL here: their versions are the events'
offsets, so they reload from the one ordered stream (docs/design.md). Without
``--where`` the compacted table topic is replayed into the chosen sinks,
at the same versions the stream wrote, its partitions side by side
(:mod:`pipeline.snapshot.replay`); with ``--where`` Debezium is sent an
incremental-snapshot signal with that additional condition, and the rows
arrive through the topic like any change. ``--from-source`` (either kind)
first writes tombstones for rows gone from the source whose deletes the
topics lack (:mod:`pipeline.snapshot.gone`), then loads from the source: a
table view by a signal for every row, followed until the workers applied
it, when the view is marked loaded (:mod:`pipeline.snapshot.fill`).

A document a store rejects (e.g. a mapping conflict) goes to the dead-letter
topic before the chunk that holds it is recorded: a replayed record under
its own origin, a chunk's document under the origin ``snapshot:<view>``
with the chunk's number as offset, the document id as key and the chunk's
start key in the value and message. The run goes on, and ends with
:class:`~pipeline.snapshot.rejects.RejectedDocuments` (a non-zero exit)
naming the count.
"""

from __future__ import annotations

import json
import logging
import os
import uuid
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import closing, contextmanager
from dataclasses import dataclass
from functools import partial
from typing import Any

import psycopg

from connectors.base import Sink
from pipeline import definitions, kafkaclient, layout, loaded
from pipeline.aggregate import prepare_views
from pipeline.aggregate.fromsource import Chunk
from pipeline.aggregate.reader import Reader
from pipeline.config import Config
from pipeline.errors import ConfigError
from pipeline.sinkwriter import Backoff, open_sinks, until_reachable
from pipeline.snapshot import fill, gone, replay
from pipeline.snapshot.prefetch import InOrder, ReadAhead
from pipeline.snapshot.rejects import Origin, Rejects, WriteSlot, chunk_origin
from pipeline.snapshot.state import SnapshotLog, SnapshotState, run_id
from pipeline.views import SourceRead, View
from pipeline.worker import build_sinks

logger = logging.getLogger(__name__)

#: Fault injection for crash tests: exit abruptly (as kill -9 would) once
#: this many chunks of a run are written and recorded.
_CRASH_AFTER_CHUNKS = int(os.environ.get("READSIDE_FAULT_CRASH_AFTER_CHUNKS", "0"))

Progress = Callable[[SnapshotState], None]


@dataclass
class Options:
    view: str
    where: str | None = None
    sinks: Sequence[str] | None = None  # default: every sink of the view
    chunk_size: int = 1000
    restart: bool = False  # ignore an unfinished run's position
    #: chunks of an aggregate view written at once; processes of a replay
    writers: int = 2
    #: a table view: read every row of the table again through the stream
    #: (Debezium's incremental snapshot), not from its topic
    from_source: bool = False


class Loader:
    """Runs one snapshot; ``stop()`` (e.g. from a signal) ends it after a chunk."""

    def __init__(self, cfg: Config, opts: Options, progress: Progress) -> None:
        self.cfg = cfg
        self.opts = opts
        self.progress = progress
        self.stopping = False
        views = layout.recorded_views(cfg, [opts.view])  # the workers' epoch
        self.view = views[opts.view]
        known = self.view.cfg.sinks
        chosen = list(opts.sinks or known)
        for name in chosen:
            if name not in known:
                raise ConfigError(
                    f"--sink {name}: not a sink of view {opts.view} "
                    f"(its sinks: {', '.join(known)})"
                )
        self.sink_names = sorted(chosen)
        self.log = SnapshotLog(cfg)
        self.rejects = Rejects(cfg, self.backoff, lambda: self.stopping)
        #: the source's columns the view was compiled against (a chunked load)
        self.columns: dict[str, definitions.Definition] | None = None

    def stop(self, *_args: object) -> None:
        self.stopping = True

    # ------------------------------------------------------------ entry
    def run(self) -> SnapshotState:
        """Run to the end; an outage of a store, Kafka or the source on the
        way (a :class:`TransientError`) is waited out, and the run goes on
        from what it last recorded, as a killed run would.

        Raises:
            Stopped: a stop was asked while waiting for the outage to end.
        """
        return until_reachable(
            self._run,
            f"snapshot of view {self.opts.view}",
            self.backoff(),
            lambda: self.stopping,
        )

    def _run(self) -> SnapshotState:
        source = self.view.from_source()
        if self.opts.from_source and not self.opts.where:
            # rows whose deletes never reached the stream: out of the topics
            # first, so that the load below puts back any row inserted again
            gone.tombstone_gone(self.cfg, self.view.cfg.tables(), lambda: self.stopping)
        if source is None and (self.opts.where or self.opts.from_source):
            return self._signal(self.view)
        sinks = build_sinks(self.cfg, self.sink_names)
        try:
            open_sinks(sinks, self.backoff(), lambda: self.stopping)
            if source is not None:
                st = self._state("chunks")
                more = partial(build_sinks, self.cfg, self.sink_names)
                self._chunks(source, sinks, st, more)
                st = self._finish(st)
            else:
                st = self._replay(self.view, sinks)
            if st.state == "done" and not self.opts.where:
                # every row is in: the stores hold the view whole again
                loaded.mark_loaded(sinks, [self.opts.view])
                if source is not None:  # every document at a newer version
                    definitions.record(
                        self.cfg, self.opts.view, self.sink_names, self.columns
                    )
            return self.rejects.check(st)
        finally:
            for sink in sinks.values():
                sink.close()
            self.log.close()

    def _state(self, method: str) -> SnapshotState:
        opts = self.opts
        old = self.log_record(run_id(opts.view, self.sink_names, opts.where))
        if old is not None and old.state in ("running", "failed") and not opts.restart:
            logger.info(
                "resuming snapshot view=%s rows_done=%d after=%s",
                opts.view,
                old.rows,
                old.after,
            )
            old.state = "running"
            old.error = None
            return old
        return SnapshotState(opts.view, self.sink_names, opts.where, method)

    def backoff(self) -> Backoff:
        return Backoff.of(self.cfg.worker)

    def log_record(self, key: str) -> SnapshotState | None:
        """The snapshot log's record ``key``, waiting while Kafka is not
        readable (a partial read would make a killed run start over)."""
        runs = until_reachable(
            self.log.read,
            "reading the snapshot log",
            self.backoff(),
            lambda: self.stopping,
        )
        return runs.get(key)

    @staticmethod
    def _chunk_origin(st: SnapshotState) -> Origin:
        """What a dead letter of the chunk after ``st.after`` names as origin."""
        return chunk_origin(st.chunks + 1, st.after)

    # ------------------------------------------------------------ from the source
    def _chunks(
        self,
        source: SourceRead,
        sinks: Mapping[str, Sink],
        st: SnapshotState,
        more_sinks: Callable[[], dict[str, Sink]] | None = None,
    ) -> None:
        """Load the view chunk by chunk after ``st.after``, saving ``st``.

        The next chunk is read (:class:`ReadAhead`) while the last ones are
        written: ``opts.writers`` chunks at once when ``more_sinks`` makes
        another set of ``sinks`` for each further writer (:class:`InOrder`).
        """
        dsn = (self.cfg.source.lookup_dsn or self.cfg.source.dsn).get_secret_value()
        # read before the view is compiled: a migration from here on is said
        # once the load recorded these (definitions.record)
        self.columns = definitions.source_columns(self.cfg, [self.view.name])
        prepare_views({self.view.name: self.view}, dsn, strict=False)
        size, where = self.opts.chunk_size, self.opts.where
        with (
            self._write_slots(sinks, more_sinks) as slots,
            closing(Reader(dsn)) as reader,
            closing(Reader(dsn)) as counter,
        ):
            # The total is the rows done plus the roots still ahead of the
            # cursor: roots inserted ahead of it during the run are loaded
            # too, so it is counted again when the rows reach it, and is the
            # rows done once a chunk finds nothing more ahead.
            ahead = partial(source.count, counter, where)
            st.total = st.rows + ahead(st.after)
            self._save(st)
            chunks = ReadAhead(
                lambda after: source.load_chunk(reader, after, where, size),
                lambda chunk: chunk.last if chunk.rows >= size else None,
                st.after,
            )
            with chunks, InOrder(slots) as writes:
                number, after = st.chunks, st.after
                for chunk in chunks:
                    if self.stopping:
                        break
                    number += 1
                    for ident, exc in chunk.failures:
                        logger.error(
                            "transform refused view=%s id=%s error=%s",
                            source.name,
                            ident,
                            exc,
                        )
                    writes.submit(
                        partial(Rejects.into, chunk.ops, chunk_origin(number, after)),
                        partial(self._chunk_done, st, chunk, ahead),
                    )
                    after = chunk.last
                writes.drain()
            if not self.stopping:
                st.total = st.rows

    @contextmanager
    def _write_slots(
        self,
        sinks: Mapping[str, Sink],
        more_sinks: Callable[[], dict[str, Sink]] | None,
    ) -> Iterator[list[WriteSlot]]:
        """``sinks``, and ``opts.writers - 1`` more sets made by ``more_sinks``
        (opened here, closed after), each with its own dead-letter producer."""
        extra = (
            [more_sinks() for _ in range(self.opts.writers - 1)] if more_sinks else []
        )
        try:
            for more in extra:
                open_sinks(more, self.backoff(), lambda: self.stopping)
            yield [(sinks, self.rejects)] + [
                (more, Rejects(self.cfg, self.backoff, lambda: self.stopping))
                for more in extra
            ]
        finally:
            for more in extra:
                for sink in more.values():
                    sink.close()

    def _chunk_done(
        self,
        st: SnapshotState,
        chunk: Chunk,
        ahead: Callable[[list[str]], int],
        dead_letters: int,
    ) -> None:
        """Record in ``st`` that ``chunk`` is written (``dead_letters`` of its
        documents dead-lettered)."""
        st.dead_letters += dead_letters
        st.after = chunk.last
        st.rows += chunk.rows
        st.chunks += 1
        if chunk.rows < self.opts.chunk_size:
            st.total = st.rows
        elif st.rows >= (st.total or 0):
            st.total = st.rows + ahead(st.after)
        self._save(st)
        if _CRASH_AFTER_CHUNKS and st.chunks >= _CRASH_AFTER_CHUNKS:
            logger.error("fault injection: exiting after chunk %d", st.chunks)
            os._exit(137)

    def _save(self, st: SnapshotState) -> None:
        """Record ``st`` and show it."""
        self.log.save(st)
        self._recorded(st)

    def _recorded(self, st: SnapshotState) -> None:
        # From here on a retry after an outage goes on from what this run
        # recorded, even under --restart.
        self.opts.restart = False
        self.progress(st)

    def _finish(self, st: SnapshotState) -> SnapshotState:
        st.state = "running" if self.stopping else "done"
        self._save(st)
        return st

    # ------------------------------------------------------------ through the topic
    def _replay(self, view: View, sinks: Mapping[str, Sink]) -> SnapshotState:
        """Replay the compacted topic into ``sinks`` at the stream's versions:
        its partitions dealt out to ``opts.writers`` processes, or in this
        one (:mod:`pipeline.snapshot.replay`)."""
        st = SnapshotState(self.opts.view, self.sink_names, None, "replay")
        topic = self.cfg.source.topic(view.cfg.table)
        replay.require_whole(self.cfg, view.name, topic)
        group = {"group.id": replay.group(self.cfg)}
        with closing(kafkaclient.consumer(self.cfg.kafka, group)) as consumer:
            spans = replay.topic_spans(consumer, topic)
        st.total = sum(s.size for s in spans)
        self.log.save(st)
        shares = replay.split(spans, self.opts.writers)
        logger.info(
            "replaying topic=%s records=%d partitions=%d processes=%d",
            topic,
            st.total,
            len(spans),
            len(shares),
        )

        def done(records: int, dead_letters: int, chunks: int) -> None:
            st.rows += records
            st.dead_letters += dead_letters
            st.chunks += chunks
            self._save(st)

        stopping = lambda: self.stopping  # noqa: E731 - read at each call
        if len(shares) > 1:
            replay.run_shares(
                self.cfg,
                self.opts.view,
                self.sink_names,
                shares,
                self.opts.chunk_size,
                done,
                stopping,
            )
        else:
            replay.Replayer(self.cfg, view, stopping).run(
                spans, sinks, self.rejects, self.opts.chunk_size, done
            )
        return self._finish(st)

    def _signal(self, view: View) -> SnapshotState:
        """Ask Debezium for an incremental snapshot of the rows ``--where``
        picks, or of every row (``--from-source``): then follow it until the
        workers applied it and mark the view loaded in its stores
        (:mod:`pipeline.snapshot.fill`)."""
        if self.opts.sinks:
            raise ConfigError(
                "--sink with --where or --from-source on a table view: the "
                "incremental snapshot goes through the stream into every sink "
                "of the view"
            )
        topic = self.cfg.source.topic(view.cfg.table)
        # where the rows read again begin (a slice's are not followed)
        starts = {} if self.opts.where else fill.end_offsets(self.cfg, topic)
        send_signal(self.cfg, view.cfg.table, self.opts.where)
        if not self.opts.where:
            # every row again through the stream, at new offsets, into every
            # sink of the view once Debezium is through
            definitions.record(self.cfg, view.name, self.sink_names)
        st = SnapshotState(
            self.opts.view, self.sink_names, self.opts.where, "signal", "signalled"
        )
        self._save(st)
        if self.opts.where:
            return st
        stopping = lambda: self.stopping  # noqa: E731 - read at each call
        parts = {(topic, p): o for p, o in starts.items()}
        table = view.cfg.table
        if not fill.await_rows(self.cfg, view.name, table, parts, stopping=stopping):
            return st
        ends = {(topic, p): o for p, o in fill.end_offsets(self.cfg, topic).items()}
        if not fill.await_applied(
            self.cfg, view.name, self.sink_names, ends, stopping=stopping
        ):
            return st
        sinks = build_sinks(self.cfg, self.sink_names)
        try:
            open_sinks(sinks, self.backoff(), stopping)
            loaded.mark_loaded(sinks, [view.name])
        finally:
            for sink in sinks.values():
                sink.close()
        st.state = "done"
        self._save(st)
        return st


def send_signal(cfg: Config, table: str, where: str | None) -> None:
    """Ask Debezium for an incremental snapshot of ``table`` (the rows ``where``
    picks, or all): they come through the stream as new events, so every
    table view of the table rewrites them at new versions."""
    data: dict[str, Any] = {"data-collections": [table], "type": "incremental"}
    if where:
        data["additional-conditions"] = [{"data-collection": table, "filter": where}]
    src = cfg.source
    with psycopg.connect(src.dsn.get_secret_value(), autocommit=True) as conn:
        conn.execute(
            f"INSERT INTO {src.signal_table} (id, type, data) "
            "VALUES (%s, 'execute-snapshot', %s)",
            (str(uuid.uuid4()), json.dumps(data)),
        )
