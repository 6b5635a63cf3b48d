"""The consumer worker: the loop that owns ordering and commits.

For every batch::

    consume -> decode -> views -> coalesce per document id
      -> write every sink of each view (version-guarded, retried on
         transient errors while the partitions stay paused)
      -> dead letters produced and flushed
      -> offsets committed (only now: after every sink acknowledged)
      -> checkpoints written

A crash anywhere before the commit replays the batch; the version rule makes
the replay harmless. Several workers in one consumer group share partitions.
While the sinks write a batch, the records already fetched are read and
decoded: the next batch (:mod:`pipeline.readahead`).

Beside it: its start-up (:mod:`pipeline.startup`), its partitions and pauses
(:mod:`pipeline.partitions`), the batch path (:mod:`pipeline.batch`), the
batch read ahead (:mod:`pipeline.readahead`).
"""

from __future__ import annotations

import faulthandler
import logging
import os
import signal
import threading
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from concurrent.futures import Future
from dataclasses import dataclass, field
from functools import partial
from typing import Any, Protocol

from confluent_kafka import KafkaException, TopicPartition

from connectors.base import Sink
from connectors.registry import build_sinks as build_sinks  # used by operations
from pipeline import (
    definitions,
    dlq,
    dlqtopic,
    groups,
    kafkaclient,
    layoutguard,
    loaded,
    metrics,
    publication,
    retaken,
    startup,
    taskheal,
    timelag,
)
from pipeline.aggregate.reader import Reader
from pipeline.batch import BatchHandler, Pacer, rejected_only
from pipeline.checkpoints import Checkpoint, CheckpointWriter, SourceMark
from pipeline.config import Config
from pipeline.errors import FatalError
from pipeline.gaps import Gap
from pipeline.gaps import said as gaps_said
from pipeline.partitions import Partitions, fmt, next_batch, usable
from pipeline.processor import Batch, Decoded, Processor
from pipeline.readahead import ReadAhead
from pipeline.redelivery import KafkaPartitionLog, Redeliveries
from pipeline.retaken import Retaken
from pipeline.sinkwriter import Abandoned, Backoff, until_reachable
from pipeline.source.converter import converter_for
from pipeline.startup import consumer_config as consumer_config  # tests use it
from pipeline.startup import start_guard as _start_guard
from pipeline.views import View, build_views

logger = logging.getLogger(__name__)

#: Fault injection for crash tests: exit abruptly (as kill -9 would) after the
#: sinks acknowledged batch N and before its offsets are committed.
_CRASH_BEFORE_COMMIT = int(os.environ.get("READSIDE_FAULT_CRASH_BEFORE_COMMIT", "0"))


class Watch(Protocol):
    """Something the worker looks at between batches, when it is due, and
    reports (logs, gauges, records for ``status``)."""

    def due(self) -> bool: ...

    def check(self) -> None: ...


