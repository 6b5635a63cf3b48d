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
workers then accept. This module holds the records and their reading and
writing; the worker's checks are :class:`pipeline.layoutguard.Guard`.

Limits: the first worker that meets a topic records what it sees, so a change
made before that (e.g. before upgrading to a readside with this check) is not
detected; the snapshot loader's aggregate writes do not raise the mark (the
workers' writes, which follow, do).
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass, field

import psycopg
from confluent_kafka import KafkaException, Producer, TopicCollection
from confluent_kafka.admin import AdminClient

from pipeline import kafkaclient
from pipeline.checkpoints import ensure_topics, read_records
from pipeline.config import Config
from pipeline.errors import TransientError
from pipeline.views import View, build_views

logger = logging.getLogger(__name__)

LAYOUT_PREFIX = "__layout__|"
XMAX_PREFIX = "__xmax__|"

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
            raw = read_records(cfg.kafka, cfg.kafka.checkpoint_topic, 30.0, whole=True)
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
    admin = kafkaclient.admin(cfg.kafka)
    topic = cfg.kafka.checkpoint_topic
    ensure_topics(admin, [(topic, 1, True)], cfg.kafka.replication_factor)
    producer = kafkaclient.producer(cfg.kafka, {"enable.idempotence": True})
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
        admin = kafkaclient.admin(cfg.kafka)
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
