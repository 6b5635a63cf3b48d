"""``python -m bench`` in quick mode, both record formats: every row is there,
every rate positive."""

from __future__ import annotations

from pathlib import Path

import pytest
from harness import run_bench

pytestmark = pytest.mark.integration


def test_bench_quick_mode_reports_every_row_with_positive_rates(
    tmp_path: Path,
) -> None:
    results, done = run_bench(
        tmp_path / "bench.json",
        *("--events", "2000", "--mongodb-events", "200", "--profile", "never"),
        # a stuck row ends as a row with its log (after 60 s + the watchdog's
        # 30 s), within the test's timeout even if every row that writes to one
        # store is stuck (a run takes seconds)
        *("--run-timeout", "60"),
    )
    assert set(results["formats"]) == {"json", "avro"}  # --format both
    servers = results["machine"]["servers"]
    assert {"redis-server", "elasticsearch-server", "mongodb-server"} <= set(servers)
    for fmt, found in results["formats"].items():
        assert found["decode"]["events_per_s"] > 0, fmt
        assert found["bare"], fmt
        assert all(b["events_per_s"] > 0 for b in found["bare"]), fmt
        rows = found["rows"]
        for name in ("redis", "elasticsearch", "mongodb", "all"):
            assert "error" not in rows[name], (fmt, rows[name])
            assert rows[name]["complete"], (fmt, name, rows[name])
            assert rows[name]["events_per_s"] > 0, (fmt, name)
            assert rows[name]["peak_rss_mb"] > 0, (fmt, name)
            assert rows[name]["cpu_us_per_event"], (fmt, name)
        for name in ("redis", "elasticsearch", "mongodb"):
            assert rows[name]["raw_docs_per_s"] > 0, (fmt, name)
    assert "| worker, all three sinks | json |" in done.stdout
    assert "| worker, all three sinks | avro |" in done.stdout
