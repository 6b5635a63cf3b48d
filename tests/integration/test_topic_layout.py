"""A table topic that gains partitions breaks stream-position versions.

Keys move to the new partitions, whose offsets start at 0: every later update
or delete of a moved key carries a lower version than the document the store
already holds, and would be dropped as stale forever. The worker must notice
the new layout and refuse the view, naming the way out; the documented
recovery (``readside snapshot VIEW --rebuild``) must then make the stores
equal to the source again.
"""

from __future__ import annotations

import subprocess

import pytest
from confluent_kafka.admin import AdminClient, NewPartitions
from harness import REPO, wait_for

from connectors import debezium
from pipeline.groups import AppliedOffsets

pytestmark = pytest.mark.integration

SCHEMA = "CREATE TABLE items (id integer PRIMARY KEY, name text NOT NULL);"
VIEWS = {"items": {"table": "public.items"}}
ROWS = 120


def _grow(p, topic: str, partitions: int) -> None:
    """Give ``topic`` more partitions and make Debezium's producer use them."""
    admin = AdminClient({"bootstrap.servers": p.config.kafka.bootstrap_servers})
    for fut in admin.create_partitions([NewPartitions(topic, partitions)]).values():
        fut.result()
    client = debezium.ConnectClient(p.config.connect.url)
    name = p.config.connect.connector
    client.request("POST", f"/connectors/{name}/restart?includeTasks=true")
    debezium.wait_running(p.config, timeout_s=120)


def _ends(p, topic: str, partitions: int) -> dict[tuple[str, int], int]:
    from confluent_kafka import Consumer, TopicPartition

    c = Consumer({"bootstrap.servers": p.config.kafka.bootstrap_servers, "group.id": "x"})
    try:
        return {
            (topic, n): c.get_watermark_offsets(TopicPartition(topic, n), timeout=10)[1]
            for n in range(partitions)
        }
    finally:
        c.close()


def _mutate_all(p) -> None:
    """Update every row and delete a third of them (moved keys among them)."""
    with p.connect() as conn:
        conn.execute("UPDATE items SET name = name || ' (renamed)'")
        conn.execute("DELETE FROM items WHERE id % 3 = 0")


def test_worker_refuses_a_table_topic_that_gained_partitions(make_pipeline):
    p = make_pipeline(
        SCHEMA,
        ["public.items"],
        VIEWS,
    )
    # The consumer sees the new partitions within seconds (default: 5 min).
    p.rewrite(
        lambda d: d["kafka"].setdefault("extra", {}).update(
            {"topic.metadata.refresh.interval.ms": 2000}
        )
    )
    p.sql(
        "INSERT INTO items SELECT i, 'item ' || i FROM generate_series(1, %s) i",
        (ROWS,),
    )
    p.apply_connector()
    worker = p.start_worker()
    for _ in range(3):  # offsets grow well past what new partitions will reach
        p.sql("UPDATE items SET name = name || '.'")
    p.wait_drained()
    p.assert_converged()

    topic = p.config.source.topic("public.items")
    _grow(p, topic, 6)
    _mutate_all(p)
    lsn = p.sql("SELECT pg_current_wal_lsn()::text")[0][0]
    wait_for(lambda: p.connector_caught_up(lsn), 120, "connector to catch up")
    ends = _ends(p, topic, 6)
    assert any(ends[(topic, n)] > 0 for n in (3, 4, 5)), "no key moved"

    def refused_or_applied() -> str | None:
        if not worker.alive():
            return "refused"
        have = AppliedOffsets(p.config).by_view(list(ends))["items"]
        if all(have.get(k, 0) >= end for k, end in ends.items()):
            return "applied"
        return None

    outcome = wait_for(refused_or_applied, 120, "the worker to refuse or apply")
    if outcome == "applied":
        bad = [d.describe() for d in p.verify() if not d.ok]
        pytest.fail(
            "the worker applied the new layout without a word; stores: "
            + ("; ".join(bad) or "no drift")
        )
    log = worker.log_text()
    assert f"topic {topic}" in log, worker.tail()
    assert "partitions 3 -> 6" in log, worker.tail()
    assert "readside snapshot items --rebuild" in log, worker.tail()
    assert worker.proc.wait(30) != 0

    # The worker keeps refusing until the view is rebuilt.
    again = p.start_worker()
    wait_for(lambda: not again.alive(), 120, "a new worker to refuse too")
    assert "partitions 3 -> 6" in again.log_text(), again.tail()

    # The recovery: a rebuild starts a new epoch on the new layout.
    done = subprocess.run(
        p.cli_args("snapshot", "items", "--rebuild"),
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=420,
    )
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    p.start_worker()
    _mutate_all(p)  # moved keys change again after the rebuild
    p.sql("INSERT INTO items VALUES (100000, 'late')")
    wait_for(
        lambda: all(d.ok for d in p.verify()), 180, "the stores to equal the source"
    )
    p.assert_converged()
