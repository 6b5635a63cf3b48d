"""Whether each store still holds whole the views a worker writes to it.

A store can lose a view's documents while the consumer group keeps its
offsets: a Redis restarted without its data or emptied, an Elasticsearch index
deleted, a MongoDB collection or database dropped. The worker goes on from its
committed offsets and writes only what changes from then on: every other
document stays missing for good, and nothing said so. A sink added to a view
whose group already committed offsets starts the same way, as does a view
added on a topic the group already reads.

So each store marks a view it holds whole (:class:`connectors.base.LoadMarks`;
the mark lives beside the documents and goes with them):

* a worker's first start marks it: a group with no committed offset on the
  view's topics reads them from their start, so the stream brings every row
  (not with ``source.snapshot_mode: no_data``, whose views ``readside
  snapshot`` loads);
* ``readside snapshot VIEW`` (without ``--where``) marks it in the stores it
  loaded, once loaded;
* a rebuild's switch carries the mark to the new generation.

:class:`Watch` looks at the marks when the worker starts and every
:data:`CHECK_INTERVAL_S`. A view a sink holds unmarked while the group has
committed offsets is logged as an error naming the way out (``readside
snapshot VIEW --sink NAME``, which loads it while the worker goes on), and
shown by the gauge ``readside_view_unloaded{view,sink}``; once marked again,
a line says so. The worker does not stop: the documents it writes are right,
and the load needs nothing of it.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any

from confluent_kafka import KafkaException, TopicPartition

from connectors.base import LoadMarks, Sink
from pipeline.checkpoints import CheckpointWriter
from pipeline.config import Config
from pipeline.deletewindow import committed_offsets
from pipeline.errors import FatalError, TransientError
from pipeline.metrics import UNLOADED

logger = logging.getLogger(__name__)

#: seconds between two looks at the marks while the worker runs
CHECK_INTERVAL_S = 10.0
#: seconds between two error lines about the same unloaded view
REPEAT_S = 600.0

Pair = tuple[str, str]  # (view, sink)


def pairs(cfg: Config, views: Iterable[str], sinks: Iterable[str]) -> list[Pair]:
    """The (view, sink) pairs of ``views`` written to one of ``sinks``."""
    served, by_view = set(sinks), cfg.effective_views()
    return [(v, s) for v in sorted(views) for s in by_view[v].sinks if s in served]


def view_topics(cfg: Config, views: Iterable[str]) -> dict[str, list[str]]:
    """The topics each of ``views`` reads."""
    wanted = set(views)
    out: dict[str, list[str]] = {v: [] for v in wanted}
    for topic, readers in cfg.view_topics().items():
        for v in readers:
            if v in wanted:
                out[v].append(topic)
    return out


class Watch:
    """The worker's look at the load marks of its views in its sinks."""

    def __init__(
        self,
        cfg: Config,
        views: Iterable[str],
        sinks: Mapping[str, Sink],
        clock: Callable[[], float] = time.monotonic,
        recorder: CheckpointWriter | None = None,
    ) -> None:
        self.cfg = cfg
        self.sinks = sinks
        #: records each pair's state on the checkpoint topic, for ``status``
        self.recorder = recorder
        self.pairs = [
            p for p in pairs(cfg, views, sinks) if isinstance(sinks[p[1]], LoadMarks)
        ]
        self.topics = view_topics(cfg, {v for v, _s in self.pairs})
        self.clock = clock
        #: unloaded pairs, with when their error was last logged
        self.unloaded: dict[Pair, float] = {}
        self._next = 0.0
        self._first_start = cfg.source.snapshot_mode != "no_data"
        #: of each pair found unloaded at the start, whether the stream had
        #: brought it (False: ``no_data``, never loaded)
        self._streamed: dict[Pair, bool] = {}

    def start(self, consumer: Any) -> None:
        """Mark the views of a first start; report the unloaded ones.

        ``consumer`` is the worker's: its group's committed offsets are read.

        Raises:
            TransientError: a store or the broker did not answer (the worker
                retries it before it consumes anything).
        """
        read = self._read_offsets(consumer)
        for pair in list(self.pairs):
            try:
                self._start_pair(pair, read[pair[0]])
            except FatalError as exc:
                self._give_up(pair, exc)
        self._next = self.clock() + CHECK_INTERVAL_S

    def _start_pair(self, pair: Pair, read: bool) -> None:
        if self._marked(pair):
            self._record(pair, None)  # whole, whatever an earlier run said
            return
        view, sink = pair
        if not read and self._first_start:
            self.sinks[sink].mark_loaded(view)  # type: ignore[attr-defined]
            UNLOADED.labels(view=view, sink=sink).set(0)
            self._record(pair, None)
            logger.info("load mark set view=%s sink=%s (first start)", view, sink)
        else:
            self._streamed[pair] = read or self._first_start
            self._report(pair)

    def _give_up(self, pair: Pair, exc: Exception) -> None:
        """Stop looking at the mark of ``pair``: its store refuses it (a login
        that may not read or write it); the worker goes on without."""
        self.pairs.remove(pair)
        logger.warning(
            "load mark not kept view=%s sink=%s error=%s (a store that loses "
            "the view goes unnoticed)",
            *pair,
            exc,
        )

    def due(self) -> bool:
        return self.clock() >= self._next

    def check(self) -> None:
        """Look at every mark again; a store that does not answer is asked
        again at the next check (the writes wait its outage out)."""
        self._next = self.clock() + CHECK_INTERVAL_S
        for pair in list(self.pairs):
            try:
                marked = self._marked(pair)
            except TransientError as exc:
                logger.warning(
                    "load mark not read view=%s sink=%s error=%s", *pair, exc
                )
                continue
            except FatalError as exc:
                self._give_up(pair, exc)
                continue
            if not marked:
                self._report(pair)

    def _marked(self, pair: Pair) -> bool:
        view, sink = pair
        marked = bool(self.sinks[sink].loaded(view))  # type: ignore[attr-defined]
        if marked and pair in self.unloaded:
            del self.unloaded[pair]
            self._record(pair, None)
            logger.info("view %s is whole again in sink %s (load mark found)", *pair)
        UNLOADED.labels(view=view, sink=sink).set(0 if marked else 1)
        return marked

    def _report(self, pair: Pair) -> None:
        view, sink = pair
        last = self.unloaded.get(pair)
        now = self.clock()
        if last is not None and now - last < REPEAT_S:
            return
        if last is None:
            self._record(pair, int(time.time() * 1000))
        self.unloaded[pair] = now
        why = (
            "the group read the view's topics before, so the documents of "
            "every row that has not changed since are missing (the store lost "
            "them, or the sink was added to the view after)"
            if self._streamed.get(pair, True)
            else "it was never loaded (source.snapshot_mode: no_data)"
        )
        logger.error(
            "view %s is not whole in sink %s: its load mark is missing; %s. Load "
            "it while the worker goes on: readside snapshot %s --sink %s",
            view,
            sink,
            why,
            view,
            sink,
        )

    def _record(self, pair: Pair, since_ms: int | None) -> None:
        """Put the state of ``pair`` on the checkpoint topic: unloaded since
        ``since_ms``, or whole (None)."""
        if self.recorder is None:
            return
        if since_ms is None:
            self.recorder.whole(*pair)
        else:
            self.recorder.unloaded(*pair, since_ms)

    def _read_offsets(self, consumer: Any) -> dict[str, bool]:
        """For each view, whether the group committed an offset on its topics."""
        topics = sorted({t for ts in self.topics.values() for t in ts})
        if not topics:
            return {v: False for v in self.topics}
        parts: list[TopicPartition] = []
        try:
            meta = consumer.list_topics(timeout=10)
            for t in topics:
                found = meta.topics.get(t)
                if found is not None and found.error is None:
                    parts += [TopicPartition(t, p) for p in found.partitions]
            committed = committed_offsets(consumer, parts)
        except KafkaException as exc:
            raise TransientError(f"kafka: committed offsets not read: {exc}") from exc
        read_topics = {t for t, _p in committed}
        return {v: bool(read_topics.intersection(ts)) for v, ts in self.topics.items()}


def mark_loaded(sinks: Mapping[str, Sink], views: Sequence[str]) -> None:
    """Mark ``views`` loaded in each of ``sinks`` that keeps marks (a
    snapshot's end)."""
    for name, sink in sinks.items():
        if not isinstance(sink, LoadMarks):
            continue
        for view in views:
            sink.mark_loaded(view)
            logger.info("load mark set view=%s sink=%s", view, name)
