"""A worker's first start on a table topic whose retention already dropped
its first records (a topic made by hand, or by a broker, with
``cleanup.policy=delete``: common where topics are provisioned ahead).

The group has no committed offset, so the worker reads the topics from their
first record and used to mark its views whole. The rows whose only record
was dropped were in no store, for good, while lag read zero. The worker must
not mark such a view; it must say why and name the load that reads the
source, and that load must make the view whole and marked again
(pipeline.loaded, pipeline.snapshot.fill).
"""

from __future__ import annotations

import json
import time
from contextlib import closing

import pytest
from confluent_kafka import TopicPartition
from harness import Pipeline, wait_for
from items_model import BOTH_VIEWS, SCHEMA, status_warnings

from pipeline import kafkaclient
from pipeline.source.converter import converter_for
from pipeline.views import doc_id

pytestmark = pytest.mark.integration

ROWS = 20
CUT = 3  # records dropped from the start of the fullest partition


def _keys_below(p: Pipeline, tp: TopicPartition) -> list[str]:
    """The document ids of the records of ``tp`` before ``tp.offset``."""
    group = {"group.id": "readside-test-retention", "enable.auto.commit": False}
    converter = converter_for(p.config.kafka)
    ids: list[str] = []
    deadline = time.monotonic() + 30
    with closing(kafkaclient.consumer(p.config.kafka, group)) as consumer:
        consumer.assign([TopicPartition(tp.topic, tp.partition, 0)])
        while len(ids) < tp.offset:
            assert time.monotonic() < deadline, f"records of {tp} not read: {ids}"
            for msg in consumer.consume(tp.offset - len(ids), 1):
                assert msg.error() is None, msg.error()
                ids.append(doc_id(converter.decode(msg).key))
    return ids


def test_a_first_start_on_a_topic_cut_by_retention_is_said_and_loaded(make_pipeline):
    p = make_pipeline(SCHEMA, ["public.items"], BOTH_VIEWS)
    p.apply_connector()
    p.wait_streaming()
    topic = p.config.source.topic("public.items")
    wait_for(lambda: sum(p.high_watermarks().values()) == ROWS, 60, "the rows")
    # what retention does to a topic of cleanup.policy delete: its oldest
    # records go, here the initial snapshot's only record of three rows
    p.set_topic_configs(topic, {"cleanup.policy": "delete"})
    ends = p.high_watermarks()
    part = max((p_ for t, p_ in ends if t == topic), key=lambda q: ends[(topic, q)])
    assert ends[(topic, part)] > CUT, ends
    cut = TopicPartition(topic, part, CUT)
    lost = sorted(_keys_below(p, cut))
    admin = kafkaclient.admin(p.config.kafka)
    for fut in admin.delete_records([cut]).values():
        fut.result(30)
    p.sql("UPDATE items SET name = 'changed' WHERE id > 15")

    worker = p.start_worker()
    why = (
        "this first start read its topics from their first records, but topic "
        f"{topic} (cleanup.policy delete) no longer holds records 0-{CUT - 1} "
        f"of partition {part}: the rows that did not change since are in no record"
    )
    for load in ("snapshot items --from-source", "snapshot shelf --sink redis"):
        view = load.split()[1]
        p.wait_log(
            worker,
            f"view {view} is not whole in sink redis: its load mark is missing; "
            f"{why}. Load it while the worker goes on: readside {load}",
        )
    p.wait_drained(timeout=120)
    wait_for(
        lambda: (
            _unloaded(p)
            == {
                "items": "readside snapshot items --from-source",
                "shelf": "readside snapshot shelf --sink redis",
            }
        ),
        30,
        "status to name each view's load",
    )
    text = p.run_cli("status").stdout
    said = f"(its load mark is missing: {why}); load it: readside snapshot items"
    assert "warning: items in redis: not whole since " in text, text
    assert f"{said} --from-source\n" in text, text
    # the topic itself is said too, at the worker's start and by status
    dropping = f"topic {topic} has cleanup.policy delete (retention.ms keeps records "
    p.wait_log(worker, f"WARNING pipeline.layoutguard {dropping}")
    (warned,) = status_warnings(p, "topic_warnings")
    assert warned.startswith(dropping), warned
    assert warned.endswith(
        "load what it dropped with `readside snapshot items --from-source` and "
        "`readside snapshot shelf --from-source`"
    ), warned
    for drift in p.verify():  # not a mark's word: the rows are missing
        assert drift.missing == lost, drift
        assert drift.extra == drift.differing == [], drift

    loaded = p.run_cli("snapshot", "items", "--from-source")
    assert "snapshot items done: every row came through the stream again" in (
        loaded.stderr + loaded.stdout
    ), loaded
    p.run_cli("snapshot", "shelf", "--sink", "redis")
    for view in ("items", "shelf"):
        p.wait_log(worker, f"view {view} is whole again in sink redis", timeout=60)
    p.wait_drained(timeout=120)
    p.assert_converged()
    wait_for(lambda: _unloaded(p) == {}, 30, "status to call the views whole")
    p.set_topic_configs(topic, {"cleanup.policy": "compact"})
    assert status_warnings(p, "topic_warnings") == []
    assert worker.alive(), worker.tail()


def _unloaded(p: Pipeline) -> dict[str, str]:
    """The load ``readside status --json`` names for each view not whole."""
    rows = json.loads(p.run_cli("status", "--json").stdout)["views"]
    return {r["view"]: r["unloaded_load"] for r in rows if r["unloaded_since_ms"]}
