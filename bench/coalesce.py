"""The coalescing factor: source statements per 1,000 changes while streaming.

A worker (:class:`pipeline.worker.Worker`, in process) maintains the aggregate
view ``customers`` into Redis while a writer commits ``changes`` single-row
UPDATEs spread over the child tables (half ``orders``, half ``order_lines``,
uniformly random rows of the first ``roots`` roots: all of them, or a hot
set). The worker's consumer group starts at the topics' ends, and the writer
starts once the worker holds its partitions, so the worker sees the changes
as they stream. A counting :class:`Reader` counts the
statements the worker sends to PostgreSQL:

* re-read statements (``rows_by_keys``: one per view per batch, or more when
  a batch names over 5,000 roots) — the figure of the issue;
* resolve statements (an ``order_lines`` change names an order, which names
  the root only by SQL): one cursor per re-read (its ``DECLARE``), whatever
  the number of linked tables;
* snapshot statements (``begin``: the version and visibility check).

Each live run is followed by a catch-up run over the very same changes: a
fresh group starts where the live run started, after the writer is done, so
the worker finds a backlog and its batches fill up to ``batch_size`` (a
worker that was down, or behind). Live batches hold what arrived while the
last batch was applied, plus what arrives within ``batch_timeout_ms``.
"""

from __future__ import annotations

import logging
import random
import threading
import time
from collections.abc import Sequence
from typing import Any

import psycopg
from confluent_kafka import TopicPartition

from pipeline import kafkaclient
from pipeline import worker as worker_mod
from pipeline.aggregate import AggregateView
from pipeline.aggregate.reader import Reader
from pipeline.config import Config
from pipeline.views import build_views

logger = logging.getLogger(__name__)


class CountingReader(Reader):
    """A :class:`Reader` that counts its statements by purpose."""

    counts: dict[str, int]

    def __init__(self, dsn: str, visibility_timeout_s: float = 30.0) -> None:
        super().__init__(dsn, visibility_timeout_s)
        self.counts = {"reread": 0, "resolve": 0, "snapshot": 0, "roots": 0}
        self._in_rows = False

    def begin(self, txids: Any = (), tables: Any = ()) -> Any:
        self.counts["snapshot"] += 1
        return super().begin(txids, tables)

    def rows_by_keys(self, view_sql: Any, keys: Sequence[tuple[str, ...]]) -> Any:
        self.counts["roots"] += len(keys)
        self._in_rows = True
        try:
            return super().rows_by_keys(view_sql, keys)
        finally:
            self._in_rows = False

    def declare(self, statement: Any, params: dict[str, Any]) -> Any:
        # Roots reached by SQL: one cursor per re-read (its FETCHes uncounted).
        self.counts["resolve"] += 1
        return super().declare(statement, params)

    def query(
        self, statement: Any, params: dict[str, Any], documents: bool = False
    ) -> list[Any]:
        self.counts["reread" if self._in_rows else "resolve"] += 1
        return super().query(statement, params, documents)


class _CountingConsumer:
    """The worker's consumer: counts change events, starts the writer, stops."""

    def __init__(self, conf: dict[str, Any], run: StreamRun) -> None:
        self._inner = kafkaclient.new_consumer(conf)  # the worker's merged conf
        self.run = run

    def consume(self, num_messages: int, timeout: float) -> list[Any]:
        run = self.run
        if not run.started and (run.worker.health.assigned or not run.live):
            run.started = time.perf_counter()  # catch-up: from the first poll
            if run.live:
                run.writer.start()
        if run.seen >= run.changes or time.monotonic() > run.deadline:
            run.worker.stop()
            return []
        msgs = list(self._inner.consume(num_messages, timeout))
        data = [m for m in msgs if m.error() is None and m.topic() in run.topics]
        run.seen += len(data)
        return msgs

    def __getattr__(self, name: str) -> Any:
        return getattr(self._inner, name)


