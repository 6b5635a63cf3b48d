"""The worker as a service: metrics, health endpoints, and status after restarts."""

from __future__ import annotations

import json
import socket
import subprocess
import sys
import urllib.request
from pathlib import Path

import pytest
from harness import REPO, Pipeline, create_pipeline, wait_for

from pipeline.events import format_lsn

pytestmark = pytest.mark.integration

SCHEMA = "CREATE TABLE notes (id int PRIMARY KEY, body text NOT NULL);"
VIEWS = {"notes": {"table": "public.notes"}}


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def get(url: str) -> tuple[int, str]:
    try:
        with urllib.request.urlopen(url, timeout=5) as resp:
            return resp.status, resp.read().decode()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read().decode()
    except OSError:  # not listening yet
        return 0, ""


@pytest.fixture
def pipeline(tmp_path: Path):
    pipe = create_pipeline(tmp_path, SCHEMA, ["public.notes"], VIEWS)
    try:
        yield pipe
    finally:
        pipe.close()


def status_json(pipe: Pipeline) -> dict[str, object]:
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "pipeline.cli",
            "--config",
            str(pipe.config_path),
            "status",
            "--json",
        ],
        capture_output=True,
        text=True,
        timeout=120,
        cwd=REPO,
    )
    assert proc.returncode == 0, proc.stderr
    return json.loads(proc.stdout)


def test_worker_serves_metrics_health_and_status_survives_restart(
    pipeline: Pipeline,
) -> None:
    pipeline.sql(
        "INSERT INTO notes SELECT g, 'note ' || g FROM generate_series(1, 50) g"
    )
    pipeline.apply_connector()
    port = free_port()
    worker = pipeline.start_worker(metrics_port=port)
    base = f"http://127.0.0.1:{port}"
    wait_for(lambda: get(f"{base}/readyz")[0] == 200, 90, "worker never became ready")
    pipeline.wait_drained()
    assert get(f"{base}/healthz") == (200, "ok\n")

    code, body = get(f"{base}/metrics")
    assert code == 200
    events = [
        line
        for line in body.splitlines()
        if line.startswith("readside_events_total{") and "public.notes" in line
    ]
    assert events, body[:2000]
    assert float(events[0].rsplit(" ", 1)[1]) >= 50
    applied = [
        line
        for line in body.splitlines()
        if line.startswith("readside_ops_total{")
        and 'sink="redis"' in line
        and 'outcome="applied"' in line
    ]
    assert applied, body[:2000]
    assert float(applied[0].rsplit(" ", 1)[1]) >= 50
    assert get(f"{base}/nope")[0] == 404

    assert worker.terminate() == 0
    st = status_json(pipeline)  # read back from the checkpoint topic
    rows = {(r["view"], r["sink"]): r for r in st["views"]}  # type: ignore[index]
    assert set(rows) == {("notes", s) for s in ("redis", "elasticsearch", "mongodb")}
    for row in rows.values():
        assert row["consumer_lag"] == 0
        assert isinstance(row["applied_lsn"], int)
        assert row["applied_lsn"] > 0
        assert row["applied_lsn_text"] == format_lsn(row["applied_lsn"])
    assert st["dead_letters"] == 0
    # The text, with --config after the subcommand: LSNs as PostgreSQL's X/Y.
    args = ["status", "--config", str(pipeline.config_path)]
    text = subprocess.run(
        [sys.executable, "-m", "pipeline.cli", *args],
        capture_output=True,
        text=True,
        timeout=120,
        cwd=REPO,
        check=True,
    ).stdout
    for (view, sink), row in rows.items():
        line = next(ln for ln in text.splitlines() if ln.split()[:2] == [view, sink])
        assert line.endswith(f"  {format_lsn(row['applied_lsn'])}"), text
    pipeline.assert_converged()
