"""How far behind the source each view is in each sink:
``readside_time_lag_ms``, worked out each time ``/metrics`` is read.

A gauge set when a batch commits stands still whenever nothing commits: a
capture that stopped (the connector paused, its task failed, Connect down),
a store the worker backs off from, a loop that hangs. It went on reading
"fresh" while the views aged, and it is the figure alerts read. So the
worker keeps, per view and sink, the newest source commit time it knows
the sink holds (:class:`Newest`), and the gauge is the time since then at
the moment it is read. That time moves on

- with the commit time of each change applied (at its batch's commit), and
- with each heartbeat (the connector's heartbeat action updates a row every
  ``source.heartbeat_ms``, through the WAL like any change), once the
  worker holds nothing of the view unapplied that Kafka had when the
  heartbeat was read: each partition of the view's topics it holds has no
  record read and not handled, and its position stands at the high
  watermark the broker gives after the heartbeat was read (:class:`Heartbeats`).

So an idle source keeps the views fresh and a stopped capture ages them by
the second. A connector's heartbeats go to one partition, held by one
member of a consumer group; every worker reads them with a consumer of its
own, outside the group, so each member reports its share of each view and
the largest figure over a group's workers is the view's.

The claim rests on the order the connector writes in: what it wrote before
a heartbeat is in Kafka once the heartbeat is. A record of another
partition its producer is still retrying can come later; for that long
(a retry, under a second) the figure may read low.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Iterable, Iterator, Mapping
from typing import Any

from confluent_kafka import OFFSET_END, KafkaException, TopicPartition
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector

from pipeline.events import ChangeEvent
from pipeline.source.records import Converter

logger = logging.getLogger(__name__)

Part = tuple[str, int]
Pair = tuple[str, str]

#: After a heartbeat could not be decoded because the schema registry did
#: not answer, records that need it are skipped this long.
REGISTRY_PAUSE_S = 30.0
#: The broker's high watermarks are asked with this timeout.
WATERMARK_TIMEOUT_S = 2.0


class Newest(Collector):
    """Per view and sink, the newest source commit time (ms) the sink is
    known to hold; collected as ``readside_time_lag_ms``, now minus it."""

    def __init__(self, clock: Callable[[], float] = time.time) -> None:
        self.clock = clock
        self._lock = threading.Lock()  # /metrics reads on its own thread
        self._ts: dict[Pair, int] = {}

    def seen(self, view: str, sink: str, ts_ms: int) -> None:
        """``sink`` holds ``view``'s changes committed up to ``ts_ms``."""
        with self._lock:
            if ts_ms > self._ts.get((view, sink), -1):
                self._ts[(view, sink)] = ts_ms

    def get(self, view: str, sink: str) -> int | None:
        with self._lock:
            return self._ts.get((view, sink))

    def collect(self) -> Iterator[GaugeMetricFamily]:
        now = int(self.clock() * 1000)
        family = GaugeMetricFamily(
            "readside_time_lag_ms",
            "Now minus the newest source commit time the sink is known to "
            "hold of the view: of the last change applied, or of the last "
            "heartbeat once the worker had applied all Kafka held before it",
            labels=["view", "sink"],
        )
        with self._lock:
            items = sorted(self._ts.items())
        for (view, sink), ts in items:
            family.add_metric([view, sink], max(0, now - ts))
        yield family

    def describe(self) -> Iterator[GaugeMetricFamily]:
        return self.collect()


