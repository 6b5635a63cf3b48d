"""Topic layouts and view epochs: what the versions of a view rely on.

A table-view version is ``(view epoch, partition offset)`` (docs/design.md:
two kinds of view). That orders a row's events only while all of them sit on one
partition of one topic incarnation. When a topic gains partitions, Debezium's
producer sends the keys that move to partitions whose offsets start low; when
a topic is recreated, every offset starts again at 0. Either way a later
update or delete of a moved key carries a lower version than the document
the store holds and is dropped as stale, forever. An aggregate-view version
grows with the source's snapshot ``xmax``; after a database restore the xid
counter can be behind the one the view already used, with the same effect.

So the worker remembers, durably on the compacted checkpoint topic:

* per ``(table view, topic)``: the topic's id, its partition count, the view
  epoch, and the first offset of that epoch per partition
  (:class:`TopicLayout`, key ``__layout__|view|topic``);
* per aggregate view: its epoch and the highest snapshot ``xmax`` its writes
  used (:class:`XmaxMark`, key ``__xmax__|view``);

and refuses (:class:`~pipeline.errors.FatalError`) to apply a view whose
topic changed id or partition count, whose group's committed offset lies past
a partition's end (offsets reset), or whose source xmax is below the mark,
naming ``readside snapshot VIEW --rebuild``: the rebuild starts a new view
epoch (:mod:`pipeline.snapshot.epoch`) and records the new layout, which the
workers then accept.

Limits: the first worker that meets a topic records what it sees, so a change
made before that (e.g. before upgrading to a readside with this check) is not
detected; the snapshot loader's aggregate writes do not raise the mark (the
workers' writes, which follow, do).
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

import psycopg
from confluent_kafka import Consumer, KafkaException, Producer, TopicCollection
from confluent_kafka.admin import AdminClient

from pipeline import groups
from pipeline.aggregate.reader import EPOCH_SPAN, XIP_FACTOR
from pipeline.checkpoints import ensure_topics, read_records
from pipeline.config import Config
from pipeline.errors import FatalError, TransientError
from pipeline.events import DocumentOp
from pipeline.viewconfig import TableViewConfig
from pipeline.views import View, build_views

logger = logging.getLogger(__name__)

LAYOUT_PREFIX = "__layout__|"
XMAX_PREFIX = "__xmax__|"
#: seconds between two looks at the topics' layout while the worker runs
CHECK_INTERVAL_S = 10.0

Starts = dict[tuple[str, int], int]  # (topic, partition) -> first offset of the epoch


@dataclass(frozen=True)
class TopicLayout:
    """The layout of a table view's topic that the view's versions assume."""

    view: str
    topic: str
    topic_id: str
    partitions: int
    epoch: int = 0
    #: partition (as text, for JSON) -> first offset of ``epoch``; records
    #: below it belong to an older epoch and are not applied. Empty: all.
    starts: dict[str, int] = field(default_factory=dict)

    @property
    def key(self) -> str:
        return f"{LAYOUT_PREFIX}{self.view}|{self.topic}"

    def start_offsets(self) -> Starts:
        return {(self.topic, int(p)): o for p, o in self.starts.items()}

    def change(self, topic_id: str, partitions: int) -> str | None:
        """What changed since this layout was recorded, or None."""
        if topic_id != self.topic_id:
            return f"topic recreated (id {self.topic_id} -> {topic_id})"
        if partitions != self.partitions:
            return f"partitions {self.partitions} -> {partitions}"
        return None


@dataclass(frozen=True)
class XmaxMark:
    """The highest source snapshot xmax an aggregate view's writes used."""

    view: str
    epoch: int
    xmax: int

    @property
    def key(self) -> str:
        return f"{XMAX_PREFIX}{self.view}"


@dataclass
class Recorded:
    """Every layout and mark on the checkpoint topic."""

    layouts: dict[tuple[str, str], TopicLayout] = field(default_factory=dict)
    marks: dict[str, XmaxMark] = field(default_factory=dict)

    def epochs(self) -> dict[str, int]:
        out = {v: m.epoch for v, m in self.marks.items()}
        for (view, _t), lay in self.layouts.items():
            out[view] = max(out.get(view, 0), lay.epoch)
        return out

    def starts(self) -> dict[str, Starts]:
        out: dict[str, Starts] = {}
        for (view, _t), lay in self.layouts.items():
            out.setdefault(view, {}).update(lay.start_offsets())
        return out


