"""``readside snapshot`` on an aggregate view while a writer keeps changing it:
killed midway, resumed, and the stores end equal to the source. A document a
store rejects is dead-lettered by every kind of load, which then fails."""

from __future__ import annotations

import os
import re
import signal
import subprocess
from typing import Any

import psycopg
import pytest
from harness import REPO, BackgroundLoad, wait_for
from shop_model import SCHEMA, TABLES, VIEW, ShopLoad, expected_documents

from pipeline import dlq
from pipeline.snapshot import SnapshotLog
from pipeline.worker import build_sinks

pytestmark = pytest.mark.integration


def _snapshot_cmd(p: Any, *args: str) -> list[str]:
    return p.cli_args("snapshot", "customers", *args)


def _state(p: Any) -> Any:
    states = list(SnapshotLog(p.config).read().values())
    return states[0] if states else None


def test_snapshot_killed_midway_resumes_and_converges_under_writes(make_pipeline):
    p = make_pipeline(SCHEMA, TABLES, {"customers": VIEW})
    p.rewrite(lambda d: d["source"].update(snapshot_mode="no_data"))
    load = ShopLoad(seed=11)
    with psycopg.connect(p.dsn, autocommit=True) as conn:
        load.seed(conn, customers=400)
    p.apply_connector()
    p.start_worker()
    with BackgroundLoad(p.dsn, load.step, seed=12, pause_s=0.05) as writer:
        writer.wait_ops(20)
        first = subprocess.Popen(
            _snapshot_cmd(p, "--chunk-size", "25"),
            cwd=REPO,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            env={**os.environ, "PYTHONUNBUFFERED": "1"},
        )
        wait_for(
            lambda: (st := _state(p)) is not None and st.rows >= 100,
            120,
            "the first snapshot run to load 100 roots",
            interval=0.5,
        )
        first.send_signal(signal.SIGKILL)
        first.wait(30)
        killed = _state(p)
        assert killed.state == "running"
        assert 100 <= killed.rows < killed.total
        assert killed.after is not None
        second = subprocess.run(
            _snapshot_cmd(p, "--chunk-size", "100"),
            cwd=REPO,
            capture_output=True,
            text=True,
            timeout=300,
            env={**os.environ, "PYTHONUNBUFFERED": "1"},
        )
        assert second.returncode == 0, second.stdout + second.stderr
        assert "resuming snapshot" in second.stderr
        writer.wait_ops(20)
    done = _state(p)
    assert done.state == "done"
    # Roots inserted ahead of the cursor are loaded and counted: the total
    # the progress shows is never below the rows done, and ends equal to it.
    assert done.rows == done.total, done
    shown = re.findall(r"chunks customers: ([\d,]+)/([\d,]+) rows", second.stderr)
    assert shown, second.stderr
    assert all(int(a.replace(",", "")) <= int(b.replace(",", "")) for a, b in shown)
    # The resumed run started after the killed run's last chunk, not from zero.
    assert done.rows >= killed.total - 30
    assert done.chunks > killed.chunks
    p.wait_drained(timeout=240)
    oracle = expected_documents(p.dsn)
    assert len(oracle) > 200
    p.assert_converged()


REJECTING: dict[str, Any] = {
    "sink_options": {
        "elasticsearch": {"mappings": {"properties": {"code": {"type": "integer"}}}}
    }
}


