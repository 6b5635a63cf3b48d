"""``readside dlq replay``: apply dead letters again after their cause is fixed.

Each dead letter is decoded with its original topic, partition and offset, so
it writes the version it would have written the first time: a document that
changed since keeps its newer version. Records that fail again go back to the
dead-letter topic with the new reason. Progress is kept as the committed
offsets of the consumer group ``<group_id>.dlq-replay``, so a record is
replayed once.
"""

from __future__ import annotations

import logging
from typing import Any

from confluent_kafka import Consumer, Producer, TopicPartition

from pipeline.config import Config
from pipeline.dlq import DeadLetterQueue, OriginMessage, read_all
from pipeline.processor import DeadLetter, Processor, ops_for_sink
from pipeline.views import build_views

logger = logging.getLogger(__name__)


def replay_dead_letters(cfg: Config) -> tuple[int, int]:
    """Returns (records replayed, records dead-lettered again)."""
    from pipeline.worker import build_sinks

    group = f"{cfg.kafka.group_id}.dlq-replay"
    records = list(
        rec
        for rec, _c in read_all(
            cfg.kafka.bootstrap_servers, cfg.kafka.dlq_topic, group=group
        )
    )
    if not records:
        return 0, 0
    views = build_views(cfg)
    sinks = build_sinks(cfg, sorted({s for v in views.values() for s in v.cfg.sinks}))
    producer = Producer({"bootstrap.servers": cfg.kafka.bootstrap_servers})
    dlq = DeadLetterQueue(producer, cfg.kafka.dlq_topic)
    processor = Processor(dict(views), cfg.view_topics())
    try:
        for sink in sinks.values():
            sink.open()
        batch = processor.process([OriginMessage(r) for r in records])
        dead = list(batch.dead)
        for name, sink in sinks.items():
            ops = ops_for_sink(batch, [v for v in views if name in views[v].cfg.sinks])
            if not ops:
                continue
            result = sink.write(ops)  # a transient error stops the replay here
            for op, why in result.rejected:
                if op.position is not None:
                    dead.append(
                        DeadLetter(
                            batch.messages[op.position],
                            f"sink:{name}",
                            "Rejected",
                            why,
                            op.view,
                        )
                    )
        for d in dead:
            dlq.send(d)
        dlq.flush()
    finally:
        for sink in sinks.values():
            sink.close()
    nexts: dict[int, int] = {}
    for r in records:
        nexts[r.dlq_partition] = max(nexts.get(r.dlq_partition, 0), r.dlq_offset + 1)
    committer: Any = Consumer(
        {
            "bootstrap.servers": cfg.kafka.bootstrap_servers,
            "group.id": group,
            "enable.auto.commit": False,
        }
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
    logger.info("dlq replay records=%d failed_again=%d", len(records), len(dead))
    return len(records), len(dead)
