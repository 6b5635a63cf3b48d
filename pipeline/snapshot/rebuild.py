"""``readside snapshot VIEW --rebuild``: a new generation of a view, filled
beside the live one and switched in without a moment of missing documents.

Steps, each recorded on ``kafka.snapshot_topic`` so that a killed run goes on
from the step (and chunk, and catch-up offset) it reached:

1. **create**: every chosen sink makes generation n+1 of the view, empty,
   beside the live generation n (:class:`~connectors.base.Generations`), and
   from then on *mirrors* every live write of the view: the live workers'
   sinks apply each write to n+1 first, then to n. The start offsets S of the
   view's topics are sampled after that: for an aggregate view the lowest
   committed offsets of the live groups applying it (else the ends), for a
   table view their beginning.
2. **fill** (views read from the source, i.e. aggregate views): the chunked
   snapshot load of :meth:`Loader._chunks`, into the new generation only.
3. **catch-up**: the view's topics from S, through the worker's own batch loop
   (decode, re-read roots, coalesce, version-guarded writes) into the new
   generation only, under the consumer group ``<group_id>.rebuild.<view>.<n+1>``
   whose commits make it resumable; until the end offsets E it sampled when it
   began. For an aggregate view E is sampled only once the connector has
   confirmed (the slot's ``confirmed_flush_lsn``) an LSN taken after the fill:
   its chunks saw every transaction committed before, so their records must
   be before E. For a table view, a row the catch-up found gone from the
   source (an update whose unchanged TOAST value it reads there,
   :mod:`pipeline.toast`) was deleted after E was sampled: the catch-up
   waits for the connector as above and goes on to the ends sampled then,
   so that the delete is in n+1 before the switch.
4. **switch**: each sink moves its pointer (Redis key, ES alias, MongoDB
   document) to n+1 and ends the mirroring, in one atomic step.
5. **drop**: after a short grace for reads in flight, and once the live groups
   committed what they consumed before the switch (bounded), n is deleted.

Why a reader never goes back in time at the switch: at that moment n+1 holds
every document of n at the same or a newer version (or a deleted one as
deleted). A write into n was either mirrored, so it reached n+1 first, or its
sink resolved the generations before the mirroring began: then its records
were consumed before, sit before E, and the catch-up applied them to n+1 —
a table view at the same version (the offset), an aggregate view by a
re-read that began after the mirroring, so from a newer snapshot (as are the
fill's chunks). The fill can also be *ahead* of the stream: a root deleted
before its chunk leaves no trace in n+1, and a live write that re-read the
root before the delete and lands late would bring it back. Both records are
caught up, so the catch-up leaves a tombstone that guards against it: the
delete's record is before E (see step 3), and the late write's batch, not
committed when the mirroring began, at or after S.

Nothing is lost either: every record past E is consumed by a live worker
after the mirroring began, so it reaches n+1 by the mirror or, after the
switch, as the live generation. Writes from the catch-up and from
the live workers land in any order; the version guard keeps the newest, as
for any replay (docs/design.md: the version rule). So every read of n+1
returns a version at least as new as n returned at the switch, and the
read-your-writes watermark, which follows the live workers, never reports a
write n+1 lacks.

Why mirroring rather than fencing live writes to n during a final catch-up:
a fence stalls every live worker of the view while that catch-up runs, needs
a write check that is atomic with the fence in every store (the MongoDB sink
reads its pointer before writing; FerretDB has no transaction to tie them),
and is not enough for aggregate views: a live re-read just before the fence
can include a transaction whose record Debezium has not produced yet, past
the fenced end offsets, so n would still be ahead of n+1. Mirroring costs a
second write of the view's live batches while a rebuild runs (the stores
check for a mirror on each write: Redis in its script, MongoDB in the pointer
it read already, Elasticsearch with one alias lookup per view and batch).
A rebuild that was killed keeps the mirroring on until it is run again.
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Callable, Mapping
from functools import partial
from typing import Any

from confluent_kafka import TopicPartition

from connectors.base import Generations, Sink
from connectors.registry import build_sink
from pipeline import definitions
from pipeline.config import Config
from pipeline.errors import ConfigError
from pipeline.sinkwriter import open_sinks
from pipeline.snapshot import epoch
from pipeline.snapshot.load import Loader, Options, Progress
from pipeline.snapshot.positions import Offsets, Positions, part_key, part_of
from pipeline.snapshot.progress import records_ahead
from pipeline.snapshot.runlock import rebuild_lock
from pipeline.snapshot.state import SnapshotState, rebuild_key
from pipeline.worker import Worker, build_sinks

logger = logging.getLogger(__name__)

#: Fault injection for crash tests: exit abruptly (as kill -9 would) right
#: after the switch was recorded, before the catch-up that follows it.
_CRASH_AFTER_SWITCH = os.environ.get("READSIDE_FAULT_CRASH_AFTER_SWITCH") == "1"

#: at most this many more catch-ups to the deletes of rows found gone (each
#: finds only the rows deleted while the one before ran)
GONE_ROUNDS = 5

#: seconds between the switch's catch-up and dropping the old generation, for
#: reads that resolved the old generation just before the switch
DROP_GRACE_S = 5.0


class Rebuild(Loader):
    """One ``--rebuild`` run; ``stop()`` ends it at the next step boundary or
    batch, to be resumed by running it again."""

    def __init__(
        self,
        cfg: Config,
        opts: Options,
        progress: Progress,
        drop_grace_s: float = DROP_GRACE_S,
    ) -> None:
        if opts.where:
            raise ConfigError(
                "--rebuild rebuilds the whole view; --where cannot go with it"
            )
        super().__init__(cfg, opts, progress)
        self.drop_grace_s = drop_grace_s
        self.key = rebuild_key(opts.view, self.sink_names)
        self.pos = Positions(cfg, opts.view, lambda: self.stopping)
        self._worker: Any = None
        #: raises TransientError once the run's locks are lost (runlock)
        self._held: Callable[[], None] = lambda: None

    def stop(self, *_args: object) -> None:
        self.stopping = True
        if self._worker is not None:
            self._worker.stop()

    # ------------------------------------------------------------ entry
    def _run(self) -> SnapshotState:
        with rebuild_lock(self.cfg, self.view.name, self.sink_names) as held:
            self._held = held
            return self._run_alone()

    def _run_alone(self) -> SnapshotState:
        live = build_sinks(self.cfg, self.sink_names)
        for name, sink in live.items():
            if not isinstance(sink, Generations):
                raise ConfigError(
                    f"sinks.{name}: this kind of sink cannot hold generations, "
                    "so it cannot be rebuilt beside the live view"
                )
        try:
            open_sinks(live, self.backoff(), lambda: self.stopping)
            st = self._start(live)
            self._epoch(st)
            pinned = self._pinned(live, st)
            steps = [
                ("fill", self._fill),
                ("catch-up", self._catch_up_then_switch),
                ("switched", self._catch_up_after_switch),
                ("drop", self._drop),
            ]
            for phase, step in steps:
                if self.stopping:
                    break
                if st.phase != phase:
                    continue
                self._held()
                step(st, live, pinned)
            if st.phase == "done":
                st.state = "done"
                # every document written again, by the definition of now
                # (the columns an aggregate view's chunks were read with)
                definitions.record(self.cfg, self.view.name, sorted(live), self.columns)
            self._save(st)
            return self.rejects.check(st)
        finally:
            for sink in live.values():
                sink.close()
            self.log.close()

    def _save(self, st: SnapshotState) -> None:
        self.log.save(st, self.key)
        self._recorded(st)

    def _start(self, live: Mapping[str, Sink]) -> SnapshotState:
        """The unfinished run to resume, or a new one with its generation made."""
        old = self.log_record(self.key)
        if old is not None and old.state == "running" and not self.opts.restart:
            logger.info(
                "resuming rebuild view=%s generation=%s phase=%s rows_done=%d after=%s",
                old.view,
                old.generation,
                old.phase,
                old.rows,
                old.after,
            )
            return old
        previous = {
            name: _gens(sink).generation(self.view.name) for name, sink in live.items()
        }
        gen = max(previous.values()) + 1
        epoch.begin_if_needed(self.cfg, self.view, self.sink_names)
        for sink in live.values():
            _gens(sink).create_generation(self.view.name, gen)
        # A view read from the source is filled from it, and its live workers
        # may write batches they consumed but have not committed.
        fills = self.view.rereads
        st = SnapshotState(self.opts.view, self.sink_names, None, "rebuild")
        st.generation = gen
        st.previous = previous
        st.offsets = self.pos.offsets(high=False)
        if fills:
            # Where the live workers stand: a batch they consumed but have
            # not committed may still write (see "ahead of the stream").
            ends = self.pos.offsets(high=True)
            st.offsets = dict(ends)
            for group in self.pos.live_groups():
                got = self.pos.committed(group, ends)
                for (t, p), o in got.items():
                    st.offsets[part_key(t, p)] = min(o, st.offsets[part_key(t, p)])
        st.phase = "fill" if fills else "catch-up"
        st.counts = {}
        logger.info(
            "rebuild started view=%s generation=%d previous=%s",
            st.view,
            gen,
            previous,
        )
        self._save(st)
        return st

    def _epoch(self, st: SnapshotState) -> None:
        """Build with the epoch the workers use; before the first catch-up of
        a new table-view epoch, wait for its incremental snapshot
        (:mod:`pipeline.snapshot.epoch`)."""
        epoch.adopt(self.cfg, self.view)
        if st.phase == "catch-up" and not self.stopping:
            epoch.await_fill(self.cfg, self.view)

    def _pinned(self, live: Mapping[str, Sink], st: SnapshotState) -> dict[str, Sink]:
        """Sinks that write and read generation ``st.generation`` directly."""
        assert st.generation is not None
        view = self.view.name
        return {
            name: build_sink(
                name,
                self.cfg.sinks[name],
                {view: _gens(sink).generation_target(view, st.generation)},
            )
            for name, sink in live.items()
        }

    def _next(self, st: SnapshotState, phase: str) -> None:
        """Close the step: keep its row count, reset the bar for the next."""
        assert st.counts is not None
        assert st.phase is not None
        st.counts[st.phase] = st.counts.get(st.phase, 0) + st.rows
        st.phase = phase
        st.rows, st.chunks, st.total, st.after = 0, 0, None, None
        st.started_ms = int(time.time() * 1000)
        self._save(st)

    # ------------------------------------------------------------ steps
    def _fill(
        self, st: SnapshotState, live: Mapping[str, Sink], pinned: Mapping[str, Sink]
    ) -> None:
        source = self.view.from_source()
        try:
            open_sinks(pinned, self.backoff(), lambda: self.stopping)
            if source is not None:
                more = partial(self._pinned, live, st)  # for each further writer
                self._chunks(source, pinned, st, more)
        finally:
            for sink in pinned.values():
                sink.close()
        if not self.stopping:
            self._next(st, "catch-up")

    def _catch_up_then_switch(
        self, st: SnapshotState, live: Mapping[str, Sink], pinned: Mapping[str, Sink]
    ) -> None:
        # Sampled after the mirroring began (step create): every write into
        # the live generation that was not mirrored is of a record before it.
        if self.view.rereads:
            self.pos.wait_connector()
        gone = self._catch_up(st, pinned, self.pos.offsets(high=True))
        # A run resumed after an outage: what its first run found gone (the
        # catch-up does not read those records again).
        gone = max(gone, st.gone)
        for _ in range(GONE_ROUNDS):
            # A row the catch-up found gone from the source was deleted
            # after those ends were sampled: its delete lies past them, and
            # without it n+1 would keep the row older than n holds it. Once
            # the connector produced every change committed so far, it is
            # before the ends sampled then.
            if self.stopping or not gone:
                break
            st.gone = gone
            self._save(st)
            logger.info(
                "rebuild catch-up goes on view=%s rows_gone=%d", self.view.name, gone
            )
            self.pos.wait_connector()
            gone = self._catch_up(st, pinned, self.pos.offsets(high=True))
        if self.stopping:
            return
        st.gone = 0
        assert st.generation is not None
        self._held()
        for name, sink in live.items():
            _gens(sink).switch_generation(self.view.name, st.generation)
            logger.info(
                "rebuild switched view=%s sink=%s generation=%d",
                self.view.name,
                name,
                st.generation,
            )
        self._next(st, "switched")
        if _CRASH_AFTER_SWITCH:
            logger.error("fault injection: exiting after the switch")
            os._exit(137)

    def _catch_up_after_switch(
        self, st: SnapshotState, _live: Any, pinned: Mapping[str, Sink]
    ) -> None:
        # Only runs recorded before mirroring existed sampled ends here.
        if st.switch_ends is not None:
            self._catch_up(st, pinned, st.switch_ends)
        if not self.stopping:
            self._next(st, "drop")

    def _drop(self, st: SnapshotState, live: Mapping[str, Sink], _pinned: Any) -> None:
        assert st.previous is not None
        assert st.generation is not None
        time.sleep(self.drop_grace_s)
        self.pos.wait_live_commits()
        for name, old in st.previous.items():
            if old != st.generation:
                _gens(live[name]).drop_generation(self.view.name, old)
                logger.info(
                    "rebuild dropped view=%s sink=%s generation=%d",
                    self.view.name,
                    name,
                    old,
                )
        self._next(st, "done")

    # ------------------------------------------------------------ catch-up
    def _group(self, st: SnapshotState) -> str:
        return f"{self.cfg.kafka.group_id}.rebuild.{self.view.name}.{st.generation}"

    def _catch_up(
        self, st: SnapshotState, pinned: Mapping[str, Sink], until: Offsets
    ) -> int:
        """Apply the view's topics from where the catch-up stands to ``until``;
        the number of events it skipped because their row is gone."""
        assert st.offsets is not None
        group = self._group(st)
        cfg = self.cfg.model_copy(
            update={"kafka": self.cfg.kafka.model_copy(update={"group_id": group})}
        )
        start = self.pos.committed(group, st.offsets)
        ends = {part_of(k): v for k, v in until.items()}
        # Rows done (by an earlier run of this step too) plus records ahead
        # of the positions reached (the start until a partition is fetched).
        st.total = st.rows + records_ahead(start, ends)
        self._save(st)

        def done_batch(records: int) -> None:
            st.rows += records
            st.chunks += 1
            at = worker.consumer.position([TopicPartition(*k) for k in start])
            reached = {(t.topic, t.partition): t.offset for t in at if t.offset >= 0}
            st.total = st.rows + records_ahead({**start, **reached}, ends)
            if st.chunks % 10 == 0:
                self._save(st)

        worker = Worker(
            cfg,
            {self.view.name: self.view},
            dict(pinned),
            assignment=[TopicPartition(t, p, o) for (t, p), o in start.items()],
            until=ends,
            side_effects=False,
            on_batch=done_batch,
        )
        self._worker = worker
        if self.stopping:
            return 0
        try:
            worker.run()
        finally:
            self._worker = None
            # the documents n+1 rejected, dead-lettered by the catch-up
            st.dead_letters += worker.dlq.sent if hasattr(worker, "dlq") else 0
        self._save(st)
        return worker.rows_gone


def _gens(sink: Sink) -> Generations:
    assert isinstance(sink, Generations)
    return sink
