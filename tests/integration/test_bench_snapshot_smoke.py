"""``python -m bench snapshot --quick``: every row is there, every rate positive."""

from __future__ import annotations

from pathlib import Path

import pytest
from harness import run_bench

pytestmark = pytest.mark.integration

SINKS = ("redis", "elasticsearch", "mongodb")


def test_bench_snapshot_quick_mode_reports_every_row_with_positive_rates(
    tmp_path: Path,
) -> None:
    results, done = run_bench(tmp_path / "snapshot.json", "snapshot", "--quick")
    assert results["table"]["initial_snapshot"]["rows_per_s"] > 0
    for part in ("table", "aggregate"):
        for sink in SINKS:
            row = results[part][sink]
            assert "error" not in row, row
            assert row["state"] == "done"
            assert row["rows"] > 0
            assert row["docs_held"] == {sink: row["rows"]}
            assert row["rows_per_s"] > 0
            assert row["raw_docs_per_s"] > 0
            assert row["peak_rss_mb"] > 0
        assert results["aggregate"][sink]["children_per_s"] > 0
        # the table view's replay in one process and in two (--replay-writers)
        runs = results["table"]["by_writers"][sink]
        assert sorted(runs) == ["1", "2"]
        for writers, row in runs.items():
            assert row["state"] == "done", (writers, row)
            assert row["writers"] == int(writers)
            assert row["docs_held"] == {sink: row["rows"]}
        assert runs["2"]["child_peak_rss_mb"] > 0
    streaming = results["streaming"]
    assert [(r["mode"], r["batch_size"]) for r in streaming] == [
        ("live", 20),
        ("catch-up", 20),
        ("live", 200),
        ("catch-up", 200),
    ]
    for r in streaming:
        assert r["complete"], r
        assert r["rereads_per_1k"] > 0
        assert r["changes_per_s"] > 0
    assert "### coalescing while streaming" in done.stdout
    # MongoDB loads fewer roots (--where), which a rebuild cannot take.
    assert set(results["rebuild"]) == {"redis", "elasticsearch"}
    for row in results["rebuild"].values():
        assert row["rebuild_state"] == "done", row
        assert row["rebuild_generation"] == 2
        assert row["rebuild_rows"] == row["rows"]
        assert row["rebuild_rows_per_s"] > 0
    assert "### rebuild" in done.stdout
