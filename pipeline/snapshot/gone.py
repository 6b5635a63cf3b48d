"""Rows gone from the source whose deletes never reached their topic.

A table's compacted topic keeps, per key, the last change it carried. When a
row's delete never reached the stream (the publication left the table or its
deletes out, or a row filter hid the row: docs/design.md, "A publication
changed by hand"), the topic keeps the row's last image for good. The stores
keep its document, every replay of the topic (``readside snapshot VIEW``, a
rebuild) writes it again, and neither Debezium's incremental snapshot nor a
chunked load can remove it: both read the rows that exist.

:func:`tombstone_gone` finds those keys (the last record of the key in the
topic is a row image, and the table holds no row with that primary key) and
produces a Kafka tombstone for each, under the record key exactly as Debezium
wrote it, on the partition that key lives on. The workers apply it like
Debezium's own tombstones: a table view deletes the document at the
tombstone's offset, an aggregate view reads again the roots the key names,
and compaction then removes the key from the topic.

A key is found gone by readside's document id, which the stream's key and the
table's primary key must give alike; before its tombstone is written the
table is asked again for that key with PostgreSQL's own comparison (the
key's values cast to the columns' types). A key the table holds after all
(an id mapping that differs for some key type) gets no tombstone, and the
run says so: a tombstone there would delete a live document from every
store until the load that follows put it back.

A row is gone only if its delete can no longer be on its way. The topic
is read first, the table after it, so a row deleted meanwhile, or earlier
while the connector lagged (Connect restarting, the broker away), is
missing from the table while its last changes, the delete among them, are
still to come. A tombstone written before them would be followed by the
row's older updates, which the stores apply over it: the document of a
deleted row would come back until the delete arrived (the fault suite saw
it, ``--from-source`` while Connect caught up after a restart). So once the
table was read, the connector must have produced every change committed
until then (:func:`~pipeline.snapshot.positions.wait_stream`), and a key
with any record past what was read is left to the stream. A key with none
had its delete committed before that point, or never: and every change
committed before it is in the topic now, so its delete never reached the
stream.

A row inserted again while this runs (after the table was read, its insert
before the tombstone in the topic) would lose to the tombstone. The caller
makes that harmless by loading the view from the source after the
tombstones are in: Debezium's incremental snapshot (a table view) reads every
row present then and writes it at a later offset, and an aggregate view's
workers read the tombstone's root back from the source.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

import psycopg
from confluent_kafka import KafkaError, Message, TopicPartition
from psycopg import sql
from psycopg.rows import dict_row

from pipeline import kafkaclient
from pipeline.aggregate import catalog
from pipeline.config import Config
from pipeline.errors import BadRecord, ConfigError, TransientError
from pipeline.events import Op, doc_id
from pipeline.snapshot import replay
from pipeline.snapshot.positions import wait_stream
from pipeline.source.converter import converter_for
from pipeline.source.records import Heartbeat
from pipeline.types import pg_row_to_json

logger = logging.getLogger(__name__)

#: records read from the topic per call
_READ = 2000
#: seconds without a record after which a read of the topic gives up
_STALL_S = 60.0
#: the ops whose record leaves its row in the table
_LIVE = (Op.CREATE, Op.UPDATE, Op.READ)


@dataclass(frozen=True)
class Gone:
    """A key whose last record in ``topic`` is a row the table no longer holds."""

    topic: str
    partition: int
    key: bytes
    ident: str
    #: the key's columns and values, as the stream decodes them
    values: dict[str, Any] = field(default_factory=dict, compare=False)


def tombstone_gone(
    cfg: Config, tables: Iterable[str], stopping: Callable[[], bool] = lambda: False
) -> list[Gone]:
    """Produce a tombstone for every key of ``tables``' topics whose row is gone
    from the source; returns them (logged as a warning each table). Nothing
    more once ``stopping()``.

    Raises:
        ConfigError: a table's topic does not exist.
        TransientError: Kafka refused a tombstone, or the source did not
            answer (nothing is lost: run again).
        FatalError: the connector did not produce the changes committed
            before the table was read within 10 minutes.
    """
    found: list[Gone] = []
    dsn = (cfg.source.lookup_dsn or cfg.source.dsn).get_secret_value()
    for table in dict.fromkeys(tables):
        topic = cfg.source.topic(table)
        live, read_to = _live_keys(cfg, topic)
        with psycopg.connect(dsn, connect_timeout=10, autocommit=True) as conn:
            present = _source_ids(conn, table, live)
            gone = [g for ident, g in live.items() if ident not in present]
            gone = _confirmed(conn, table, gone)
        if gone:
            # their deletes may be on their way yet (see the module's docstring)
            if not wait_stream(cfg, stopping, what="The snapshot"):
                return found
            gone = _untouched_since(cfg, topic, read_to, gone)
        if gone:
            _produce(cfg, gone)
            logger.warning(
                "rows of %s gone from the source stood in topic %s (their "
                "deletes never reached the stream): %d; tombstones written for "
                "ids %s",
                table,
                topic,
                len(gone),
                ", ".join(g.ident for g in gone[:20]) + (" ..." * (len(gone) > 20)),
            )
        found.extend(gone)
    return found


def _live_keys(cfg: Config, topic: str) -> tuple[dict[str, Gone], dict[int, int]]:
    """Per document id, the key and partition of the topic's keys whose last
    record (up to the high watermarks read at the start) is a row image; and
    those high watermarks, per partition."""
    consumer = _consumer(cfg)
    converter = converter_for(cfg.kafka)
    live: dict[str, Gone] = {}
    try:
        spans = replay.topic_spans(consumer, topic)
        consumer.assign([TopicPartition(topic, s.partition, s.start) for s in spans])
        read_to = {s.partition: s.end for s in spans}
        read = replay.read_to_ends(
            consumer, topic, dict(read_to), _READ, stall_s=_STALL_S
        )
        for msg in (m for batch in read for m in batch):
            try:
                event = converter.decode(msg)
            except BadRecord:
                continue  # a dead letter's: its row is not the stores' either
            if isinstance(event, Heartbeat):
                continue
            ident = doc_id(event.key)
            if event.op in _LIVE:
                live[ident] = Gone(
                    topic, msg.partition() or 0, msg.key() or b"", ident, event.key
                )
            else:
                live.pop(ident, None)
    finally:
        consumer.close()
    return live, read_to


def _untouched_since(
    cfg: Config, topic: str, read_to: dict[int, int], gone: list[Gone]
) -> list[Gone]:
    """Those of ``gone`` with no record in ``topic`` past ``read_to`` (per
    partition, where the first read ended) up to its end now."""
    consumer = _consumer(cfg)
    converter = converter_for(cfg.kafka)
    wanted = {g.ident for g in gone}
    touched: set[str] = set()
    try:
        spans = [
            replay.Span(s.partition, max(s.start, read_to.get(s.partition, 0)), s.end)
            for s in replay.topic_spans(consumer, topic)
        ]
        spans = [s for s in spans if s.size > 0]
        consumer.assign([TopicPartition(topic, s.partition, s.start) for s in spans])
        ends = {s.partition: s.end for s in spans}
        read = replay.read_to_ends(consumer, topic, ends, _READ, stall_s=_STALL_S)
        for msg in (m for batch in read for m in batch):
            try:
                event = converter.decode(msg)
            except BadRecord:
                continue
            if not isinstance(event, Heartbeat) and doc_id(event.key) in wanted:
                touched.add(doc_id(event.key))
    finally:
        consumer.close()
    if touched:
        logger.info(
            "rows of %s gone from the source whose changes were still on their "
            "way: %d (left to the stream)",
            topic,
            len(touched),
        )
    return [g for g in gone if g.ident not in touched]


def _consumer(cfg: Config) -> Any:
    return kafkaclient.consumer(
        cfg.kafka, {"group.id": replay.group(cfg), "enable.auto.commit": False}
    )


def _source_ids(
    conn: psycopg.Connection[Any], table: str, live: dict[str, Gone]
) -> set[str]:
    """The document ids of ``table``'s rows, keyed as the stream keys them."""
    keys = catalog.primary_key(conn, table)
    if not keys:
        raise ConfigError(f"table {table} has no primary key")
    schema, name = table.split(".", 1)
    query = sql.SQL("SELECT {} FROM {}").format(
        sql.SQL(", ").join(sql.Identifier(k) for k in keys),
        sql.Identifier(schema, name),
    )
    out: set[str] = set()
    with conn.cursor(row_factory=dict_row) as cur:
        cur.execute(query)
        for raw in cur:
            ident = doc_id(pg_row_to_json(raw))
            if ident in live:
                out.add(ident)
    return out


