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
from concurrent.futures import Future
from dataclasses import dataclass, field
from typing import Any

from confluent_kafka import OFFSET_END, KafkaException, TopicPartition
from confluent_kafka.admin import OffsetSpec  # type: ignore[attr-defined]  # re-exported at runtime, missing from the stubs' __all__
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
#: Committed offsets and the broker's watermarks are asked with this timeout.
ASK_TIMEOUT_S = 2.0


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


@dataclass
class _Asked:
    """The watermarks asked of the broker after the heartbeat at ``at``."""

    at: int
    views: list[str]
    #: per partition held when asked, where the worker stood if it had read
    #: nothing of it since assigned (committed offset; None: its start)
    unread: dict[Part, int | None]
    parts: set[Part]
    high: dict[TopicPartition, Future[Any]]
    low: dict[TopicPartition, Future[Any]] = field(default_factory=dict)

    def ready(self) -> bool:
        return all(f.done() for f in [*self.high.values(), *self.low.values()])


class Heartbeats:
    """Reads the connector's heartbeats and moves a worker's views on to
    their commit time when the worker has applied what came before them
    (see the module's docstring). The broker's high watermarks are asked
    with one request of the admin client, not waited for: the loop looks at
    the answer on a later turn (the consumer's own asks would wait behind
    its fetches, ``fetch.wait.max.ms`` each).

    Args:
        consumer: the worker's (its positions and committed offsets).
        reader: a consumer of its own, outside the worker's group, that
            :meth:`start` assigns to the heartbeat topic's end.
        admin: asks the broker's watermarks.
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
        admin: Any,
        topic: str,
        views: Mapping[str, tuple[Iterable[str], Iterable[str]]],
        converter: Converter,
        held: Callable[[], Iterable[Part]],
        newest: Newest,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.consumer = consumer
        self.reader = reader
        self.admin = admin
        self.topic = topic
        self.views = {v: (set(t), list(s)) for v, (t, s) in views.items()}
        self.converter = converter
        self.held = held
        self.newest = newest
        self.clock = clock
        #: the newest heartbeat's commit time not yet given to every view
        self.pending: int | None = None
        #: the heartbeat time last asked about: once per heartbeat
        self._tried: int | None = None
        self._asked: _Asked | None = None
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
        if self._asked is not None:
            if not self._asked.ready():
                return
            asked, self._asked = self._asked, None
            self._settle(asked, set(in_hand))
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
        try:
            self._asked = self._ask(at, behind)
        except KafkaException as exc:
            logger.debug("watermarks not asked error=%s", exc)

    def forget(self, parts: Iterable[Part]) -> None:
        """Partitions revoked or assigned anew: their committed offsets are
        read again."""
        for part in parts:
            self._committed.pop(part, None)

    # ------------------------------------------------------------ inside
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

    def _ask(self, at: int, views: list[str]) -> _Asked:
        """Ask the high watermarks of the partitions of ``views`` held; and
        the low ones of those read from their start."""
        parts = {p for p in self.held() if any(p[0] in self.views[v][0] for v in views)}
        tps = [TopicPartition(t, p) for t, p in sorted(parts)]
        unread: dict[Part, int | None] = {}
        for tp in self.consumer.position(tps) if tps else ():
            if tp.offset < 0:
                unread[(tp.topic, tp.partition)] = None
        unknown = [TopicPartition(*p) for p in unread if p not in self._committed]
        if unknown:
            for tp in self.consumer.committed(unknown, timeout=ASK_TIMEOUT_S):
                if tp.error is None:
                    self._committed[(tp.topic, tp.partition)] = tp.offset
        for p in unread:
            at_offset = self._committed.get(p, -1)
            unread[p] = at_offset if at_offset >= 0 else None
        high: dict[TopicPartition, Future[Any]] = {}
        low: dict[TopicPartition, Future[Any]] = {}
        if tps:
            latest = OffsetSpec.latest()  # type: ignore[no-untyped-call]
            high = self.admin.list_offsets(
                dict.fromkeys(tps, latest), request_timeout=ASK_TIMEOUT_S
            )
        starts = [TopicPartition(*p) for p, o in unread.items() if o is None]
        if starts:
            earliest = OffsetSpec.earliest()  # type: ignore[no-untyped-call]
            low = self.admin.list_offsets(
                dict.fromkeys(starts, earliest), request_timeout=ASK_TIMEOUT_S
            )
        return _Asked(at, views, unread, parts, high, low)

    def _settle(self, asked: _Asked, busy: set[Part]) -> None:
        """Move on the views of ``asked`` whose partitions the worker has
        read up to the watermarks the broker gave."""
        try:
            high = {
                (tp.topic, tp.partition): f.result().offset
                for tp, f in asked.high.items()
            }
            low = {
                (tp.topic, tp.partition): f.result().offset
                for tp, f in asked.low.items()
            }
        except KafkaException as exc:
            logger.debug("watermarks not read error=%s", exc)
            return
        held = set(self.held())
        tps = [TopicPartition(t, p) for t, p in sorted(asked.parts & held)]
        here = {
            (tp.topic, tp.partition): tp.offset
            for tp in (self.consumer.position(tps) if tps else ())
        }
        for part, offset in here.items():
            if offset < 0:
                start = asked.unread.get(part)
                here[part] = low.get(part, -1) if start is None else start
        for view in asked.views:
            topics, sinks = self.views[view]
            mine = {p for p in held if p[0] in topics}
            if mine & busy or not mine <= asked.parts:
                continue
            if all(here[p] >= high[p] for p in mine):
                for sink in sinks:
                    self.newest.seen(view, sink, asked.at)
