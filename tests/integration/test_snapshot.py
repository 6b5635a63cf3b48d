"""``readside snapshot`` on an aggregate view while a writer keeps changing it:
killed midway, resumed, and the stores end equal to the source."""

from __future__ import annotations

import os
import signal
import subprocess
from typing import Any

import psycopg
import pytest
from harness import REPO, BackgroundLoad, wait_for
from shop_model import SCHEMA, TABLES, VIEW, ShopLoad, expected_documents

from pipeline.snapshot import SnapshotLog

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
    # The resumed run started after the killed run's last chunk, not from zero.
    assert done.rows >= killed.total - 30
    assert done.chunks > killed.chunks
    p.wait_drained(timeout=240)
    oracle = expected_documents(p.dsn)
    assert len(oracle) > 200
    p.assert_converged()
