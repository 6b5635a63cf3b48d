"""Writes one batch to every sink that needs it, backing off on transient errors.

While a store is down the writer keeps the consumer in its group (it polls
with every partition paused) and commits nothing. If the partitions of the
batch are taken away meanwhile, or a stop is requested, the batch is
abandoned: nothing of it is committed and the records are read again by
whoever owns them next. The version rule makes the partial writes harmless.
"""

from __future__ import annotations

import logging
import os
import random
import time
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from concurrent.futures import wait as all_done
from dataclasses import dataclass, field
from functools import partial
from typing import Protocol, TypeVar

from confluent_kafka import KafkaError, KafkaException

from connectors.base import Sink, WriteResult
from pipeline import metrics
from pipeline.config import WorkerConfig
from pipeline.errors import Stopped, TransientError
from pipeline.events import DocumentOp

logger = logging.getLogger(__name__)

#: Fault injection for liveness tests: ``NAME:MS`` makes every write to sink
#: NAME take MS milliseconds longer (a slow store; the write still happens).
_SLOW_SINK, _, _SLOW_MS = os.environ.get("READSIDE_FAULT_SLOW_SINK", "").partition(":")


T = TypeVar("T")


class Runner(Protocol):
    """Runs a piece of blocking work (a sink write, a source read) and returns
    its result: directly, or on a helper thread while the consumer stays
    alive."""

    def __call__(self, work: Callable[[], T], /) -> T: ...


def direct(work: Callable[[], T]) -> T:
    return work()


class Abandoned(Exception):
    """The batch was given up (revoked partitions or a stop request)."""


@dataclass
class Backoff:
    initial_ms: int = 200
    max_ms: int = 10_000
    attempt: int = 0
    rng: random.Random = field(default_factory=random.Random)

    def next_delay(self) -> float:
        """Full-jitter exponential backoff, in seconds."""
        cap = min(self.max_ms, self.initial_ms * (2 ** min(self.attempt, 16)))
        self.attempt += 1
        return self.rng.uniform(cap / 2, cap) / 1000.0

    def reset(self) -> None:
        self.attempt = 0

    @classmethod
    def of(cls, settings: WorkerConfig) -> Backoff:
        """The backoff the worker settings ask for (``worker.backoff_*``)."""
        return cls(settings.backoff_initial_ms, settings.backoff_max_ms)


#: Kafka errors that waiting does not cure: the client is refused or misused.
_KAFKA_REFUSALS = frozenset(
    {
        KafkaError.TOPIC_AUTHORIZATION_FAILED,
        KafkaError.GROUP_AUTHORIZATION_FAILED,
        KafkaError.CLUSTER_AUTHORIZATION_FAILED,
        KafkaError.SASL_AUTHENTICATION_FAILED,
        KafkaError._AUTHENTICATION,
        KafkaError._SSL,
        KafkaError._INVALID_ARG,
    }
)


def kafka_outage(exc: KafkaException) -> bool:
    """Whether a Kafka client error is one that passes once the brokers are
    back (no leader, not the coordinator yet, unknown partition, transport),
    rather than a refusal (authorization, authentication, a bad argument) or
    a fatal client error."""
    err = exc.args[0] if exc.args else None
    if not isinstance(err, KafkaError):
        return True
    return not err.fatal() and err.code() not in _KAFKA_REFUSALS


def until_reachable(
    work: Callable[[], T],
    what: str,
    backoff: Backoff,
    stopping: Callable[[], bool],
) -> T:
    """``work()``, retried with backoff while it raises :class:`TransientError`
    or a Kafka client error of an outage (:func:`kafka_outage`; a broker just
    restarted answers "not coordinator" or "not leader" for a while): how the
    worker and every command meet an outage at their start.

    Raises:
        Stopped: ``stopping()`` turned true while waiting.
    """
    while True:
        try:
            return work()
        except (TransientError, KafkaException) as exc:
            if isinstance(exc, KafkaException) and not kafka_outage(exc):
                raise
            delay = backoff.next_delay()
            logger.warning("%s failed retry_in_s=%.2f error=%s", what, delay, exc)
            deadline = time.monotonic() + delay
            while not stopping() and time.monotonic() < deadline:
                time.sleep(0.1)
            if stopping():
                raise Stopped(f"stopped while {what} failed: {exc}") from exc


def open_sinks(
    sinks: Mapping[str, Sink], backoff: Backoff, stopping: Callable[[], bool]
) -> None:
    """Open every sink, waiting for the stores that are down (see
    :func:`until_reachable`)."""
    for name, sink in sinks.items():
        until_reachable(sink.open, f"opening sink {name}", backoff, stopping)


