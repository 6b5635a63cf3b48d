"""A table view's topic replayed by several processes (``readside snapshot
VIEW --writers N``): emptied stores are refilled to exactly the source while
the worker streams newer changes of the same rows, and a replay that is
stopped, or whose parent is killed, leaves no process of its own behind."""

from __future__ import annotations

import os
import random
import signal
import subprocess
import time
from pathlib import Path
from typing import Any

import psycopg
import pytest
from harness import REPO, BackgroundLoad, stack_config, wait_for

from pipeline.snapshot import SnapshotLog
from pipeline.stack import runner
from pipeline.worker import build_sinks

pytestmark = pytest.mark.integration

SCHEMA = (
    "CREATE TABLE notes (id integer PRIMARY KEY, body text NOT NULL, "
    "n integer NOT NULL DEFAULT 0);"
)
VIEWS = {"notes": {"table": "public.notes"}}


def _fill(p: Any, rows: int) -> None:
    p.sql(
        "INSERT INTO notes SELECT g, 'note ' || g FROM generate_series(1, %s) g",
        (rows,),
    )


def _churn(rows: int) -> Any:
    """A step of background writes on ``notes``: update, delete or insert."""

    def step(conn: psycopg.Connection[Any], rng: random.Random) -> None:
        ident = rng.randint(1, rows + 200)
        kind = rng.random()
        if kind < 0.7:
            conn.execute("UPDATE notes SET n = n + 1 WHERE id = %s", (ident,))
        elif kind < 0.85:
            conn.execute("DELETE FROM notes WHERE id = %s", (ident,))
        else:
            conn.execute(
                "INSERT INTO notes (id, body) VALUES (%s, 'again') "
                "ON CONFLICT (id) DO UPDATE SET body = 'again'",
                (ident,),
            )

    return step


def _empty_stores(p: Any) -> None:
    names = p.config.effective_views()["notes"].sinks
    for sink in build_sinks(p.config, list(names)).values():
        sink.open()
        sink.drop("notes")  # type: ignore[attr-defined]
        sink.close()


def _state(p: Any) -> Any:
    states = list(SnapshotLog(p.config).read().values())
    return states[0] if states else None


def _replay_children(pid: int) -> list[int]:
    """The replay processes ``pid`` started (not multiprocessing's helper)."""
    found = []
    for task in Path(f"/proc/{pid}/task").iterdir():
        for child in (task / "children").read_text().split():
            cmdline = Path(f"/proc/{child}/cmdline").read_bytes()
            if b"spawn_main" in cmdline:
                found.append(int(child))
    return found


def _gone(pid: int) -> bool:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except FileNotFoundError:
        return True
    return stat.rsplit(")", 1)[1].split()[0] == "Z"


def _replay_under_way(
    p: Any, writers: int
) -> tuple[subprocess.Popen[bytes], list[int]]:
    """Fill ``notes`` with 12,000 rows, start ``readside snapshot notes`` with
    ``writers`` processes and chunks of 10, and wait until it wrote 300 rows:
    the run and its replay processes."""
    _fill(p, 12000)
    p.apply_connector()
    wait_for(
        lambda: sum(p.high_watermarks().values()) >= 12000, 180, "the topic filled"
    )
    run = subprocess.Popen(
        p.cli_args(
            "snapshot", "notes", "--writers", str(writers), "--chunk-size", "10"
        ),
        cwd=REPO,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        env={**os.environ, "PYTHONUNBUFFERED": "1"},
    )
    try:
        wait_for(
            lambda: (st := _state(p)) is not None and st.rows >= 300,
            120,
            "the replay to write 300 rows",
            interval=0.2,
        )
    except BaseException:
        run.kill()
        run.wait(30)
        raise
    children = _replay_children(run.pid)
    assert len(children) == writers, children
    return run, children


