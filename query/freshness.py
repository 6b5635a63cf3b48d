"""Freshness of each view in each sink, tailed from the checkpoint topic.

The worker writes one checkpoint per view, sink and partition to a compacted
topic after every applied batch. :class:`FreshnessCache` keeps one consumer
assigned to that topic and, at most once per ``ttl_s``, reads only what was
appended since its last look, so the topic is read in full once, not on every
call. Reads in between are answered from memory.
"""

from __future__ import annotations

import json
import logging
import threading
import time
from collections.abc import Callable
from typing import Any

from confluent_kafka import Consumer, TopicPartition

from pipeline import kafkaclient
from pipeline.checkpoints import (
    DEFINITION_PREFIX,
    UNLOADED_PREFIX,
    Checkpoint,
    SourceMark,
)
from pipeline.sourceconfig import KafkaConfig
from query.answer import Freshness
from query.failures import FailureRun

logger = logging.getLogger(__name__)

_SOURCE_KEY = b"__source__"
_UNLOADED_PREFIX = UNLOADED_PREFIX.encode()
_DEFINITION_PREFIX = DEFINITION_PREFIX.encode()


_NONE: frozenset[str] = frozenset()


class FreshnessCache:
    """Newest checkpoints per (view, sink, topic, partition), refreshed lazily.

    Args:
        kafka: the Kafka settings (``kafka`` section) of the checkpoint topic.
        topic: the checkpoint topic.
        ttl_s: how long figures are served from memory before the next look.
        timeout_s: the most one look may take (a slow Kafka makes answers
            carry slightly older figures, never fails a read).
        clock: wall-clock milliseconds (tests may pin it).
    """

    def __init__(
        self,
        kafka: KafkaConfig,
        topic: str,
        ttl_s: float = 1.0,
        timeout_s: float = 2.0,
        clock: Callable[[], int] = lambda: int(time.time() * 1000),
    ) -> None:
        self.topic = topic
        self.ttl_s = ttl_s
        self.timeout_s = timeout_s
        self._clock = clock
        self._kafka = kafka
        self._consumer: Consumer | None = None
        self._assigned: set[int] = set()
        self._checkpoints: dict[str, Checkpoint] = {}
        self._figures: dict[tuple[str, str], tuple[int | None, int | None]] = {}
        self._mark: SourceMark | None = None
        #: (view, sink) -> since when (ms) not whole, and the load it names
        self._unloaded: dict[tuple[str, str], tuple[int, str | None]] = {}
        #: view -> the sinks not holding it whole (read without the lock on
        #: every read by id: replaced whole, never changed in place)
        self._unloaded_sinks: dict[str, frozenset[str]] = {}
        #: (view, sink) -> the definition its documents were written whole by
        self._definitions: dict[tuple[str, str], dict[str, str]] = {}
        self._next_look = 0.0
        self._lock = threading.Lock()
        self._failures = FailureRun(
            logger,
            f"checkpoint refresh topic={topic}",
            "answers carry the last figures read",
        )

    def freshness(self, view: str, sink: str) -> Freshness:
        """Applied LSN (min over partitions) and time lag of ``view`` in ``sink``.

        Partitions without any checkpoint have never carried an event for
        the view and do not count. Never raises: Kafka trouble is logged and
        the last known figures are returned.
        """
        with self._lock:
            if time.monotonic() >= self._next_look:
                self._refresh()
                self._next_look = time.monotonic() + self.ttl_s
            figures = self._figures.get((view, sink))
            if figures is None:
                figures = self._figures[(view, sink)] = self._figures_of(view, sink)
        applied, newest = figures
        lag = None if newest is None else max(0, self._clock() - newest)
        return Freshness(applied, lag)

    def cached(self, view: str, sink: str) -> Freshness | None:
        """:meth:`freshness` from memory, when that needs no look at Kafka
        and no lock: ``None`` when a look is due or the figures of ``view``
        in ``sink`` are not worked out yet (then :meth:`freshness` answers,
        off the event loop). For a caller on an event loop."""
        if time.monotonic() >= self._next_look:
            return None
        figures = self._figures.get((view, sink))
        if figures is None:
            return None
        applied, newest = figures
        lag = None if newest is None else max(0, self._clock() - newest)
        return Freshness(applied, lag)

    def _figures_of(self, view: str, sink: str) -> tuple[int | None, int | None]:
        """The lowest applied LSN and the newest commit time of ``view`` in
        ``sink`` over its checkpoints (kept until a checkpoint changes)."""
        mine = [
            c for c in self._checkpoints.values() if c.view == view and c.sink == sink
        ]
        lsns = [c.lsn for c in mine if c.lsn is not None]
        stamps = [c.commit_ts_ms for c in mine if c.commit_ts_ms is not None]
        return (min(lsns) if lsns else None, max(stamps) if stamps else None)

    def close(self) -> None:
        """Close the consumer. Safe to call twice."""
        with self._lock:
            if self._consumer is not None:
                self._consumer.close()
                self._consumer = None
                self._assigned.clear()

    # -- internals ------------------------------------------------------------

    def _refresh(self) -> None:
        # freshness must never fail a read: a failure leaves the figures read
        self._failures.attempt(self._read_to_end)

    def _read_to_end(self) -> None:
        consumer = self._ensure_consumer()
        ends = self._ends(consumer)
        deadline = time.monotonic() + self.timeout_s
        while ends and time.monotonic() < deadline:
            msg = consumer.poll(0.2)
            if msg is None or msg.error():
                continue
            self._take(msg.key(), msg.value())
            part, offset = msg.partition(), msg.offset()
            if (
                part is not None
                and offset is not None
                and offset + 1 >= ends.get(part, 0)
            ):
                ends.pop(part, None)
        if ends:  # what was read stands; a run of these is logged as one
            raise TimeoutError(
                f"{len(ends)} partition(s) not read to their end within "
                f"{self.timeout_s:g}s"
            )

    def _ensure_consumer(self) -> Consumer:
        if self._consumer is None:
            self._consumer = kafkaclient.consumer(
                self._kafka,
                {
                    "group.id": "readside-query",
                    "enable.auto.commit": False,
                    "enable.partition.eof": False,
                    "fetch.wait.max.ms": 100,
                },
            )
        return self._consumer

    def _ends(self, consumer: Consumer) -> dict[int, int]:
        """High watermarks of the partitions not yet read to their end."""
        topics = consumer.list_topics(self.topic, timeout=self.timeout_s).topics
        md = topics.get(self.topic)
        if md is None or md.error is not None:
            return {}
        # Assigned partitions: the watermarks of the consumer's own (continuous)
        # fetches; asking the broker would queue behind a fetch's long poll.
        marks = {
            p: consumer.get_watermark_offsets(
                TopicPartition(self.topic, p),
                timeout=self.timeout_s,
                cached=p in self._assigned,
            )
            for p in md.partitions
        }
        new = [p for p in marks if p not in self._assigned]
        if new:
            consumer.incremental_assign(
                [TopicPartition(self.topic, p, marks[p][0]) for p in new]
            )
            self._assigned.update(new)
        positions = consumer.position([TopicPartition(self.topic, p) for p in marks])
        ends: dict[int, int] = {}
        for tp in positions:
            low, high = marks[tp.partition]
            start = tp.offset if tp.offset >= 0 else low
            if start < high:
                ends[tp.partition] = high
        return ends

    def source_mark(self) -> SourceMark | None:
        """The newest source mark (heartbeat) the workers recorded, as of the
        last look (no I/O)."""
        with self._lock:
            return self._mark

    def unloaded_since(self, view: str, sink: str) -> int | None:
        """Since when (ms) ``sink`` does not hold ``view`` whole, as its
        workers recorded (:mod:`pipeline.loaded`; no I/O)."""
        with self._lock:
            found = self._unloaded.get((view, sink))
        return None if found is None else found[0]

    def unloaded_sinks(self, view: str) -> frozenset[str]:
        """The sinks of ``view`` its workers found not holding it whole, as of
        the last look (no I/O, no lock: a read by id asks it)."""
        return self._unloaded_sinks.get(view, _NONE)

    def unloaded_load(self, view: str, sink: str) -> str | None:
        """The command that loads ``view`` whole in ``sink`` again, as the
        worker that found it not whole named it (None: whole, or not named;
        no I/O)."""
        with self._lock:
            found = self._unloaded.get((view, sink))
        return None if found is None else found[1]

    def definitions(self) -> dict[tuple[str, str], dict[str, str]]:
        """The definition each view's documents were last written whole by
        in each sink, as recorded (:mod:`pipeline.definitions`; no I/O)."""
        with self._lock:
            return dict(self._definitions)

    def _take(self, key: bytes | None, value: bytes | None) -> None:
        if key is not None and key.startswith(_DEFINITION_PREFIX):
            _, view, sink = key.decode().split("|", 2)
            if value is not None:
                self._definitions[(view, sink)] = json.loads(value)["definition"]
            return
        if key is not None and key.startswith(_UNLOADED_PREFIX):
            _, view, sink = key.decode().split("|", 2)
            if value is None:
                self._unloaded.pop((view, sink), None)
            else:
                said = json.loads(value)
                self._unloaded[(view, sink)] = (int(said["since_ms"]), said.get("load"))
            by_view: dict[str, set[str]] = {}
            for v, s in self._unloaded:
                by_view.setdefault(v, set()).add(s)
            self._unloaded_sinks = {v: frozenset(s) for v, s in by_view.items()}
            return
        if value is None:
            return
        if key == _SOURCE_KEY:
            self._mark = SourceMark(**json.loads(value))
            return
        if key is not None and key.startswith(b"__"):
            return  # a topic layout or view epoch (pipeline.layout)
        data: dict[str, Any] = json.loads(value)
        cp = Checkpoint(**data)
        self._checkpoints[cp.key] = cp
        self._figures.pop((cp.view, cp.sink), None)