@dataclass
class Rejection:
    op: DocumentOp
    sink: str
    reason: str


class SinkWriter:
    """Applies per-sink op lists until every sink acknowledged."""

    def __init__(
        self,
        sinks: Mapping[str, Sink],
        backoff: Backoff,
        wait: Callable[[float], None],
        should_abandon: Callable[[], bool],
        on_backoff: Callable[[bool], None] = lambda _b: None,
        run: Runner = direct,
    ) -> None:
        self.sinks = sinks
        self.backoff = backoff
        self.wait = wait  # sleeps while keeping the consumer alive
        self.should_abandon = should_abandon
        self.on_backoff = on_backoff
        #: runs each attempt; the worker's runs it on a helper thread while
        #: the consumer keeps polling, so a slow store never costs the worker
        #: its place in the group (see :class:`pipeline.batch.Pacer`)
        self.run = run
        self._pool: ThreadPoolExecutor | None = None

    def write(self, per_sink: Mapping[str, Sequence[DocumentOp]]) -> list[Rejection]:
        """Write until every sink acknowledged (see :meth:`retry`)."""
        rejections, pending = self.run(partial(self.attempt, per_sink))
        return rejections + self.retry(pending)

    def attempt(
        self, per_sink: Mapping[str, Sequence[DocumentOp]]
    ) -> tuple[list[Rejection], dict[str, Sequence[DocumentOp]]]:
        """One try at every sink, without waiting or touching the consumer.

        The sinks are written at the same time, one thread each: a batch for
        three stores takes as long as the slowest of them, not the sum (each
        store works on its own bulk request meanwhile), and a stop waits for
        one write's time. Safe to run on another thread. Returns the
        rejections of the sinks that acknowledged, and the ops of those that
        failed transiently.

        Raises:
            Exception: what a sink raised that is not transient, once every
                other sink's write has ended.
        """
        todo = {name: ops for name, ops in per_sink.items() if ops}
        if len(todo) == 1:
            results = {name: self._write_one(name, ops) for name, ops in todo.items()}
        else:
            results = self._write_all(todo)
        rejections: list[Rejection] = []
        failed: dict[str, Sequence[DocumentOp]] = {}
        for name, result in results.items():
            if result is None:
                failed[name] = todo[name]
                continue
            rejections.extend(Rejection(op, name, why) for op, why in result.rejected)
        return rejections, failed

    def _write_all(
        self, todo: Mapping[str, Sequence[DocumentOp]]
    ) -> dict[str, WriteResult | None]:
        """Each sink's write on a thread of its own, all waited for."""
        if self._pool is None:
            self._pool = ThreadPoolExecutor(
                max_workers=len(self.sinks), thread_name_prefix="sink-write"
            )
        futures = {
            name: self._pool.submit(self._write_one, name, ops)
            for name, ops in todo.items()
        }
        all_done(futures.values())
        for future in futures.values():
            if (exc := future.exception()) is not None:
                raise exc
        return {name: future.result() for name, future in futures.items()}

    def retry(self, pending: Mapping[str, Sequence[DocumentOp]]) -> list[Rejection]:
        """Back off and retry the failed sinks until all acknowledged.

        Raises:
            Abandoned: ``should_abandon`` turned true while backing off.
        """
        rejections: list[Rejection] = []
        self.backoff.reset()
        try:
            while pending:
                self.on_backoff(True)
                delay = self.backoff.next_delay()
                logger.warning(
                    "sinks unavailable sinks=%s retry_in_s=%.2f attempt=%d",
                    ",".join(sorted(pending)),
                    delay,
                    self.backoff.attempt,
                )
                self.wait(delay)
                if self.should_abandon():
                    raise Abandoned("batch abandoned while backing off")
                more, pending = self.run(partial(self.attempt, pending))
                rejections.extend(more)
        finally:
            self.on_backoff(False)
        return rejections

    def _write_one(self, name: str, ops: Sequence[DocumentOp]) -> WriteResult | None:
        sink = self.sinks[name]
        start = time.perf_counter()
        if name == _SLOW_SINK:
            time.sleep(int(_SLOW_MS) / 1000)
        try:
            result = sink.write(ops)
        except TransientError as exc:
            metrics.RETRIES.labels(name).inc()
            logger.warning(
                "transient sink error sink=%s ops=%d error=%s", name, len(ops), exc
            )
            return None
        metrics.WRITE_SECONDS.labels(name).observe(time.perf_counter() - start)
        metrics.OPS.labels(name, "applied").inc(result.applied)
        metrics.OPS.labels(name, "stale").inc(result.stale)
        metrics.OPS.labels(name, "rejected").inc(len(result.rejected))
        return result
