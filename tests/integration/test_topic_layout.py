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
from confluent_kafka import Consumer, TopicPartition
from confluent_kafka.admin import AdminClient, NewPartitions
from harness import REPO, wait_for

from connectors import debezium
from pipeline import layout
from pipeline.checkpoints import ensure_topics
from pipeline.groups import AppliedOffsets
from pipeline.snapshot.epoch import restart_connector

pytestmark = pytest.mark.integration

SCHEMA = "CREATE TABLE items (id integer PRIMARY KEY, name text NOT NULL);"
VIEWS = {"items": {"table": "public.items"}}
ROWS = 120


def _grow(p, topic: str, partitions: int) -> None:
    """Give ``topic`` more partitions and make Debezium's producer use them."""
    admin = AdminClient(p.config.kafka.client_conf())
    for fut in admin.create_partitions([NewPartitions(topic, partitions)]).values():
        fut.result()
    # Stopped and resumed rather than restarted: a restart request returns
    # before the task restarted, so "running" may still be the old producer.
    restart_connector(p.config)


def _ends(p, topic: str, partitions: int) -> dict[tuple[str, int], int]:
    c = Consumer({**p.config.kafka.client_conf(), "group.id": "x"})
    try:
        return {
            (topic, n): c.get_watermark_offsets(TopicPartition(topic, n), timeout=10)[1]
            for n in range(partitions)
        }
    finally:
        c.close()


def _mutate_all(p, every: int = 3) -> None:
    """Update every row and delete some (moved keys among them)."""
    with p.connect() as conn:
        conn.execute("UPDATE items SET name = name || ' (renamed)'")
        conn.execute("DELETE FROM items WHERE id %% %s = 0", (every,))


def _rebuild(p, view: str) -> None:
    done = subprocess.run(
        p.cli_args("snapshot", view, "--rebuild"),
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=420,
    )
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    # no worker runs (each was refused): the old generation is dropped at
    # once, not after waiting the live group's commits out
    assert "are they running" not in done.stderr, done.stderr[-3000:]


def _refused(p, text: str):
    """A new worker, which must exit at once naming ``text`` and the way out."""
    worker = p.start_worker()
    wait_for(lambda: not worker.alive(), 120, "the worker to refuse")
    log = worker.log_text()
    assert text in log, worker.tail()
    assert "--rebuild" in log, worker.tail()
    assert worker.proc.returncode != 0
    return worker


def test_worker_refuses_a_table_topic_that_gained_partitions(make_pipeline):
    p = make_pipeline(
        SCHEMA,
        ["public.items"],
        VIEWS,
    )
    # The consumer sees the new partitions within seconds (default: 5 min).
    p.rewrite(
        lambda d: (
            d["kafka"]
            .setdefault("extra", {})
            .update({"topic.metadata.refresh.interval.ms": 2000})
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
    _refused(p, "partitions 3 -> 6")

    # The recovery: a rebuild starts a new epoch on the new layout.
    _rebuild(p, "items")
    lay = layout.load(p.config).layouts[("items", topic)]
    assert (lay.partitions, lay.epoch) == (6, 1)
    assert all(lay.starts[str(n)] >= ends[(topic, n)] for n in range(6)), (
        "the new epoch starts after every record of the old layout"
    )
    p.start_worker()
    _mutate_all(p, every=5)  # moved keys change again after the rebuild
    p.sql("INSERT INTO items VALUES (100000, 'late')")
    wait_for(
        lambda: all(d.ok for d in p.verify()), 180, "the stores to equal the source"
    )
    p.assert_converged()


def test_worker_refuses_a_recreated_table_topic(make_pipeline):
    p = make_pipeline(SCHEMA, ["public.items"], VIEWS)
    p.sql("INSERT INTO items SELECT i, 'item ' || i FROM generate_series(1, 40) i")
    p.apply_connector()
    worker = p.start_worker()
    p.wait_drained()
    p.assert_converged()
    assert worker.terminate() == 0

    # The topic is deleted and made again: same name, new id, offsets from 0.
    topic = p.config.source.topic("public.items")
    client = debezium.ConnectClient.of(p.config.connect)
    name = p.config.connect.connector
    client.request("PUT", f"/connectors/{name}/stop")
    wait_for(
        lambda: debezium.status(p.config)["state"] == "STOPPED", 60, "connector stop"
    )
    admin = AdminClient(p.config.kafka.client_conf())
    for fut in admin.delete_topics([topic]).values():
        fut.result()
    wait_for(
        lambda: topic not in admin.list_topics(timeout=10).topics, 60, "topic deletion"
    )
    ensure_topics(admin, [(topic, 3, True)])
    client.request("PUT", f"/connectors/{name}/resume")
    debezium.wait_running(p.config, timeout_s=120)
    _mutate_all(p)

    _refused(p, "topic recreated")
    _rebuild(p, "items")
    p.start_worker()
    _mutate_all(p, every=5)
    wait_for(
        lambda: all(d.ok for d in p.verify()), 180, "the stores to equal the source"
    )
    p.assert_converged()


AUTHORS = """
CREATE TABLE authors (id integer PRIMARY KEY, name text NOT NULL);
CREATE TABLE books (
    id integer PRIMARY KEY,
    author_id integer NOT NULL REFERENCES authors,
    title text NOT NULL
);
ALTER TABLE books REPLICA IDENTITY FULL;
"""
AUTHOR_VIEW = {
    "kind": "aggregate",
    "table": "public.authors",
    "embed": {"books": {"children": "public.books", "on": {"author_id": "id"}}},
}


def _xmax(p) -> int:
    return int(
        p.sql("SELECT pg_snapshot_xmax(pg_current_snapshot())::text::bigint")[0][0]
    )


def test_worker_refuses_an_aggregate_view_whose_source_xmax_went_back(make_pipeline):
    p = make_pipeline(
        AUTHORS, ["public.authors", "public.books"], {"authors": AUTHOR_VIEW}
    )
    p.sql("INSERT INTO authors SELECT i, 'author ' || i FROM generate_series(1, 20) i")
    p.apply_connector()
    worker = p.start_worker()
    p.sql(
        "INSERT INTO books SELECT i, 1 + i % 20, 'book ' || i "
        "FROM generate_series(1, 60) i"
    )
    p.wait_drained()
    p.assert_converged()
    # The worker recorded the highest snapshot xmax its writes used.
    mark = wait_for(
        lambda: layout.load(p.config).marks.get("authors"), 30, "the xmax mark"
    )
    assert 0 < mark.xmax <= _xmax(p)
    assert worker.terminate() == 0

    # A restore moves the source's xid counter behind what the view used:
    # simulated by a mark far ahead of the source.
    ahead = layout.XmaxMark("authors", mark.epoch, _xmax(p) + 1_000_000)
    layout.write(p.config, [ahead])
    _refused(p, f"is below {ahead.xmax}")

    _rebuild(p, "authors")
    again = layout.load(p.config).marks["authors"]
    assert again.epoch == mark.epoch + 1
    assert again.xmax <= _xmax(p)
    p.start_worker()
    p.sql("UPDATE books SET title = title || ' (2nd ed.)' WHERE id % 2 = 0")
    p.sql("DELETE FROM books WHERE id % 7 = 0")
    wait_for(
        lambda: all(d.ok for d in p.verify()), 180, "the stores to equal the source"
    )
    p.assert_converged()