def load(cfg: Config, patience_s: float = 60.0) -> Recorded:
    """Read every layout and mark (the whole checkpoint topic, or raise).

    A topic not readable yet (no partition leader for a few seconds after a
    broker restart) is read again for up to ``patience_s``.

    Raises:
        TransientError: the topic was not readable within ``patience_s``.
    """
    rec = Recorded()
    deadline = time.monotonic() + patience_s
    while True:
        try:
            raw = read_records(
                cfg.kafka.bootstrap_servers,
                cfg.kafka.checkpoint_topic,
                30.0,
                whole=True,
            )
            break
        except TransientError as exc:
            if time.monotonic() > deadline:
                raise
            logger.warning("checkpoint topic not readable yet error=%s", exc)
            time.sleep(1.0)
    for key, data in raw.items():
        if key.startswith(LAYOUT_PREFIX):
            lay = TopicLayout(**data)
            rec.layouts[(lay.view, lay.topic)] = lay
        elif key.startswith(XMAX_PREFIX):
            mark = XmaxMark(**data)
            rec.marks[mark.view] = mark
    return rec


def recorded_views(cfg: Config, only: Iterable[str] | None = None) -> dict[str, View]:
    """The views, built with the epochs and start offsets the workers use."""
    known = load(cfg)
    return build_views(cfg, known.epochs(), only, known.starts())


def write(cfg: Config, records: Iterable[TopicLayout | XmaxMark]) -> None:
    """Record layouts or marks durably (produced and acknowledged)."""
    admin = AdminClient({"bootstrap.servers": cfg.kafka.bootstrap_servers})
    topic = cfg.kafka.checkpoint_topic
    ensure_topics(admin, [(topic, 1, True)], cfg.kafka.replication_factor)
    producer = Producer(
        {"bootstrap.servers": cfg.kafka.bootstrap_servers, "enable.idempotence": True}
    )
    produce(producer, cfg.kafka.checkpoint_topic, records)
    if producer.flush(30) > 0:
        raise TransientError("layout records not acknowledged within 30s")


def produce(
    producer: Producer, topic: str, records: Iterable[TopicLayout | XmaxMark]
) -> None:
    for rec in records:
        producer.produce(topic, key=rec.key.encode(), value=json.dumps(asdict(rec)))
    producer.poll(0)


def describe(
    cfg: Config, topics: Sequence[str], admin: AdminClient | None = None
) -> dict[str, tuple[str, int]]:
    """Each existing topic's id and partition count (missing topics left out)."""
    if not topics:
        return {}
    if admin is None:
        admin = AdminClient({"bootstrap.servers": cfg.kafka.bootstrap_servers})
    out: dict[str, tuple[str, int]] = {}
    for name, fut in admin.describe_topics(TopicCollection(list(topics))).items():
        try:
            desc = fut.result()
        except KafkaException as exc:
            if exc.args[0].name() == "UNKNOWN_TOPIC_OR_PART":
                continue
            raise TransientError(f"cannot describe topic {name}: {exc}") from exc
        out[name] = (str(desc.topic_id), len(desc.partitions))
    return out


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


def current_xmax(cfg: Config) -> int:
    """The source's current snapshot xmax, where aggregate views read."""
    dsn = (cfg.source.lookup_dsn or cfg.source.dsn).get_secret_value()
    try:
        with psycopg.connect(dsn, connect_timeout=10) as conn:
            row = conn.execute(
                "SELECT pg_snapshot_xmax(pg_current_snapshot())::text::bigint"
            ).fetchone()
    except psycopg.OperationalError as exc:
        raise TransientError(f"source not reachable: {exc}") from exc
    assert row is not None
    return int(row[0])


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
        self._admin = AdminClient({"bootstrap.servers": cfg.kafka.bootstrap_servers})

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
        from confluent_kafka import TopicPartition

        if not self.topics:
            return []
        consumer = Consumer(
            {
                "bootstrap.servers": self.cfg.kafka.bootstrap_servers,
                "group.id": self.group,
                "enable.auto.commit": False,
            }
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

    def _xmax_problems(self) -> list[str]:
        marks = [m for v, m in self.recorded.marks.items() if v in self.views]
        if not marks:
            return []
        return xmax_refusals(marks, current_xmax(self.cfg))