class StreamRun:
    """One worker run with one batch size while the writer applies changes."""

    def __init__(
        self,
        cfg: Config,
        dsn: str,
        changes: int,
        roots: int,
        timeout_s: float,
        start_at: list[TopicPartition] | None = None,
    ) -> None:
        self.cfg, self.dsn, self.changes, self.roots = cfg, dsn, changes, roots
        self.live = start_at is None
        self.start_at = start_at
        self.topics = set(cfg.view_topics())
        self.seen = 0
        self.started = 0.0
        self.batch_sizes: list[int] = []
        self.deadline = time.monotonic() + timeout_s
        self.write_error: BaseException | None = None
        self.writer = threading.Thread(target=self._write, daemon=True)
        views = build_views(cfg)
        self.view = views["customers"]
        self.worker = worker_mod.Worker(
            cfg, views, worker_mod.build_sinks(cfg, ["redis"])
        )
        # A batch may take several polls (pipeline.partitions.next_batch):
        # its size is what was seen since the last batch was handled.
        self._seen_at_batch = 0
        self.worker.on_batch = self._batch_done

    def _batch_done(self, _records: int) -> None:
        if self.seen > self._seen_at_batch:
            self.batch_sizes.append(self.seen - self._seen_at_batch)
        self._seen_at_batch = self.seen

    def _write(self) -> None:
        rng = random.Random(7)
        n_orders = self.roots * 5
        try:
            with psycopg.connect(self.dsn, autocommit=True) as conn:
                for i in range(self.changes):
                    row = rng.randint(1, n_orders)
                    if i % 2:
                        conn.execute(
                            "UPDATE order_lines SET qty = qty + 1 WHERE id = %s", (row,)
                        )
                    else:
                        conn.execute(
                            "UPDATE orders SET placed = placed + 1 WHERE id = %s",
                            (row,),
                        )
        except Exception as exc:  # noqa: BLE001 - reported by measure()
            self.write_error = exc
        self.write_s = time.perf_counter() - self.started

    def _start_at(self) -> None:
        """Commit the start for the (fresh) group: the topics' ends when live."""
        c = kafkaclient.consumer(
            self.cfg.kafka,
            {"group.id": self.cfg.kafka.group_id, "enable.auto.commit": False},
        )
        try:
            parts = self.start_at or [
                TopicPartition(t, p, c.get_watermark_offsets(TopicPartition(t, p))[1])
                for t in sorted(self.topics)
                for p in range(self.cfg.kafka.partitions)
            ]
            c.commit(offsets=parts, asynchronous=False)
            self.start_at = parts
        finally:
            c.close()

    def measure(self) -> dict[str, Any]:
        self._start_at()
        counting: dict[str, CountingReader] = {}

        def make_reader(dsn: str) -> CountingReader:
            counting["r"] = CountingReader(dsn)
            return counting["r"]

        self.worker.consumer_factory = lambda conf: _CountingConsumer(conf, self)
        original = worker_mod.Reader  # type: ignore[attr-defined]  # patched below
        setattr(worker_mod, "Reader", make_reader)  # noqa: B010 - a test seam
        try:
            self.worker.run()
        finally:
            setattr(worker_mod, "Reader", original)  # noqa: B010
            self.worker.sinks["redis"].open()
            getattr(self.worker.sinks["redis"], "drop", lambda _v: None)("customers")
            self.worker.sinks["redis"].close()
        if self.live:
            self.writer.join(60)
        if self.write_error is not None:
            raise RuntimeError(f"writer failed: {self.write_error!r}")
        elapsed = time.perf_counter() - self.started
        counts = counting["r"].counts
        assert isinstance(self.view, AggregateView)
        per_k = 1000 / max(1, self.seen)
        return {
            "mode": "live" if self.live else "catch-up",
            "batch_size": self.cfg.worker.batch_size,
            "roots_touched": self.roots,
            "changes": self.seen,
            "complete": self.seen >= self.changes,
            "batches": len(self.batch_sizes),
            "events_per_batch": self.seen / max(1, len(self.batch_sizes)),
            "reread_calls": self.view.reads,
            "reread_statements": counts["reread"],
            "resolve_statements": counts["resolve"],
            "snapshot_statements": counts["snapshot"],
            "roots_reread": counts["roots"],
            "rereads_per_1k": counts["reread"] * per_k,
            "resolves_per_1k": counts["resolve"] * per_k,
            "statements_per_1k": (counts["reread"] + counts["resolve"]) * per_k,
            "roots_per_1k": counts["roots"] * per_k,
            "writer_s": getattr(self, "write_s", None),
            "elapsed_s": elapsed,
            "changes_per_s": self.seen / elapsed if elapsed > 0 else 0.0,
        }


def _with(cfg: Config, batch_size: int, group: str) -> Config:
    return cfg.model_copy(
        update={
            "worker": cfg.worker.model_copy(update={"batch_size": batch_size}),
            "kafka": cfg.kafka.model_copy(
                update={"group_id": f"{cfg.kafka.group_id}-{group}"}
            ),
        }
    )


def measure(
    cfg: Config, dsn: str, batch_size: int, changes: int, roots: int, timeout_s: float
) -> list[dict[str, Any]]:
    """A live run with ``batch_size``, then a catch-up run over its changes."""
    logger.info("streaming run batch_size=%d changes=%d", batch_size, changes)
    live = StreamRun(
        _with(cfg, batch_size, f"live{batch_size}"), dsn, changes, roots, timeout_s
    )
    first = live.measure()
    logger.info("catch-up run batch_size=%d changes=%d", batch_size, changes)
    again = StreamRun(
        _with(cfg, batch_size, f"catchup{batch_size}"),
        dsn,
        changes,
        roots,
        timeout_s,
        start_at=live.start_at,
    )
    return [first, again.measure()]
