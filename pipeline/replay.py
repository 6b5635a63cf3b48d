"""``readside dlq replay``: apply dead letters again after their cause is fixed.

Each dead letter is decoded with its original topic, partition and offset, so
it writes the version it would have written the first time: a document that
changed since keeps its newer version. The records go through the worker's
own batch path (:mod:`pipeline.batch`): an aggregate view re-reads the roots
a replayed change names, in a snapshot of now. Records that fail again go back to the
dead-letter topic with the new reason. Progress is kept as the committed
offsets of the consumer group ``<group_id>.dlq-replay``, so a record is
replayed once.
"""

from __future__ import annotations

import logging
from functools import partial
from typing import Any

from confluent_kafka import TopicPartition

from pipeline import dlqtopic, kafkaclient, layout
from pipeline.aggregate import prepare_views
from pipeline.aggregate.reader import Reader
from pipeline.batch import BatchHandler
from pipeline.config import Config
from pipeline.dlq import (
    H_VALUE_DROPPED,
    H_VALUE_SIZE,
    DeadLetterQueue,
    DeadRecord,
    OriginMessage,
    read_all,
)
from pipeline.processor import Processor
from pipeline.source.converter import converter_for
from pipeline.worker import build_sinks

logger = logging.getLogger(__name__)


def replay_dead_letters(cfg: Config) -> tuple[int, int]:
    """Returns (records replayed, records dead-lettered again)."""
    group = f"{cfg.kafka.group_id}.dlq-replay"
    records = list(
        rec for rec, _c in read_all(cfg.kafka, cfg.kafka.dlq_topic, group=group)
    )
    if not records:
        return 0, 0
    whole = _whole(records)
    views = layout.recorded_views(cfg)  # the epochs the workers write with
    lookup = (cfg.source.lookup_dsn or cfg.source.dsn).get_secret_value()
    prepare_views(views, lookup)
    sinks = build_sinks(cfg, sorted({s for v in views.values() for s in v.cfg.sinks}))
    admin = kafkaclient.admin(cfg.kafka)
    limit = dlqtopic.topic_max_bytes(admin, cfg.kafka.dlq_topic)
    producer = kafkaclient.producer(cfg.kafka, dlqtopic.producer_settings(limit))
    dlq = DeadLetterQueue(
        producer,
        cfg.kafka.dlq_topic,
        limit,
        partial(dlqtopic.topic_max_bytes, admin, cfg.kafka.dlq_topic),
    )
    reader = Reader(lookup)
    handler = BatchHandler(
        views,
        sinks,
        Processor(dict(views), cfg.view_topics(), converter=converter_for(cfg.kafka)),
        reader,
        cfg.worker,
    )
    try:
        for sink in sinks.values():
            sink.open()
        # Replayed in their original order: a record replayed after a newer
        # one of the same document is refused by the version guard.
        applied = handler.apply([OriginMessage(r) for r in whole])
        dead = applied.dead
        handler.deliver(dlq, dead)
    finally:
        for sink in sinks.values():
            sink.close()
        reader.close()
    nexts: dict[int, int] = {}
    for r in records:
        nexts[r.dlq_partition] = max(nexts.get(r.dlq_partition, 0), r.dlq_offset + 1)
    committer: Any = kafkaclient.consumer(
        cfg.kafka, {"group.id": group, "enable.auto.commit": False}
    )
    try:
        committer.commit(
            offsets=[
                TopicPartition(cfg.kafka.dlq_topic, p, o) for p, o in nexts.items()
            ],
            asynchronous=False,
        )
    finally:
        committer.close()
    logger.info("dlq replay records=%d failed_again=%d", len(whole), len(dead))
    return len(whole), len(dead)


def _whole(records: list[DeadRecord]) -> list[DeadRecord]:
    """The dead letters that kept their value; the others cannot be replayed
    (without a value a record would read as a tombstone and delete)."""
    whole = []
    for r in records:
        if H_VALUE_DROPPED not in r.headers:
            whole.append(r)
            continue
        topic, partition, offset = r.origin
        logger.warning(
            "dead letter without its value (too large) not replayed: read it at "
            "its origin or snapshot the row again topic=%s partition=%d offset=%d "
            "size=%s",
            topic,
            partition,
            offset,
            r.headers.get(H_VALUE_SIZE),
        )
    return whole