@dataclass
class Worker:
    """One worker process of a pipeline."""

    cfg: Config
    views: Mapping[str, View]
    sinks: Mapping[str, Sink]
    consumer_factory: Callable[[dict[str, Any]], Any] = kafkaclient.new_consumer
    producer_factory: Callable[[dict[str, Any]], Any] = kafkaclient.new_producer
    health: metrics.Health = field(default_factory=metrics.Health)
    #: A rebuild's catch-up (:mod:`pipeline.snapshot.rebuild`): read these
    #: partitions from these offsets, without joining the group's rebalances
    #: or reading the heartbeat topic, and leave once each partition's
    #: position reached ``until``.
    assignment: list[TopicPartition] | None = None
    until: Mapping[tuple[str, int], int] | None = None
    #: False for a rebuild's catch-up: no checkpoints (they describe what the
    #: live stores hold), and of the dead letters only the documents its
    #: stores rejected (the live workers send the records they cannot use).
    side_effects: bool = True
    #: called with the number of records of each handled batch
    on_batch: Callable[[int], None] | None = None
    #: refuses a view whose topic layout or source xmax changed (run_worker)
    guard: layoutguard.Guard | None = None
    #: what a worker (not a rebuild's catch-up) looks at between batches and
    #: reports, set by run: changes the source's publication leaves out, a
    #: view a store no longer holds whole, documents that follow a former
    #: definition of their view
    watches: list[Watch] = field(default_factory=list)
    #: of those, the load marks' (records dropped unread take them away)
    loads: loaded.Watch | None = None
    stopping: bool = False
    batches: int = 0
    #: events skipped because their row is gone from the source
    #: (:mod:`pipeline.toast`); a rebuild's catch-up goes on to their deletes
    rows_gone: int = 0
    #: its assignment and how it waits with it paused (pipeline.partitions)
    parts: Partitions = field(init=False)
    _mixed: list[str] = field(default_factory=list)
    _checked: bool = False
    #: the tables read whole again already reported: (topic, snapshot LSN)
    _retaken_said: set[tuple[str, int]] = field(default_factory=set)
    #: reads the heartbeats for the views' time lag (a worker, not a
    #: rebuild's catch-up)
    lag: timelag.Heartbeats | None = None

    def __post_init__(self) -> None:
        self.parts = Partitions(self.health, lambda: self.stopping)

    @property
    def in_flight(self) -> Future[Any] | None:
        """A sink write or source read still running when a stop gave its
        batch up (the process may exit without waiting for it)."""
        return self.parts.in_flight

    # ------------------------------------------------------------ lifecycle
    def stop(self, *_args: object) -> None:
        """Ask the loop to finish its batch and leave (signal-handler safe)."""
        self.stopping = True

    def scope(self) -> groups.Scope:
        """The views this worker applies and the sinks it writes them to."""
        return groups.Scope.of(self.cfg, self.views, self.sinks)

    def topics(self) -> list[str]:
        by_topic = self.cfg.view_topics()
        return sorted(
            t for t, vs in by_topic.items() if any(v in self.views for v in vs)
        )

    def run(self, max_batches: int | None = None) -> None:
        cfg = self.cfg
        admin = kafkaclient.admin(cfg.kafka)
        heartbeat_topic = cfg.source.topic(cfg.source.heartbeat_table)
        lookup = cfg.source.lookup_dsn or cfg.source.dsn
        dlq_bytes = startup.prepare(
            cfg,
            admin,
            self.views,
            self.sinks,
            [*self.topics(), heartbeat_topic],
            lambda: self.stopping,
        )
        if dlq_bytes is None:
            return
        self.health.sinks_open = True
        producer = self.producer_factory(startup.producer_config(cfg, dlq_bytes))
        self.reader = Reader(lookup.get_secret_value())
        self.dlq = dlq.DeadLetterQueue(
            producer,
            cfg.kafka.dlq_topic,
            dlq_bytes,
            partial(dlqtopic.topic_max_bytes, admin, cfg.kafka.dlq_topic),
        )
        self.checkpoints = CheckpointWriter(producer, cfg.kafka.checkpoint_topic)
        conf = consumer_config(cfg, self.scope())
        if self.assignment is not None:  # a rebuild's catch-up: its own group
            conf["group.id"] = cfg.kafka.group_id
        self.group = conf["group.id"]
        consumer = self.consumer_factory(conf)
        self.consumer = consumer
        self.parts.consumer = consumer
        self.processor = Processor(
            dict(self.views),
            cfg.view_topics(),
            heartbeat_topics={heartbeat_topic},
            redeliveries=Redeliveries(
                cfg.worker.redelivery_window,
                KafkaPartitionLog(consumer, conf, converter_for(cfg.kafka)),
            ),
            converter=converter_for(cfg.kafka),
        )
        self.ahead = ReadAhead(
            self.parts, self.processor, cfg.worker.batch_size, lambda: self.stopping
        )
        self.parts.meanwhile = self.ahead.read
        self.handler = BatchHandler(
            self.views,
            self.sinks,
            self.processor,
            self.reader,
            cfg.worker,
            Pacer(
                self.parts.wait_paused,
                self.parts.should_abandon,
                self._set_backoff,
                self.parts.run_alive,
            ),
        )
        if self.guard is not None:  # a worker's, not a rebuild's catch-up
            published = publication.Watch(cfg, self.views, prepared=self.views.values())
            published.check()
            loads = loaded.Watch(cfg, self.views, self.sinks, recorder=self.checkpoints)
            until_reachable(
                partial(loads.start, consumer),
                "reading the load marks",
                Backoff.of(cfg.worker),
                lambda: self.stopping,
            )
            defined = definitions.Watch(
                cfg, loaded.pairs(cfg, self.views, self.sinks), self.checkpoints
            )
            defined.check()
            self.watches = [published, loads, defined, taskheal.watches(cfg)]
            self.loads = loads
            self.lag = self._heartbeats(conf, heartbeat_topic, admin)
        if self.assignment is not None:
            consumer.assign(self.assignment)
            self._on_assign(consumer, self.assignment)
        else:
            consumer.subscribe(
                [*self.topics(), heartbeat_topic],
                on_assign=self._on_assign,
                on_revoke=self._on_revoke,
                on_lost=self._on_lost,
            )
        logger.info(
            "worker started group=%s topics=%s sinks=%s",
            self.group,
            ",".join(self.topics()),
            ",".join(self.sinks),
        )
        try:
            while not self.stopping and (
                self.ahead.pending
                or not self.parts.reached(self.until, self.assignment)
            ):
                self.health.turn()
                if self.lag is not None:
                    self.lag.turn(self.ahead.partitions())
                msgs, decoded = self._records()
                if self.guard is not None and self.guard.due():
                    self.guard.check()  # before applying anything of a new layout
                for watch in self.watches:
                    if watch.due():
                        watch.check()
                if msgs:
                    self._handle(msgs, decoded)
                    self.batches += 1
                    if self.on_batch is not None:
                        self.on_batch(len(msgs))
                    if max_batches is not None and self.batches >= max_batches:
                        break
            if self._mixed:
                raise FatalError(
                    f"consumer group {self.group} has members serving other views "
                    f"({', '.join(self._mixed)}): every worker of a group must "
                    "serve the same views (same config and --views); stop them, "
                    "or give the other deployment its own kafka.group_id"
                )
        finally:
            logger.info("worker stopping batches=%d", self.batches)
            producer.flush(10)
            consumer.close()
            if self.lag is not None:
                self.lag.close()
            if self.in_flight is None:  # else the helper thread still uses them
                for sink in self.sinks.values():
                    sink.close()
                self.reader.close()

    def _heartbeats(
        self, conf: dict[str, Any], topic: str, admin: Any
    ) -> timelag.Heartbeats | None:
        """The reader of the heartbeats that keeps the views' time lag
        (:mod:`pipeline.timelag`), on a consumer of its own outside the group;
        None, with a warning, when it cannot start (a figure: the worker
        goes on, its time lag then moves on with the changes it applies)."""
        own = {
            **conf,
            "group.id": f"{conf['group.id']}.heartbeats",
            "client.id": f"{conf['client.id']}.heartbeats",
            "auto.offset.reset": "latest",
        }
        topics: dict[str, list[str]] = {}
        for t, names in self.cfg.view_topics().items():
            for name in names:
                topics.setdefault(name, []).append(t)
        lag = timelag.Heartbeats(
            self.consumer,
            self.consumer_factory(own),
            admin,
            topic,
            {
                name: (
                    topics.get(name, []),
                    [s for s in view.cfg.sinks if s in self.sinks],
                )
                for name, view in self.views.items()
            },
            converter_for(self.cfg.kafka, quick=True),
            lambda: self.parts.assigned,
            metrics.TIME_LAG,
        )
        try:
            lag.start()
        except KafkaException as exc:
            logger.warning(
                "heartbeats not read: the time lag moves on with applied changes "
                "only, and grows while the source is idle error=%s",
                exc,
            )
            lag.close()
            return None
        return lag

    # ------------------------------------------------------------ rebalance
    def _on_assign(self, _c: Any, parts: list[TopicPartition]) -> None:
        if self.assignment is None and not self._checked:
            # Once, at the first assignment: a worker already running keeps
            # running; the newcomer that does not fit refuses.
            self._checked = True
            self._mixed = groups.foreign_members(
                self.cfg.kafka, self.group, self.scope()
            )
            if self._mixed:
                self.stopping = True
                return
        if self.guard is not None:
            self.guard.note_assignment(parts)
        if self.lag is not None:
            self.lag.forget((p.topic, p.partition) for p in parts)
        self.parts.assign(parts)
        logger.info("assigned partitions=%s", fmt(parts))

    def _on_revoke(self, _c: Any, parts: list[TopicPartition]) -> None:
        gone = self.parts.revoke(parts)
        if self.lag is not None:
            self.lag.forget(gone)
        self.ahead.moved(gone)
        if self.processor.redeliveries is not None:
            self.processor.redeliveries.forget(gone)
        logger.info("revoked partitions=%s", fmt(parts))

    def _on_lost(self, c: Any, parts: list[TopicPartition]) -> None:
        logger.warning("lost partitions=%s (nothing is committed for them)", fmt(parts))
        self._on_revoke(c, parts)

    # ------------------------------------------------------------ one batch
    def _records(self) -> tuple[list[Any], list[Decoded]]:
        """The next batch's records, and of those the ones decoded already:
        read ahead while the batch before was written
        (:mod:`pipeline.readahead`), else consumed now."""
        taken = self.ahead.take()
        decoded: list[Decoded] = []
        if taken is None:
            cfg = self.cfg.worker
            raw = next_batch(self.consumer, cfg.batch_size, cfg.batch_timeout_ms / 1e3)
        else:
            raw, decoded = taken
        self.parts.settle_fresh()
        return [m for m in raw if usable(m)], decoded

    def _handle(self, msgs: list[Any], decoded: Sequence[Decoded] = ()) -> None:
        gaps = self.parts.begin_batch(msgs)
        try:
            if gaps:
                self._lost(gaps)
            applied = self.handler.apply(msgs, decoded)
            if applied.batch.retaken:
                self._retaken(applied.batch.retaken.values())
        except Abandoned:
            self._give_up(msgs, gaps)
            return
        dead = applied.dead
        self.rows_gone += applied.batch.gone
        if _CRASH_BEFORE_COMMIT and self.batches + 1 >= _CRASH_BEFORE_COMMIT:
            logger.error("fault injection: exiting after sink writes, before commit")
            os._exit(137)
        if not self.side_effects:
            dead = rejected_only(dead)
        try:
            self.handler.deliver(self.dlq, dead)
        except Abandoned:
            self._give_up(msgs, gaps)
            return
        self._commit(msgs, applied.batch)

    def _give_up(self, msgs: list[Any], gaps: Sequence[Gap]) -> None:
        """Nothing of the batch is committed: the records read ahead of it,
        then its own, are read again."""
        self.ahead.give_back()
        self.parts.rewind(msgs, gaps)

    def _lost(self, gaps: Sequence[Gap]) -> None:
        """Records the batch's partitions dropped before they were read
        (:mod:`pipeline.gaps`): the views reading them lose their load marks
        before anything past the gap is committed. A rebuild's catch-up
        cannot make its generation whole: it stops.

        Raises:
            Abandoned: the batch was given up while a store was down.
            FatalError: a rebuild's catch-up lost records.
        """
        lost: dict[str, list[Gap]] = {}
        for gap in gaps:
            # the last record dropped: a view whose epoch starts past it lost none
            views = self._readers(gap.topic, gap.partition, gap.resumed - 1)
            if not views:  # the heartbeat topic, or before an epoch
                logger.info("%s (no view applies them)", gaps_said([gap]))
                continue
            logger.error("%s; views: %s", gaps_said([gap]), ", ".join(views))
            for view in views:
                lost.setdefault(view, []).append(gap)
        self._take_marks(
            {view: gaps_said(found) for view, found in lost.items()},
            "--rebuild",
            f"{gaps_said(gaps)}: the new generation would lack them; run the "
            "rebuild again",
        )

    def _retaken(self, found: Iterable[Retaken]) -> None:
        """Tables read whole again (:mod:`pipeline.retaken`): the views
        reading them lose their load marks before the batch is committed,
        once per snapshot; then the snapshot is noted in each partition. A
        rebuild's catch-up stops.

        Raises:
            Abandoned: the batch was given up while a store was down.
            FatalError: a rebuild's catch-up read one.
        """
        whys: dict[str, str] = {}
        news = [r for r in found if (r.topic, r.lsn) not in self._retaken_said]
        for r in news:
            views = self._readers(r.topic, r.partition, r.offset)
            if views:
                logger.error("%s; views: %s", r.said(), ", ".join(views))
            for view in views:
                whys.setdefault(view, r.said())
        self._take_marks(
            whys,
            retaken.LOAD,
            f"{'; '.join(r.said() for r in news)}: the new generation would "
            "keep them too; load the view from the source instead",
        )
        self._retaken_said.update((r.topic, r.lsn) for r in news)
        marks = self.processor.redeliveries
        for r in found:  # said: the rows after it are no longer read again
            if marks is not None:
                marks.note_snapshot((r.topic, r.partition), r.lsn)

    def _readers(self, topic: str, partition: int, offset: int) -> list[str]:
        """The views of this worker that apply record ``offset`` of the
        partition: a view whose epoch starts past it does not
        (:mod:`pipeline.snapshot.epoch`)."""
        part = (topic, partition)
        return sorted(
            v
            for v in self.cfg.view_topics().get(topic, ())
            if v in self.views and self.views[v].starts.get(part, 0) <= offset
        )

    def _take_marks(self, whys: Mapping[str, str], load: str, stop: str) -> None:
        """Take the marks of ``whys``' views away in every store, naming
        ``readside snapshot VIEW LOAD``; a rebuild's catch-up, which keeps
        no marks, stops with ``stop`` and the same load instead."""
        if not whys:
            return
        if self.loads is None:
            raise FatalError(
                f"{stop}: readside snapshot {' / '.join(sorted(whys))} {load}"
            )
        self.handler.through_outages(
            "taking the load marks away", partial(self.loads.gap, whys, load)
        )

    def _commit(self, msgs: list[Any], batch: Batch) -> None:
        offsets = self.parts.offsets(
            msgs, batch.commit_lsns, self.processor.redeliveries
        )
        nexts = {(tp.topic, tp.partition): tp.offset for tp in offsets}
        try:
            self.consumer.commit(offsets=offsets, asynchronous=False)
        except KafkaException as exc:
            # Partitions moved to another worker; it re-reads from the last commit.
            logger.warning("commit failed (rebalance?) error=%s", exc)
            return
        metrics.BATCHES.inc()
        if not self.side_effects:
            return
        now = int(time.time() * 1000)
        cps = []
        for (view, topic, part), ev in batch.last.items():
            for sink in self.views[view].cfg.sinks:
                if sink not in self.sinks:
                    continue
                cps.append(
                    Checkpoint(
                        view,
                        sink,
                        topic,
                        part,
                        nexts[(topic, part)],
                        ev.lsn,
                        ev.commit_ts_ms,
                        now,
                        self.views[view].epoch,
                    )
                )
                if ev.commit_ts_ms:
                    metrics.TIME_LAG.seen(view, sink, ev.commit_ts_ms)
                if ev.lsn:
                    metrics.APPLIED_LSN.labels(view, sink).set(ev.lsn)
        self.checkpoints.write(cps)
        if self.guard is not None:
            self.guard.note_written(self.checkpoints.producer, batch.ops)
        if batch.heartbeats:
            hb = max(batch.heartbeats, key=lambda h: h.lsn or 0)
            self.checkpoints.mark_source(SourceMark(hb.lsn, hb.ts_ms, now))

    # ------------------------------------------------------------ backoff
    def _set_backoff(self, on: bool) -> None:
        self.health.backing_off = on


