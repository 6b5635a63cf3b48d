"""The worker as a service: metrics, health endpoints, and status after restarts."""

from __future__ import annotations

import json
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest
from harness import REPO, Pipeline, create_pipeline, time_lag_ms, wait_for

from connectors.debezium import ConnectClient
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


def test_time_lag_stays_small_while_idle_and_grows_while_the_capture_is_stopped(
    pipeline: Pipeline,
) -> None:
    """``readside_time_lag_ms``, read from two workers of one group (one of
    them holds the heartbeats' partition): small while the source is idle
    (the heartbeats, every 500 ms here, keep the views fresh), growing with
    the clock while the connector is stopped (nothing reaches Kafka), small
    again once it runs. A gauge set at each commit stood still at its last
    value while the capture was stopped."""
    pipeline.sql(
        "INSERT INTO notes SELECT g, 'note ' || g FROM generate_series(1, 30) g"
    )
    pipeline.apply_connector()
    ports = [free_port(), free_port()]
    for port in ports:
        pipeline.start_worker(metrics_port=port)
    bases = [f"http://127.0.0.1:{port}" for port in ports]
    for base in bases:
        wait_for(lambda b=base: get(f"{b}/readyz")[0] == 200, 90, "worker never ready")
    pipeline.wait_drained()
    # Changes streamed to both workers (each holds some of the partitions).
    pipeline.sql("UPDATE notes SET body = 'streamed ' || id")
    pipeline.wait_drained()
    sinks = {"redis", "elasticsearch", "mongodb"}

    def fresh(limit_ms: float) -> bool:
        return all(
            set(lags) == sinks and max(lags.values()) < limit_ms
            for lags in (time_lag_ms(port, "notes") for port in ports)
        )

    wait_for(lambda: fresh(3000), 60, "every worker to report the views fresh")
    time.sleep(6)  # idle: no change at all
    assert fresh(3000), [time_lag_ms(port, "notes") for port in ports]

    connect = ConnectClient.of(pipeline.config.connect)
    name = pipeline.config.connect.connector
    connect.request("PUT", f"/connectors/{name}/stop")
    wait_for(
        lambda: (
            connect.request("GET", f"/connectors/{name}/status")["connector"]["state"]
            == "STOPPED"
        ),
        60,
        "the connector to stop",
    )
    before = [time_lag_ms(port, "notes") for port in ports]
    time.sleep(8)
    after = [time_lag_ms(port, "notes") for port in ports]
    for was, now in zip(before, after, strict=True):
        for sink in sinks:
            assert now[sink] >= was[sink] + 7000, (before, after)
    assert min(min(lags.values()) for lags in after) >= 8000, after

    connect.request("PUT", f"/connectors/{name}/resume")
    pipeline.sql("UPDATE notes SET body = 'after the stop' WHERE id = 1")
    wait_for(lambda: fresh(3000), 120, "the views to be fresh again")
    pipeline.wait_drained()
    pipeline.assert_converged()