def test_replay_in_processes_refills_emptied_stores_while_the_stream_goes_on(
    make_pipeline,
):
    p = make_pipeline(SCHEMA, ["public.notes"], VIEWS)
    _fill(p, 1500)
    p.apply_connector()
    p.start_worker()
    p.wait_drained(timeout=240)
    p.assert_converged()
    _empty_stores(p)
    with BackgroundLoad(p.dsn, _churn(1500), seed=5, pause_s=0.01) as writer:
        writer.wait_ops(30)
        done = p.run_cli("snapshot", "notes", "--writers", "3", "--chunk-size", "50")
        writer.wait_ops(30)
    assert "processes=3" in done.stderr, done.stderr
    st = _state(p)
    assert st.state == "done"
    assert st.method == "replay"
    assert st.rows == st.total >= 1500
    p.wait_drained(timeout=240)
    p.assert_converged()

    # A topic that drops old records (made or altered by hand) cannot give
    # the view whole: a replay refuses to read from it; a rebuild takes every
    # row from the source in a new epoch instead (pipeline.snapshot.epoch).
    topic = p.config.source.topic("public.notes")
    p.set_topic_configs(topic, {"cleanup.policy": "compact,delete"})
    refused = p.run_cli("snapshot", "notes", ok=False)
    assert refused.returncode != 0
    assert f"topic {topic} has cleanup.policy compact,delete" in refused.stderr
    assert "readside snapshot notes --from-source" in refused.stderr
    assert _state(p).rows == st.rows  # nothing begun
    built = p.run_cli("snapshot", "notes", "--rebuild")
    said = built.stderr + built.stdout
    assert "new view epoch view=notes" in said, said
    p.wait_drained(timeout=240)
    p.assert_converged()


@pytest.mark.parametrize("how", ["sigterm", "parent-killed"])
def test_replay_stopped_or_orphaned_leaves_no_process_and_runs_again(
    make_pipeline, how
):
    p = make_pipeline(SCHEMA, ["public.notes"], {"notes": {**VIEWS["notes"]}})
    run, children = _replay_under_way(p, 3)
    try:
        if how == "sigterm":
            run.send_signal(signal.SIGTERM)
            out, _ = run.communicate(timeout=120)
            assert run.returncode == 130, out
            st = _state(p)
            assert st.state == "running"
            assert st.rows < st.total
        else:
            run.send_signal(signal.SIGKILL)
            run.wait(30)
        wait_for(
            lambda: all(_gone(c) for c in children),
            60,
            "the replay processes to stop",
        )
    finally:
        if run.poll() is None:
            run.kill()
            run.wait(30)
    again = p.run_cli("snapshot", "notes")
    assert "processes=2" in again.stderr, again.stderr
    assert _state(p).state == "done"
    p.assert_converged()


@pytest.mark.exclusive  # stops the stack's Redis
def test_replay_processes_wait_out_a_store_outage_and_finish(make_pipeline):
    """Redis stops while the replay's processes write: they back off (no
    chunk is reported done while it is down), none of them dies, and once
    Redis is back the run finishes with the stores equal to the source.
    (Elasticsearch beside it keeps the run long enough to stop Redis in it.)"""
    stack = stack_config()
    p = make_pipeline(SCHEMA, ["public.notes"], {"notes": {**VIEWS["notes"]}})
    p.rewrite(lambda d: d["views"]["notes"].update(sinks=["redis", "elasticsearch"]))
    run, children = _replay_under_way(p, 2)
    try:
        runner.stop_service(stack, "redis")
        try:
            time.sleep(2)  # chunks under way when it stopped end or fail
            held = _state(p).rows
            time.sleep(5)
            assert _state(p).rows == held  # nothing is done while it is down
            assert held < 12000
            assert run.poll() is None
            assert not any(_gone(c) for c in children)
        finally:
            runner.start_service(stack, "redis")
        out, _ = run.communicate(timeout=300)
        assert run.returncode == 0, out
        assert b"unavailable" in out, out[-3000:]
    finally:
        if run.poll() is None:
            run.kill()
            run.wait(30)
    st = _state(p)
    assert st.state == "done"
    assert st.rows == st.total == 12000
    p.assert_converged()