def _confirmed(
    conn: psycopg.Connection[Any], table: str, gone: list[Gone]
) -> list[Gone]:
    """Those of ``gone`` the table holds no row of, asked by each key's values
    cast to the primary key's column types; the others are logged, not
    returned."""
    if not gone:
        return gone
    types = catalog.primary_key_types(conn, table)
    schema, name = table.split(".", 1)
    out: list[Gone] = []
    held: list[str] = []
    unasked: list[str] = []
    for g in gone:
        if set(g.values) != set(types):
            unasked.append(g.ident)
            continue
        cols = sorted(g.values)
        query = sql.SQL("SELECT 1 FROM {} WHERE {} LIMIT 1").format(
            sql.Identifier(schema, name),
            sql.SQL(" AND ").join(
                sql.SQL("{} = %s::{}").format(sql.Identifier(c), sql.SQL(types[c]))
                for c in cols
            ),
        )
        try:
            found = conn.execute(query, [_text(g.values[c]) for c in cols]).fetchone()
        except psycopg.DataError:
            unasked.append(g.ident)  # a value the column's type does not read
            continue
        if found is None:
            out.append(g)
        else:
            held.append(g.ident)
    if held or unasked:
        logger.warning(
            "keys of %s that readside's id did not find in the table got no "
            "tombstone: held by the table after all %d (%s); not comparable %d "
            "(%s). The id the stream gives this key type differs from the "
            "source's: such documents may stay after their rows are deleted",
            table,
            len(held),
            ", ".join(held[:5]),
            len(unasked),
            ", ".join(unasked[:5]),
        )
    return out


def _text(value: Any) -> str | None:
    """A key value as text for a cast to its column's type."""
    if value is None or isinstance(value, str):
        return value
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, bytes):
        return "\\x" + value.hex()
    if isinstance(value, (dict, list)):
        return json.dumps(value)
    return str(value)


def _produce(cfg: Config, gone: list[Gone]) -> None:
    """Write a tombstone for each of ``gone`` and wait until Kafka has them all."""
    producer = kafkaclient.producer(cfg.kafka, {"enable.idempotence": True})
    failed: list[KafkaError] = []

    def delivered(err: KafkaError | None, _msg: Message) -> None:
        if err is not None:
            failed.append(err)

    for g in gone:
        producer.produce(
            g.topic, key=g.key, value=None, partition=g.partition, on_delivery=delivered
        )
        producer.poll(0)
    left = producer.flush(30)
    if failed or left:
        reason = failed[0].str() if failed else f"{left} not delivered in 30 s"
        raise TransientError(f"tombstones of rows gone from the source: {reason}")
