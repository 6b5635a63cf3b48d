"""What ``readside status`` and ``readside snapshot --rebuild`` print about a
rebuild, from its recorded state."""

from __future__ import annotations

from dataclasses import asdict

from pipeline.snapshot.progress import ProgressBar
from pipeline.snapshot.state import SnapshotState, rebuild_key, run_id
from pipeline.status import render


def _rebuild(**kw: object) -> SnapshotState:
    st = SnapshotState("customers", ["redis", "search"], None, "rebuild")
    st.generation = 3
    st.previous = {"redis": 2, "search": 2}
    st.counts = {"fill": 1200, "catch-up": 40, "switched": 7, "drop": 0}
    for k, v in kw.items():
        setattr(st, k, v)
    return st


def test_rebuild_runs_have_their_own_key_beside_snapshot_runs() -> None:
    key = rebuild_key("customers", ["search", "redis"])
    assert key == "rebuild:" + run_id("customers", ["redis", "search"], None)
    assert key != run_id("customers", ["redis", "search"], None)


def test_summary_names_generations_and_counts_of_each_step() -> None:
    bar = ProgressBar("customers")
    done = bar.summary(_rebuild(state="done", phase="done"))
    assert done == (
        "rebuild customers done: generation 3 (was redis=2,search=2) in "
        "redis,search; 1,200 roots loaded, 40 + 7 records caught up before + "
        "after the switch; old generation dropped"
    )
    stopped = bar.summary(_rebuild(phase="switched"))
    assert "stopped (run again to resume)" in stopped
    assert stopped.endswith("at switched")


def test_status_shows_the_step_of_a_running_rebuild() -> None:
    snap = {**asdict(_rebuild(phase="catch-up", rows=25)), "rows_per_s": 5.0}
    text = render(
        {"views": [], "slot_lag_bytes": 0, "dead_letters": 0, "snapshots": [snap]}
    )
    assert (
        "rebuild customers -> generation 3 (redis,search): running, step catch-up, "
        "25 rows in this step"
    ) in text
