"""A delete record outlives compaction as long as its tombstone does.

An aggregate child whose link to its owner is outside its key
(``orders.customer_id``) names that owner only in its delete record's before
image: the tombstone after it carries the key alone. If compaction removed
the delete record while the tombstone stayed, a worker that was behind would
leave the child in its former owner's document. So the table topics the
connector creates keep a delete record uncompacted
(``min.compaction.lag.ms``) exactly as long as its tombstone
(``delete.retention.ms``): ``kafka.delete_window_ms``, the one bound on how
far behind a worker may fall and miss no delete.
"""

from __future__ import annotations

import pytest
from confluent_kafka.admin import AdminClient
from harness import wait_for

from pipeline.kafkaclient import topic_configs

pytestmark = pytest.mark.integration

SCHEMA = """
CREATE TABLE items (id integer PRIMARY KEY, name text NOT NULL);
CREATE TABLE extra (id integer PRIMARY KEY, note text);
"""
WINDOW_MS = 7_200_000


def test_connector_topics_keep_delete_records_as_long_as_tombstones(make_pipeline):
    # The harness creates the views' topics itself; `extra` feeds no view,
    # so Debezium creates its topic, with the connector's settings.
    p = make_pipeline(
        SCHEMA, ["public.items", "public.extra"], {"items": {"table": "public.items"}}
    )
    p.rewrite(lambda d: d["kafka"].update(delete_window_ms=WINDOW_MS))
    p.apply_connector()
    p.sql("INSERT INTO extra VALUES (1, 'x')")
    p.sql("DELETE FROM extra WHERE id = 1")
    topic = p.config.source.topic("public.extra")
    admin = AdminClient(p.config.kafka.client_conf())
    wait_for(
        lambda: topic in admin.list_topics(timeout=10).topics,
        120,
        f"Debezium to create {topic}",
    )
    settings = topic_configs(admin, [topic])[topic]
    assert settings["cleanup.policy"] == "compact"
    assert settings["min.compaction.lag.ms"] == str(WINDOW_MS)
    assert settings["delete.retention.ms"] == str(WINDOW_MS)
