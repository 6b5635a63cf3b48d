"""The connector's position in the WAL lost: its replication slot dropped
while it was away (by hand, or a failover to a replica, which holds no
slot), then made again. The changes in between never reach the topics.

With ``snapshot_mode: initial`` Debezium's task fails, and ``readside
status`` must say what that means and the way out. With ``when_needed`` (the
way out, and what Debezium's error asks for) Debezium reads every table whole
again: the updates come back, but a row deleted meanwhile keeps its document
in every store, with the connector running and lag at zero. The worker must
take the views' load marks away and name the load from the source, and that
load must make the views exact again (pipeline.retaken).
"""

from __future__ import annotations

import pytest
from harness import Pipeline, wait_for
from items_model import BOTH_VIEWS, reload_whole, started, unloaded_loads

from connectors import debezium
from pipeline.status import capture

pytestmark = pytest.mark.integration


def test_a_table_read_whole_again_after_the_slot_was_lost_is_said_and_loaded(
    make_pipeline,
):
    p, worker = started(make_pipeline, BOTH_VIEWS)
    topic = p.config.source.topic("public.items")
    _lose_the_slot(p)
    p.sql("UPDATE items SET name = 'unseen ' || id WHERE id <= 6")
    p.sql("DELETE FROM items WHERE id = 20")

    # initial: the task cannot resume, and status says why and what to do
    refused = p.run_cli("connector", "apply", ok=False)
    assert refused.returncode != 0
    assert (
        "connector task 0 cannot resume: the position in the WAL it keeps is "
        "gone from its replication slot" in refused.stderr
    ), refused.stderr
    wait_for(lambda: _failed_tasks(p), 90, "the connector's task to fail")
    out = p.run_cli("status").stdout
    assert "warning: connector task 0 cannot resume: the position in the WAL" in out
    assert "set source.snapshot_mode: when_needed and run readside connector" in out

    # when_needed: every table read whole again; document 20 stays
    p.rewrite(lambda d: d["source"].__setitem__("snapshot_mode", "when_needed"))
    p.run_cli("connector", "apply")
    for view in ("items", "shelf"):
        p.wait_log(
            worker,
            f"view {view} is not whole in sink redis: its load mark is missing; "
            f"topic {topic} holds its table read whole again",
            timeout=120,
        )
        p.wait_log(
            worker,
            "so the rows deleted meanwhile keep their documents. Load it while "
            f"the worker goes on: readside snapshot {view} --from-source",
        )
    p.wait_log(worker, f"ERROR pipeline.worker topic {topic} holds its table read")
    p.sql("UPDATE items SET price = 0 WHERE id = 15")  # streamed on: applied
    p.wait_drained(timeout=120)
    for drift in p.verify():
        assert (drift.differing, drift.extra, drift.missing) == ([], ["20"], []), drift
    wait_for(
        lambda: (
            unloaded_loads(p)
            == {v: f"readside snapshot {v} --from-source" for v in ("items", "shelf")}
        ),
        30,
        "status to name each view's load",
    )

    # the load it names removes document 20 and marks the views again
    reload_whole(p, worker, ["items", "shelf"], "--from-source")


def _lose_the_slot(p: Pipeline) -> None:
    """The connector away and its slot dropped: what a failover to a replica,
    or dropping an idle slot that keeps too much WAL, leaves. Connect keeps
    the connector's offsets (its position in the WAL)."""
    assert debezium.delete(p.config)
    wait_for(lambda: not capture(p.config)["slot"]["active"], 60, "the slot to idle")
    assert debezium.drop_slot(p.config)


def _failed_tasks(p: Pipeline) -> bool:
    tasks = debezium.status(p.config)["tasks"]
    return bool(tasks) and all(t["state"] == "FAILED" for t in tasks)
