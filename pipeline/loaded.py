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
  snapshot`` loads; nor from a topic whose ``cleanup.policy`` includes
  ``delete`` and whose retention already dropped its first records: rows
  that did not change since are not in it, and the view is reported
  unloaded, to be loaded from the source);
* ``readside snapshot VIEW`` (without ``--where``) marks it in the stores it
  loaded, once loaded;
* a rebuild's switch carries the mark to the new generation.

A worker that finds records of a view's topic dropped before it read them
(:mod:`pipeline.gaps`) takes the view's marks away (:meth:`Watch.gap`).

:class:`Watch` looks at the marks when the worker starts and every
``worker.load_mark_check_s`` (:data:`CHECK_INTERVAL_S`). A view a sink holds
unmarked while the group has committed offsets is logged as an error naming
the way out (``readside snapshot VIEW --sink NAME``, which loads it while the
worker goes on), and
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
from pipeline import kafkaclient
from pipeline.checkpoints import CheckpointWriter
from pipeline.config import Config
from pipeline.deletewindow import committed_offsets, delete_policy
from pipeline.errors import FatalError, TransientError
from pipeline.kafkaclient import topic_configs
from pipeline.metrics import UNLOADED

logger = logging.getLogger(__name__)

#: seconds between two looks at the marks while the worker runs, unless
#: ``worker.load_mark_check_s`` says otherwise
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
        topic_settings: Callable[[list[str]], Mapping[str, Mapping[str, str]]]
        | None = None,
    ) -> None:
        self.cfg = cfg
        #: each topic's effective settings (the broker's, unless a test's)
        self.topic_settings = topic_settings or (
            lambda topics: topic_configs(kafkaclient.admin(cfg.kafka), topics)
        )
        self.sinks = sinks
        #: records each pair's state on the checkpoint topic, for ``status``
        self.recorder = recorder
        self.pairs = [
            p for p in pairs(cfg, views, sinks) if isinstance(sinks[p[1]], LoadMarks)
        ]
        self.topics = view_topics(cfg, {v for v, _s in self.pairs})
        self.clock = clock
        self.interval = cfg.worker.load_mark_check_s
        #: unloaded pairs, with when their error was last logged
        self.unloaded: dict[Pair, float] = {}
        self._next = 0.0
        self._first_start = cfg.source.snapshot_mode != "no_data"
        #: of each pair found unloaded at the start, why its documents are
        #: not whole, and the command that loads it
        self._why: dict[Pair, tuple[str, str]] = {}

    def start(self, consumer: Any) -> None:
        """Mark the views of a first start; report the unloaded ones.

        ``consumer`` is the worker's: its group's committed offsets are read.

        Raises:
            TransientError: a store or the broker did not answer (the worker
                retries it before it consumes anything).
        """
        read, parts = self._read_offsets(consumer)
        cut: dict[str, str] = {}
        if self._first_start and not all(read.values()):
            cut = self._cut_topics(consumer, parts)
        for pair in list(self.pairs):
            try:
                self._start_pair(pair, read[pair[0]], cut)
            except FatalError as exc:
                self._give_up(pair, exc)
        self._next = self.clock() + self.interval

    def _start_pair(self, pair: Pair, read: bool, cut: Mapping[str, str]) -> None:
        view, sink = pair
        lost = [cut[t] for t in self.topics[view] if t in cut]
        if self._marked(pair):
            if read or not lost:
                self._record_whole(pair)  # whole, whatever an earlier run said
                return
            # Held whole once, yet the group read nothing: it reads the topics
            # from a start past records it never applied (pipeline.gaps).
            self._take_away(
                pair,
                "its group has no committed offset on the view's topics while "
                "the store holds the view (the offsets expired after the "
                "broker's offsets.retention.minutes with no worker running, or "
                "kafka.group_id or the worker's --views or --sinks changed), so "
                f"it reads them from their first records, but {'; '.join(lost)}: "
                "the changes in the records dropped before are in no store",
            )
            return
        if not read and self._first_start and not lost:
            self.sinks[sink].mark_loaded(view)  # type: ignore[attr-defined]
            UNLOADED.labels(view=view, sink=sink).set(0)
            self._record_whole(pair)
            logger.info("load mark set view=%s sink=%s (first start)", view, sink)
            return
        if read:
            self._why.pop(pair, None)  # the usual case: a store that lost it
        elif lost:
            # only the source holds the rows whose records the topic dropped
            self._why[pair] = (
                "this first start read its topics from their first records, "
                f"but {'; '.join(lost)}: the rows that did not change since are "
                "in no record",
                self._from_source(view, sink),
            )
        else:
            self._why[pair] = (
                "it was never loaded (source.snapshot_mode: no_data)",
                f"readside snapshot {view} --sink {sink}",
            )
        self._report(pair)

    def _from_source(self, view: str, sink: str) -> str:
        """The load of ``view`` that reads the source, not its topics: an
        aggregate view's own; a table view's incremental snapshot, which
        goes through the stream into every sink of the view."""
        if self.cfg.effective_views()[view].kind == "aggregate":
            return f"readside snapshot {view} --sink {sink}"
        return f"readside snapshot {view} --from-source"

    def _cut_topics(
        self, consumer: Any, parts: Sequence[TopicPartition]
    ) -> dict[str, str]:
        """The topics among ``parts``' whose retention dropped their first
        records, each with what it lost.

        A topic whose ``cleanup.policy`` includes ``delete`` drops whole old
        segments: a partition whose first offset is past 0 lost the records
        before it, among them the only record of every row that did not
        change since. A compacted-only topic removes a key's record only
        where a newer one of the key follows, whatever its first offset.
        """
        topics = sorted({tp.topic for tp in parts})
        try:
            configs = self.topic_settings(topics)
            out: dict[str, str] = {}
            for tp in parts:
                policy = delete_policy(configs.get(tp.topic, {}))
                if tp.topic in out or policy is None:
                    continue
                low, _high = consumer.get_watermark_offsets(tp, timeout=10)
                if low > 0:
                    out[tp.topic] = (
                        f"topic {tp.topic} (cleanup.policy {policy}) no longer "
                        f"holds records 0-{low - 1} of partition {tp.partition}"
                    )
        except (KafkaException, TimeoutError) as exc:
            raise TransientError(f"kafka: topic configs not read: {exc}") from exc
        return out

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
        self._next = self.clock() + self.interval
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

    def gap(self, views: Mapping[str, str], load: str = "--rebuild") -> None:
        """The stream lost changes of ``views`` (each with what it lost):
        records dropped before the worker read them (:mod:`pipeline.gaps`),
        or a table read whole again (:mod:`pipeline.retaken`, ``load``
        ``--from-source``). Take their marks away in every store, so that
        they are reported not whole until ``readside snapshot VIEW LOAD``
        marks them again, across restarts too.

        Raises:
            TransientError: a store did not answer (the caller retries, and
                commits nothing past the gap meanwhile).
        """
        for pair in self.pairs:
            if pair[0] in views:
                self._take_away(pair, views[pair[0]], load)

    def _take_away(self, pair: Pair, why: str, load: str = "--rebuild") -> None:
        """Unmark ``pair``'s view in its store, then say and record why,
        naming ``readside snapshot VIEW LOAD``. A rebuild by default, not a
        load: a delete the topic dropped left a document that no load from
        the source removes."""
        view, sink = pair
        self.sinks[sink].unmark(view)  # type: ignore[attr-defined]
        UNLOADED.labels(view=view, sink=sink).set(1)
        self._why[pair] = (why, f"readside snapshot {view} {load}")
        self.unloaded.pop(pair, None)  # said and recorded now
        self._report(pair)

    def _marked(self, pair: Pair) -> bool:
        view, sink = pair
        marked = bool(self.sinks[sink].loaded(view))  # type: ignore[attr-defined]
        if marked and pair in self.unloaded:
            del self.unloaded[pair]
            self._record_whole(pair)
            logger.info("view %s is whole again in sink %s (load mark found)", *pair)
        UNLOADED.labels(view=view, sink=sink).set(0 if marked else 1)
        return marked

    def _report(self, pair: Pair) -> None:
        view, sink = pair
        last = self.unloaded.get(pair)
        now = self.clock()
        if last is not None and now - last < REPEAT_S:
            return
        why, load = self._why.get(pair) or (
            "the group read the view's topics before, so the documents of "
            "every row that has not changed since are missing (the store lost "
            "them, or the sink was added to the view after)",
            f"readside snapshot {view} --sink {sink}",
        )
        if last is None and self.recorder is not None:
            self.recorder.unloaded(view, sink, int(time.time() * 1000), why, load)
        self.unloaded[pair] = now
        logger.error(
            "view %s is not whole in sink %s: its load mark is missing; %s. Load "
            "it while the worker goes on: %s",
            view,
            sink,
            why,
            load,
        )

    def _record_whole(self, pair: Pair) -> None:
        """Put on the checkpoint topic that ``pair`` is whole (unloaded ones:
        :meth:`_report`)."""
        if self.recorder is not None:
            self.recorder.whole(*pair)

    def _read_offsets(
        self, consumer: Any
    ) -> tuple[dict[str, bool], list[TopicPartition]]:
        """For each view, whether the group committed an offset on its topics;
        and the partitions of those topics."""
        topics = sorted({t for ts in self.topics.values() for t in ts})
        parts: list[TopicPartition] = []
        if not topics:
            return {v: False for v in self.topics}, parts
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
        read = {v: bool(read_topics.intersection(ts)) for v, ts in self.topics.items()}
        return read, parts


def mark_loaded(sinks: Mapping[str, Sink], views: Sequence[str]) -> None:
    """Mark ``views`` loaded in each of ``sinks`` that keeps marks (a
    snapshot's end)."""
    for name, sink in sinks.items():
        if not isinstance(sink, LoadMarks):
            continue
        for view in views:
            sink.mark_loaded(view)
            logger.info("load mark set view=%s sink=%s", view, name)
