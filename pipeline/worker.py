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
"""

from __future__ import annotations

import faulthandler
import logging
import os
import signal
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from concurrent.futures import TimeoutError as FutureTimeout
from dataclasses import dataclass, field
from functools import partial
from typing import Any, TypeVar

from confluent_kafka import (
    Consumer,
    KafkaError,
    KafkaException,
    Producer,
    TopicPartition,
)
from confluent_kafka.admin import AdminClient

from connectors.base import Sink
from connectors.registry import build_sinks as build_sinks  # used by operations
from pipeline import dlq, dlqtopic, groups, layout, layoutguard, metrics
from pipeline.aggregate import prepare_views
from pipeline.aggregate.reader import Reader
from pipeline.batch import BatchHandler, Pacer
from pipeline.checkpoints import Checkpoint, CheckpointWriter, SourceMark, ensure_topics
from pipeline.config import Config
from pipeline.errors import ConfigError, FatalError, Stopped
from pipeline.processor import Batch, Processor
from pipeline.redelivery import KafkaPartitionLog, Redeliveries
from pipeline.sinkwriter import Abandoned, Backoff, open_sinks, until_reachable
from pipeline.source.converter import converter_for
from pipeline.views import View, build_views

logger = logging.getLogger(__name__)

T = TypeVar("T")

#: How long a sink write or source read may run before the worker starts
#: polling (partitions paused) while it waits for it.
_KEEPALIVE_AFTER_S = 1.0

#: Fault injection for crash tests: exit abruptly (as kill -9 would) after the
#: sinks acknowledged batch N and before its offsets are committed.
_CRASH_BEFORE_COMMIT = int(os.environ.get("READSIDE_FAULT_CRASH_BEFORE_COMMIT", "0"))


def consumer_config(cfg: Config, scope: groups.Scope | None = None) -> dict[str, Any]:
    """The worker's consumer settings; its group is that of its scope, the
    views and sinks it serves (:mod:`pipeline.groups`; default: all)."""
    scope = scope or groups.Scope.of(cfg)
    conf: dict[str, Any] = {
        "bootstrap.servers": cfg.kafka.bootstrap_servers,
        "group.id": groups.worker_group(cfg, scope),
        "client.id": groups.client_id(scope),
        "enable.auto.commit": False,
        "enable.auto.offset.store": False,
        "auto.offset.reset": "earliest",
        # Eager rebalancing on purpose: librdkafka's cooperative protocol can
        # stall a member's fetchers after a manual commit fails mid-rebalance
        # (seen here as ILLEGAL_GENERATION, then partitions never consumed).
        # Eager revokes everything, and the abandon/rewind path handles that.
        "partition.assignment.strategy": "roundrobin",
        "session.timeout.ms": 10_000,
        "heartbeat.interval.ms": 2_000,
        "max.poll.interval.ms": cfg.worker.max_poll_interval_ms,
        "fetch.wait.max.ms": 100,
        "logger": logging.getLogger("librdkafka"),
    }
    conf.update(cfg.kafka.extra)
    return conf


@dataclass
class Worker:
    """One worker process of a pipeline."""

    cfg: Config
    views: Mapping[str, View]
    sinks: Mapping[str, Sink]
    consumer_factory: Callable[[dict[str, Any]], Any] = Consumer
    producer_factory: Callable[[dict[str, Any]], Any] = Producer
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
    stopping: bool = False
    batches: int = 0
    #: events skipped because their row is gone from the source
    #: (:mod:`pipeline.toast`); a rebuild's catch-up goes on to their deletes
    rows_gone: int = 0
    _revoked: set[tuple[str, int]] = field(default_factory=set)
    _mixed: list[str] = field(default_factory=list)
    _helper: ThreadPoolExecutor = field(
        default_factory=lambda: ThreadPoolExecutor(1, "readside-io")
    )
    _checked: bool = False
    #: a sink write or source read still running when a stop gave its batch
    #: up (the process may exit without waiting for it)
    in_flight: Future[Any] | None = None
    _assigned: set[tuple[str, int]] = field(default_factory=set)
    #: partitions assigned since the loop last set their pause state
    _fresh: list[TopicPartition] = field(default_factory=list)
    #: inside :meth:`_wait_paused`: every assigned partition stays paused
    _waiting: bool = False

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
        admin = AdminClient({"bootstrap.servers": cfg.kafka.bootstrap_servers})
        heartbeat_topic = cfg.source.topic(cfg.source.heartbeat_table)
        lookup = cfg.source.lookup_dsn or cfg.source.dsn
        backoff = Backoff.of(cfg.worker)
        try:  # Kafka, the source or a store may be restarting: wait for them
            dlq_bytes = until_reachable(
                partial(self._prepare_topics, admin, heartbeat_topic),
                "preparing the checkpoint and dead-letter topics",
                backoff,
                lambda: self.stopping,
            )
            until_reachable(
                partial(prepare_views, self.views, lookup.get_secret_value()),
                "reading the aggregate views' tables",
                backoff,
                lambda: self.stopping,
            )
            open_sinks(self.sinks, backoff, lambda: self.stopping)
        except Stopped as exc:
            logger.info("worker stopping before it could start: %s", exc)
            for sink in self.sinks.values():
                sink.close()
            return
        self.health.sinks_open = True
        producer = self.producer_factory(
            {
                "bootstrap.servers": cfg.kafka.bootstrap_servers,
                "enable.idempotence": True,
                "linger.ms": 20,
                "logger": logging.getLogger("librdkafka"),
                **dlqtopic.producer_settings(dlq_bytes),
            }
        )
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
        self.handler = BatchHandler(
            self.views,
            self.sinks,
            self.processor,
            self.reader,
            cfg.worker,
            Pacer(
                self._wait_paused,
                self._should_abandon,
                self._set_backoff,
                self._run_alive,
            ),
        )
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
            while not self.stopping and not self._reached_until():
                self.health.turn()
                msgs = consumer.consume(
                    cfg.worker.batch_size, cfg.worker.batch_timeout_ms / 1000.0
                )
                self._settle_fresh()
                msgs = [m for m in msgs if self._usable(m)]
                if self.guard is not None and self.guard.due():
                    self.guard.check()  # before applying anything of a new layout
                if msgs:
                    self._handle(msgs)
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
            if self.in_flight is None:  # else the helper thread still uses them
                for sink in self.sinks.values():
                    sink.close()
                self.reader.close()

    def _prepare_topics(self, admin: AdminClient, heartbeat_topic: str) -> int:
        """Create the checkpoint topic and set up the dead-letter topic; the
        largest dead letter the latter takes, in bytes."""
        kafka = self.cfg.kafka
        ensure_topics(
            admin, [(kafka.checkpoint_topic, 1, True)], kafka.replication_factor
        )
        return dlqtopic.prepare_topic(
            admin,
            kafka.dlq_topic,
            [*self.topics(), heartbeat_topic],
            kafka.replication_factor,
        )

    def _reached_until(self) -> bool:
        """Whether every partition of ``until`` was read up to its offset."""
        if self.until is None:
            return False
        starts = {(tp.topic, tp.partition): tp.offset for tp in self.assignment or ()}
        parts = [TopicPartition(t, p) for (t, p) in self.until]
        for tp in self.consumer.position(parts):
            key = (tp.topic, tp.partition)
            # No position yet (nothing fetched): where it was assigned.
            at = tp.offset if tp.offset >= 0 else starts.get(key, -1)
            if at < self.until[key]:
                return False
        return True

    # ------------------------------------------------------------ rebalance
    def _on_assign(self, _c: Any, parts: list[TopicPartition]) -> None:
        if self.assignment is None and not self._checked:
            # Once, at the first assignment: a worker already running keeps
            # running; the newcomer that does not fit refuses.
            self._checked = True
            self._mixed = groups.foreign_members(
                self.cfg.kafka.bootstrap_servers, self.group, self.scope()
            )
            if self._mixed:
                self.stopping = True
                return
        if self.guard is not None:
            self.guard.note_assignment(parts)
        self._assigned |= {(p.topic, p.partition) for p in parts}
        self._fresh.extend(parts)
        self.health.assigned = len(self._assigned)
        logger.info("assigned partitions=%s", _fmt(parts))

    def _on_revoke(self, _c: Any, parts: list[TopicPartition]) -> None:
        gone = {(p.topic, p.partition) for p in parts}
        if self.processor.redeliveries is not None:
            self.processor.redeliveries.forget(gone)
        self._revoked |= gone
        self._assigned -= gone
        self.health.assigned = len(self._assigned)
        logger.info("revoked partitions=%s", _fmt(parts))

    def _on_lost(self, c: Any, parts: list[TopicPartition]) -> None:
        logger.warning(
            "lost partitions=%s (nothing is committed for them)", _fmt(parts)
        )
        self._on_revoke(c, parts)

    def _usable(self, msg: Any) -> bool:
        err = msg.error()
        if err is None:
            return True
        if err.code() == KafkaError._PARTITION_EOF:
            return False
        if err.fatal():
            raise FatalError(f"Kafka consumer: {err.str()}")
        logger.warning("consumer error=%s", err.str())
        return False

    # ------------------------------------------------------------ one batch
    def _handle(self, msgs: list[Any]) -> None:
        self._batch_parts = {(m.topic(), m.partition()) for m in msgs}
        self._revoked.clear()
        self._replay_from: dict[tuple[str, int], int] = {}
        try:
            applied = self.handler.apply(msgs)
        except Abandoned:
            self._rewind(msgs)
            return
        dead = applied.dead
        self.rows_gone += applied.batch.gone
        if _CRASH_BEFORE_COMMIT and self.batches + 1 >= _CRASH_BEFORE_COMMIT:
            logger.error("fault injection: exiting after sink writes, before commit")
            os._exit(137)
        if not self.side_effects:
            rejected = [d for d in dead if d.error_class == "Rejected"]
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
            dead = rejected
        try:
            self.handler.deliver(self.dlq, dead)
        except Abandoned:
            self._rewind(msgs)
            return
        self._commit(msgs, applied.batch)

    def _commit(self, msgs: list[Any], batch: Batch) -> None:
        nexts: dict[tuple[str, int], int] = {}
        for m in msgs:
            key = (m.topic(), m.partition())
            nexts[key] = max(nexts.get(key, 0), m.offset() + 1)
        marks = self.processor.redeliveries
        offsets = [
            TopicPartition(t, p, o, metadata=marks.metadata((t, p)) if marks else "")
            for (t, p), o in nexts.items()
        ]
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
                    metrics.LAG_MS.labels(view, sink).set(now - ev.commit_ts_ms)
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

    def _run_alive(self, work: Callable[[], T]) -> T:
        """Run ``work`` on the helper thread; if it takes more than a moment,
        poll with every partition paused until it is done, so the group keeps
        this worker however slow a store is. A revocation waits for it; a
        stop does not: the batch is given up (nothing of it is committed)
        and the work is left in flight (:attr:`in_flight`).

        Raises:
            Abandoned: a stop was asked while the work ran.
        """
        future = self._helper.submit(work)
        try:
            return future.result(timeout=_KEEPALIVE_AFTER_S)
        except FutureTimeout:
            pass
        self._wait_paused(float("inf"), until=lambda: future.done() or self.stopping)
        if not future.done():
            self.in_flight = future
            raise Abandoned("stop asked while a store was slow")
        return future.result()

    def _wait_paused(
        self, seconds: float, until: Callable[[], bool] | None = None
    ) -> None:
        """Sleep with every partition paused, polling so the group keeps us:
        for ``seconds`` or a stop request, or else until ``until()``."""
        assignment = self.consumer.assignment()
        self.consumer.pause(assignment)
        self._waiting = True
        try:
            deadline = time.monotonic() + seconds
            while not (until() if until else self.stopping):
                if time.monotonic() >= deadline:
                    break
                self.health.turn()
                msg = self.consumer.poll(
                    min(0.2, max(0.0, deadline - time.monotonic()))
                )
                self._settle_fresh()
                if msg is not None and msg.error() is None:
                    key = (msg.topic(), msg.partition())
                    self._replay_from.setdefault(key, msg.offset())
        finally:
            self._waiting = False
            self._fresh.clear()
            self.consumer.resume(self.consumer.assignment())
        for (topic, part), offset in self._replay_from.items():
            if (topic, part) in self._assigned:
                self.consumer.seek(TopicPartition(topic, part, offset))
        self._replay_from.clear()

    def _settle_fresh(self) -> None:
        """Give the partitions assigned by the last poll the loop's pause
        state: paused inside :meth:`_wait_paused`, else resumed.

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

    def _should_abandon(self) -> bool:
        return self.stopping or bool(self._batch_parts & self._revoked)

    def _rewind(self, msgs: list[Any]) -> None:
        """Seek still-owned partitions back to the start of the abandoned batch."""
        first: dict[tuple[str, int], int] = {}
        for m in msgs:
            key = (m.topic(), m.partition())
            first[key] = min(first.get(key, m.offset()), m.offset())
        for (topic, part), offset in first.items():
            if (topic, part) in self._assigned and not self.stopping:
                self.consumer.seek(TopicPartition(topic, part, offset))
        logger.warning(
            "batch abandoned records=%d partitions=%d", len(msgs), len(first)
        )