def _force_exit() -> None:
    logger.error("shutdown timeout: exiting without draining")
    os._exit(1)


def run_worker(
    cfg: Config,
    view_names: Sequence[str] | None = None,
    metrics_port: int | None = None,
    sink_names: Sequence[str] | None = None,
) -> Worker | None:
    """Build and run a worker until SIGTERM/SIGINT; used by ``readside worker``.

    Args:
        view_names: the views it applies (default: all).
        sink_names: the sinks it writes them to (default: all of theirs);
            views with none of them are left out.
    """
    # A stop asked while the worker is being built (its start-up checks talk
    # to Kafka and PostgreSQL) is kept and honoured once it exists: the
    # default action would end the process with no word (exit -15).
    early: list[int] = []
    signal.signal(signal.SIGTERM, lambda signum, _f: early.append(signum))
    signal.signal(signal.SIGINT, lambda signum, _f: early.append(signum))
    names = startup.served_views(cfg, view_names, sink_names)
    guard = layoutguard.Guard(cfg, names, sink_names)
    known = _start_guard(cfg, guard, early)  # refuses a view to rebuild first
    if known is None:
        logger.info("signal=%d before the start: leaving", early[0])
        return None
    views = build_views(cfg, known.epochs(), names, known.starts())
    scope = groups.Scope.of(cfg, views, sink_names)
    worker = Worker(cfg, views, build_sinks(cfg, sorted(scope.sinks)), guard=guard)

    def on_signal(signum: int, _frame: object) -> None:
        # A second signal, or worker.shutdown_timeout_s without the loop having
        # left, ends the process at once; nothing uncommitted is lost, it is
        # read again by the next owner of the partitions.
        if worker.stopping:
            os._exit(128 + signum)
        logger.info("signal=%d: draining the batch in hand, then leaving", signum)
        worker.stop()
        timer = threading.Timer(cfg.worker.shutdown_timeout_s, _force_exit)
        timer.daemon = True
        timer.start()

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    # `kill -USR1 <pid>` prints every thread's stack to stderr: where a stuck
    # worker waits, without stopping it.
    faulthandler.register(signal.SIGUSR1, all_threads=True)
    if early:
        logger.info("signal=%d before the start: leaving", early[0])
        worker.stop()
    port = cfg.worker.metrics_port if metrics_port is None else metrics_port
    if port:
        metrics.serve(worker.health, port, cfg.worker.metrics_host)
        logger.info("metrics and health on http://127.0.0.1:%d/metrics", port)
    startup.tune_gc()
    worker.run()
    if worker.in_flight is not None and not worker.in_flight.done():
        # Left the group, committed nothing of the batch in flight: exit now
        # rather than wait for a slow store (its late write is harmless under
        # the version rule; the next owner of the partitions redoes the batch).
        logger.warning("exiting with a store write in flight (its batch is redone)")
        logging.shutdown()
        os._exit(0)
    return worker