def test_snapshot_rejected_document_dead_lettered_and_exit_nonzero(make_pipeline):
    """Elasticsearch maps ``code`` as an integer and refuses the row whose code
    is ``abc``: the fill, the topic replay and both rebuilds (fill, catch-up)
    dead-letter it with enough to find it again, load the rest, and fail."""
    views = {
        "agg": {"kind": "aggregate", "table": "public.products", **REJECTING},
        "flat": {"table": "public.products", **REJECTING},
    }
    p = make_pipeline(
        "CREATE TABLE products (id integer PRIMARY KEY, code text NOT NULL);",
        ["public.products"],
        views,
    )
    p.sql(
        "INSERT INTO products SELECT i, CASE i WHEN 7 THEN 'abc' ELSE i::text END "
        "FROM generate_series(1, 20) AS i"
    )
    p.apply_connector()  # its initial snapshot: 20 records, one of them refused
    wait_for(lambda: sum(p.high_watermarks().values()) >= 20, 120, "the snapshot")
    runs = {
        "fill": ("agg", "--chunk-size", "5"),
        "replay": ("flat",),
        "rebuild fill": ("agg", "--rebuild", "--chunk-size", "5"),
        "rebuild catch-up": ("flat", "--rebuild"),
    }
    for what, args in runs.items():
        done = p.run_cli("snapshot", *args, ok=False)
        assert done.returncode != 0, f"{what}: exit 0\n{done.stdout}{done.stderr}"
        assert "rejected 1 document(s)" in done.stderr, f"{what}: {done.stderr}"

    dead = p.dead_letters()
    assert len(dead) == len(runs), [(d.origin, d.headers) for d in dead]
    topic = p.config.source.topic("public.products")
    origins = sorted(d.origin[0] for d in dead)
    assert origins == sorted(["snapshot:agg", "snapshot:agg", topic, topic])
    for rec in dead:
        h = rec.headers
        assert h[dlq.H_REASON] == "sink:elasticsearch"
        assert h[dlq.H_CLASS] == "Rejected"
        assert "code" in h[dlq.H_MESSAGE]
        if rec.origin[0] == "snapshot:agg":
            assert h[dlq.H_VIEW] == "agg"
            assert rec.key == b'"7"'
            assert rec.origin[2] == 2  # the chunk after ids 1..5
            assert b'"chunk":2' in (rec.value or b"")
        else:
            assert h[dlq.H_VIEW] == "flat"
            assert b'"abc"' in (rec.value or b"")  # the original record
    # The other documents were loaded, in the new generations too.
    es = build_sinks(p.config, ["elasticsearch"])["elasticsearch"]
    try:
        for view in views:
            assert es.ids(view) == {str(i) for i in range(1, 21)} - {"7"}, view
    finally:
        es.close()


def test_snapshot_waits_out_source_outages_and_goes_on_from_its_last_chunk(
    make_pipeline,
):
    """Every client connection to the source is terminated again and again
    while the snapshot reads it (as a PostgreSQL restart does to them): the
    run waits each outage out and goes on from its last recorded chunk,
    instead of exiting with "source read failed"."""
    p = make_pipeline(SCHEMA, TABLES, {"customers": VIEW})
    p.rewrite(lambda d: d["source"].update(snapshot_mode="no_data"))
    with psycopg.connect(p.dsn, autocommit=True) as conn:
        ShopLoad(seed=21).seed(conn, customers=300)
    p.apply_connector()
    p.start_worker()
    snapshot = subprocess.Popen(
        _snapshot_cmd(p, "--chunk-size", "5"),
        cwd=REPO,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        env={**os.environ, "PYTHONUNBUFFERED": "1"},
    )
    cut = 0
    with psycopg.connect(p.dsn, autocommit=True) as conn:
        while snapshot.poll() is None and cut < 200:
            st = _state(p)
            if st is not None and st.rows >= 30 * (cut + 1):
                # Client backends only: Debezium's walsender stays connected.
                conn.execute(
                    "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
                    "WHERE datname = current_database() "
                    "AND backend_type = 'client backend' "
                    "AND pid <> pg_backend_pid()"
                )
                cut += 1
    out, _ = snapshot.communicate(timeout=300)
    assert snapshot.returncode == 0, out
    assert cut >= 3, f"the run ended before three outages: {out}"
    assert "snapshot of view customers failed" in out, out
    done = _state(p)
    assert done.state == "done", done
    assert done.rows >= done.total, done
    p.wait_drained(timeout=240)
    p.assert_converged()
