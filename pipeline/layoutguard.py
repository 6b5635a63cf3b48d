"""The worker's guard: refuse a changed topic layout or a source behind the mark.

What the guard compares against (the layouts and xmax marks recorded on the
checkpoint topic, and why) is :mod:`pipeline.layout`. :class:`Guard` checks,
when a worker starts and then every :data:`CHECK_INTERVAL_S`, that each table
view's topic has the recorded id and partition count, that the group's
committed offsets lie within the partitions, and that the source's snapshot
xmax is not below an aggregate view's mark; a failed check raises
:class:`~pipeline.errors.FatalError` naming ``readside snapshot VIEW
--rebuild`` (:func:`refusal`). After each commit it raises the aggregate
views' marks.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from confluent_kafka import KafkaException, Producer, TopicPartition

from pipeline import deletewindow, groups, kafkaclient
from pipeline.aggregate.reader import EPOCH_SPAN, XIP_FACTOR
from pipeline.config import Config
from pipeline.errors import FatalError, TransientError
from pipeline.events import DocumentOp
from pipeline.kafkaclient import topic_configs
from pipeline.layout import (
    Recorded,
    TopicLayout,
    XmaxMark,
    current_xmax,
    describe,
    load,
    produce,
    write,
)
from pipeline.viewconfig import TableViewConfig

logger = logging.getLogger(__name__)

#: seconds between two looks at the topics' layout while the worker runs
CHECK_INTERVAL_S = 10.0


def refusal(view: str, topic: str, change: str) -> str:
    return (
        f"view {view}: topic {topic} changed since the view's versions were "
        f"recorded: {change}; its keys' later changes would be dropped as stale. "
        f"Run `readside snapshot {view} --rebuild` (a new view epoch on the new "
        "layout), then start the workers again"
    )


def xmax_refusal(view: str, mark: XmaxMark, current: int) -> str:
    return (
        f"view {view}: the source's snapshot xmax {current} is below {mark.xmax}, "
        "already used by the view's versions (a restored database?); every new "
        f"read would be dropped as stale. Run `readside snapshot {view} --rebuild` "
        "(a new view epoch), then start the workers again"
    )


def xmax_refusals(marks: Iterable[XmaxMark], current: int) -> list[str]:
    """A refusal per view whose mark lies above the source's current xmax."""
    return [xmax_refusal(m.view, m, current) for m in marks if m.xmax > current]


def xmax_of(version: int) -> tuple[int, int]:
    """The (epoch, xmax) an aggregate-view version was made from."""
    return version // EPOCH_SPAN, (version % EPOCH_SPAN) // XIP_FACTOR


def table_topics(cfg: Config, views: Iterable[str]) -> dict[str, str]:
    """Table view -> its topic, of ``views``."""
    defined = cfg.effective_views()
    return {
        v: cfg.source.topic(defined[v].table)
        for v in views
        if isinstance(defined[v], TableViewConfig)
    }


