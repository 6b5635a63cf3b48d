"""The tombstones ``readside snapshot VIEW --from-source`` writes first, for
rows gone from the source whose deletes never reached the stream
(pipeline.snapshot.gone), are never written for a row whose changes are
still on their way.

A connector that lags (Connect restarting, the broker away, or paused here)
has not yet sent a delete the source committed. A tombstone written then
comes before the row's older updates in the topic: the stores apply them
over it, and the deleted row's document is back until the delete arrives.
"""

from __future__ import annotations

import threading
import time
from typing import Any

import pytest
from confluent_kafka import TopicPartition
from harness import Pipeline, connect_client, wait_for
from items_model import TABLE_VIEW, started

from pipeline import kafkaclient
from pipeline.events import Op, doc_id
from pipeline.snapshot import gone
from pipeline.source.converter import converter_for
from pipeline.source.records import Heartbeat

pytestmark = pytest.mark.integration

TOPIC_OF = "public.items"


def _ops_of(p: Pipeline, ident: str) -> list[str]:
    """The ops of the records of document ``ident`` in the items topic, in
    order."""
    topic = p.config.source.topic(TOPIC_OF)
    consumer = kafkaclient.consumer(
        p.config.kafka, {"group.id": "gone-probe", "enable.auto.commit": False}
    )
    converter = converter_for(p.config.kafka)
    ops: list[str] = []
    try:
        md = consumer.list_topics(topic, timeout=10).topics[topic]
        ends = {
            part: consumer.get_watermark_offsets(TopicPartition(topic, part), 10)[1]
            for part in md.partitions
        }
        consumer.assign([TopicPartition(topic, part, 0) for part in ends])
        left = {part for part, end in ends.items() if end > 0}
        deadline = time.monotonic() + 60
        while left and time.monotonic() < deadline:
            for msg in consumer.consume(500, 1.0):
                if msg.error() is not None:
                    continue
                part, offset = msg.partition() or 0, msg.offset() or 0
                if offset >= ends[part] - 1:
                    left.discard(part)
                event = converter.decode(msg)
                if isinstance(event, Heartbeat) or doc_id(event.key) != ident:
                    continue
                ops.append(event.op.value)
        assert not left, f"items topic not read to its end: {left}"
    finally:
        consumer.close()
    return ops


def _connector(p: Pipeline, action: str, state: str) -> None:
    client = connect_client()
    path = f"/connectors/{p.config.connect.connector}"
    client.request("PUT", f"{path}/{action}")

    def there() -> bool:
        status: Any = client.request("GET", f"{path}/status")
        return bool(status) and all(
            t["state"] == state for t in [status["connector"], *status["tasks"]]
        )

    wait_for(there, 60, f"the connector {state}")


def test_a_row_whose_delete_is_still_on_its_way_gets_no_tombstone(make_pipeline):
    p, worker = started(make_pipeline, TABLE_VIEW)
    _connector(p, "pause", "PAUSED")
    try:
        # Committed while the connector lags: the stream has neither yet.
        p.sql("UPDATE items SET name = 'renamed' WHERE id = 5")
        p.sql("DELETE FROM items WHERE id = 5")
        found: list[list[gone.Gone]] = []
        run = threading.Thread(
            target=lambda: found.append(gone.tombstone_gone(p.config, [TOPIC_OF]))
        )
        run.start()
        time.sleep(5)  # the table is read, the stream still lags
    finally:
        _connector(p, "resume", "RUNNING")
    run.join(120)
    assert found == [[]], "a tombstone was written for a row whose delete was coming"
    p.wait_drained(timeout=120)
    # Row 5's records: its snapshot read, the update, the delete and
    # Debezium's tombstone; never a row image after a tombstone.
    ops = _ops_of(p, "5")
    assert ops == [o.value for o in (Op.READ, Op.UPDATE, Op.DELETE, Op.TOMBSTONE)]
    p.assert_converged()
    assert worker.alive(), worker.tail()
