"""A worker that was stopped longer than its topics keep deletes says so when
it starts: which views may keep rows deleted at the source, and the rebuild
that mends them (pipeline.deletewindow). Within the window it says nothing.
Either way it goes on applying the changes."""

from __future__ import annotations

import json
import time

import pytest
from confluent_kafka.admin import AdminClient
from harness import wait_for

pytestmark = pytest.mark.integration

SCHEMA = """
CREATE TABLE items (id integer PRIMARY KEY, name text NOT NULL);
INSERT INTO items SELECT i, 'item ' || i FROM generate_series(1, 10) AS i;
"""
WINDOW_S = 15
SAID = "behind the delete window"
SAID_STATUS = "may keep rows deleted"


def _lag(p) -> int:
    st = json.loads(p.run_cli("status", "--json").stdout)
    return sum(v["consumer_lag"] for v in st["views"])


def test_a_worker_stopped_past_the_delete_window_names_the_views_to_rebuild(
    make_pipeline,
):
    p = make_pipeline(
        SCHEMA,
        ["public.items"],
        {"items": {"table": "public.items", "sinks": ["redis"]}},
    )
    topic = p.config.source.topic("public.items")
    admin = AdminClient(p.config.kafka.client_conf())
    p.apply_connector()
    wait_for(
        lambda: topic in admin.list_topics(timeout=10).topics, 120, f"topic {topic}"
    )
    p.set_topic_configs(topic, {"delete.retention.ms": str(WINDOW_S * 1000)})
    first = p.start_worker()
    p.wait_drained(timeout=120)
    assert first.terminate() == 0

    # stopped for less than the window: nothing to say
    p.sql("UPDATE items SET name = 'soon' WHERE id = 1")
    p.wait_streaming()
    wait_for(lambda: _lag(p) > 0, 60, "the update in the topic")
    assert SAID_STATUS not in p.run_cli("status").stdout
    within = p.start_worker()
    p.wait_drained(timeout=120)
    assert within.terminate() == 0
    assert SAID not in within.log_text()

    # stopped past it: the next record to read is older than the window
    p.sql("DELETE FROM items WHERE id = 2")
    time.sleep(WINDOW_S + 2)
    status = json.loads(p.run_cli("status", "--json").stdout)
    (behind,) = status["behind_delete_window"]
    assert (behind["view"], behind["sink"], behind["topic"]) == (
        "items",
        "redis",
        topic,
    )
    assert "`readside snapshot items --rebuild`" in behind["says"]
    text = p.run_cli("status").stdout
    assert f"warning: items in redis: {topic}[{behind['partition']}]" in text, text
    late = p.start_worker()
    p.wait_log(late, SAID, timeout=60)
    said = [line for line in late.log_text().splitlines() if SAID in line]
    assert len(said) == 1, said  # the one partition holding the delete
    assert "the view(s) items may keep rows deleted" in said[0]
    assert "`readside snapshot items --rebuild`" in said[0]
    p.wait_drained(timeout=120)
    assert late.alive(), late.tail()
    p.assert_converged()  # the tombstone was still there: nothing was lost
    assert (
        json.loads(p.run_cli("status", "--json").stdout)["behind_delete_window"] == []
    )