class Guard:
    """The worker's side: refuse a changed layout or a source behind the mark.

    :meth:`start` once before the worker builds its views (it records the
    layout of a topic seen for the first time); :meth:`check` whenever
    :meth:`due` (every :data:`CHECK_INTERVAL_S`, or at once after an
    assignment showed an unexpected partition); :meth:`note_written` after
    each commit, to raise the aggregate views' marks.
    """

    def __init__(
        self, cfg: Config, views: Iterable[str], sinks: Iterable[str] | None = None
    ) -> None:
        self.cfg = cfg
        self.views = sorted(views)
        #: the worker's consumer group (whose committed offsets are checked)
        self.group = groups.worker_group(cfg, groups.Scope.of(cfg, self.views, sinks))
        self.topics = table_topics(cfg, self.views)
        self.recorded = Recorded()
        self._next_check = 0.0
        self._xmax: dict[str, int] = {}
        self._admin = kafkaclient.admin(cfg.kafka)

    def start(self) -> Recorded:
        """Check everything; the recorded epochs and starts to build views with.

        Raises:
            FatalError: a view must be rebuilt (the message says which and why).
        """
        self.recorded = load(self.cfg)
        problems = self.layout_problems() + self._offset_problems()
        problems += self._xmax_problems()
        if problems:
            raise FatalError("; ".join(problems))
        self._xmax = {v: m.xmax for v, m in self.recorded.marks.items()}
        self._say_behind_the_window()
        return self.recorded

    def due(self) -> bool:
        return time.monotonic() >= self._next_check

    def check(self) -> None:
        """Compare the topics' layout with the recorded one (raises FatalError;
        a broker that does not answer is asked again at the next check)."""
        try:
            problems = self.layout_problems()
        except (TransientError, KafkaException) as exc:
            logger.warning("topic layout not checked error=%s", exc)
            return
        if problems:
            raise FatalError("; ".join(problems))

    def note_assignment(self, parts: Iterable[Any]) -> None:
        """Look again at once if a partition lies past the recorded count."""
        for tp in parts:
            for (_v, topic), lay in self.recorded.layouts.items():
                if tp.topic == topic and tp.partition >= lay.partitions:
                    self._next_check = 0.0

    def note_written(
        self, producer: Producer, ops: Mapping[str, Sequence[DocumentOp]]
    ) -> None:
        """Raise the xmax mark of every aggregate view that wrote newer reads."""
        marks = []
        epochs = self.recorded.epochs()
        for view, view_ops in ops.items():
            if view in self.topics or view not in self.views or not view_ops:
                continue
            epoch, xmax = xmax_of(max(op.version for op in view_ops))
            if epoch == epochs.get(view, 0) and xmax > self._xmax.get(view, -1):
                self._xmax[view] = xmax
                marks.append(XmaxMark(view, epoch, xmax))
        if marks:
            produce(producer, self.cfg.kafka.checkpoint_topic, marks)

    # ------------------------------------------------------------ checks
    def layout_problems(self) -> list[str]:
        """A refusal per view whose topic changed since its layout was recorded
        (the first layout seen of a topic is recorded)."""
        self._next_check = time.monotonic() + CHECK_INTERVAL_S
        current = describe(self.cfg, sorted(set(self.topics.values())), self._admin)
        problems, first = [], []
        epochs = self.recorded.epochs()
        for view, topic in sorted(self.topics.items()):
            if topic not in current:
                continue  # not created yet: recorded once it exists
            topic_id, parts = current[topic]
            lay = self.recorded.layouts.get((view, topic))
            if lay is None:
                lay = TopicLayout(view, topic, topic_id, parts, epochs.get(view, 0))
                first.append(lay)
                continue
            change = lay.change(topic_id, parts)
            if change is not None:
                problems.append(refusal(view, topic, change))
        if first:
            write(self.cfg, first)
            for lay in first:
                self.recorded.layouts[(lay.view, lay.topic)] = lay
                logger.info(
                    "topic layout recorded view=%s topic=%s id=%s partitions=%d",
                    lay.view,
                    lay.topic,
                    lay.topic_id,
                    lay.partitions,
                )
        return problems

    def _offset_problems(self) -> list[str]:
        """Committed offsets past a partition's end: the offsets were reset."""
        if not self.topics:
            return []
        consumer = kafkaclient.consumer(
            self.cfg.kafka, {"group.id": self.group, "enable.auto.commit": False}
        )
        problems = []
        try:
            parts = [
                TopicPartition(lay.topic, p)
                for (view, _t), lay in self.recorded.layouts.items()
                if view in self.topics
                for p in range(lay.partitions)
            ]
            for tp in consumer.committed(parts, timeout=10) if parts else []:
                if tp.offset < 0:
                    continue
                _low, high = consumer.get_watermark_offsets(tp, timeout=10)
                if tp.offset > high:
                    view = next(v for v, t in self.topics.items() if t == tp.topic)
                    change = (
                        f"offsets reset (partition {tp.partition}: committed "
                        f"{tp.offset}, end {high})"
                    )
                    problems.append(refusal(view, tp.topic, change))
        finally:
            consumer.close()
        return problems

    def _say_behind_the_window(self) -> None:
        """Log, as an error, each view that may keep rows deleted at the
        source while the group was further behind than its topics keep
        deletes (:mod:`pipeline.deletewindow`). Not a refusal: the catch-up
        is right for every other change, and a rebuild runs beside it."""
        by_topic = {
            t: [v for v in vs if v in self.views]
            for t, vs in self.cfg.view_topics().items()
        }
        by_topic = {t: vs for t, vs in by_topic.items() if vs}
        try:
            layouts = describe(self.cfg, sorted(by_topic), self._admin)
            configs = topic_configs(self._admin, sorted(layouts))
            windows = deletewindow.windows_of(configs)
            consumer = kafkaclient.consumer(
                self.cfg.kafka, {"group.id": self.group, "enable.auto.commit": False}
            )
            try:
                parts = [
                    TopicPartition(t, p)
                    for t, (_id, count) in sorted(layouts.items())
                    for p in range(count)
                ]
                committed = deletewindow.committed_offsets(consumer, parts)
                behind = deletewindow.behind_the_window(consumer, committed, windows)
            finally:
                consumer.close()
        except (TransientError, KafkaException) as exc:
            logger.warning("delete window not checked error=%s", exc)
            return
        for part in behind:
            if part.dropped:  # the worker's gaps say it, and take the marks
                continue
            logger.error(
                "behind the delete window: %s", part.says(by_topic[part.topic])
            )
        for said in deletewindow.dropping(configs, by_topic):
            logger.warning("%s", said)

    def _xmax_problems(self) -> list[str]:
        marks = [m for v, m in self.recorded.marks.items() if v in self.views]
        if not marks:
            return []
        return xmax_refusals(marks, current_xmax(self.cfg))
