"""``python -m bench`` in quick mode: every row is there, every rate positive."""

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
    )
    rows = results["rows"]
    assert rows["decode"]["events_per_s"] > 0
    for name in ("redis", "elasticsearch", "mongodb", "all"):
        assert "error" not in rows[name], rows[name]
        assert rows[name]["events_per_s"] > 0
        assert rows[name]["peak_rss_mb"] > 0
    for name in ("redis", "elasticsearch", "mongodb"):
        assert rows[name]["raw_docs_per_s"] > 0
    assert "| worker, all three sinks |" in done.stdout