class Heartbeats:
    """Reads the connector's heartbeats and moves a worker's views on to
    their commit time when the worker has applied what came before them
    (see the module's docstring).

    Args:
        consumer: the worker's (its positions and the broker's watermarks).
        reader: a consumer of its own, outside the worker's group, that
            :meth:`start` assigns to the heartbeat topic's end.
        topic: the heartbeat table's topic.
        views: per view the worker applies, its topics and the sinks it
            writes the view to.
        converter: decodes the heartbeats (its own: a registry that does
            not answer is asked once, not waited for).
        held: the partitions the worker holds.
    """

    def __init__(
        self,
        consumer: Any,
        reader: Any,
        topic: str,
        views: Mapping[str, tuple[Iterable[str], Iterable[str]]],
        converter: Converter,
        held: Callable[[], Iterable[Part]],
        newest: Newest,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.consumer = consumer
        self.reader = reader
        self.topic = topic
        self.views = {v: (set(t), list(s)) for v, (t, s) in views.items()}
        self.converter = converter
        self.held = held
        self.newest = newest
        self.clock = clock
        #: the newest heartbeat's commit time not yet given to every view
        self.pending: int | None = None
        #: the heartbeat time last tried, so a worker behind asks the broker
        #: once per heartbeat, not once per turn
        self._tried: int | None = None
        self._registry_back = 0.0
        #: committed offsets of partitions not read since assigned
        self._committed: dict[Part, int] = {}

    def start(self) -> None:
        meta = self.reader.list_topics(self.topic, timeout=10).topics[self.topic]
        parts = sorted(meta.partitions) if meta.error is None else [0]
        self.reader.assign([TopicPartition(self.topic, p, OFFSET_END) for p in parts])

    def close(self) -> None:
        self.reader.close()

    def turn(self, in_hand: Iterable[Part]) -> None:
        """Read the heartbeats come since the last turn; move on the views
        the worker caught up with. ``in_hand``: partitions of records the
        worker read and has not handled yet."""
        self._read()
        at = self.pending
        if at is None or at == self._tried:
            return
        behind = [
            view
            for view, (_t, sinks) in self.views.items()
            if any((self.newest.get(view, s) or -1) < at for s in sinks)
        ]
        if not behind:
            self.pending = None
            return
        self._tried = at
        busy = set(in_hand)
        held = set(self.held())
        try:
            done = self._caught_up(
                {p for p in held if p not in busy and self._of(p, behind)}
            )
        except KafkaException as exc:
            logger.debug("watermarks not read error=%s", exc)
            return
        for view in behind:
            topics, sinks = self.views[view]
            mine = {p for p in held if p[0] in topics}
            if mine & busy or not mine <= done:
                continue
            for sink in sinks:
                self.newest.seen(view, sink, at)

    def forget(self, parts: Iterable[Part]) -> None:
        """Partitions revoked or assigned anew: their committed offsets are
        read again."""
        for part in parts:
            self._committed.pop(part, None)

    # ------------------------------------------------------------ inside
    def _of(self, part: Part, views: Iterable[str]) -> bool:
        return any(part[0] in self.views[v][0] for v in views)

    def _read(self) -> None:
        try:
            msgs = self.reader.consume(500, 0)
        except KafkaException as exc:
            logger.debug("heartbeats not read error=%s", exc)
            return
        for msg in msgs:
            if msg.error() is not None or msg.value() is None:
                continue
            if self.converter.fetches(msg) and self.clock() < self._registry_back:
                continue
            try:
                got = self.converter.decode(msg)
            except Exception as exc:  # noqa: BLE001 (a figure, never the loop)
                if self.converter.fetches(msg):
                    self._registry_back = self.clock() + REGISTRY_PAUSE_S
                logger.debug("heartbeat not decoded error=%s", exc)
                continue
            ts = got.commit_ts_ms if isinstance(got, ChangeEvent) else None
            if ts is not None and ts > (self.pending or -1):
                self.pending = ts

    def _caught_up(self, parts: set[Part]) -> set[Part]:
        """Of ``parts``, those the worker read to the broker's high
        watermark, asked now. A partition not read from since it was
        assigned stands at the group's committed offset, or, with none, at
        its start (the consumer's ``auto.offset.reset``)."""
        if not parts:
            return set()
        tps = [TopicPartition(t, p) for t, p in sorted(parts)]
        at = {(tp.topic, tp.partition): tp.offset for tp in self.consumer.position(tps)}
        unknown = [
            tp
            for tp in tps
            if at[(tp.topic, tp.partition)] < 0
            and (tp.topic, tp.partition) not in self._committed
        ]
        if unknown:
            for tp in self.consumer.committed(unknown, timeout=WATERMARK_TIMEOUT_S):
                if tp.error is None:
                    self._committed[(tp.topic, tp.partition)] = tp.offset
        done = set()
        for tp in tps:
            key = (tp.topic, tp.partition)
            low, high = self.consumer.get_watermark_offsets(
                tp, timeout=WATERMARK_TIMEOUT_S, cached=False
            )
            here = at[key]
            if here < 0:
                here = self._committed.get(key, -1)
                if here < 0:
                    here = low
            if here >= high:
                done.add(key)
        return done
