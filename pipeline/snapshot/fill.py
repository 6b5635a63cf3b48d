"""Following a table view's incremental snapshot to its end.

Debezium's incremental snapshot of a table (:func:`pipeline.snapshot.load.
send_signal`) sends every row through the stream again as a new event. A
table view's documents are whole once

1. every row the table holds has an event at or past the offsets sampled
   before the signal (:func:`await_rows`: Debezium is through; rows deleted
   meanwhile have their delete there, rows inserted their insert), and
2. every group applying the view to a sink has committed past the ends of
   the topic sampled after that (:func:`await_applied`: the events are in
   the stores).

A rebuild's new epoch waits for the first (:mod:`pipeline.snapshot.epoch`);
``readside snapshot VIEW --from-source`` for both, then marks the view
loaded (:mod:`pipeline.loaded`).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterable, Mapping
from typing import Any

import psycopg
from confluent_kafka import Consumer, KafkaException, TopicPartition
from psycopg import sql

from pipeline import kafkaclient
from pipeline.aggregate import catalog
from pipeline.config import Config
from pipeline.errors import BadRecord
from pipeline.groups import AppliedOffsets
from pipeline.source.converter import converter_for
from pipeline.source.records import Converter
from pipeline.views import doc_id

logger = logging.getLogger(__name__)

#: how long either wait lasts before it gives up with a warning
WAIT_S = 1800.0
#: seconds between two lines saying what a wait still waits for
SAY_EVERY_S = 15.0

Part = tuple[str, int]
Never: Callable[[], bool] = lambda: False  # noqa: E731 - a stop never asked


def end_offsets(cfg: Config, topic: str, parts: int | None = None) -> dict[int, int]:
    """Each partition's end offset (``parts``: their count, read if None)."""
    consumer = _consumer(cfg)
    try:
        if parts is None:
            found = consumer.list_topics(topic, timeout=10).topics.get(topic)
            parts = 0 if found is None or found.error else len(found.partitions)
        return {
            p: consumer.get_watermark_offsets(TopicPartition(topic, p), timeout=10)[1]
            for p in range(parts)
        }
    finally:
        consumer.close()


def await_rows(
    cfg: Config,
    what: str,
    table: str,
    starts: Mapping[Part, int],
    timeout_s: float = WAIT_S,
    stopping: Callable[[], bool] = Never,
) -> bool:
    """Wait until every row of ``table`` has an event at or past ``starts``;
    whether they all came (not: ``timeout_s`` passed, with a warning, or a
    stop was asked).

    The table is read once, after ``starts`` were sampled: each row it holds
    then gets an event past them (its incremental-snapshot read, or the
    change or delete that came first), and a row inserted later has its
    insert there. So only the rows of that read are waited for, each crossed
    off at its first event. Compares the key's text forms (``::text`` in
    SQL, the decoded key in the stream); if they never meet (an exotic key
    type) the wait runs out.
    """
    consumer = _consumer(cfg)
    missing = _row_ids(cfg, table)
    rows = len(missing)
    converter = converter_for(cfg.kafka)
    deadline = time.monotonic() + timeout_s
    try:
        consumer.assign([TopicPartition(t, p, o) for (t, p), o in starts.items()])
        while not stopping():
            _cross_off(consumer, missing, converter)
            if not missing:
                logger.info("every row has its event view=%s rows=%d", what, rows)
                return True
            if time.monotonic() > deadline:
                logger.warning(
                    "rows without an event of the incremental snapshot view=%s "
                    "count=%d first=%s; going on",
                    what,
                    len(missing),
                    sorted(missing)[:5],
                )
                return False
            logger.info(
                "waiting for the incremental snapshot view=%s missing=%d",
                what,
                len(missing),
            )
        return False
    finally:
        consumer.close()


def await_applied(
    cfg: Config,
    view: str,
    sinks: Iterable[str],
    ends: Mapping[Part, int],
    timeout_s: float = WAIT_S,
    stopping: Callable[[], bool] = Never,
    sleep: Callable[[float], None] = time.sleep,
) -> bool:
    """Wait until the groups applying ``view`` to each of ``sinks`` have
    committed ``ends`` (:class:`pipeline.groups.AppliedOffsets`); whether they
    did (not: ``timeout_s`` passed, with a warning, or a stop was asked)."""
    wanted = {part: end for part, end in ends.items() if end > 0}
    pairs = [(view, s) for s in sorted(sinks)]
    applied = AppliedOffsets(cfg)
    deadline = time.monotonic() + timeout_s
    next_say = time.monotonic() + SAY_EVERY_S
    while not stopping():
        try:
            by_pair = applied.by_pair(wanted)
        except (KafkaException, TimeoutError) as exc:
            by_pair, behind = {}, {f"(offsets not read: {exc})": len(wanted)}
        else:
            behind = {
                sink: sum(
                    max(0, end - by_pair.get((view, sink), {}).get(part, 0))
                    for part, end in wanted.items()
                )
                for _view, sink in pairs
            }
            behind = {sink: n for sink, n in behind.items() if n}
        if not behind:
            logger.info("the workers applied the incremental snapshot view=%s", view)
            return True
        now = time.monotonic()
        if now > deadline:
            logger.warning(
                "the workers did not apply the incremental snapshot of view %s "
                "within %.0fs (records left per sink: %s); its load mark is not set",
                view,
                timeout_s,
                behind,
            )
            return False
        if now >= next_say:
            next_say = now + SAY_EVERY_S
            logger.info(
                "waiting for the workers to apply view=%s records_left=%s (is a "
                "worker of the view running?)",
                view,
                behind,
            )
        sleep(1.0)
    return False


def _cross_off(
    consumer: Consumer, missing: set[str], converter: Converter, idle_s: float = 1.0
) -> None:
    """Take the document id of each record out of ``missing``, until the
    consumer idles."""
    while True:
        msgs = consumer.consume(1000, idle_s)
        if not msgs:
            return
        for msg in msgs:
            if msg.error() is not None:
                continue
            try:
                event = converter.decode(msg)
            except BadRecord:
                continue
            key: Any = getattr(event, "key", None)
            if key:
                missing.discard(doc_id(key))


def _row_ids(cfg: Config, table: str) -> set[str]:
    with psycopg.connect(cfg.source.dsn.get_secret_value()) as conn:
        cols = catalog.primary_key(conn, table)
        if not cols:
            return set()
        keys = sql.SQL(", ").join(
            sql.SQL("{}::text").format(sql.Identifier(c)) for c in cols
        )
        query = sql.SQL("SELECT {} FROM {}").format(
            keys, sql.Identifier(*table.split("."))
        )
        rows = conn.execute(query).fetchall()
    return {doc_id(dict(zip(cols, row, strict=True))) for row in rows}


def _consumer(cfg: Config) -> Consumer:
    return kafkaclient.consumer(
        cfg.kafka,
        {"group.id": f"{cfg.kafka.group_id}.epoch-probe", "enable.auto.commit": False},
    )
