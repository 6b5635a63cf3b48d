"""A worker that falls behind a table topic's retention (stopped too long, or
held up by a store) finds its next records gone: the consumer jumps to the
first record the partition still holds. The changes in the records it
skipped were in no store for good, with lag at zero, and nothing said so.

The worker must see the jump, take the load marks of the views reading the
topic away, and name the load that reads the source; that load must make
the views whole and marked again (pipeline.gaps, pipeline.loaded).
"""

from __future__ import annotations

import pytest
from confluent_kafka import TopicPartition
from harness import Pipeline, wait_for
from items_model import BOTH_VIEWS, reload_whole, started, unloaded_loads

from pipeline import kafkaclient

pytestmark = pytest.mark.integration

UNSEEN = ["1", "2", "3", "4", "5", "6"]  # updated while the worker was away


def test_records_dropped_before_the_worker_read_them_are_said_and_loaded(
    make_pipeline,
):
    p, worker = started(make_pipeline, BOTH_VIEWS)
    topic = p.config.source.topic("public.items")
    worker.terminate()
    _cut_unread_changes(p, topic)
    p.sql("UPDATE items SET price = 0 WHERE id = 15")  # after the gap: applied

    worker = p.start_worker()
    dropped = f"topic {topic} dropped record"  # one, or records A-B
    p.wait_log(worker, f"ERROR pipeline.worker {dropped}")
    for view in ("items", "shelf"):
        p.wait_log(
            worker,
            f"view {view} is not whole in sink redis: its load mark is missing; "
            f"{dropped}",
        )
        p.wait_log(
            worker,
            "(its retention) before the worker read them: the changes in them "
            "are in no store. Load it while the worker goes on: readside "
            f"snapshot {view} --rebuild",
        )
    p.wait_drained(timeout=120)
    _assert_stale_and_said(p)

    # the missing mark is the report: a restart says it again
    worker.terminate()
    worker = p.start_worker()
    p.wait_log(worker, "view items is not whole in sink redis")

    # a rebuild, not a load: only a new generation drops document 20, whose
    # delete the topic no longer holds (a table view's takes a new epoch)
    built = reload_whole(p, worker, ["items", "shelf"], "--rebuild")
    for view, run in zip(["items", "shelf"], built, strict=True):
        assert f"rebuild {view} done" in run.stderr + run.stdout, run


def _cut_unread_changes(p: Pipeline, topic: str) -> None:
    """With no worker running: rows 1-6 updated and row 20 deleted, and
    then their records dropped from ``topic``, as its retention would."""
    p.set_topic_configs(topic, {"cleanup.policy": "delete"})
    before = p.high_watermarks()
    p.sql("UPDATE items SET name = 'unseen ' || id WHERE id <= 6")
    p.sql("DELETE FROM items WHERE id = 20")

    def grown() -> int:
        ends = p.high_watermarks()
        return sum(ends[k] - before[k] for k in ends if k[0] == topic)

    wait_for(lambda: grown() >= 8, 60, "6 updates, a delete and its tombstone")
    # what retention does to records older than retention.ms: gone, read or not
    ends = p.high_watermarks()
    cut = [
        TopicPartition(t, q, end)
        for (t, q), end in ends.items()
        if t == topic and end > before[(t, q)]
    ]
    admin = kafkaclient.admin(p.config.kafka)
    for fut in admin.delete_records(cut).values():
        fut.result(30)


def test_a_group_that_lost_its_offsets_on_a_cut_topic_is_said(make_pipeline):
    """The group's committed offsets are gone (expired after the broker's
    offsets.retention.minutes with no worker running; here deleted) while
    the store holds the views, and the topic dropped the changes meanwhile:
    the worker reads the topic from its first record, past changes it never
    applied. It must take the marks away and name the rebuild."""
    p, worker = started(make_pipeline, BOTH_VIEWS)
    topic = p.config.source.topic("public.items")
    worker.terminate()
    _cut_unread_changes(p, topic)
    admin = kafkaclient.admin(p.config.kafka)
    for fut in admin.delete_consumer_groups([p.config.kafka.group_id]).values():
        fut.result(30)

    worker = p.start_worker()
    for view in ("items", "shelf"):
        p.wait_log(
            worker,
            f"view {view} is not whole in sink redis: its load mark is missing; "
            "its group has no committed offset on the view's topics while the "
            "store holds the view",
        )
    p.wait_log(
        worker, "Load it while the worker goes on: readside snapshot items --rebuild"
    )
    # the partitions hold no record to apply (nor to commit past)
    _assert_stale_and_said(p)


def _assert_stale_and_said(p: Pipeline) -> None:
    """The stores lack the dropped changes, no more, and status names each
    view's rebuild."""
    for drift in p.verify():
        assert drift.differing == UNSEEN, drift
        assert drift.extra == ["20"], drift
        assert drift.missing == [], drift
    wait_for(
        lambda: (
            unloaded_loads(p)
            == {
                "items": "readside snapshot items --rebuild",
                "shelf": "readside snapshot shelf --rebuild",
            }
        ),
        30,
        "status to name each view's rebuild",
    )