def _force_exit() -> None:
    logger.error("shutdown timeout: exiting without draining")
    os._exit(1)


def _fmt(parts: list[TopicPartition]) -> str:
    return ",".join(f"{p.topic}[{p.partition}]" for p in parts)


def _start_guard(
    cfg: Config, guard: layoutguard.Guard, early: list[int]
) -> layout.Recorded | None:
    """``guard.start()``, retried with backoff while Kafka or the source is
    not readable yet (a broker just restarted has no partition leaders for a
    few seconds); ``None`` once a stop was asked meanwhile."""
    try:
        return until_reachable(
            guard.start,
            "start-up checks",
            Backoff.of(cfg.worker),
            lambda: bool(early),
        )
    except Stopped:
        return None


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
    names = list(build_views(cfg, only=view_names))  # checks the names
    if sink_names is not None:
        unknown = set(sink_names) - set(cfg.sinks)
        if unknown:
            raise ConfigError(f"--sinks: unknown sink(s) {', '.join(sorted(unknown))}")
        defined = cfg.effective_views()
        names = [n for n in names if set(defined[n].sinks) & set(sink_names)]
        if not names:
            raise ConfigError("--sinks: no view of this worker writes to them")
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
    worker.run()
    if worker.in_flight is not None and not worker.in_flight.done():
        # Left the group, committed nothing of the batch in flight: exit now
        # rather than wait for a slow store (its late write is harmless under
        # the version rule; the next owner of the partitions redoes the batch).
        logger.warning("exiting with a store write in flight (its batch is redone)")
        logging.shutdown()
        os._exit(0)
    return worker
